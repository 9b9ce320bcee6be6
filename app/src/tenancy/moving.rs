//! Moving a hospital's database to another database server while it keeps serving
//! (`hms move-hospital CODE --to SERVER`).
//!
//! The steps, each recorded in the platform database (`hospital_moves`), so a move
//! interrupted anywhere is resumed or aborted from where it stood:
//!
//! 1. **COPYING**: `pg_dump` of the hospital's database in an exported snapshot S₀,
//!    restored into a scratch database on the target, brought to this binary's
//!    migrations; its events are cut back to those of transactions below a horizon: the
//!    larger of xmin(S₀) and just past the last transaction the dump's read models or
//!    seals reached (the runner and the sealer read below a horizon of the hospital's own
//!    transactions, which can pass the cluster-wide xmin; every transaction of this
//!    database below what they applied is finished, so in S₀), re-based into the target's numbering
//!    ([`super::backup::rebase`]) and the chain recomputed from them checked against the
//!    dump's seals and the platform's recorded head.
//! 2. **COPIED**: rounds while the hospital is served: each copies the events of the
//!    source's transactions between the previous round's horizon and the xmin of a new
//!    snapshot: transactions below a snapshot's xmin are all finished, so each round
//!    appends a complete stretch of the source's log order, which new transaction ids
//!    on the target keep. The target's runner catches its read models and seals up.
//! 3. **HELD**: writes are held on the source: a trigger on the tables commands write
//!    (`events`, `idempotency_keys`, `patient_keys`) refuses them with SQLSTATE HM503,
//!    which every server answers as UNAVAILABLE (retry); creating it waits for the
//!    writers in flight. The rest of the log, the idempotency records, the patient keys
//!    and the sequences are copied; both sides are sealed through their last event and
//!    their heads must be equal (same chain index, position and hash: the same log in the
//!    same order), and the target's seals must hold the platform's recorded head.
//! 4. **SWITCHED**: the copy is renamed to the hospital's database name on the target and
//!    the directory points at it, in the platform's transaction; every server process
//!    follows within [`super::pools::STATUS_RECHECK`], and until then the source keeps
//!    refusing writes. The writes-held window ends here.
//! 5. After that bound the source database is dropped and the move's row deleted.
//!
//! A crash never leaves the hospital written on two servers: until the switch the
//! directory names the source, and from the hold on the source refuses writes. Aborting
//! (before the switch) drops the copy and lifts the hold.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use hms_domain::common::HospitalCode;
use hms_projections::projectors::seal::{self, MissingHead, SealHead};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::backup::{catch_up_database, check_chain, export_snapshot, rebase, PgTools};
use super::directory::TenantRecord;
use super::names::quote_ident;
use super::platform::{connect_once, latest_tenant_migration, migrate_tenant_database};
use super::pools::STATUS_RECHECK;
use super::provisioning::drop_database;
use super::servers;
use super::{Result, TenancyError};
use crate::state::Platform;

/// The SQLSTATE a held or moved-away hospital database refuses writes with.
pub const WRITES_HELD: &str = "HM503";

/// The tables commands write outside the projections: held during the move, in this
/// order (see [`hold`]).
const HELD_TABLES: [&str; 3] = ["events", "idempotency_keys", "patient_keys"];

/// Copied whole while writes are held (small next to the log).
const SIDE_TABLES: [&str; 1] = ["idempotency_keys"];

/// Copied whole with every round's events, from the same snapshot: the projections on
/// the target open an event's sealed personal data with its patient's key, so a key
/// must be there before its events (a missing key reads as erased).
const KEYS_TABLE: &str = "patient_keys";

/// Sequences whose values move with the hospital.
const SEQUENCES: [&str; 2] = ["mrn_seq", "invoice_number_seq"];

/// Rounds of copying while serving stop when one copies at most this many events (or
/// after [`MAX_ROUNDS`]): what is left is copied while writes are held.
const SMALL_ROUND: i64 = 200;
const MAX_ROUNDS: u32 = 10;

