//! Spare tenant databases: copies of the migrated template made ahead of time, so that
//! onboarding a hospital renames one instead of waiting for `CREATE DATABASE` (the
//! largest part of onboarding). `HMS_SPARE_DATABASES` says how many to keep; `hms serve`
//! refills them in the background.
//!
//! - A spare is usable once its row is in `spare_databases`: the copy exists, it was
//!   connected to once (so the hospital's first session does not pay for building the
//!   database's relation cache file, and the projections' checkpoints are in place), and
//!   nobody is connected to it any more (a rename waits for other sessions to leave).
//! - Taking one is one platform-database transaction: delete its row, `ALTER DATABASE
//!   spare RENAME TO tenant` (transactional, unlike `CREATE DATABASE`: `pg_database` is a
//!   shared catalog), record the hospital's MIGRATED step. A crash before the commit
//!   leaves the spare as it was; after it, the hospital resumes from MIGRATED. If the
//!   rename fails (the tenant's name is taken, someone is connected to the spare), the
//!   transaction is rolled back and provisioning copies the template as usual.
//! - Spares are kept on the platform's own server only (`default`): the rename must be in
//!   the platform database's transaction. A hospital placed on another server is copied
//!   from that server's template.
//! - Refilling and taking happen under the provisioning lock, so a refill never sees a
//!   spare another process is still making: a database named like a spare without a row
//!   is the leftover of an interrupted refill and is dropped, as is a row whose database
//!   is gone and a spare copied from an older template.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tokio::task::JoinHandle;

use super::directory::ProvisioningStep;
use super::names::quote_ident;
use super::platform;
use super::provisioning::{record_step, Provisioner};
use super::servers::DEFAULT_SERVER;
use super::{Result, TenancyError};

/// How long a new spare may take to be left by its first session.
const UNUSED_WITHIN: Duration = Duration::from_secs(5);

/// What one [`Provisioner::refill_spares`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpareRefill {
    pub created: usize,
    pub dropped: usize,
}

