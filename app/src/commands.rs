//! The command path: cqrs-es over postgres-es on the tenant's pool, then (read-your-
//! writes) waiting until the projections have passed the events just written.
//!
//! The aggregate is loaded from this process's kept state of its stream on, confirmed by
//! the read (docs/adr/0014, [`kept`]), or by postgres-es where nothing may be kept. The
//! append is one statement of ours into postgres-es's table ([`append_events`]), which
//! also tells where the events landed, so the wait needs no further lookup and queues on
//! the hospital's shared catch-up (docs/adr/0006). A registration ([`create`]) writes
//! the row its answer reads in that same statement and does not wait at all
//! (docs/adr/0011).
//!
//! A framework is built per command: it is a handful of pool clones, and building it
//! fresh lets each command carry its own expected version.
//!
//! Two kinds of retry are the command path's own (docs/adr/0004):
//! - a command that lost an optimistic-concurrency race, when the client named no
//!   expected version, is decided again on fresh state, a bounded number of times with
//!   jittered backoff ([`MAX_ATTEMPTS`]); only a refusal on fresh state, or running out
//!   of attempts ([`CommandError::Contended`]), reaches the client;
//! - inside keyed work ([`crate::idempotency`]) every event carries the run's id, and a
//!   command whose stream already holds an event of that run is not executed again: an
//!   earlier attempt of the same request committed it.
//!
//! Once events are committed the command has succeeded, whatever the read side does next.
//!
//! Within one process, commands on the same stream take turns ([`StreamTurns`]) instead
//! of racing: a hot record (one invoice paid from many tills) would otherwise have its
//! writers load, lose the race and retry over and over. The turn is only an
//! optimization; the database's optimistic concurrency stays the authority (several
//! processes serve the same hospital).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex as StdMutex};
use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
use hms_domain::EventMetadata;
use hms_projections::inline::{InlineRows, WrittenInline};
use hms_projections::{log, personal, LogCursor, ProjectionRunner};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;

use crate::idempotency::{current_run, RUN_METADATA_KEY};
use crate::telemetry;

mod authority;
mod current;
mod kept;
mod together;
pub use authority::{AssumedStream, Assumption, Authority, AuthorityChanged};
pub use current::{CurrentStates, ReadHead};
use kept::AssumedStale;
pub use kept::KeptHead;
pub use together::{together, together_inline, Streams, Unit};

/// How long a command waits for the read models to show its own events. The wait can be
/// long when any transaction on the server is slow to commit (the log is read only below
/// the oldest transaction in flight, cluster-wide).
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a command without an expected version is decided when concurrent
/// writers keep winning the race for its aggregate.
pub const MAX_ATTEMPTS: u32 = 12;

/// The first backoff after a lost race, doubled per attempt up to [`MAX_BACKOFF`]; each
/// pause is drawn uniformly below that bound (full jitter), so racers spread out.
const FIRST_BACKOFF: Duration = Duration::from_millis(4);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(E),
    /// The client's expected version is stale (optimistic concurrency): a final answer,
    /// the client reloads.
    #[error("the record was changed by someone else; reload and try again")]
    Conflict,
    /// Concurrent writers won the race for the aggregate on every one of
    /// [`MAX_ATTEMPTS`] attempts: the same request may succeed if sent again.
    #[error("the record is being changed by many requests at once; try again")]
    Contended,
    /// The caller's account or hospital moved after the request assumed them, and the
    /// append's guard refused it (docs/adr/0012): nothing was written. The transport
    /// reads them and decides the request again.
    #[error("the caller's rights changed while the request ran; send it again")]
    AuthorityChanged,
    /// The command would record personal data of a patient whose record was erased.
    #[error("{0}")]
    Erased(String),
    /// The hospital's database could not be reached (down, restarting, the link broke):
    /// the same request may succeed shortly (with an idempotency key, safely).
    #[error("the hospital's database cannot be reached: {0}")]
    Unavailable(String),
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
            AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
            AggregateError::UnexpectedError(e)
                if e.downcast_ref::<personal::ErasedPatient>().is_some() =>
            {
                CommandError::Erased(e.to_string())
            }
            AggregateError::UnexpectedError(e)
                if e.downcast_ref::<AuthorityChanged>().is_some() =>
            {
                CommandError::AuthorityChanged
            }
            AggregateError::UnexpectedError(e) if caused_by_unreachable(&*e) => {
                CommandError::Unavailable(e.to_string())
            }
            other => CommandError::Store(other.to_string()),
        }
    }
}

/// Whether a database that could not be reached (or held writes) is anywhere in the
/// chain of causes: the store wraps the errors of what it calls (the personal-data
/// sealing, say) in errors of their own.
fn caused_by_unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<sqlx::Error>()
            .is_some_and(crate::tenancy::platform::is_unreachable)
    })
}

