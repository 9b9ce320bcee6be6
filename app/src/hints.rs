//! "Hospital X has new events": a hint sent on one channel of the platform database after
//! a commit, so every server process's projection daemon catches that hospital up soon.
//! One channel for all tenants (`LISTEN` is per database: a listener per tenant database
//! would pin a connection per tenant). Best effort: the daemon's timer covers a lost hint.
//!
//! Hints are batched ([`crate::batching`]): every hospital queued since the last send goes
//! in one statement, each hospital once however many commits it had meanwhile (the hint
//! is sent after all of them). Sends are [`SPACING`] apart at least: what a hint starts
//! is paced anyway (see there), so a send per flush, hundreds a second under load, cost
//! the platform database a statement and every listener a wake-up for nothing. The
//! sending process's own daemon acts on its hints too:
//! the commands caught up only the read models, and the daemon's full catch-up seals the
//! new events. A hint names its sender (`CODE REPLICA`), so the other processes leave that
//! work to it while it is alive ([`crate::workers::replicas`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::batching::Batcher;

/// The platform-database channel carrying "tenant X has new events" hints.
pub const CHANNEL: &str = "hms_events";

/// The least time between two sends of this process's hints. A hint's catch-up is paced
/// at one per hospital every 250 ms by its own sender's daemon
/// ([`crate::workers::projection_daemon`]), and only noted by the other processes, so
/// this delays no work that would have run sooner; the first hint after a quiet spell
/// still goes at once.
pub const SPACING: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct Hints {
    /// This process (see [`crate::workers::replicas`]).
    replica: Uuid,
    queued: Arc<Batcher<String>>,
}

impl Hints {
    pub fn new(control: PgPool, replica: Uuid) -> Self {
        let queued = Batcher::spaced(SPACING, move |mut codes: Vec<String>| {
            let control = control.clone();
            async move {
                codes.sort_unstable();
                codes.dedup();
                send(&control, replica, &codes).await;
            }
        });
        Self {
            replica,
            queued: Arc::new(queued),
        }
    }

    /// The id this process sends its hints under.
    pub fn replica(&self) -> Uuid {
        self.replica
    }

    /// Tells every server process that `code` has new events committed. Returns at once;
    /// the hint is sent in the background, after every commit that precedes this call.
    pub fn notify(&self, code: &str) {
        self.queued.push(code.to_owned());
    }
}

async fn send(control: &PgPool, replica: Uuid, codes: &[String]) {
    if let Err(e) =
        sqlx::query("SELECT pg_notify($1, code || ' ' || $3) FROM unnest($2::text[]) AS code")
            .bind(CHANNEL)
            .bind(codes)
            .bind(replica.to_string())
            .execute(control)
            .await
    {
        tracing::debug!(error = %e, hospitals = codes.len(), "could not send the projection hints");
    }
}

/// A hint as received: the hospital, and the replica that sent it (`None` from a sender
/// that names none).
pub fn parse(payload: &str) -> (&str, Option<Uuid>) {
    match payload.split_once(' ') {
        Some((code, sender)) => (code, Uuid::parse_str(sender).ok()),
        None => (payload, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_names_its_hospital_and_sender() {
        let id = Uuid::new_v4();
        assert_eq!(parse(&format!("DMC001 {id}")), ("DMC001", Some(id)));
        assert_eq!(parse("DMC001"), ("DMC001", None));
        assert_eq!(parse("DMC001 garbage"), ("DMC001", None));
    }
}
