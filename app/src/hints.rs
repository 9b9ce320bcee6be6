//! "Hospital X has new events": a hint sent on one channel of the platform database after
//! a commit, so every server process's projection daemon catches that hospital up soon.
//! One channel for all tenants (`LISTEN` is per database: a listener per tenant database
//! would pin a connection per tenant). Best effort: the daemon's timer covers a lost hint.
//!
//! Hints are coalesced per hospital: while one is waiting to be sent, later commits ride
//! on it (it is sent after all of them), so a busy hospital costs the platform database
//! one statement per send, not one per command. The sending process's own daemon acts on
//! it too: the commands caught up only the read models, and the daemon's full catch-up
//! seals the new events. A hint names its sender (`CODE REPLICA`), so the other
//! processes leave that work to it while it is alive ([`crate::workers::replicas`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use uuid::Uuid;

/// The platform-database channel carrying "tenant X has new events" hints.
pub const CHANNEL: &str = "hms_events";

#[derive(Clone)]
pub struct Hints {
    control: PgPool,
    /// This process (see [`crate::workers::replicas`]).
    replica: Uuid,
    /// Hospitals with a hint queued but not sent yet.
    queued: Arc<Mutex<HashSet<String>>>,
}

impl Hints {
    pub fn new(control: PgPool, replica: Uuid) -> Self {
        Self {
            control,
            replica,
            queued: Arc::default(),
        }
    }

    /// The id this process sends its hints under.
    pub fn replica(&self) -> Uuid {
        self.replica
    }

    /// Tells every server process that `code` has new events committed. Returns at once;
    /// the hint is sent in the background, after every commit that precedes this call.
    pub fn notify(&self, code: &str) {
        let newly_queued = self.lock().insert(code.to_owned());
        if !newly_queued {
            // The queued hint is sent after this commit too: it covers it.
            return;
        }
        let hints = self.clone();
        let code = code.to_owned();
        tokio::spawn(async move {
            // Unqueued before sending: a commit from now on queues a hint of its own.
            hints.lock().remove(&code);
            hints.send(&code).await;
        });
    }

    async fn send(&self, code: &str) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{code} {}", self.replica))
            .execute(&self.control)
            .await
        {
            tracing::debug!(error = %e, code, "could not send the projection hint");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
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