/// postgres-es's repository, plus an exact check of the version the client last saw:
/// the first new event must be `expected + 1`. Done at persist time, after loading, so
/// it cannot race: a concurrent writer makes either this check or the primary key fail.
///
/// With a `run` (keyed work), loading notes whether the stream already holds an event of
/// that run (`seen`), and then nothing is persisted: the run's command on this stream
/// committed in an earlier attempt. The note is taken from the very events the decision
/// was made on, so it cannot race either: an event of the run committed after the load
/// makes the append fail on the primary key, and the retry sees it.
struct ExpectingRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    attempt: Attempt,
}

/// What one attempt of a command tells its repository, and learns from it.
#[derive(Default)]
struct Attempt {
    expected: Option<u64>,
    /// Expected version 0, and not yet refused on that basis: the stream is not read.
    assume_new: bool,
    run: Option<String>,
    seen: Arc<AtomicBool>,
    /// The kept last event the command was decided on without reading the stream, for
    /// the append to prove (docs/adr/0016; set by [`kept::KeptStore`]).
    assumed: Arc<StdMutex<Option<KeptHead>>>,
    /// Where the append put its events and the rows it wrote inline, for the wait.
    landed: Arc<StdMutex<Option<Landed>>>,
}

impl ExpectingRepository {
    fn note_run(&self, events: &[SerializedEvent]) {
        let Some(run) = &self.attempt.run else { return };
        let ours = |e: &SerializedEvent| {
            e.metadata.get(RUN_METADATA_KEY).and_then(Value::as_str) == Some(run.as_str())
        };
        if events.iter().any(ours) {
            self.attempt.seen.store(true, Ordering::SeqCst);
        }
    }
}

impl PersistedEventRepository for ExpectingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        if self.attempt.assume_new {
            // The use case (or client) says the stream is new: nothing to load. Should it
            // exist after all, the append's first event collides with its first one and
            // the command gets a conflict, as with any stale expected version.
            return Ok(Vec::new());
        }
        let mut events = self.inner.get_events::<A>(id).await?;
        self.note_run(&events);
        open_events(&self.pool, &mut events).await?;
        Ok(events)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = self.inner.get_last_events::<A>(id, last_sequence).await?;
        self.note_run(&events);
        open_events(&self.pool, &mut events).await?;
        Ok(events)
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
        if self.attempt.seen.load(Ordering::SeqCst) {
            return Err(PersistenceError::UnknownError(
                "the stream holds this run's command already".into(),
            ));
        }
        if let (Some(expected), Some(first)) = (self.attempt.expected, events.first()) {
            if first.sequence as u64 != expected + 1 {
                return Err(PersistenceError::OptimisticLockError);
            }
        }
        if snapshot_update.is_some() {
            // Snapshots are off (DESIGN.md); postgres-es keeps them in its own transaction.
            return self.inner.persist::<A>(events, snapshot_update).await;
        }
        // Rows the append writes itself are built from the events as decided, before
        // their personal data is sealed.
        let inline = hms_projections::inline::rows_written_inline(events)
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let head = *self
            .attempt
            .assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The state the command assumed is of the stream it appends to.
        let assumed: Vec<Assumed<'_>> = head
            .into_iter()
            .zip(events.first())
            .map(|(head, first)| Assumed {
                aggregate_type: &first.aggregate_type,
                aggregate_id: &first.aggregate_id,
                head: Some(head),
                appended: true,
            })
            .collect();
        let landed = seal_and_append(
            &self.pool,
            events,
            self.attempt.assume_new,
            &assumed,
            &inline,
        )
        .await?;
        *self
            .attempt
            .landed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = landed;
        Ok(())
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

/// Loaded events with their sealed personal data opened (or erased): the aggregate is
/// decided on what the patient's record says (docs/adr/0008).
async fn open_events(
    pool: &PgPool,
    events: &mut [SerializedEvent],
) -> Result<(), PersistenceError> {
    let mut patients = Vec::new();
    for event in events.iter_mut() {
        patients.extend(personal::sealed_patients(&mut event.payload));
    }
    if patients.is_empty() {
        return Ok(());
    }
    let failed = |e: hms_projections::ProjectionError| PersistenceError::UnknownError(Box::new(e));
    let mut conn = pool.acquire().await.map_err(|e| failed(e.into()))?;
    let keys = personal::Keys::load(&mut conn, patients)
        .await
        .map_err(failed)?;
    for event in events.iter_mut() {
        let record = personal::Record {
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
            event_type: &event.event_type,
        };
        keys.unseal(record, &mut event.payload).map_err(failed)?;
    }
    Ok(())
}