/// How long the hold may wait for the writers in flight before it is tried again.
const HOLD_LOCK_TIMEOUT: &str = "2s";
const HOLD_ATTEMPTS: u32 = 5;

/// How long a side's sealer may take to reach its last event while writes are held.
const SEAL_BOUND: Duration = Duration::from_secs(30);

/// How long a rename waits for sessions to leave the copy (autovacuum after a restore).
const RENAME_ATTEMPTS: u32 = 20;

const SELECT_MOVE: &str = "SELECT code, source_server, source_database, target_server, \
     target_scratch, step, copied_below, events_copied FROM hospital_moves WHERE code = $1";

/// Where a move stands (`hospital_moves.step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MoveStep {
    Copying,
    Copied,
    Held,
    Switched,
}

impl MoveStep {
    fn as_str(self) -> &'static str {
        match self {
            MoveStep::Copying => "COPYING",
            MoveStep::Copied => "COPIED",
            MoveStep::Held => "HELD",
            MoveStep::Switched => "SWITCHED",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "COPYING" => Ok(MoveStep::Copying),
            "COPIED" => Ok(MoveStep::Copied),
            "HELD" => Ok(MoveStep::Held),
            "SWITCHED" => Ok(MoveStep::Switched),
            other => Err(TenancyError::Command(format!("unknown move step {other}"))),
        }
    }

    /// `copied`, `held`, `switched` (for `--stop-after`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "copied" => Some(MoveStep::Copied),
            "held" => Some(MoveStep::Held),
            "switched" => Some(MoveStep::Switched),
            _ => None,
        }
    }
}

/// A move's row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct MoveRow {
    code: String,
    source_server: String,
    source_database: String,
    target_server: String,
    target_scratch: String,
    step: String,
    copied_below: Option<i64>,
    events_copied: i64,
}

/// What a move reports as it goes (the CLI prints each).
#[derive(Debug, Clone)]
pub enum MoveProgress {
    Resumed { step: &'static str },
    Copied { events: i64, took: Duration },
    Round { events: i64 },
    Held,
    Verified { head: Option<String> },
    Switched { held: Duration },
    SourceDropped,
}

/// What a finished (or paused) move did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub code: String,
    pub from: String,
    pub to: String,
    /// The step the move stands at (SWITCHED when done).
    pub step: MoveStep,
    pub done: bool,
    pub events: i64,
    /// From the hold on the source to the switch (when both happened in this run).
    pub writes_held: Option<Duration>,
    pub total: Duration,
}