impl Provisioner {
    /// Renames a usable spare to `database` and records `code` as MIGRATED, in one
    /// transaction. `false` (and nothing changed) when spares are off, none is usable,
    /// or the rename was refused. The caller holds the provisioning lock.
    pub(super) async fn take_spare(&self, code: &str, database: &str) -> Result<bool> {
        if self.spares_to_keep == 0 {
            return Ok(false);
        }
        let mut tx = self.control.begin().await?;
        let spare: Option<String> = sqlx::query_scalar(
            "DELETE FROM spare_databases WHERE database_name = ( \
                 SELECT database_name FROM spare_databases \
                  WHERE migration_version = $1 AND starts_with(database_name, $2) \
                  ORDER BY created_at, database_name LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING database_name",
        )
        .bind(platform::latest_tenant_migration())
        .bind(self.naming.spare_prefix())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(spare) = spare else {
            tx.rollback().await?;
            return Ok(false);
        };
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&spare),
            quote_ident(database)
        );
        match (&mut *tx).execute(rename.as_str()).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) => {
                tx.rollback().await?;
                tracing::warn!(spare, database, error = %e, "could not rename a spare database; going on without it");
                if e.code().as_deref() == Some("3D000") {
                    // The spare is gone: forget it.
                    sqlx::query("DELETE FROM spare_databases WHERE database_name = $1")
                        .bind(&spare)
                        .execute(&self.control)
                        .await?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        record_step(&mut *tx, code, ProvisioningStep::Migrated).await?;
        tx.commit().await?;
        tracing::debug!(spare, database, "spare database renamed");
        self.spare_taken.notify_one();
        Ok(true)
    }

    /// Brings the spares to `spares_to_keep` usable ones: drops leftovers of interrupted
    /// refills, rows whose database is gone and spares of an older template, then makes
    /// the missing ones, one per hold of the provisioning lock (so an onboarding waits
    /// for at most one copy). With none to keep, drops every spare.
    pub async fn refill_spares(&self) -> Result<SpareRefill> {
        let mut report = SpareRefill {
            dropped: self.locked(self.discard_unusable_spares()).await?,
            ..SpareRefill::default()
        };
        loop {
            let made = self
                .locked(async {
                    if self.usable_spares().await? >= i64::from(self.spares_to_keep) {
                        return Ok(false);
                    }
                    self.make_spare().await?;
                    Ok(true)
                })
                .await?;
            if !made {
                return Ok(report);
            }
            report.created += 1;
        }
    }

    /// Names of the usable spares, oldest first.
    pub async fn spare_databases(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT database_name FROM spare_databases \
              WHERE migration_version = $1 AND starts_with(database_name, $2) \
              ORDER BY created_at, database_name",
        )
        .bind(platform::latest_tenant_migration())
        .bind(self.naming.spare_prefix())
        .fetch_all(&self.control)
        .await?)
    }

    /// Refills the spares now, after each one is used, and every `period` (which also
    /// retries a refill that failed). Runs until the handle is aborted.
    pub fn spawn_spare_refiller(&self, period: Duration) -> JoinHandle<()> {
        let provisioner = self.clone();
        tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                match provisioner.refill_spares().await {
                    Ok(SpareRefill {
                        created: 0,
                        dropped: 0,
                    }) => {}
                    Ok(done) => {
                        crate::telemetry::spares_changed(done.created, done.dropped);
                        if done.created > 0 {
                            crate::telemetry::spares_made(done.created, started.elapsed());
                        }
                        tracing::info!(
                            created = done.created,
                            dropped = done.dropped,
                            "spare databases refilled"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "refilling spare databases failed"),
                }
                tokio::select! {
                    _ = provisioner.spare_taken.notified() => {}
                    _ = tokio::time::sleep(period) => {}
                }
            }
        })
    }

    async fn usable_spares(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM spare_databases \
              WHERE migration_version = $1 AND starts_with(database_name, $2)",
        )
        .bind(platform::latest_tenant_migration())
        .bind(self.naming.spare_prefix())
        .fetch_one(&self.control)
        .await?)
    }

    /// Under the provisioning lock. A row goes before its database, so an interruption
    /// in between leaves a database without a row, which the next refill drops.
    async fn discard_unusable_spares(&self) -> Result<usize> {
        let prefix = self.naming.spare_prefix();
        let latest = platform::latest_tenant_migration();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT database_name, migration_version FROM spare_databases \
              WHERE starts_with(database_name, $1)",
        )
        .bind(&prefix)
        .fetch_all(&self.control)
        .await?;
        let mut conn = self.control.acquire().await?;
        let databases: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(&prefix)
                .fetch_all(&mut *conn)
                .await?;
        let mut kept = Vec::new();
        for (name, version) in rows {
            // A newer binary's spares are left alone (and not used here).
            let usable = self.spares_to_keep > 0 && version >= latest && databases.contains(&name);
            if usable {
                kept.push(name);
            } else {
                sqlx::query("DELETE FROM spare_databases WHERE database_name = $1")
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        let mut dropped = 0;
        for name in databases.iter().filter(|d| !kept.contains(d)) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
            conn.execute(sql.as_str()).await?;
            tracing::info!(database = name, "dropped an unusable spare database");
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Under the provisioning lock: copies the template, opens and leaves the copy once,
    /// then records it as usable.
    async fn make_spare(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let name = self.naming.new_spare_database();
        let mut conn = self.control.acquire().await?;
        if !self.copy_template(&mut conn, DEFAULT_SERVER, &name).await? {
            return Err(TenancyError::Command(format!(
                "spare database {name} exists already"
            )));
        }
        drop(conn);
        let copied_at = started.elapsed();
        // The first session builds the database's relation cache file, and the runner
        // ensures its checkpoints (the log is empty): the hospital's first session
        // then does neither.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.servers.options(DEFAULT_SERVER).await?.database(&name))
            .await?;
        let warmed = self.runner.catch_up(&pool).await;
        // `close` can miss a connection that was on its way back to the pool (sqlx
        // 0.8.6); dropping the pool drops it too.
        pool.close().await;
        drop(pool);
        warmed.map_err(|e| TenancyError::Command(format!("preparing a spare failed: {e}")))?;
        let warmed_at = started.elapsed();
        self.wait_until_unused(&name).await?;
        tracing::debug!(
            spare = name,
            copied_ms = copied_at.as_secs_f64() * 1e3,
            warmed_ms = warmed_at.as_secs_f64() * 1e3,
            unused_ms = started.elapsed().as_secs_f64() * 1e3,
            "spare database made"
        );
        sqlx::query(
            "INSERT INTO spare_databases (database_name, migration_version) VALUES ($1, $2)",
        )
        .bind(&name)
        .bind(platform::latest_tenant_migration())
        .execute(&self.control)
        .await?;
        Ok(())
    }

    /// A closed session's backend leaves a moment later; renaming the database before
    /// would wait (PostgreSQL polls in 100 ms steps) or fail.
    async fn wait_until_unused(&self, database: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + UNUSED_WITHIN;
        let mut conn = self.control.acquire().await?;
        loop {
            let sessions: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(database)
                    .fetch_one(&mut *conn)
                    .await?;
            if sessions == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TenancyError::Command(format!(
                    "spare database {database} is still in use after {UNUSED_WITHIN:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