/// Seals and appends `events`, with the read-model rows written `inline`, on the stream
/// states the command `assumed`, if any. On a stream
/// taken to be new that is a patient's own record (a registration), the patient has no
/// data key yet: a fresh one is offered and stored by the append's own statement
/// ([`personal::seal_offering`]), saving a round trip; should a key be stored already, the
/// events are sealed again with it.
async fn seal_and_append(
    pool: &PgPool,
    events: &[SerializedEvent],
    new_stream: bool,
    assumed: &[Assumed<'_>],
    inline: &[InlineRows],
) -> Result<Option<Landed>, PersistenceError> {
    if new_stream && seal_any(events) {
        let mut offering = events.to_vec();
        let offers = personal::seal_offering(outgoing(&mut offering))
            .await
            .map_err(seal_error)?;
        if let Some(offers) = offers {
            if let Some(landed) = append_events(pool, &offering, &offers, assumed, inline).await? {
                return Ok(Some(landed));
            }
        }
    }
    let sealed = seal_events(pool, events, &[]).await?;
    append_events(pool, &sealed, &[], assumed, inline).await
}

/// Whether any of `events` carries personal data to seal.
fn seal_any(events: &[SerializedEvent]) -> bool {
    events
        .iter()
        .any(|e| personal::seals(&e.aggregate_type, &e.event_type))
}

fn outgoing(events: &mut [SerializedEvent]) -> Vec<personal::Outgoing<'_>> {
    events
        .iter_mut()
        .map(|e| personal::Outgoing {
            aggregate_type: &e.aggregate_type,
            aggregate_id: &e.aggregate_id,
            sequence: i64::try_from(e.sequence).unwrap_or(i64::MAX),
            event_type: &e.event_type,
            payload: &mut e.payload,
        })
        .collect()
}

fn seal_error(e: personal::SealError) -> PersistenceError {
    match e {
        personal::SealError::Erased(erased) => PersistenceError::UnknownError(Box::new(erased)),
        personal::SealError::Store(e) => PersistenceError::UnknownError(Box::new(e)),
    }
}

/// The events to append, their personal data sealed under each patient's key (those of
/// `known` patients in hand already).
async fn seal_events(
    pool: &PgPool,
    events: &[SerializedEvent],
    known: &[personal::KnownKey],
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let mut events = events.to_vec();
    if !seal_any(&events) {
        return Ok(events);
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| PersistenceError::ConnectionError(Box::new(e)))?;
    personal::seal_knowing(&mut conn, known, outgoing(&mut events))
        .await
        .map_err(seal_error)?;
    Ok(events)
}

/// How often an append chosen as a deadlock's victim is sent again.
const DEADLOCK_RETRIES: u32 = 2;