/// Moves hospital `code` to server `to` (or resumes its move in progress, whose target
/// `to` must then name or leave out). With `stop_after`, returns once that step is
/// recorded (an operator's pause; the tests' interruptions).
pub async fn move_hospital(
    platform: &Platform,
    tools: &PgTools,
    code: &str,
    to: Option<&str>,
    stop_after: Option<MoveStep>,
    progress: &(dyn Fn(MoveProgress) + Sync),
) -> Result<MoveReport> {
    let started = Instant::now();
    let code = HospitalCode::parse(code)?.as_str().to_owned();
    let _lock = MoveLock::take(&platform.control, &code).await?;
    let mut row = match load(&platform.control, &code).await? {
        Some(row) => {
            if to.is_some_and(|to| to != row.target_server) {
                return Err(TenancyError::Command(format!(
                    "hospital {code} is being moved to {} already: resume that move or abort it (--abort)",
                    row.target_server
                )));
            }
            progress(MoveProgress::Resumed {
                step: MoveStep::parse(&row.step)?.as_str(),
            });
            row
        }
        None => {
            let to = to.ok_or_else(|| {
                TenancyError::Command(format!(
                    "hospital {code} is not being moved; name the target server (--to)"
                ))
            })?;
            begin(platform, &code, to).await?
        }
    };
    let source = &source_database(platform, &row).await?;
    let target = platform.servers.options(&row.target_server).await?;
    let mut held_at = None;
    let mut writes_held = None;
    loop {
        let step = MoveStep::parse(&row.step)?;
        if stop_after.is_some_and(|s| step >= s) || step == MoveStep::Switched {
            if step == MoveStep::Switched && stop_after.is_none_or(|s| s > MoveStep::Switched) {
                finish(platform, &row, source).await?;
                progress(MoveProgress::SourceDropped);
            }
            let done = step == MoveStep::Switched && stop_after.is_none();
            return Ok(MoveReport {
                code,
                from: row.source_server,
                to: row.target_server,
                step,
                done,
                events: row.events_copied,
                writes_held,
                total: started.elapsed(),
            });
        }
        match step {
            MoveStep::Copying => {
                let began = Instant::now();
                copy(platform, tools, &mut row, source, &target).await?;
                progress(MoveProgress::Copied {
                    events: row.events_copied,
                    took: began.elapsed(),
                });
            }
            MoveStep::Copied => {
                for _ in 0..MAX_ROUNDS {
                    let copied = round(platform, &mut row, source, &target, false).await?;
                    progress(MoveProgress::Round { events: copied });
                    if copied <= SMALL_ROUND {
                        break;
                    }
                }
                // Both sides' projections and seals as far as they go while serving, so
                // the hold has only the last few events to seal.
                catch_up_database(platform, source).await?;
                catch_up_database(platform, &target.clone().database(&row.target_scratch)).await?;
                hold(source).await?;
                held_at = Some(Instant::now());
                set_step(&platform.control, &mut row, MoveStep::Held).await?;
                progress(MoveProgress::Held);
            }
            MoveStep::Held => {
                // Resumed in the hold: the hold is (re)made first; it is idempotent.
                if held_at.is_none() {
                    hold(source).await?;
                    held_at = Some(Instant::now());
                }
                let head = complete(platform, &mut row, source, &target).await?;
                progress(MoveProgress::Verified {
                    head: head.map(|h| h.digest()),
                });
                switch(platform, &mut row, &target).await?;
                let held = held_at.map_or(Duration::ZERO, |t| t.elapsed());
                writes_held = Some(held);
                progress(MoveProgress::Switched { held });
            }
            MoveStep::Switched => unreachable!("returned above"),
        }
    }
}

/// Aborts hospital `code`'s move before its switch: drops the copy and lifts the hold.
pub async fn abort_move(platform: &Platform, code: &str) -> Result<MoveStep> {
    let code = HospitalCode::parse(code)?.as_str().to_owned();
    let _lock = MoveLock::take(&platform.control, &code).await?;
    let row = load(&platform.control, &code)
        .await?
        .ok_or_else(|| TenancyError::Command(format!("hospital {code} is not being moved")))?;
    let step = MoveStep::parse(&row.step)?;
    if step == MoveStep::Switched {
        return Err(TenancyError::Command(format!(
            "hospital {code} is on {} already; finish the move (run it again) and move it back if needed",
            row.target_server
        )));
    }
    let source = &source_database(platform, &row).await?;
    release(source).await?;
    let target = platform.servers.options(&row.target_server).await?;
    let mut admin = connect_once(&target.clone().database("postgres")).await?;
    drop_database(&mut admin, &row.target_scratch).await?;
    let _ = admin.close().await;
    sqlx::query("DELETE FROM hospital_moves WHERE code = $1")
        .bind(&code)
        .execute(&platform.control)
        .await?;
    Ok(step)
}

/// One move of a hospital at a time, over every process: a session-level advisory lock
/// on a connection of its own, held while the move runs.
struct MoveLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl MoveLock {
    async fn take(control: &PgPool, code: &str) -> Result<Self> {
        let mut conn = control.acquire().await?;
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('hms-move:' || $1))")
                .bind(code)
                .fetch_one(&mut *conn)
                .await?;
        if !taken {
            return Err(TenancyError::Command(format!(
                "hospital {code} is being moved by another process"
            )));
        }
        Ok(Self { conn: Some(conn) })
    }
}

