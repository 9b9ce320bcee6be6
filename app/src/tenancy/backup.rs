//! Backup and restore of one hospital's database (`hms backup-hospital`,
//! `hms restore-hospital`), with PostgreSQL's own `pg_dump` and `pg_restore`.
//!
//! A backup is one tar file: `manifest.json` (hospital, time, event count, the sealed
//! head in the dump and the head the platform database had recorded, the dump's SHA-256)
//! and `hospital.dump` (custom format). The dump and the manifest's figures are read in
//! one exported snapshot, so they describe the same log.
//!
//! A restore builds a new database under a scratch name, restores into it, brings it to
//! this binary's migrations and grants, *re-bases* the log-order columns (below), and
//! recomputes the hash chain from the restored events: only if it reproduces the
//! manifest's head (and passes through the recorded head) is the database renamed into
//! place and the hospital entered in the directory, in one platform transaction. Any
//! refusal drops the scratch database: nothing half-made is left, and nothing is served
//! before it is verified.
//!
//! Re-basing: events are read in `(transaction_id, position)` order, and readers stop
//! below the oldest transaction still running on *this* cluster. Transaction ids from
//! another cluster mean nothing here: they may lie ahead of this cluster's counter, which
//! would hide the restored events and put new ones before them. So the restored events
//! get small transaction ids (below any this cluster will issue again) that keep their
//! order exactly: one per run of increasing positions in commit order. The seals do not
//! cover `transaction_id`, so the chain is unchanged; checkpoints and the audit index are
//! moved with their events.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, Utc};
use hms_domain::common::HospitalCode;
use hms_projections::projectors::seal::{self, SealHead};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::directory::TenantStatus;
use super::names::quote_ident;
use super::platform::{self, connect_once, latest_tenant_migration, migrate_tenant_database};
use super::provisioning::drop_database;
use super::servers::{self, DEFAULT_SERVER};
use super::{Result, TenancyError};
use crate::state::Platform;

/// How often the rename into place is tried while another session is on the database.
const RENAME_ATTEMPTS: u32 = 20;

/// The manifest's layout; a restore refuses any other.
pub const FORMAT: u32 = 1;
const MANIFEST_ENTRY: &str = "manifest.json";
const DUMP_ENTRY: &str = "hospital.dump";

/// What a backup holds, written beside the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub code: String,
    /// The code the hospital's events name it by (its log identity; see
    /// [`super::TenantRecord::log_identity`]).
    pub log_identity: String,
    pub name: String,
    pub plan: String,
    pub status: String,
    pub backed_up_at: DateTime<Utc>,
    /// `server_version` of the PostgreSQL server the dump was taken from.
    pub server_version: String,
    /// The newest tenant migration applied to the database.
    pub migration_version: i64,
    /// Events in the log (in the dump's snapshot).
    pub events: i64,
    /// The newest seal in the dump: `<chain_index>:<position>:<sha256 hex>`.
    pub head: Option<String>,
    /// The head the platform database had recorded for the hospital (the digest an
    /// auditor keeps); at or before `head`.
    pub recorded_head: Option<String>,
    pub dump_sha256: String,
    pub dump_bytes: u64,
}

/// Where the PostgreSQL client programs are.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    /// `None`: found on `PATH`.
    pub bindir: Option<PathBuf>,
}

