//! "Hospital X has new events": a hint sent on one channel of the platform database after
//! a commit, so every server process's projection daemon catches that hospital up soon.
//! One channel for all tenants (`LISTEN` is per database: a listener per tenant database
//! would pin a connection per tenant). Best effort: the daemon's timer covers a lost hint.
//!
//! Hints are batched: one sender per process sends every hospital queued since its last
//! send in one statement, and a commit while a hospital's hint is queued rides on it (the
//! hint is sent after all of them). Under load the batches grow by themselves (group
//! commit: whatever queues while a send is in flight goes with the next one), so a busy
//! process costs the platform database one statement per round trip, not one per command
//! or per hospital. The sending process's own daemon acts on its hints too: the commands
//! caught up only the read models, and the daemon's full catch-up seals the new events.
//! A hint names its sender (`CODE REPLICA`), so the other processes leave that work to it
//! while it is alive ([`crate::workers::replicas`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

/// The platform-database channel carrying "tenant X has new events" hints.
pub const CHANNEL: &str = "hms_events";

#[derive(Clone)]
pub struct Hints {
    inner: Arc<Inner>,
}

struct Inner {
    control: PgPool,
    /// This process (see [`crate::workers::replicas`]).
    replica: Uuid,
    /// Hospitals with a hint queued but not sent yet.
    queued: Mutex<HashSet<String>>,
    /// Wakes the sender: something was queued, or the hints are dropped.
    wake: Arc<Notify>,
    sender_started: std::sync::Once,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender holds only a weak reference: wake it so that it sees it is alone.
        self.wake.notify_one();
    }
}

impl Hints {
    pub fn new(control: PgPool, replica: Uuid) -> Self {
        Self {
            inner: Arc::new(Inner {
                control,
                replica,
                queued: Mutex::default(),
                wake: Arc::default(),
                sender_started: std::sync::Once::new(),
            }),
        }
    }

    /// The id this process sends its hints under.
    pub fn replica(&self) -> Uuid {
        self.inner.replica
    }

    /// Tells every server process that `code` has new events committed. Returns at once;
    /// the hint is sent in the background, after every commit that precedes this call.
    pub fn notify(&self, code: &str) {
        let newly_queued = self.inner.lock().insert(code.to_owned());
        if !newly_queued {
            // The queued hint is sent after this commit too: it covers it.
            return;
        }
        self.inner.sender_started.call_once(|| {
            tokio::spawn(send_queued(
                Arc::downgrade(&self.inner),
                self.inner.wake.clone(),
            ));
        });
        self.inner.wake.notify_one();
    }
}

/// The process's sender: waits for queued hints, takes them all and sends them in one
/// statement; ends when the hints are dropped.
async fn send_queued(hints: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(hints) = hints.upgrade() else { return };
        // Taken before sending: a commit from now on queues a hint of its own.
        let codes: Vec<String> = hints.lock().drain().collect();
        if !codes.is_empty() {
            hints.send(&codes).await;
        }
    }
}

impl Inner {
    async fn send(&self, codes: &[String]) {
        if let Err(e) =
            sqlx::query("SELECT pg_notify($1, code || ' ' || $3) FROM unnest($2::text[]) AS code")
                .bind(CHANNEL)
                .bind(codes)
                .bind(self.replica.to_string())
                .execute(&self.control)
                .await
        {
            tracing::debug!(error = %e, hospitals = codes.len(), "could not send the projection hints");
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