impl Drop for MoveLock {
    fn drop(&mut self) {
        // The session lock must not travel back into the pool with the connection.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// The hospital's database on its source server, as the server's owner role.
async fn source_database(platform: &Platform, row: &MoveRow) -> Result<PgConnectOptions> {
    Ok(platform
        .servers
        .options(&row.source_server)
        .await?
        .database(&row.source_database))
}

async fn load(control: &PgPool, code: &str) -> Result<Option<MoveRow>> {
    Ok(sqlx::query_as(SELECT_MOVE)
        .bind(code)
        .fetch_optional(control)
        .await?)
}

async fn set_step(control: &PgPool, row: &mut MoveRow, step: MoveStep) -> Result<()> {
    let switched = step == MoveStep::Switched;
    sqlx::query(
        "UPDATE hospital_moves SET step = $2, updated_at = now(), \
                held_at = CASE WHEN $2 = 'HELD' THEN now() ELSE held_at END, \
                switched_at = CASE WHEN $3 THEN now() ELSE switched_at END \
          WHERE code = $1",
    )
    .bind(&row.code)
    .bind(step.as_str())
    .bind(switched)
    .execute(control)
    .await?;
    row.step = step.as_str().to_owned();
    Ok(())
}

/// Records that the target holds the source's events below `below` (`events` copied in
/// all), at `step`.
async fn record_copied(
    control: &PgPool,
    row: &mut MoveRow,
    step: MoveStep,
    below: i64,
    events: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE hospital_moves SET step = $2, copied_below = $3, events_copied = $4, \
                updated_at = now() WHERE code = $1",
    )
    .bind(&row.code)
    .bind(step.as_str())
    .bind(below)
    .bind(events)
    .execute(control)
    .await?;
    row.step = step.as_str().to_owned();
    row.copied_below = Some(below);
    row.events_copied = events;
    Ok(())
}

/// Checks the move may start and records it.
async fn begin(platform: &Platform, code: &str, to: &str) -> Result<MoveRow> {
    let record: TenantRecord = platform.directory.get_ready(code).await?;
    servers::check_name(to)?;
    if record.db_server == to {
        return Err(TenancyError::Command(format!(
            "hospital {code} is on {to} already"
        )));
    }
    // An unknown, draining or full server is refused here, before anything is copied.
    servers::place(&platform.control, Some(to)).await?;
    let target = platform.servers.options(to).await?;
    let mut admin = connect_once(&target.clone().database("postgres")).await?;
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&record.database_name)
            .fetch_one(&mut admin)
            .await?;
    let _ = admin.close().await;
    if taken {
        return Err(TenancyError::Command(format!(
            "server {to} has a database named {} already; an operator must look at it first",
            record.database_name
        )));
    }
    let row = MoveRow {
        code: code.to_owned(),
        source_server: record.db_server.clone(),
        source_database: record.database_name.clone(),
        target_server: to.to_owned(),
        target_scratch: platform.naming.new_restore_database(),
        step: MoveStep::Copying.as_str().to_owned(),
        copied_below: None,
        events_copied: 0,
    };
    let inserted = sqlx::query(
        "INSERT INTO hospital_moves (code, source_server, source_database, target_server, \
                                     target_scratch, step) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&row.code)
    .bind(&row.source_server)
    .bind(&row.source_database)
    .bind(&row.target_server)
    .bind(&row.target_scratch)
    .bind(&row.step)
    .execute(&platform.control)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TenancyError::Command(format!(
            "hospital {code} is being moved already"
        )));
    }
    Ok(row)
}

