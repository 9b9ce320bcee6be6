//! "Hospital X has new events": a hint sent on one channel of the platform database after
//! a commit, so every server process's projection daemon catches that hospital up soon.
//! One channel for all tenants (`LISTEN` is per database: a listener per tenant database
//! would pin a connection per tenant). Best effort: the daemon's timer covers a lost hint.
//!
//! Hints are coalesced per hospital: while one is waiting to be sent, later commits ride
//! on it (it is sent after all of them), so a busy hospital costs the platform database
//! one statement per send, not one per command. Each hint names the process that sent
//! it, whose own daemon ignores it: that process's commands caught up already.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use uuid::Uuid;

/// The platform-database channel carrying "tenant X has new events" hints.
pub const CHANNEL: &str = "hms_events";

#[derive(Clone)]
pub struct Hints {
    control: PgPool,
    /// This process's name on the channel.
    sender: String,
    /// Hospitals with a hint queued but not sent yet.
    queued: Arc<Mutex<HashSet<String>>>,
}

/// A hint as received: which hospital, and whether this process sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct Hint<'a> {
    pub code: &'a str,
    pub own: bool,
}

impl Hints {
    pub fn new(control: PgPool) -> Self {
        Self {
            control,
            sender: Uuid::new_v4().simple().to_string(),
            queued: Arc::default(),
        }
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

    /// Sends a hint now and waits for it (for callers about to exit).
    pub async fn send(&self, code: &str) {
        let payload = format!("{code} {}", self.sender);
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.control)
            .await
        {
            tracing::debug!(error = %e, code, "could not send the projection hint");
        }
    }

    /// Reads a received payload; `None` for one that is not a hint.
    pub fn parse<'a>(&self, payload: &'a str) -> Option<Hint<'a>> {
        let (code, sender) = payload.split_once(' ').unwrap_or((payload, ""));
        (!code.is_empty()).then_some(Hint {
            code,
            own: sender == self.sender,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hint_names_its_sender() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/unused")
            .expect("lazy pool");
        let ours = Hints::new(pool.clone());
        let theirs = Hints::new(pool);
        let payload = format!("HOSP01 {}", ours.sender);
        assert_eq!(
            ours.parse(&payload),
            Some(Hint {
                code: "HOSP01",
                own: true
            })
        );
        assert_eq!(
            theirs.parse(&payload),
            Some(Hint {
                code: "HOSP01",
                own: false
            })
        );
        // A bare code (an older process) is someone else's.
        assert_eq!(
            ours.parse("HOSP01"),
            Some(Hint {
                code: "HOSP01",
                own: false
            })
        );
        assert_eq!(ours.parse(""), None);
    }
}
