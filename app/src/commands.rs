//! The command path: cqrs-es over postgres-es on the tenant's pool, then (read-your-
//! writes) waiting until the projections have passed the events just written.
//!
//! A framework is built per command: it is a handful of pool clones, and building it
//! fresh lets each command carry its own expected version.

use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
use hms_domain::EventMetadata;
use hms_projections::{log, ProjectionRunner};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

/// How long a command waits for the read models to show its own events. The wait can be
/// long when any transaction on the server is slow to commit (the log is read only below
/// the oldest transaction in flight, cluster-wide).
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(E),
    /// Another command changed the aggregate first, or the client's expected version
    /// is stale (optimistic concurrency).
    #[error("the record was changed by someone else; reload and try again")]
    Conflict,
    #[error("event store failure: {0}")]
    Store(String),
    #[error("read models did not catch up: {0}")]
    Projection(#[from] hms_projections::ProjectionError),
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(err: AggregateError<E>) -> Self {
        match err {
            AggregateError::UserError(e) => CommandError::Rejected(e),
            AggregateError::AggregateConflict => CommandError::Conflict,
            other => CommandError::Store(other.to_string()),
        }
    }
}

/// postgres-es's repository, plus an exact check of the version the client last saw:
/// the first new event must be `expected + 1`. Done at persist time, after loading, so
/// it cannot race: a concurrent writer makes either this check or the primary key fail.
struct ExpectingRepository {
    inner: PostgresEventRepository,
    expected: Option<u64>,
}

impl PersistedEventRepository for ExpectingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_last_events::<A>(id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if let (Some(expected), Some(first)) = (self.expected, events.first()) {
            if first.sequence as u64 != expected + 1 {
                return Err(PersistenceError::OptimisticLockError);
            }
        }
        self.inner.persist::<A>(events, snapshot_update).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

fn store<A: Aggregate>(
    pool: &PgPool,
    expected: Option<u64>,
) -> PersistedEventStore<ExpectingRepository, A> {
    let repo = ExpectingRepository {
        inner: PostgresEventRepository::new(pool.clone()),
        expected,
    };
    PersistedEventStore::<_, A>::new_event_store(repo).with_upcasters(hms_domain::upcasters())
}

/// Executes `command` on aggregate `id` in the tenant database behind `pool`, then
/// brings the read models up to (at least) the events it wrote.
pub async fn execute<A>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    execute_expecting::<A>(pool, runner, id, command, services, metadata, None).await
}

/// [`execute`], refused with `Conflict` unless the aggregate is at `expected` (the
/// sequence of its last event; 0 for a new one).
pub async fn execute_expecting<A>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
    expected: Option<u64>,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    append_expecting::<A>(pool, id, command, services, metadata, expected).await?;
    match wait_for_stream::<A>(pool, runner, id, READ_YOUR_WRITES_TIMEOUT).await {
        // The write stands: reporting it as failed would invite a retry that repeats it.
        // The client may read a read model that is still behind; the runner catches up.
        Err(hms_projections::ProjectionError::CatchUpTimeout(waited)) => {
            tracing::warn!(
                ?waited,
                stream = id,
                "read models are behind the command just written"
            );
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Executes `command` and appends its events, without waiting for the read models.
pub async fn append<A>(
    pool: &PgPool,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    append_expecting::<A>(pool, id, command, services, metadata, None).await
}

async fn append_expecting<A>(
    pool: &PgPool,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
    expected: Option<u64>,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    let cqrs = CqrsFramework::new(store::<A>(pool, expected), vec![], services);
    cqrs.execute_with_metadata(id, command, metadata.to_map())
        .await?;
    Ok(())
}

/// The aggregate's current state and version (sequence of its last event, 0 if none),
/// decoded through the domain's upcasters.
pub async fn load<A>(pool: &PgPool, id: &str) -> Result<(A, u64), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    let context = store::<A>(pool, None).load_aggregate(id).await?;
    Ok((context.aggregate, context.current_sequence as u64))
}

/// Waits until every projector has applied the newest event of stream `id`
/// (read-your-writes).
pub async fn wait_for_stream<A: Aggregate>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    timeout: Duration,
) -> Result<(), hms_projections::ProjectionError> {
    let mut conn = pool.acquire().await?;
    let head = log::stream_head(&mut conn, A::TYPE, id).await?;
    drop(conn);
    if let Some(head) = head {
        runner.catch_up_through(pool, head, timeout).await?;
    }
    Ok(())
}
