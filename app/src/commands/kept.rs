//! The single-stream command's event store: cqrs-es's own, except that a stream this
//! process decided on before is read from its last known event on, not decoded from its
//! first event on every command (docs/adr/0014).
//!
//! An invoice paid from many tills was loaded whole for every payment, and decoding the
//! loaded events was about a third of the server's time in a payments benchmark. The
//! states kept here ([`CurrentStates`], one instance per process: [`DECIDED`]) are
//! confirmed by the very statement that would have loaded the stream: it returns the
//! kept last event's place and every event after it, so another process's append counts
//! exactly as it would in a full load, and a stream rewritten under the kept state (a
//! restore, a move) is read whole again. Memory never gives an answer on its own.
//!
//! After an append, the state the command left (the one it decided on, with its events
//! applied as it wrote them) is kept at the new version, so the next command on the
//! stream decodes nothing at all.
//!
//! A command may also be decided on the kept state without reading the stream at all
//! (docs/adr/0016): the state is then *assumed*, and the append proves it, landing only
//! while the kept last event is still the stream's last, in the same place (its next
//! sequence is the primary key the append collides on). Anything but a landed append on
//! an assumed state (a refusal, a lost race, a stale assumption) is decided again on a
//! read, so no answer ever rests on memory alone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex as StdMutex};

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};
use hms_projections::{personal, LogCursor};
use sqlx::PgPool;

use super::{database_of, CommandError, CurrentStates, ExpectingRepository, Landed};

/// Streams kept for the command path, per process, across every hospital it serves:
/// invoices, schedules, appointments, accounts and hospitals as last decided on. A few
/// kilobytes each at most.
const DECIDED_STATES: usize = 16_384;

/// The states this process's commands last decided on.
pub(super) static DECIDED: LazyLock<CurrentStates> =
    LazyLock::new(|| CurrentStates::with_capacity(DECIDED_STATES));

/// cqrs-es's event store over [`ExpectingRepository`], loading from [`DECIDED`] where it
/// may.
pub(super) struct KeptStore<A: Aggregate> {
    inner: PersistedEventStore<ExpectingRepository, A>,
    pool: PgPool,
    /// The database's server and name: the key of its streams in [`DECIDED`].
    database: String,
    /// Whether the stream is loaded through [`DECIDED`]. Not when the stream is taken
    /// to be new (it is not read at all), nor inside keyed work, which looks for the
    /// run's earlier event among all of the stream's events.
    reads_kept: bool,
    /// Whether this attempt may decide on the kept state without reading the stream,
    /// and the version the client expects, if any (a kept state at another version is
    /// read instead: only the read may tell a stale expectation from a stale memory).
    assumes: Option<Option<u64>>,
    /// The kept last event the command was decided on without a read, for the append to
    /// prove (shared with the repository).
    assumed: Arc<StdMutex<Option<KeptHead>>>,
    /// Where the append put its events (set by the repository).
    landed: Arc<StdMutex<Option<Landed>>>,
}

/// A stream's last event as this process kept it: what an append on an assumed state
/// requires to still be the stream's last event, in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptHead {
    pub version: u64,
    pub at: LogCursor,
}

/// The append found the stream no longer where the assumed state had it: the command is
/// decided again on a read. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("the stream moved on under the state the command assumed")]
pub(super) struct AssumedStale;

impl<A: Aggregate> KeptStore<A> {
    /// `assumes`: `Some(expected)` when the attempt may decide on the kept state
    /// without a read (only where `reads_kept`).
    pub(super) fn new(
        inner: PersistedEventStore<ExpectingRepository, A>,
        pool: &PgPool,
        reads_kept: bool,
        assumes: Option<Option<u64>>,
        assumed: Arc<StdMutex<Option<KeptHead>>>,
        landed: Arc<StdMutex<Option<Landed>>>,
    ) -> Self {
        Self {
            inner,
            pool: pool.clone(),
            database: database_of(pool),
            reads_kept,
            assumes: assumes.filter(|_| reads_kept),
            assumed,
            landed,
        }
    }

    /// The kept state of stream `id` and its last event, when this attempt may assume it:
    /// kept, and at the version the client expects, if it named one.
    fn assumable(&self, id: &str) -> Option<(A, KeptHead)>
    where
        A: Clone + 'static,
    {
        let expected = self.assumes?;
        let kept = DECIDED.entry(&self.database, A::TYPE, id)?;
        let head = kept.head();
        if expected.is_some_and(|expected| expected != head.version) {
            return None;
        }
        let (state, _) = kept.state_of::<A>()?;
        Some((state, head))
    }
}

impl<A: Aggregate + Clone + 'static> EventStore<A> for KeptStore<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.inner.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        if !self.reads_kept {
            return self.inner.load_aggregate(aggregate_id).await;
        }
        if let Some((aggregate, head)) = self.assumable(aggregate_id) {
            *self.assumed.lock().unwrap_or_else(|e| e.into_inner()) = Some(head);
            return Ok(context(aggregate_id, aggregate, head.version));
        }
        let (aggregate, version) = DECIDED
            .one::<A>(&self.pool, &self.database, aggregate_id)
            .await
            .map_err(aggregate_error)?;
        Ok(context(aggregate_id, aggregate, version))
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        mut context: EventStoreAggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let from = context.current_sequence as u64;
        let state = if self.reads_kept || from == 0 {
            state_after(&events, &mut context)
        } else {
            None
        };
        let aggregate_id = context.aggregate_id.clone();
        let committed = self.inner.commit(events, context, metadata).await?;
        let head = self
            .landed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|landed| landed.head);
        if let (Some(state), Some(head), Some(last)) = (state, head, committed.last()) {
            DECIDED.advance(
                &self.database,
                &aggregate_id,
                from,
                state,
                last.sequence as u64,
                head,
            );
        }
        Ok(committed)
    }
}

/// The state a commit of `events` leaves to keep, unless one of them seals personal data
/// (never kept). The context's state already shows the events: cqrs-es's sink applies
/// each event to the aggregate as the command writes it. The persisted store reads the
/// context's id and version only (snapshots are off), so the state is taken, not copied.
pub(super) fn state_after<A: Aggregate>(
    events: &[A::Event],
    context: &mut EventStoreAggregateContext<A>,
) -> Option<A> {
    let seals = events
        .iter()
        .any(|e| personal::seals(A::TYPE, &e.event_type()));
    (!seals).then(|| std::mem::take(&mut context.aggregate))
}

/// What cqrs-es decides on: stream `id` as `aggregate`, at `version`.
pub(super) fn context<A: Aggregate>(
    id: &str,
    aggregate: A,
    version: u64,
) -> EventStoreAggregateContext<A> {
    EventStoreAggregateContext {
        aggregate_id: id.to_owned(),
        aggregate,
        current_sequence: usize::try_from(version).unwrap_or(usize::MAX),
        current_snapshot: None,
    }
}

/// A failed read of the kept path, as cqrs-es reports a failed load.
pub(super) fn aggregate_error<E: std::error::Error>(
    error: CommandError<Infallible>,
) -> AggregateError<E> {
    match error {
        CommandError::Unavailable(_) => AggregateError::DatabaseConnectionError(Box::new(error)),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}