/// Step 1: dump, restore, cut back to a horizon, re-base, verify (see the module docs).
async fn copy(
    platform: &Platform,
    tools: &PgTools,
    row: &mut MoveRow,
    source: &PgConnectOptions,
    target: &PgConnectOptions,
) -> Result<()> {
    // The source sealed as far as it goes, so the copy brings its seals along.
    catch_up_database(platform, source).await?;
    let mut admin = connect_once(&target.clone().database("postgres")).await?;
    // A copy left by an interrupted run is started again.
    drop_database(&mut admin, &row.target_scratch).await?;
    sqlx::query(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(&row.target_scratch)
    ))
    .execute(&mut admin)
    .await?;
    let _ = admin.close().await;
    let scratch = target.clone().database(&row.target_scratch);

    let mut conn = connect_once(source).await?;
    let migration: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM public._sqlx_migrations")
            .fetch_one(&mut conn)
            .await?;
    if migration != latest_tenant_migration() {
        return Err(TenancyError::Command(format!(
            "hospital {}'s database is at migration {migration}, this binary's at {}: run `hms migrate` first",
            row.code,
            latest_tenant_migration()
        )));
    }
    // Read before the snapshot is taken: a head is recorded after its seals commit, so
    // these seals and the events they cover are in the snapshot. Read after it, a
    // replica's sealer could have recorded a head beyond the copy's events meanwhile.
    let recorded = seal::recorded_head(&platform.control, &row.code).await?;
    let snapshot = export_snapshot(&mut conn).await?;
    // The runner and the sealer read below a horizon of this database's own transactions
    // in flight, which can pass the snapshot's xmin (that counts other databases' too).
    // What they applied or sealed in this snapshot is committed, and so is every
    // transaction of this database below it (they read below their horizon). The copy
    // reaches at least that far: cut shorter, its read models would hold rows of events
    // that the rounds bring again, to be applied twice, and its seals would cover events
    // it does not hold.
    let horizon: i64 = sqlx::query_scalar(
        "SELECT greatest( \
            pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
            (SELECT max(last_transaction_id::text::bigint) + 1 FROM public.projection_checkpoints), \
            (SELECT e.transaction_id::text::bigint + 1 FROM public.event_seals s \
               JOIN public.events e ON e.position = s.position \
              ORDER BY s.chain_index DESC LIMIT 1))",
    )
    .fetch_one(&mut conn)
    .await?;
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.events WHERE transaction_id < $1::text::xid8",
    )
    .bind(horizon.to_string())
    .fetch_one(&mut conn)
    .await?;
    let head = seal::sealed_head(&mut conn).await?;

    let dir = tempfile::Builder::new()
        .prefix(".hms-move-")
        .tempdir()
        .map_err(|e| TenancyError::Command(format!("cannot make a scratch directory: {e}")))?;
    let dump = dir.path().join("hospital.dump");
    let dumped = tools.dump(source, &snapshot, &dump).await;
    let _ = sqlx::query("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    dumped?;
    tools.restore(&scratch, &dump).await?;
    migrate_tenant_database(&scratch, &platform.naming.writer_role()).await?;

    let mut conn = connect_once(&scratch).await?;
    let checked = async {
        cut_back(&mut conn, horizon).await?;
        rebase(&mut conn).await?;
        let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
            .fetch_one(&mut conn)
            .await?;
        if copied != events {
            return Err(refused(format!(
                "the copy holds {copied} events where the source had {events}"
            )));
        }
        let sealed = seal::sealed_head(&mut conn).await?;
        if sealed.map(|h| h.digest()) != head.map(|h| h.digest()) {
            return Err(refused(format!(
                "the copy's seals end at {}, the source's at {}",
                describe(sealed),
                describe(head)
            )));
        }
        // The horizon covers every seal in the snapshot, and the recorded head was read
        // before it: both heads lie inside the copy.
        let wanted: Vec<SealHead> = head.into_iter().chain(recorded.map(|r| r.head)).collect();
        check_chain(&mut conn, &wanted, "the copy", "the source has")
            .await
            .map_err(refused)
    }
    .await;
    let _ = conn.close().await;
    checked?;
    record_copied(&platform.control, row, MoveStep::Copied, horizon, events).await
}