/// Appends `events` (each stream's in sequence order; one stream, or the several of a
/// [`together`] unit) in a single statement: atomic on its own, so it costs one round
/// trip instead of postgres-es's BEGIN, one INSERT per event and COMMIT, and it says where
/// the events landed in the log. The columns and values are postgres-es's own (its reader
/// loads them back), and a primary-key collision is a lost race, as postgres-es reports it.
///
/// With `offers` (fresh data keys, see [`seal_and_append`]) the keys are stored by the same
/// statement, and nothing is appended (`None`) when a patient's key was stored already.
/// The `inline` rows (docs/adr/0011) are inserted by the same statement too, exactly when
/// the events are, and returned as stored.
///
/// With `assumed` (streams decided on without a read: docs/adr/0016) the events land only
/// while each such stream is as assumed ([`Assumed`]); otherwise nothing is written and
/// the append fails with [`AssumedStale`].
async fn append_events(
    pool: &PgPool,
    events: &[SerializedEvent],
    offers: &[personal::KeyOffer],
    assumed: &[Assumed<'_>],
    inline: &[InlineRows],
) -> Result<Option<Landed>, PersistenceError> {
    if events.is_empty() {
        return Ok(None);
    }
    let aggregate_types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| i64::try_from(e.sequence).unwrap_or(i64::MAX))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
    let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
    let metadata: Vec<&Value> = events.iter().map(|e| &e.metadata).collect();
    const INSERT: &str = "INSERT INTO public.events \
                (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata \
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
                WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, n)";
    const LANDED: &str = " ORDER BY e.n RETURNING transaction_id::text::bigint, position";
    let mut with = Vec::new();
    // The rows written inline, as stored: each table's, by name, in one JSON object.
    let mut stored = Vec::new();
    // What must hold for anything to be written: no event is appended (and no row
    // written inline) otherwise.
    let mut conditions = Vec::new();
    // Every offer taken.
    if !offers.is_empty() {
        with.push(format!("offered AS ({})", personal::STORE_OFFERS));
        conditions.push("(SELECT count(*) FROM offered) = cardinality($8::uuid[])".to_owned());
    }
    let first_inline = if offers.is_empty() { 8 } else { 11 };
    // The rights the request assumed still hold: the account's and the hospital's streams
    // are checked as any state assumed and not appended to, their kept last event still
    // the last (docs/adr/0012).
    let guard = authority::current().and_then(|a| a.assumption().map(|assumed| (a, assumed)));
    let rights: Vec<Assumed<'_>> = guard
        .iter()
        .flat_map(|(_, assumption)| &assumption.streams)
        .map(|stream| Assumed {
            aggregate_type: stream.aggregate_type,
            aggregate_id: &stream.aggregate_id,
            head: Some(stream.head),
            appended: false,
        })
        .collect();
    // The states the command assumed are the streams': each checked stream binds its
    // type, id and version, and a kept last event's place.
    let mut p = first_inline + inline.len();
    // The patients whose keys must stand for each table's rows to be written.
    let owners_at: Vec<Option<usize>> = inline
        .iter()
        .map(|rows| {
            (!rows.key_owners.is_empty()).then(|| {
                p += 1;
                p - 1
            })
        })
        .collect();
    let checked: Vec<&Assumed<'_>> = assumed
        .iter()
        .chain(&rights)
        .filter(|a| a.checked())
        .collect();
    for stream in &checked {
        let (ty, id, version) = (p, p + 1, p + 2);
        p += 3;
        if stream.head.is_some() {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM public.events k WHERE k.aggregate_type = ${ty} \
                   AND k.aggregate_id = ${id} AND k.sequence = ${version} \
                   AND k.transaction_id::text::bigint = ${} AND k.position = ${})",
                p,
                p + 1
            ));
            p += 2;
        }
        if !stream.appended {
            conditions.push(format!(
                "NOT EXISTS (SELECT 1 FROM public.events k WHERE k.aggregate_type = ${ty} \
                   AND k.aggregate_id = ${id} AND k.sequence > ${version})"
            ));
        }
    }
    let mut taken = conditions.join(" AND ");
    // Rows written inline hold under the same condition as the events: decided once, in a
    // query of its own that both read (a query read twice is evaluated once), not once
    // per insert.
    if !inline.is_empty() && !taken.is_empty() {
        with.push(format!("guard AS (SELECT {taken} AS holds)"));
        taken = "(SELECT holds FROM guard)".to_owned();
    }
    for (i, (rows, owners)) in inline.iter().zip(&owners_at).enumerate() {
        let condition = match owners {
            Some(param) if taken.is_empty() => rows.keys_stand_sql(*param),
            Some(param) => format!("{taken} AND {}", rows.keys_stand_sql(*param)),
            None => taken.clone(),
        };
        with.push(format!(
            "inline_{i} AS ({})",
            rows.insert_sql(first_inline + i, &condition)
        ));
        stored.push(format!(
            "'{}', (SELECT json_agg(r) FROM inline_{i} r)",
            rows.name
        ));
    }
    let stored = if stored.is_empty() {
        ", NULL::text".to_owned()
    } else {
        format!(", json_build_object({})::text", stored.join(", "))
    };
    let with = if with.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", with.join(", "))
    };
    let filter = if taken.is_empty() {
        String::new()
    } else {
        format!(" WHERE {taken}")
    };
    let sql = format!("{with}{INSERT}{filter}{LANDED}{stored}");
    let patients: Vec<uuid::Uuid> = offers.iter().map(|o| o.patient_id).collect();
    let masters: Vec<&str> = offers.iter().map(|o| o.master_key_id.as_str()).collect();
    let wrapped: Vec<&[u8]> = offers.iter().map(|o| o.wrapped_key.as_slice()).collect();
    let mut deadlocks = 0;
    let landed = loop {
        let mut query = sqlx::query_as::<_, (i64, i64, Option<String>)>(&sql)
            .bind(&aggregate_types)
            .bind(&ids)
            .bind(&sequences)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata);
        if !offers.is_empty() {
            query = query.bind(&patients).bind(&masters).bind(&wrapped);
        }
        for rows in inline {
            query = query.bind(&rows.rows);
        }
        for rows in inline.iter().filter(|rows| !rows.key_owners.is_empty()) {
            query = query.bind(&rows.key_owners);
        }
        for stream in &checked {
            let version = stream.head.map_or(0, |head| head.version);
            query = query
                .bind(stream.aggregate_type)
                .bind(stream.aggregate_id)
                .bind(i64::try_from(version).unwrap_or(i64::MAX));
            if let Some(head) = stream.head {
                query = query.bind(head.at.transaction_id).bind(head.at.position);
            }
        }
        match query.fetch_all(pool).await {
            Ok(landed) => break landed,
            // A deadlock (this statement takes the log and the key table; a move's hold
            // takes them too) aborted the whole statement: nothing was written, so it is
            // sent again.
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("40P01") && deadlocks < DEADLOCK_RETRIES =>
            {
                deadlocks += 1;
                tracing::warn!("the append was chosen to break a deadlock; sending it again");
            }
            Err(e) => {
                // An error of PostgreSQL's own says the statement failed whole; any other
                // leaves its outcome unknown.
                if let Some((authority, _)) = &guard {
                    if !matches!(e, sqlx::Error::Database(_)) {
                        authority.note_unanswered();
                    }
                }
                return Err(match &e {
                    sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                        PersistenceError::OptimisticLockError
                    }
                    _ if crate::tenancy::platform::is_unreachable(&e) => {
                        PersistenceError::ConnectionError(Box::new(e))
                    }
                    _ => PersistenceError::UnknownError(Box::new(e)),
                });
            }
        }
    };
    if landed.is_empty() && offers.is_empty() && !assumed.is_empty() {
        // The stream moved on under the assumed state (or the guard refused, or both):
        // decided again on a read, the next append tells which.
        return Err(PersistenceError::UnknownError(Box::new(AssumedStale)));
    }
    if let Some((authority, _)) = &guard {
        match (landed.is_empty(), offers.is_empty()) {
            // The guard held at the append: the rights are confirmed for the request.
            (false, _) => authority.confirm(),
            (true, true) => return Err(PersistenceError::UnknownError(Box::new(AuthorityChanged))),
            // Not appended, for the offers or the guard: the caller appends again
            // without offers, and that append tells.
            (true, false) => {}
        }
    }
    let inline = landed.first().and_then(|(_, _, rows)| rows.clone());
    // In the events' order: the insert takes them in that order and returns each as it
    // lands.
    let cursors: Vec<LogCursor> = landed
        .into_iter()
        .map(|(transaction_id, position, _)| LogCursor {
            transaction_id,
            position,
        })
        .collect();
    let head = cursors.iter().copied().max();
    // An append to one stream leaves it at its last event's sequence.
    let one_stream = events.iter().all(|e| {
        e.aggregate_type == events[0].aggregate_type && e.aggregate_id == events[0].aggregate_id
    });
    let version = events
        .last()
        .filter(|_| one_stream)
        .map(|last| last.sequence as u64);
    Ok(head.map(|head| Landed {
        head,
        cursors,
        version,
        inline,
    }))
}

