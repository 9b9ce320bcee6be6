//! The checkpointed projection runner.
//!
//! For each projector, a batch is one transaction: take the projector's advisory lock
//! (transaction-scoped, so no connection is pinned and only one process advances a
//! projector at a time), read the events after its checkpoint, apply them, move the
//! checkpoint, commit. A crash anywhere rolls all of it back together: nothing is lost
//! and nothing is applied twice. A projector that fails on an event stops there, with
//! the failure recorded on its checkpoint row; the other projectors go on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use crate::log::{self, LogCursor, StoredEvent};
use crate::{ProjectionError, Result};

/// Events read per transaction. Large enough to amortise the round trips, small enough
/// to keep transactions (which hold back every tenant's readers, see DESIGN.md) short.
const BATCH_SIZE: i64 = 500;

/// A fold from events to SQL. It must be deterministic and free of side effects outside
/// the given transaction, so that replaying the log always gives the same rows.
#[async_trait]
pub trait Projector: Send + Sync {
    /// Persisted identity of the projector's checkpoint: never rename.
    fn name(&self) -> &'static str;

    /// Applies one event (of any aggregate type: skip the ones that don't concern you).
    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()>;
}

/// What one `catch_up` did for one projector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorProgress {
    pub projector: &'static str,
    pub applied: u64,
    pub checkpoint: LogCursor,
    /// Another process holds this projector's lock; it will do the work.
    pub busy: bool,
}

#[derive(Clone)]
pub struct ProjectionRunner {
    projectors: Arc<Vec<Box<dyn Projector>>>,
}

impl ProjectionRunner {
    pub fn new(projectors: Vec<Box<dyn Projector>>) -> Self {
        Self {
            projectors: Arc::new(projectors),
        }
    }

    pub fn projector_names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// Applies every readable event to every projector. A failing projector is recorded
    /// and reported in the result; the others are still brought up to date.
    pub async fn catch_up(&self, pool: &PgPool) -> Result<Vec<ProjectorProgress>> {
        let mut progress = Vec::with_capacity(self.projectors.len());
        let mut first_failure = None;
        for projector in self.projectors.iter() {
            match catch_up_one(pool, projector.as_ref()).await {
                Ok(p) => progress.push(p),
                Err(e) => {
                    tracing::error!(projector = projector.name(), error = %e, "projector failed");
                    first_failure.get_or_insert(e);
                }
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(progress),
        }
    }

    /// Catches up until every projector's checkpoint has reached `target` (an event the
    /// caller wrote), or fails after `timeout`. Events of transactions still in flight
    /// elsewhere hold the log back, hence the polling.
    pub async fn catch_up_through(
        &self,
        pool: &PgPool,
        target: LogCursor,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let progress = self.catch_up(pool).await?;
            let lagging = progress.iter().any(|p| p.busy || p.checkpoint < target);
            if !lagging {
                // A busy projector may have passed the target in the other process:
                // confirm from the checkpoint table.
                return Ok(());
            }
            if self.all_reached(pool, target).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProjectionError::CatchUpTimeout(timeout));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn all_reached(&self, pool: &PgPool, target: LogCursor) -> Result<bool> {
        let names = self.projector_names();
        let reached: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_checkpoints \
              WHERE projector = ANY($1) \
                AND (last_transaction_id, last_position) >= ($2::text::xid8, $3)",
        )
        .bind(&names)
        .bind(target.transaction_id.to_string())
        .bind(target.position)
        .fetch_one(pool)
        .await?;
        Ok(reached == i64::try_from(names.len()).unwrap_or(i64::MAX))
    }
}

async fn catch_up_one(pool: &PgPool, projector: &dyn Projector) -> Result<ProjectorProgress> {
    let name = projector.name();
    sqlx::query(
        "INSERT INTO projection_checkpoints (projector) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .execute(pool)
    .await?;
    let mut applied = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('hms.projector.' || $1, 0))",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let checkpoint = read_checkpoint(&mut tx, name).await?;
        if !locked {
            return Ok(ProjectorProgress {
                projector: name,
                applied,
                checkpoint,
                busy: true,
            });
        }
        let batch = log::read_batch(&mut tx, checkpoint, BATCH_SIZE).await?;
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            tx.commit().await?;
            return Ok(ProjectorProgress {
                projector: name,
                applied,
                checkpoint,
                busy: false,
            });
        };
        for event in &batch {
            if let Err(e) = projector.apply(&mut tx, event).await {
                drop(tx);
                record_failure(pool, name, event.position, &e).await;
                return Err(ProjectionError::ProjectorFailed {
                    projector: name,
                    position: event.position,
                    message: e.to_string(),
                });
            }
        }
        sqlx::query(
            "UPDATE projection_checkpoints \
                SET last_transaction_id = $2::text::xid8, last_position = $3, \
                    events_applied = events_applied + $4, updated_at = now(), \
                    failing_position = NULL, last_error = NULL \
              WHERE projector = $1",
        )
        .bind(name)
        .bind(last.transaction_id.to_string())
        .bind(last.position)
        .bind(i64::try_from(batch.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        applied += batch.len() as u64;
        if (batch.len() as i64) < BATCH_SIZE {
            return Ok(ProjectorProgress {
                projector: name,
                applied,
                checkpoint: last,
                busy: false,
            });
        }
    }
}

async fn read_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogCursor> {
    let (transaction_id, position): (i64, i64) = sqlx::query_as(
        "SELECT last_transaction_id::text::bigint, last_position \
           FROM projection_checkpoints WHERE projector = $1",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(LogCursor {
        transaction_id,
        position,
    })
}

/// Best effort: the failure is already logged and returned; this makes it visible to
/// health checks and operators.
async fn record_failure(pool: &PgPool, name: &str, position: i64, error: &ProjectionError) {
    let result = sqlx::query(
        "UPDATE projection_checkpoints SET failing_position = $2, last_error = $3, updated_at = now() \
          WHERE projector = $1",
    )
    .bind(name)
    .bind(position)
    .bind(error.to_string())
    .execute(pool)
    .await;
    if let Err(e) = result {
        tracing::warn!(projector = name, error = %e, "could not record projector failure");
    }
}
