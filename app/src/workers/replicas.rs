//! The platform's server processes ("replicas") and their heartbeats (`replicas` in the
//! platform database).
//!
//! Each `hms serve` has an id for its lifetime, sent with every hint it gives ("hospital
//! X has new events", [`crate::hints`]). A replica seals and catches up after its own
//! writes; the others only note the hint. Should the writer stop beating (it died, or
//! it was killed with `kill -9`) or do no background work (HMS_BACKGROUND_WORK=false),
//! another replica does that hospital's catch-up within [`TAKEOVER_AFTER`] plus a daemon
//! tick. Nothing is applied twice: every catch-up runs under the projectors' advisory
//! locks in the hospital's database and moves their checkpoints in the same transaction.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica silent this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);
/// How long another replica's hint waits before its writer is asked whether it is alive.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(3);

/// Records this replica and keeps its heartbeat until the handle is aborted; drops the
/// rows of replicas silent for an hour.
pub fn spawn_heartbeat(control: PgPool, id: Uuid, background: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        loop {
            tick.tick().await;
            let beat = sqlx::query(
                "INSERT INTO replicas (id, background) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET last_seen = now(), background = $2",
            )
            .bind(id)
            .bind(background)
            .execute(&control)
            .await;
            if let Err(e) = beat {
                tracing::warn!(error = %e, "could not record this replica's heartbeat");
            }
            if beats.is_multiple_of(900) {
                let _ =
                    sqlx::query("DELETE FROM replicas WHERE last_seen < now() - interval '1 hour'")
                        .execute(&control)
                        .await;
            }
            beats += 1;
        }
    })
}

/// Forgets this replica (at a graceful stop): its hints are taken over at once.
pub async fn leave(control: &PgPool, id: Uuid) {
    if let Err(e) = sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(id)
        .execute(control)
        .await
    {
        tracing::warn!(error = %e, "could not remove this replica's heartbeat");
    }
    // Its periodic work passes to another replica at once, not when the leases expire.
    if let Err(e) = sqlx::query("DELETE FROM background_leases WHERE holder = $1")
        .bind(id)
        .execute(control)
        .await
    {
        tracing::warn!(error = %e, "could not release this replica's leases");
    }
}

/// The replicas alive now that do their own background work.
pub async fn working(control: &PgPool) -> Result<HashSet<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM replicas WHERE background \
            AND last_seen > now() - make_interval(secs => $1)",
    )
    .bind(DEAD_AFTER.as_secs_f64())
    .fetch_all(control)
    .await?;
    Ok(ids.into_iter().collect())
}