/// Drops the dump's events of transactions at or above `horizon` (they come again in
/// the rounds, in their place in the log).
async fn cut_back(conn: &mut PgConnection, horizon: i64) -> Result<()> {
    let mut tx = conn.begin().await?;
    // The copy is not served yet; this rewrite of the append-only log is deliberate.
    sqlx::query("SET LOCAL hms.log_repair = 'on'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM public.events WHERE transaction_id >= $1::text::xid8")
        .bind(horizon.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Copies the source's events of transactions from the last horizon on: below a new
/// snapshot's xmin while serving, all of them while writes are held, with the patient
/// keys of the same snapshot. Returns how many events were new to the target.
async fn round(
    platform: &Platform,
    row: &mut MoveRow,
    source: &PgConnectOptions,
    target: &PgConnectOptions,
    held: bool,
) -> Result<i64> {
    let from = row
        .copied_below
        .ok_or_else(|| TenancyError::Command("the move has no copy horizon".into()))?;
    let mut src = connect_once(source).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut src)
        .await?;
    // While held no writer is left (the hold waited for them): everything is final.
    let below: i64 = if held {
        sqlx::query_scalar(
            "SELECT greatest($1, coalesce(max(transaction_id)::text::bigint + 1, $1)) FROM public.events",
        )
        .bind(from)
        .fetch_one(&mut src)
        .await?
    } else {
        // Never below the last horizon: the copy's may be past the cluster's xmin (see
        // `copy`), and a round only moves forward.
        sqlx::query_scalar(
            "SELECT greatest($1, pg_snapshot_xmin(pg_current_snapshot())::text::bigint)",
        )
        .bind(from)
        .fetch_one(&mut src)
        .await?
    };
    let mut dst = connect_once(&target.clone().database(&row.target_scratch)).await?;
    let mut tx = dst.begin().await?;
    replace_table(&mut src, &mut tx, KEYS_TABLE).await?;
    sqlx::query(
        "CREATE TEMP TABLE incoming ON COMMIT DROP AS \
         SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                metadata, position, transaction_id, recorded_at \
           FROM public.events WITH NO DATA",
    )
    .execute(&mut *tx)
    .await?;
    let select = format!(
        "COPY (SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                      metadata, position, transaction_id, recorded_at \
                 FROM public.events \
                WHERE transaction_id >= '{from}'::xid8 AND transaction_id < '{below}'::xid8) \
         TO STDOUT (FORMAT binary)"
    );
    pipe(
        &mut src,
        &select,
        &mut tx,
        "COPY incoming FROM STDIN (FORMAT binary)",
    )
    .await?;
    let _ = sqlx::query("COMMIT").execute(&mut src).await;
    let _ = src.close().await;
    // New ids after the target's largest, one per source transaction, in order: the
    // target reads them in the source's log order. Rows already there (a round repeated
    // after a crash before its horizon was recorded) are a prefix of these and skipped.
    let (base, current): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(max(transaction_id)::text::bigint, 2), pg_current_xact_id()::text::bigint \
           FROM public.events",
    )
    .fetch_one(&mut *tx)
    .await?;
    let added = sqlx::query(
        "INSERT INTO public.events (aggregate_type, aggregate_id, sequence, event_type, \
                                    event_version, payload, metadata, position, transaction_id, \
                                    recorded_at) OVERRIDING SYSTEM VALUE \
         SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                metadata, position, \
                ($1 + dense_rank() OVER (ORDER BY transaction_id))::text::xid8, recorded_at \
           FROM incoming ORDER BY transaction_id, position \
         ON CONFLICT DO NOTHING",
    )
    .bind(base)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    let largest: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(transaction_id)::text::bigint, 0) FROM public.events",
    )
    .fetch_one(&mut *tx)
    .await?;
    if largest >= current {
        return Err(TenancyError::Command(format!(
            "server {} has issued fewer transaction ids ({current}) than the copied log needs ({largest})",
            row.target_server
        )));
    }
    tx.commit().await?;
    let _ = dst.close().await;
    let step = MoveStep::parse(&row.step)?;
    let events = row.events_copied + added;
    record_copied(&platform.control, row, step, below, events).await?;
    Ok(added)
}

/// Streams `COPY … TO STDOUT` on `from` into `COPY … FROM STDIN` on `to`.
/// Replaces the rows of `table` at `to` by those at `from` (binary COPY).
async fn replace_table(from: &mut PgConnection, to: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::query(&format!("TRUNCATE public.{table}"))
        .execute(&mut *to)
        .await?;
    pipe(
        from,
        &format!("COPY public.{table} TO STDOUT (FORMAT binary)"),
        to,
        &format!("COPY public.{table} FROM STDIN (FORMAT binary)"),
    )
    .await
}

