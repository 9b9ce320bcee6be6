//! The caller's rights as an append relies on them (docs/adr/0012).
//!
//! A request is decided on the caller's account and hospital as their streams stand.
//! Reading both costs a statement per request; this process keeps what it last read of
//! them ([`super::CurrentStates`]), so a write may start from that instead, *assumed*.
//! An assumption is never an answer on its own: every append made under it carries a
//! guard, "neither stream has an event beyond the versions assumed", checked by the
//! append's own statement, so a write lands only while what it was decided on still holds
//! at that instant. A guarded append that lands confirms the assumption for the rest of
//! the request; one refused by its guard appends nothing ([`AuthorityChanged`]). An
//! answer that nothing confirmed leaves only after a read: the transport sends it as it
//! is, decides the request again on the rights read, or refuses it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::KeptHead;

/// What a request's rights rest on: read from the write side during this request
/// (`Confirmed`), or assumed from this process's last read of the two streams.
#[derive(Debug, Clone, Default)]
pub struct Authority(Arc<Mutex<Standing>>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Standing {
    #[default]
    Confirmed,
    Assumed {
        assumption: Assumption,
        /// A guarded append of the request went unanswered (the link broke after it was
        /// sent): it may have landed, so the request must not be decided again.
        unanswered: bool,
    },
}

/// The streams a request's rights were decided on, at the versions this process last
/// read, and the credentials version of the token they were checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assumption {
    pub streams: [AssumedStream; 2],
    pub credentials_version: i64,
}

/// One stream at the last event assumed: an append under the assumption requires that
/// it is still the stream's last event, in the same place in the log (a stream rewritten
/// under the kept state, by a restore, may hold another event at that sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedStream {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub head: KeptHead,
}

/// An append refused by its guard: the caller's account or hospital changed after this
/// process last read them. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("the caller's account or hospital changed since it was last read")]
pub struct AuthorityChanged;

tokio::task_local! {
    /// The authority of the request the current task serves.
    static AUTHORITY: Authority;
}

impl Authority {
    /// Rights read from the write side just now.
    pub fn confirmed() -> Self {
        Self::default()
    }

    /// Rights taken from this process's last read of the streams in `assumption`.
    pub fn assumed(assumption: Assumption) -> Self {
        Self(Arc::new(Mutex::new(Standing::Assumed {
            assumption,
            unanswered: false,
        })))
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        // Whole values are stored: a poisoned lock holds a consistent one.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is assumed, while nothing has confirmed it.
    pub fn assumption(&self) -> Option<Assumption> {
        match &*self.standing() {
            Standing::Assumed { assumption, .. } => Some(assumption.clone()),
            Standing::Confirmed => None,
        }
    }

    /// Whether a guarded append of the request may have landed unseen (see
    /// [`Self::note_unanswered`]).
    pub fn unanswered(&self) -> bool {
        matches!(
            *self.standing(),
            Standing::Assumed {
                unanswered: true,
                ..
            }
        )
    }

    /// A guarded append was sent and no answer came back.
    pub(super) fn note_unanswered(&self) {
        if let Standing::Assumed { unanswered, .. } = &mut *self.standing() {
            *unanswered = true;
        }
    }

    /// The rights were read, or a guarded append landed: nothing is assumed any more.
    pub fn confirm(&self) {
        *self.standing() = Standing::Confirmed;
    }

    /// Runs `work` (a request) under this authority: its appends carry the guard while
    /// the rights are assumed.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        AUTHORITY.scope(self, work).await
    }
}

/// The authority of the request the current task serves; `None` outside a request
/// (workers, the command line, set-up), whose rights are not assumed.
pub(super) fn current() -> Option<Authority> {
    AUTHORITY.try_with(Authority::clone).ok()
}