impl PgTools {
    /// `HMS_PG_BINDIR`, else `pg_config --bindir`, else `PATH`.
    pub fn discover() -> Self {
        let bindir = std::env::var_os("HMS_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(|| {
                let out = std::process::Command::new("pg_config")
                    .arg("--bindir")
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            });
        Self { bindir }
    }

    /// `program` reaching the server of `options` as this process does: its own
    /// credentials and TLS mode (each server has its own URL), in the environment.
    fn command(&self, program: &str, options: &PgConnectOptions) -> tokio::process::Command {
        let path = match &self.bindir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut command = tokio::process::Command::new(path);
        for inherited in ["PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGSERVICE"] {
            command.env_remove(inherited);
        }
        command
            .envs(platform::libpq_environment(options))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// `pg_dump` of the database at `options`, in the exported `snapshot`, to `file`
    /// (custom format, without owners or privileges: the restore grants its own).
    pub(super) async fn dump(
        &self,
        options: &PgConnectOptions,
        snapshot: &str,
        file: &Path,
    ) -> Result<()> {
        self.run(
            "pg_dump",
            options,
            &[
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                &format!("--snapshot={snapshot}"),
                &format!("--file={}", file.to_string_lossy()),
            ],
        )
        .await
    }

    /// `pg_restore` of `file` into the (empty) database at `options`, in one
    /// transaction.
    pub(super) async fn restore(&self, options: &PgConnectOptions, file: &Path) -> Result<()> {
        self.run(
            "pg_restore",
            options,
            &[
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                &format!("--dbname={}", options.get_database().unwrap_or_default()),
                &file.to_string_lossy(),
            ],
        )
        .await
    }

    /// Runs `program args…`; its standard error becomes the error's text.
    pub(super) async fn run(
        &self,
        program: &str,
        options: &PgConnectOptions,
        args: &[&str],
    ) -> Result<()> {
        let output = self
            .command(program, options)
            .args(args)
            .output()
            .await
            .map_err(|e| TenancyError::Command(format!("cannot run {program}: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(TenancyError::Command(format!(
            "{program} failed ({}): {}",
            output.status,
            stderr.trim()
        )))
    }
}

/// Writes a backup of hospital `code` to `output` (which must not exist yet).
pub async fn backup_hospital(
    platform: &Platform,
    tools: &PgTools,
    code: &str,
    output: &Path,
) -> Result<Manifest> {
    let record = platform.directory.get_ready(code).await?;
    if output.exists() {
        return Err(TenancyError::Command(format!(
            "{} exists already; choose another file",
            output.display()
        )));
    }
    let options = platform
        .servers
        .options(&record.db_server)
        .await?
        .database(&record.database_name);
    // Seal what is written so far, so the head in the manifest covers (almost) all of it.
    seal_now(platform, &options).await;

    let mut conn = connect_once(&options).await?;
    let snapshot = export_snapshot(&mut conn).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut conn)
        .await?;
    let head = seal::sealed_head(&mut conn).await?;
    let migration_version: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM public._sqlx_migrations")
            .fetch_one(&mut conn)
            .await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let recorded = seal::recorded_head(&platform.control, code).await?;

    let scratch = tempfile::Builder::new()
        .prefix(".hms-backup-")
        .tempdir_in(parent_of(output))
        .map_err(io_error)?;
    let dump = scratch.path().join(DUMP_ENTRY);
    // While this transaction is open its snapshot can be shared: the dump sees exactly
    // the log counted above.
    let dumped = tools.dump(&options, &snapshot, &dump).await;
    let _ = sqlx::query("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    dumped?;

    let (dump_sha256, dump_bytes) = digest_file(&dump)?;
    let manifest = Manifest {
        format: FORMAT,
        code: record.code.clone(),
        log_identity: record.log_identity().to_owned(),
        name: record.name.clone(),
        plan: record.plan.clone(),
        status: record.status.as_str().to_owned(),
        backed_up_at: Utc::now(),
        server_version,
        migration_version,
        events,
        head: head.map(|h| h.digest()),
        recorded_head: recorded.map(|r| r.head.digest()),
        dump_sha256,
        dump_bytes,
    };
    // Written beside the target and renamed into place: a crash leaves no partial file
    // under the name asked for.
    let partial = scratch.path().join("backup.tar");
    write_archive(&partial, &manifest, &dump)?;
    std::fs::rename(&partial, output).map_err(io_error)?;
    Ok(manifest)
}

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub code: String,
    pub database_name: String,
    pub events: i64,
    pub head: Option<String>,
    /// How many distinct transaction ids the restored log now uses (see the module docs).
    pub rebased_transactions: i64,
}