/// A stream a command decided on without reading it (docs/adr/0016), as the append must
/// find it for the events to land: its last event still where this process kept it
/// (`head`), or no event at all (`None`, a stream assumed new). A stream `appended` to
/// needs no check for later events: its first new event would collide with one.
pub(crate) struct Assumed<'a> {
    pub(crate) aggregate_type: &'a str,
    pub(crate) aggregate_id: &'a str,
    pub(crate) head: Option<KeptHead>,
    pub(crate) appended: bool,
}

impl Assumed<'_> {
    /// Whether the append must check the stream: a new stream appended to is checked by
    /// its first event's primary key alone.
    fn checked(&self) -> bool {
        self.head.is_some() || !self.appended
    }
}

/// Where an append's events landed, the version it left its stream at (an append to one
/// stream), and the rows it wrote inline as stored (the JSON of [`WrittenInline`]).
pub(crate) struct Landed {
    /// Where the last event landed.
    pub(crate) head: LogCursor,
    /// Where each event landed, in the order appended.
    pub(crate) cursors: Vec<LogCursor>,
    version: Option<u64>,
    inline: Option<String>,
}

/// What a command's answer starts from: the version its append left the stream at
/// (`None`: nothing was appended now, an earlier attempt of the request did), and the rows
/// it wrote inline, as stored.
struct Written {
    version: Option<u64>,
    inline: Option<WrittenInline>,
}

fn store<A: Aggregate>(
    pool: &PgPool,
    attempt: Attempt,
) -> PersistedEventStore<ExpectingRepository, A> {
    let repo = ExpectingRepository {
        inner: PostgresEventRepository::new(pool.clone()),
        pool: pool.clone(),
        attempt,
    };
    PersistedEventStore::<_, A>::new_event_store(repo).with_upcasters(hms_domain::upcasters())
}

/// Executes `command` on aggregate `id` in the tenant database behind `pool`, then
/// brings the read models up to (at least) the events it wrote. Returns the version the
/// append left the stream at (`None`: an earlier attempt of the request appended).
pub async fn execute<A>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
) -> Result<Option<u64>, CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
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
) -> Result<Option<u64>, CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    execute_then::<A>(
        pool,
        runner,
        id,
        command,
        services,
        metadata,
        expected,
        Answer::ReadModels,
    )
    .await
    .map(|written| written.version)
}

/// Executes `command` on the new aggregate `id` (a fresh id). When its append wrote the
/// rows its answer reads inline (a registration's row of the patient register, docs/adr/0011),
/// it returns them as stored, without waiting: the other read models follow in the
/// daemon's round, woken by the command's hint, and the audit trail's readers catch up
/// before reading ([`wait_for_log`]). Otherwise (`None`) it waits as [`execute`] does.
pub async fn create<A>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
) -> Result<Option<WrittenInline>, CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    execute_then::<A>(
        pool,
        runner,
        id,
        command,
        services,
        metadata,
        Some(0),
        Answer::Inline,
    )
    .await
    .map(|written| written.inline)
}