async fn pipe(from: &mut PgConnection, out: &str, to: &mut PgConnection, into: &str) -> Result<()> {
    let mut sink = to.copy_in_raw(into).await?;
    let mut stream = from.copy_out_raw(out).await?;
    let piped = async {
        while let Some(chunk) = stream.try_next().await? {
            sink.send(chunk).await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    drop(stream);
    match piped {
        Ok(()) => {
            sink.finish().await?;
            Ok(())
        }
        Err(e) => {
            let _ = sink.abort("the source's copy failed").await;
            Err(e.into())
        }
    }
}

/// Holds writes on the source (see the module docs). Idempotent.
async fn hold(source: &PgConnectOptions) -> Result<()> {
    let mut conn = connect_once(source).await?;
    let mut attempt = 1;
    let result = loop {
        let held = async {
            let mut tx = conn.begin().await?;
            sqlx::query(&format!("SET LOCAL lock_timeout = '{HOLD_LOCK_TIMEOUT}'"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE OR REPLACE FUNCTION public.hms_writes_held() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN \
                   RAISE EXCEPTION 'the hospital''s database is being moved: writes are held, retry shortly' \
                     USING ERRCODE = '{WRITES_HELD}'; \
                 END $$"
            ))
            .execute(&mut *tx)
            .await?;
            // The log first, in the order a writer takes these tables: the one statement
            // that writes two of them (an append with a new patient's key) locks the log,
            // then the keys. Taken the other way round, the hold held the keys while that
            // append held the log, and one of the two was aborted as a deadlock (seen in
            // CI: the command's answer was INTERNAL). A deadlock or a lock timeout here is
            // tried again.
            for table in HELD_TABLES {
                sqlx::query(&format!(
                    "CREATE OR REPLACE TRIGGER hms_writes_held BEFORE INSERT OR UPDATE OR DELETE \
                     ON public.{table} FOR EACH STATEMENT EXECUTE FUNCTION public.hms_writes_held()"
                ))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await;
        match held {
            Ok(()) => break Ok(()),
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("55P03" | "40P01"))
                    && attempt < HOLD_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => break Err(e.into()),
        }
    };
    let _ = conn.close().await;
    result
}

/// Lifts the hold on the source (an aborted move).
async fn release(source: &PgConnectOptions) -> Result<()> {
    let mut conn = connect_once(source).await?;
    let mut tx = conn.begin().await?;
    for table in HELD_TABLES {
        sqlx::query(&format!(
            "DROP TRIGGER IF EXISTS hms_writes_held ON public.{table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DROP FUNCTION IF EXISTS public.hms_writes_held()")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let _ = conn.close().await;
    Ok(())
}

/// Step 3, writes held: the rest of the log and the keys, the idempotency records and
/// sequences; both sides sealed through their ends and compared; the recorded head
/// checked on the target.
async fn complete(
    platform: &Platform,
    row: &mut MoveRow,
    source: &PgConnectOptions,
    target: &PgConnectOptions,
) -> Result<Option<SealHead>> {
    round(platform, row, source, target, true).await?;
    let scratch = target.clone().database(&row.target_scratch);
    let mut src = connect_once(source).await?;
    let mut dst = connect_once(&scratch).await?;
    let mut tx = dst.begin().await?;
    for table in SIDE_TABLES {
        replace_table(&mut src, &mut tx, table).await?;
    }
    let position_seq: String =
        sqlx::query_scalar("SELECT pg_get_serial_sequence('public.events', 'position')")
            .fetch_one(&mut src)
            .await?;
    for sequence in SEQUENCES.iter().copied().chain([position_seq.as_str()]) {
        let (last, called): (i64, bool) =
            sqlx::query_as(&format!("SELECT last_value, is_called FROM {sequence}"))
                .fetch_one(&mut src)
                .await?;
        sqlx::query("SELECT setval($1::regclass, $2, $3)")
            .bind(sequence)
            .bind(last)
            .bind(called)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let _ = src.close().await;
    let _ = dst.close().await;

    let source_pool = temporary_pool(source).await?;
    let source_head = seal_through_end(platform, &source_pool).await;
    source_pool.close().await;
    let source_head = source_head?;
    let target_pool = temporary_pool(&scratch).await?;
    let checked = async {
        let target_head = seal_through_end(platform, &target_pool).await?;
        if source_head.map(|h| h.digest()) != target_head.map(|h| h.digest()) {
            return Err(refused(format!(
                "the copy's log ends at {}, the source's at {}",
                describe(target_head),
                describe(source_head)
            )));
        }
        // The platform's recorded head must be in the copy's seals, and moves forward.
        seal::record_head(
            &platform.control,
            &row.code,
            &target_pool,
            MissingHead::Accept,
        )
        .await
        .map_err(|e| refused(e.to_string()))?;
        Ok(target_head)
    }
    .await;
    target_pool.close().await;
    checked
}

/// Runs the projections (the sealer among them) of the database behind `pool` until its
/// seals reach its last event in log order. Returns its head.
async fn seal_through_end(platform: &Platform, pool: &PgPool) -> Result<Option<SealHead>> {
    let deadline = Instant::now() + SEAL_BOUND;
    loop {
        platform
            .runner
            .catch_up(pool)
            .await
            .map_err(|e| TenancyError::Command(format!("catching up: {e}")))?;
        let mut conn = pool.acquire().await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM public.events ORDER BY transaction_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        let head = seal::sealed_head(&mut conn).await?;
        if head.map(|h| h.position) == last {
            return Ok(head);
        }
        if Instant::now() > deadline {
            return Err(TenancyError::Command(format!(
                "the seals stopped at {} before the last event",
                describe(head)
            )));
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn temporary_pool(options: &PgConnectOptions) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?)
}

/// Step 4: the copy takes the hospital's database name on the target, and the directory
/// points at it.
async fn switch(platform: &Platform, row: &mut MoveRow, target: &PgConnectOptions) -> Result<()> {
    let mut admin = connect_once(&target.clone().database("postgres")).await?;
    let exists = |name: String| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(name)
    };
    let scratch_there = exists(row.target_scratch.clone())
        .fetch_one(&mut admin)
        .await?;
    // A run interrupted between the rename and the directory's switch renamed it already.
    if scratch_there {
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&row.target_scratch),
            quote_ident(&row.source_database)
        );
        let mut attempt = 1;
        loop {
            match sqlx::query(&rename).execute(&mut admin).await {
                Ok(_) => break,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55006") && attempt < RENAME_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    } else if !exists(row.source_database.clone())
        .fetch_one(&mut admin)
        .await?
    {
        return Err(TenancyError::Command(format!(
            "the copy of {} is missing on {}: abort the move (--abort) and start again",
            row.code, row.target_server
        )));
    }
    let _ = admin.close().await;
    let mut tx = platform.control.begin().await?;
    sqlx::query("UPDATE tenants SET db_server = $2, updated_at = now() WHERE code = $1")
        .bind(&row.code)
        .bind(&row.target_server)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE hospital_moves SET step = 'SWITCHED', switched_at = now(), updated_at = now() \
          WHERE code = $1",
    )
    .bind(&row.code)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    row.step = MoveStep::Switched.as_str().to_owned();
    Ok(())
}

/// Step 5: once every server process has followed the directory, the source goes.
async fn finish(platform: &Platform, row: &MoveRow, source: &PgConnectOptions) -> Result<()> {
    tokio::time::sleep(STATUS_RECHECK + Duration::from_secs(1)).await;
    let maintenance = source.clone().database("postgres");
    let mut admin = connect_once(&maintenance).await?;
    drop_database(&mut admin, &row.source_database).await?;
    let _ = admin.close().await;
    sqlx::query("DELETE FROM hospital_moves WHERE code = $1")
        .bind(&row.code)
        .execute(&platform.control)
        .await?;
    Ok(())
}

fn describe(head: Option<SealHead>) -> String {
    head.map_or_else(|| "nothing".to_owned(), |h| h.digest())
}

fn refused(reason: String) -> TenancyError {
    TenancyError::Command(format!("the move is refused: {reason}"))
}