/// Restores the backup at `input` as a new hospital (`as_code`, else the backup's own
/// code, which must then be free) on database server `server` (the platform's own when
/// `None`).
pub async fn restore_hospital(
    platform: &Platform,
    tools: &PgTools,
    input: &Path,
    as_code: Option<&str>,
    server: Option<&str>,
) -> Result<Restored> {
    // An unknown or draining server is refused before anything is read or written.
    let server = servers::place(&platform.control, Some(server.unwrap_or(DEFAULT_SERVER))).await?;
    let server_options = platform.servers.options(&server).await?;
    let scratch = tempfile::Builder::new()
        .prefix(".hms-restore-")
        .tempdir()
        .map_err(io_error)?;
    let dump = scratch.path().join(DUMP_ENTRY);
    let manifest = read_archive(input, &dump)?;
    let code = HospitalCode::parse(as_code.unwrap_or(&manifest.code))?;
    let code = code.as_str().to_owned();
    if manifest.migration_version > latest_tenant_migration() {
        return Err(TenancyError::Command(format!(
            "the backup was taken with newer migrations ({}) than this binary knows ({}); restore it with a newer hms",
            manifest.migration_version,
            latest_tenant_migration()
        )));
    }
    let head = manifest
        .head
        .as_deref()
        .map(|d| {
            seal::parse_digest(d).ok_or_else(|| bad_manifest(format!("unreadable head {d:?}")))
        })
        .transpose()?;
    let recorded = manifest
        .recorded_head
        .as_deref()
        .map(|d| {
            seal::parse_digest(d)
                .ok_or_else(|| bad_manifest(format!("unreadable recorded head {d:?}")))
        })
        .transpose()?;
    if platform.directory.get(&code).await?.is_some() {
        return Err(TenancyError::AlreadyExists(code));
    }
    let final_name = platform.naming.database_for(&HospitalCode::parse(&code)?);
    let scratch_name = platform.naming.new_restore_database();
    let maintenance = server_options.clone().database("postgres");
    let mut admin = connect_once(&maintenance).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&final_name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        return Err(TenancyError::Command(format!(
            "a database named {final_name} exists already but no hospital {code} does; an operator must look at it first"
        )));
    }
    sqlx::query(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(&scratch_name)
    ))
    .execute(&mut admin)
    .await?;
    let scratch_options = server_options.clone().database(&scratch_name);
    let built = build(
        platform,
        tools,
        &scratch_options,
        &dump,
        &manifest,
        head,
        recorded,
    )
    .await;
    let outcome = match built {
        Ok(rebased) => {
            let names = Names {
                code: &code,
                server: &server,
                scratch: &scratch_name,
                database: &final_name,
            };
            enter(platform, &mut admin, &names, &manifest, head)
                .await
                .map(|()| rebased)
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(rebased_transactions) => Ok(Restored {
            code,
            database_name: final_name,
            events: manifest.events,
            head: manifest.head,
            rebased_transactions,
        }),
        Err(e) => {
            if let Err(drop_error) = drop_database(&mut admin, &scratch_name).await {
                tracing::error!(database = scratch_name, error = %drop_error, "could not drop the scratch database of a refused restore");
            }
            Err(e)
        }
    }
}