/// What a command's answer reads, and so what it waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The read models: every rebuildable projector must have passed its events.
    ReadModels,
    /// The rows its append writes inline, when it wrote any; the read models otherwise.
    Inline,
}

#[allow(clippy::too_many_arguments)]
async fn execute_then<A>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
    expected: Option<u64>,
    answer: Answer,
) -> Result<Written, CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    let landed = {
        let _under_way = (answer == Answer::ReadModels).then(|| runner.appending(pool));
        append_expecting::<A>(pool, id, command, services, metadata, expected).await?
    };
    let version = landed.as_ref().and_then(|l| l.version);
    let inline = landed.as_ref().and_then(|l| l.inline.as_deref());
    if let (Some(rows), Answer::Inline) = (inline, answer) {
        match WrittenInline::parse(rows) {
            Ok(rows) => {
                return Ok(Written {
                    version,
                    inline: Some(rows),
                })
            }
            // The write stands; the answer is read from the read models instead.
            Err(error) => tracing::warn!(%error, stream = id, "rows written inline unreadable"),
        }
    }
    let head = landed.map(|l| l.head);
    // The write stands whatever the read side does now: reporting it as failed would
    // invite a retry that repeats it. The client may read a read model that is behind
    // (or answer from the write side); the runner catches up.
    let caught_up = match head {
        Some(head) => {
            runner
                .catch_up_through(pool, head, READ_YOUR_WRITES_TIMEOUT)
                .await
        }
        // Nothing appended now (an earlier attempt of this request did it): wait for
        // whatever the stream holds.
        None => wait_for_stream::<A>(pool, runner, id, READ_YOUR_WRITES_TIMEOUT).await,
    };
    if let Err(error) = caught_up {
        tracing::warn!(
            %error,
            stream = id,
            "read models are behind the command just written"
        );
    }
    Ok(Written {
        version,
        inline: None,
    })
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
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    append_expecting::<A>(pool, id, command, services, metadata, None)
        .await
        .map(drop)
}

/// Executes `command` on a stream that must be new (a fresh id) and appends its events,
/// without reading the stream first and without waiting for the read models.
pub async fn append_new<A>(
    pool: &PgPool,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    append_expecting::<A>(pool, id, command, services, metadata, Some(0))
        .await
        .map(drop)
}

/// The server and database behind `pool`, as a stream's turn and its kept state name
/// them: a hospital moved to another server is another key, under the same name too.
fn database_of(pool: &PgPool) -> String {
    hms_projections::database_key(pool)
}

