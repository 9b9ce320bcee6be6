//! The command path: one cqrs-es framework per tenant and aggregate type over
//! postgres-es, then (read-your-writes) waiting until the projections have passed the
//! events just written.

use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use hms_domain::EventMetadata;
use hms_projections::{log, ProjectionRunner};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

/// How long a command waits for the read models to show its own events.
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(E),
    /// Another command changed the aggregate first (optimistic concurrency).
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
    append::<A>(pool, id, command, services, metadata).await?;
    wait_for_stream::<A>(pool, runner, id).await?;
    Ok(())
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
    let repo = PostgresEventRepository::new(pool.clone());
    let store =
        PersistedEventStore::<_, A>::new_event_store(repo).with_upcasters(hms_domain::upcasters());
    let cqrs = CqrsFramework::new(store, vec![], services);
    cqrs.execute_with_metadata(id, command, metadata.to_map())
        .await?;
    Ok(())
}

/// Waits until every projector has applied the newest event of stream `id`
/// (read-your-writes).
pub async fn wait_for_stream<A: Aggregate>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
) -> Result<(), hms_projections::ProjectionError> {
    let mut conn = pool.acquire().await?;
    let head = log::stream_head(&mut conn, A::TYPE, id).await?;
    drop(conn);
    if let Some(head) = head {
        runner
            .catch_up_through(pool, head, READ_YOUR_WRITES_TIMEOUT)
            .await?;
    }
    Ok(())
}