/// Restores, migrates, re-bases and verifies the scratch database. Returns how many
/// transaction ids the re-based log uses.
async fn build(
    platform: &Platform,
    tools: &PgTools,
    options: &PgConnectOptions,
    dump: &Path,
    manifest: &Manifest,
    head: Option<SealHead>,
    recorded: Option<SealHead>,
) -> Result<i64> {
    tools.restore(options, dump).await?;
    migrate_tenant_database(options, &platform.naming.writer_role()).await?;
    let mut conn = connect_once(options).await?;
    let result = async {
        let rebased = rebase(&mut conn).await?;
        verify(&mut conn, manifest, head, recorded).await?;
        Ok(rebased)
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Gives the restored events transaction ids of this cluster (see the module docs), in
/// one transaction, and moves the checkpoints and the audit index with them.
pub async fn rebase(conn: &mut PgConnection) -> Result<i64> {
    let mut tx = conn.begin().await?;
    // The log is append-only (a statement trigger); this one rewrite of a column the
    // seals do not cover is deliberate.
    sqlx::query("SET LOCAL hms.log_repair = 'on'")
        .execute(&mut *tx)
        .await?;
    // Runs of increasing position in commit order share one id, so ordering by
    // (new id, position) is the old commit order. Ids start at 3 (0-2 are special).
    sqlx::query(
        "CREATE TEMP TABLE rebase ON COMMIT DROP AS \
         SELECT position, old_tx, 3 + sum(descent) OVER (ORDER BY old_tx, position) AS new_tx \
           FROM (SELECT position, transaction_id AS old_tx, \
                        CASE WHEN position < lag(position) OVER (ORDER BY transaction_id, position) \
                             THEN 1 ELSE 0 END AS descent \
                   FROM public.events) e",
    )
    .execute(&mut *tx)
    .await?;
    let (largest, current): (Option<i64>, i64) = sqlx::query_as(
        "SELECT max(new_tx)::bigint, pg_current_xact_id()::text::bigint FROM rebase",
    )
    .fetch_one(&mut *tx)
    .await?;
    let largest = largest.unwrap_or(0);
    if largest >= current {
        return Err(TenancyError::Command(format!(
            "this PostgreSQL cluster has issued fewer transaction ids ({current}) than the restored log needs ({largest}); restore onto an older cluster"
        )));
    }
    sqlx::query(
        "UPDATE public.events e SET transaction_id = r.new_tx::text::xid8 \
           FROM rebase r WHERE e.position = r.position",
    )
    .execute(&mut *tx)
    .await?;
    // A checkpoint names the last event applied: it moves to that event's new place.
    sqlx::query(
        "UPDATE public.projection_checkpoints c \
            SET last_transaction_id = coalesce(last.new_tx, 0)::text::xid8, \
                last_position = coalesce(last.position, 0) \
           FROM public.projection_checkpoints c0 \
           LEFT JOIN LATERAL (SELECT r.new_tx, r.position FROM rebase r \
                               WHERE (r.old_tx, r.position) <= (c0.last_transaction_id, c0.last_position) \
                               ORDER BY r.old_tx DESC, r.position DESC LIMIT 1) last ON true \
          WHERE c.projector = c0.projector",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE public.audit_index a SET transaction_id = r.new_tx \
           FROM rebase r WHERE a.position = r.position",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(largest.saturating_sub(2))
}

/// Opens a read-only REPEATABLE READ transaction on `conn` and exports its snapshot, for
/// `pg_dump --snapshot` to see exactly what the transaction sees (the caller commits).
pub(super) async fn export_snapshot(conn: &mut PgConnection) -> Result<String> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await?)
}

/// The restored log must be the one backed up: as many events, and the chain recomputed
/// from them reproduces the manifest's head and passes through the recorded one.
async fn verify(
    conn: &mut PgConnection,
    manifest: &Manifest,
    head: Option<SealHead>,
    recorded: Option<SealHead>,
) -> Result<()> {
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut *conn)
        .await?;
    if events != manifest.events {
        return Err(refused(format!(
            "the restored log holds {events} events, the manifest {}",
            manifest.events
        )));
    }
    let sealed = seal::sealed_head(conn).await?;
    if sealed.map(|h| h.digest()) != head.map(|h| h.digest()) {
        return Err(refused(format!(
            "the restored seals end at {}, the manifest's head is {}",
            sealed.map_or("nothing".into(), |h| h.digest()),
            head.map_or("nothing".into(), |h| h.digest())
        )));
    }
    let wanted: Vec<SealHead> = head.into_iter().chain(recorded).collect();
    if let Some(r) = recorded {
        if head.is_none_or(|h| r.chain_index > h.chain_index) {
            return Err(refused(format!(
                "the recorded head {} lies beyond the backup's seals",
                r.digest()
            )));
        }
    }
    check_chain(conn, &wanted, "the restored events", "the manifest says")
        .await
        .map_err(refused)
}