/// One stream of one database, as [`StreamTurns`] knows it.
type StreamKey = (String, &'static str, String);

/// The commands of this process take turns per stream: one loads, decides and appends
/// while the others wait. Entries live while someone holds or awaits the turn.
#[derive(Default)]
struct StreamTurns(StdMutex<HashMap<StreamKey, Arc<tokio::sync::Mutex<()>>>>);

static TURNS: LazyLock<StreamTurns> = LazyLock::new(StreamTurns::default);

/// The turn of one command on one stream; the next waiter goes when it is dropped.
struct Turn {
    key: StreamKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StreamTurns {
    async fn take<A: Aggregate>(&'static self, pool: &PgPool, id: &str) -> Turn {
        self.take_of(pool, A::TYPE, id).await
    }

    /// The turn on stream `id` of aggregate type `aggregate_type`. A command that needs
    /// several streams takes their turns in one order ([`together`]), so two such
    /// commands never wait for each other in a circle.
    async fn take_of(&'static self, pool: &PgPool, aggregate_type: &'static str, id: &str) -> Turn {
        let key = (database_of(pool), aggregate_type, id.to_owned());
        let gate = {
            let mut turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(key.clone()).or_default().clone()
        };
        Turn {
            key,
            guard: Some(gate.lock_owned().await),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = TURNS.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map still holds the gate: nobody holds or awaits this turn.
        if turns
            .get(&self.key)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

/// Decides `command` on the aggregate and appends its events. Without an expected
/// version a lost race is retried on fresh state (bounded, jittered); inside keyed work
/// a stream that already holds the run's event is left alone (see the module notes).
/// Returns where the last appended event landed in the log and the rows the append wrote
/// inline, as stored (`None`: nothing appended now).
async fn append_expecting<A>(
    pool: &PgPool,
    id: &str,
    command: A::Command,
    services: A::Services,
    metadata: &EventMetadata,
    expected: Option<u64>,
) -> Result<Option<Landed>, CommandError<A::Error>>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    let run = current_run().map(|run| run.to_string());
    let mut map = metadata.to_map();
    if let Some(run) = &run {
        map.insert(RUN_METADATA_KEY.to_owned(), run.clone());
    }
    let mut backoff = Backoff::default();
    // With expected version 0 the stream is taken to be new and not read (see
    // `ExpectingRepository::get_events`) until the domain refuses on that assumption.
    let mut assume_new = expected == Some(0);
    // The first attempt may decide on this process's kept state without reading the
    // stream (docs/adr/0016); any other outcome than a landed append is decided again
    // on a read.
    let mut assume_kept = true;
    for attempt in 1..=MAX_ATTEMPTS {
        // Each attempt has its own note of whether the stream holds this run's event.
        let seen = Arc::new(AtomicBool::new(false));
        let assumed = Arc::new(StdMutex::new(None));
        let landed = Arc::new(StdMutex::new(None));
        let this_attempt = Attempt {
            expected,
            assume_new,
            run: run.clone(),
            seen: seen.clone(),
            assumed: assumed.clone(),
            landed: landed.clone(),
        };
        // A stream taken to be new is not read; keyed work looks for its run among all
        // of the stream's events (`ExpectingRepository::note_run`).
        let reads_kept = !assume_new && run.is_none();
        let store = kept::KeptStore::new(
            store::<A>(pool, this_attempt),
            pool,
            reads_kept,
            assume_kept.then_some(expected),
            assumed.clone(),
            landed.clone(),
        );
        let framework = CqrsFramework::new(store, vec![], services.clone());
        let outcome = {
            let _turn = TURNS.take::<A>(pool, id).await;
            framework
                .execute_with_metadata(id, command.clone(), map.clone())
                .await
        };
        if seen.load(Ordering::SeqCst) {
            // An earlier attempt of this request committed this command already.
            return Ok(None);
        }
        let was_assumed = assumed.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if was_assumed {
            assume_kept = false;
            let decided_again = match &outcome {
                // A refusal or a lost race on memory is no answer: the stream may have
                // moved on under it. Decided again at once, on what it holds.
                Err(AggregateError::UserError(_) | AggregateError::AggregateConflict) => true,
                Err(AggregateError::UnexpectedError(e)) => e.is::<AssumedStale>(),
                _ => false,
            };
            if decided_again {
                telemetry::kept_state_assumed(A::TYPE, false);
                continue;
            }
            if outcome.is_ok() {
                telemetry::kept_state_assumed(A::TYPE, true);
            }
        }
        match outcome {
            Ok(()) => return Ok(landed.lock().unwrap_or_else(|e| e.into_inner()).take()),
            // Refused as a new record: decide again on what the stream really holds (a
            // client's stale version 0 of an existing record is a conflict, not a
            // "not found").
            Err(AggregateError::UserError(_)) if assume_new => assume_new = false,
            Err(AggregateError::AggregateConflict) => {
                if expected.is_some() {
                    // The client decided on the version it saw: its answer is final,
                    // unless the event that got in first is this run's own.
                    if run.is_some() && holds_run::<A>(pool, id, run.clone()).await? {
                        return Ok(None);
                    }
                    telemetry::command_conflict(A::TYPE, false);
                    return Err(CommandError::Conflict);
                }
                if attempt == MAX_ATTEMPTS {
                    telemetry::command_conflict(A::TYPE, false);
                    break;
                }
                telemetry::command_conflict(A::TYPE, true);
                backoff.pause().await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    tracing::warn!(
        stream = id,
        attempts = MAX_ATTEMPTS,
        "concurrent writers won every attempt"
    );
    Err(CommandError::Contended)
}

/// The pause after a lost race: drawn uniformly below a bound that doubles per attempt
/// from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`] (full jitter), so racers spread out.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(FIRST_BACKOFF)
    }
}

impl Backoff {
    async fn pause(&mut self) {
        let pause = rand::thread_rng().gen_range(Duration::ZERO..=self.0);
        tokio::time::sleep(pause).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

/// Whether stream `id` holds an event of keyed-work run `run`.
async fn holds_run<A>(
    pool: &PgPool,
    id: &str,
    run: Option<String>,
) -> Result<bool, CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    let seen = Arc::new(AtomicBool::new(false));
    store::<A>(
        pool,
        Attempt {
            run,
            seen: seen.clone(),
            ..Attempt::default()
        },
    )
    .load_aggregate(id)
    .await?;
    Ok(seen.load(Ordering::SeqCst))
}

/// The aggregate's current state and version (sequence of its last event, 0 if none),
/// decoded through the domain's upcasters.
pub async fn load<A>(pool: &PgPool, id: &str) -> Result<(A, u64), CommandError<A::Error>>
where
    A: Aggregate + 'static,
{
    let context = store::<A>(pool, Attempt::default())
        .load_aggregate(id)
        .await?;
    Ok((context.aggregate, context.current_sequence as u64))
}

/// Waits until the read models a command's answer reads have applied the newest event
/// of stream `id` (read-your-writes).
pub async fn wait_for_stream<A: Aggregate>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    id: &str,
    timeout: Duration,
) -> Result<(), hms_projections::ProjectionError> {
    // The connection goes back before the wait: the round may need it.
    let head = log::stream_head(&mut *pool.acquire().await?, A::TYPE, id).await?;
    match head {
        Some(head) => runner.catch_up_through(pool, head, timeout).await,
        None => Ok(()),
    }
}

/// Waits until every read model, the derived views (audit index, access log) included,
/// has applied every event committed before now: what a reader of the derived views
/// does first, since commands wait for none of them (docs/adr/0011, 0018).
pub async fn wait_for_log(
    pool: &PgPool,
    runner: &ProjectionRunner,
    timeout: Duration,
) -> Result<(), hms_projections::ProjectionError> {
    let head = log::log_head(&mut *pool.acquire().await?).await?;
    match head {
        Some(head) => runner.catch_up_read_side_through(pool, head, timeout).await,
        None => Ok(()),
    }
}

/// An event [`read_streams`] returned.
struct StreamEvent {
    event: SerializedEvent,
    /// Where it landed in the log.
    at: LogCursor,
    /// Whether it held sealed personal data (opened by the read).
    sealed: bool,
}

/// The events of `streams` (aggregate type, id, and `after`: a sequence already known)
/// in one statement, in stream and sequence order: the event at `after` without its
/// payload and metadata (its place is all a caller compares), then every later one with
/// its sealed personal data opened. `after` 0 reads the whole stream.
///
/// Each stream is looked up on its own primary-key range ([`read_streams_sql`]).
async fn read_streams(
    pool: &PgPool,
    streams: &[(&str, &str, u64)],
) -> Result<Vec<StreamEvent>, PersistenceError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: Option<Value>,
        metadata: Option<Value>,
        transaction_id: i64,
        position: i64,
    }
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let sql = read_streams_sql(streams.len());
    let mut query = sqlx::query_as::<_, Row>(&sql);
    for &(aggregate_type, aggregate_id, after) in streams {
        query = query
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX));
    }
    let rows: Vec<Row> = query.fetch_all(pool).await.map_err(|e| {
        if crate::tenancy::platform::is_unreachable(&e) {
            PersistenceError::ConnectionError(Box::new(e))
        } else {
            PersistenceError::UnknownError(Box::new(e))
        }
    })?;
    let mut cursors = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        cursors.push(LogCursor {
            transaction_id: row.transaction_id,
            position: row.position,
        });
        events.push(SerializedEvent::new(
            row.aggregate_id,
            usize::try_from(row.sequence).unwrap_or(usize::MAX),
            row.aggregate_type,
            row.event_type,
            row.event_version,
            row.payload.unwrap_or(Value::Null),
            row.metadata.unwrap_or(Value::Null),
        ));
    }
    let sealed: Vec<bool> = events
        .iter_mut()
        .map(|e| !personal::sealed_patients(&mut e.payload).is_empty())
        .collect();
    if sealed.contains(&true) {
        open_events(pool, &mut events).await?;
    }
    Ok(events
        .into_iter()
        .zip(cursors)
        .zip(sealed)
        .map(|((event, at), sealed)| StreamEvent { event, at, sealed })
        .collect())
}

/// The statement of [`read_streams`] for `n` streams: one primary-key range scan per
/// stream, with its own scalar parameters (type, id, `after`), in stream and sequence
/// order.
///
/// - Scalars, not arrays: given `unnest` of arrays, a cached generic plan is costed for
///   a hundred streams, so PostgreSQL planned afresh on every execution (measured in a
///   commands bench: 0.14 ms of planning per call against 0.06 of execution, the largest
///   planning cost of the command path). With scalars the generic plan is the same index
///   scans, and it is kept.
/// - Never a join over the log: a join's plan cached while the log was small (a new
///   hospital, before its first statistics) hashed the whole log on every request, 5 ms
///   at 20,000 events. A key range per stream can only be planned as the key scan or a
///   sequential scan, and the latter only on statistics of a log of a page or two, which
///   the log never gets (its first ANALYZE waits for a thousand events: migration
///   20261206000020).
pub fn read_streams_sql(n: usize) -> String {
    let branch = |k: usize| {
        let (ty, id, after) = (3 * k + 1, 3 * k + 2, 3 * k + 3);
        format!(
            "(SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, \
                     CASE WHEN sequence > ${after} THEN payload END AS payload, \
                     CASE WHEN sequence > ${after} THEN metadata END AS metadata, \
                     transaction_id::text::bigint AS transaction_id, position \
                FROM public.events \
               WHERE aggregate_type = ${ty} AND aggregate_id = ${id} AND sequence >= ${after})"
        )
    };
    let union: Vec<String> = (0..n).map(branch).collect();
    format!(
        "SELECT * FROM ({}) AS e ORDER BY aggregate_type, aggregate_id, sequence",
        union.join(" UNION ALL ")
    )
}