/// The chain recomputed from the events at `conn` must pass through each of `wanted`;
/// otherwise the reason, naming the events (`events`) and where `wanted` came from
/// (`source`).
pub(super) async fn check_chain(
    conn: &mut PgConnection,
    wanted: &[SealHead],
    events: &str,
    source: &str,
) -> std::result::Result<(), String> {
    let indexes: Vec<i64> = wanted.iter().map(|h| h.chain_index).collect();
    let recomputed = seal::recompute_chain_at(conn, &indexes)
        .await
        .map_err(|e| e.to_string())?;
    for (want, got) in wanted.iter().zip(recomputed) {
        if got.map(|g| g.digest()) != Some(want.digest()) {
            return Err(format!(
                "the chain recomputed from {events} gives {} where {source} {}",
                got.map_or("no such event".into(), |g| g.digest()),
                want.digest()
            ));
        }
    }
    Ok(())
}

/// Where a restored hospital goes.
struct Names<'a> {
    code: &'a str,
    server: &'a str,
    scratch: &'a str,
    database: &'a str,
}

/// Renames the scratch database into place and enters the hospital in the directory
/// with its recorded head. On the platform's own server both happen in one platform
/// transaction. On another server the rename is that server's, committed first; should
/// the directory then refuse the hospital, the database is renamed back, so the caller
/// drops the scratch database as for any refused restore.
async fn enter(
    platform: &Platform,
    admin: &mut PgConnection,
    names: &Names<'_>,
    manifest: &Manifest,
    head: Option<SealHead>,
) -> Result<()> {
    let rename = |from: &str, to: &str| {
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(from),
            quote_ident(to)
        )
    };
    let into_place = rename(names.scratch, names.database);
    let here = names.server == DEFAULT_SERVER;
    // A rename waits for nobody: a session still on the new database (autovacuum, after
    // a large restore) makes it fail with 55006 for a moment; then it is tried again.
    let mut attempt = 1;
    let mut tx = loop {
        let mut tx = platform.control.begin().await?;
        let renamed = if here {
            sqlx::query(&into_place).execute(&mut *tx).await
        } else {
            sqlx::query(&into_place).execute(&mut *admin).await
        };
        match renamed {
            Ok(_) => break tx,
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && attempt < RENAME_ATTEMPTS =>
            {
                tx.rollback().await?;
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let entered = register_restored(&mut tx, names, manifest, head).await;
    let entered = match entered {
        Ok(()) => tx.commit().await.map_err(TenancyError::from),
        Err(e) => Err(e),
    };
    if entered.is_err() && !here {
        let back = rename(names.database, names.scratch);
        if let Err(e) = sqlx::query(&back).execute(&mut *admin).await {
            tracing::error!(database = names.database, error = %e, "could not rename a refused restore back to its scratch name; an operator must drop it");
        }
    }
    entered
}

/// The directory row and recorded head of a restored hospital, in `tx`.
async fn register_restored(
    tx: &mut PgConnection,
    names: &Names<'_>,
    manifest: &Manifest,
    head: Option<SealHead>,
) -> Result<()> {
    let code = names.code;
    let status = match manifest.status.as_str() {
        "SUSPENDED" => TenantStatus::Suspended,
        "CANCELLED" => TenantStatus::Cancelled,
        _ => TenantStatus::Active,
    };
    // Under another code, the directory records the code the sealed events keep.
    let log_code = (manifest.log_identity != code).then_some(manifest.log_identity.as_str());
    // Tokens issued before the restore (for a hospital of the same code) stay refused.
    let inserted = sqlx::query(
        "INSERT INTO tenants (code, name, database_name, db_server, status, plan, \
                              provisioning_step, tokens_not_before, log_code) \
         VALUES ($1, $2, $3, $4, $5, $6, 'READY', now(), $7) ON CONFLICT DO NOTHING",
    )
    .bind(code)
    .bind(&manifest.name)
    .bind(names.database)
    .bind(names.server)
    .bind(status.as_str())
    .bind(&manifest.plan)
    .bind(log_code)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TenancyError::AlreadyExists(code.to_owned()));
    }
    if let Some(head) = head {
        sqlx::query(
            "INSERT INTO tenant_log_heads (code, chain_index, position, chain_hash) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(code)
        .bind(head.chain_index)
        .bind(head.position)
        .bind(head.chain_hash.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Runs the sealer over the hospital's log (best effort: a backup without it is still
/// consistent, its head only older).
async fn seal_now(platform: &Platform, options: &PgConnectOptions) {
    if let Err(e) = catch_up_database(platform, options).await {
        tracing::warn!(error = %e, "could not seal the log before the backup");
    }
}

/// Catches the read models and seals of the database at `options` up, on a pool of its
/// own (the database is not one the registry serves, or is served elsewhere).
pub(super) async fn catch_up_database(
    platform: &Platform,
    options: &PgConnectOptions,
) -> Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    let result = platform
        .runner
        .catch_up(&pool)
        .await
        .map(drop)
        .map_err(|e| TenancyError::Command(format!("catching up: {e}")));
    pool.close().await;
    result
}

fn write_archive(path: &Path, manifest: &Manifest, dump: &Path) -> Result<()> {
    // A hospital's whole record: readable by the operator's account only.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(io_error)?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    let json =
        serde_json::to_vec_pretty(manifest).map_err(|e| TenancyError::Command(e.to_string()))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(manifest.backed_up_at.timestamp()).unwrap_or(0));
    header.set_cksum();
    archive
        .append_data(&mut header, MANIFEST_ENTRY, json.as_slice())
        .map_err(io_error)?;
    let mut dump_file = std::fs::File::open(dump).map_err(io_error)?;
    archive
        .append_file(DUMP_ENTRY, &mut dump_file)
        .map_err(io_error)?;
    let mut writer = archive.into_inner().map_err(io_error)?;
    writer.flush().map_err(io_error)?;
    writer
        .into_inner()
        .map_err(|e| io_error(e.into_error()))?
        .sync_all()
        .map_err(io_error)
}

/// Reads the manifest and extracts the dump to `dump`, checking its digest.
fn read_archive(path: &Path, dump: &Path) -> Result<Manifest> {
    let file = std::fs::File::open(path)
        .map_err(|e| TenancyError::Command(format!("cannot read {}: {e}", path.display())))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut dumped = false;
    for entry in archive.entries().map_err(not_a_backup)? {
        let mut entry = entry.map_err(not_a_backup)?;
        let name = entry
            .path()
            .map_err(not_a_backup)?
            .to_string_lossy()
            .into_owned();
        match name.as_str() {
            MANIFEST_ENTRY => {
                let mut json = Vec::new();
                entry
                    .by_ref()
                    .take(1 << 20)
                    .read_to_end(&mut json)
                    .map_err(not_a_backup)?;
                manifest =
                    Some(serde_json::from_slice(&json).map_err(|e| bad_manifest(e.to_string()))?);
            }
            DUMP_ENTRY => {
                let mut out = std::fs::File::create(dump).map_err(io_error)?;
                std::io::copy(&mut entry, &mut out).map_err(not_a_backup)?;
                dumped = true;
            }
            other => return Err(not_a_backup(format!("unexpected entry {other:?}"))),
        }
    }
    let manifest = manifest.ok_or_else(|| not_a_backup("no manifest.json"))?;
    if manifest.format != FORMAT {
        return Err(bad_manifest(format!(
            "format {} (this hms reads {FORMAT})",
            manifest.format
        )));
    }
    if !dumped {
        return Err(not_a_backup("no hospital.dump"));
    }
    let (sha256, bytes) = digest_file(dump)?;
    if sha256 != manifest.dump_sha256 || bytes != manifest.dump_bytes {
        return Err(refused(
            "the dump does not match the manifest's digest: the file is damaged or was changed"
                .to_owned(),
        ));
    }
    Ok(manifest)
}

fn digest_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(io_error)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn io_error(e: std::io::Error) -> TenancyError {
    TenancyError::Command(format!("file error: {e}"))
}

fn not_a_backup(e: impl std::fmt::Display) -> TenancyError {
    TenancyError::Command(format!("not an hms hospital backup: {e}"))
}

fn bad_manifest(reason: String) -> TenancyError {
    TenancyError::Command(format!("the backup's manifest is unusable: {reason}"))
}

fn refused(reason: String) -> TenancyError {
    TenancyError::Command(format!("restore refused, nothing was kept: {reason}"))
}
