//! Commands on several streams decided together and appended in one statement (a
//! *unit*): all of their events commit, or none do.
//!
//! A booking holds the doctor's time, the patient's time and records the appointment.
//! Run as three commands it needs three loads, three commits and, when a later step
//! fails, compensating commands (which can themselves fail and leave a slot held). As a
//! unit it needs one load of every stream (one statement), decisions in memory, and one
//! append: a refusal anywhere appends nothing, and nothing is left to undo.
//!
//! The load starts each stream from this process's kept state of it, where it has one
//! that is still current, as a single-stream command does (docs/adr/0014, [`UnitStore`]);
//! once the unit's events land, each stream's state after its decisions is kept at the
//! place its last event landed ([`Leaves`]). Where every declared stream is kept (or
//! declared new), the first attempt reads nothing: it assumes them, and the append
//! proves it, or the unit is decided again on a read (docs/adr/0016, [`assume`]).
//!
//! The guarantees are the single-stream command's ([`super::execute`]):
//! - each decided stream's events land at its loaded version + 1, so a concurrent writer
//!   on any of them makes the whole append fail on the primary key; the unit is then
//!   decided again on fresh state (bounded, jittered), unless a stream's expected
//!   version (the client's) no longer holds: that is a final conflict;
//! - inside keyed work every event carries the run's id; a unit whose loaded streams
//!   hold an event of the run committed in an earlier attempt (all or nothing), and is
//!   not decided again;
//! - the caller reads its own writes: the read models are caught up through the unit's
//!   last event before it returns, or, for a unit answered from the rows its append
//!   wrote inline (a booking's appointment, [`together_inline`]), those rows are
//!   returned as stored at commit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};

use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventEnvelope, EventStore};
use hms_domain::EventMetadata;
use hms_projections::inline::{rows_written_inline, WrittenInline};
use hms_projections::{personal, LogCursor, ProjectionRunner};
use serde_json::Value;
use sqlx::PgPool;

use super::current::Kept;
use super::kept::{self, AssumedStale, KeptHead, DECIDED};
use super::{
    append_events, read_streams, seal_events, Answer, Assumed, Backoff, CommandError, MAX_ATTEMPTS,
    READ_YOUR_WRITES_TIMEOUT, TURNS,
};
use crate::idempotency::{current_run, RUN_METADATA_KEY};
use crate::telemetry;

/// The streams a unit reads and may write, each with the version the client expects
/// of it, if any.
#[derive(Debug, Default, Clone)]
pub struct Streams(Vec<Declared>);

#[derive(Debug, Clone)]
struct Declared {
    aggregate_type: &'static str,
    id: String,
    expected: Option<u64>,
}

impl Streams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds stream `id` of aggregate `A`.
    pub fn with<A: Aggregate>(self, id: impl Into<String>) -> Self {
        self.expecting::<A>(id, None)
    }

    /// Adds stream `id` of aggregate `A`, which must be at version `expected` (the
    /// sequence of its last event; 0 for a new one) when one is given.
    pub fn expecting<A: Aggregate>(mut self, id: impl Into<String>, expected: Option<u64>) -> Self {
        let id = id.into();
        match self
            .0
            .iter_mut()
            .find(|d| d.aggregate_type == A::TYPE && d.id == id)
        {
            // One stream named twice (a doctor's day, before and after a move on the
            // same day) is loaded once.
            Some(declared) => declared.expected = declared.expected.or(expected),
            None => self.0.push(Declared {
                aggregate_type: A::TYPE,
                id,
                expected,
            }),
        }
        self
    }

    fn holds(&self, aggregate_type: &str, id: &str) -> bool {
        self.0
            .iter()
            .any(|d| d.aggregate_type == aggregate_type && d.id == id)
    }
}

/// One attempt of a unit: the declared streams as loaded, and the events decided so
/// far (also visible to later decisions on the same stream). Cheap to clone; the
/// decisions of one attempt share it.
#[derive(Clone)]
pub struct Unit(Arc<Attempt>);

struct Attempt {
    pool: PgPool,
    /// The database's server and name: the key of its streams in [`DECIDED`].
    database: String,
    /// The declared streams and those included since.
    streams: StdMutex<Streams>,
    metadata: HashMap<String, String>,
    /// Where each stream starts: this process's kept state, or nothing (its first event).
    starts: StdMutex<HashMap<UnitStream, Start>>,
    /// Loaded events after each stream's start (personal data opened), followed by the
    /// ones decided in this attempt.
    events: StdMutex<Vec<SerializedEvent>>,
    decided: StdMutex<Vec<SerializedEvent>>,
    /// What each decided stream leaves to keep once the unit's events land.
    leaves: StdMutex<HashMap<UnitStream, Leaves>>,
    /// Patients' data keys the decisions had in hand (read with their facts), so that
    /// sealing the unit's events needs no statement for those patients.
    known_keys: StdMutex<Vec<personal::KnownKey>>,
}

/// A decided stream's state after its decisions, to keep once the unit's append lands,
/// at the place its last event landed (docs/adr/0014). Dropped with the attempt when the
/// append does not land.
struct Leaves {
    /// The version the unit's first decision on the stream started from: what the kept
    /// state must be at for the new one to follow it ([`super::CurrentStates::advance`]).
    from: u64,
    /// Keeps the state after the stream's last decision (given `from` and the place);
    /// `None` once a decision on it sealed personal data, which is never kept.
    keep: Option<Box<dyn FnOnce(u64, LogCursor) + Send>>,
}

/// A stream of a unit: aggregate type and id.
type UnitStream = (&'static str, String);

/// Where a unit's stream starts, and what its load found after that.
#[derive(Clone, Default)]
struct Start {
    /// The state this process kept of the stream, current when loaded (docs/adr/0014).
    kept: Option<Kept>,
    /// The last event loaded after it, where it is in the log, and whether the state up
    /// to it may be kept (no loaded event held sealed personal data).
    last: Option<(u64, LogCursor, bool)>,
}

/// Streams as a unit starts from them: their loaded events (after any kept state), where
/// each landed in the log, and each stream's [`Start`].
struct Loaded {
    events: Vec<SerializedEvent>,
    cursors: Vec<LogCursor>,
    starts: HashMap<UnitStream, Start>,
}

/// The declared `streams` as this process kept them, read from nothing (docs/adr/0016):
/// `None` unless each is kept (at the version the client expects, if any) or declared new
/// (expected version 0) with nothing kept of it. The append proves the assumption
/// ([`Assumed`]).
fn assume(database: &str, streams: &Streams) -> Option<Loaded> {
    let mut starts = HashMap::new();
    for declared in &streams.0 {
        let kept = DECIDED.entry(database, declared.aggregate_type, &declared.id);
        let assumable = match (&kept, declared.expected) {
            (None, expected) => expected == Some(0),
            (Some(kept), expected) => expected.is_none_or(|e| e == kept.version),
        };
        if !assumable {
            return None;
        }
        starts.insert(
            (declared.aggregate_type, declared.id.clone()),
            Start { kept, last: None },
        );
    }
    Some(Loaded {
        events: Vec::new(),
        cursors: Vec::new(),
        starts,
    })
}

/// Loads `keys` in one statement: from the state this process keeps of each (when
/// `from_kept`, and its last event is still where it was), else from the first event.
/// A stream rewritten under its kept state is read again from its first event.
async fn load(
    pool: &PgPool,
    database: &str,
    keys: &[(&'static str, &str)],
    from_kept: bool,
) -> Result<Loaded, PersistenceError> {
    let kept: Vec<Option<Kept>> = keys
        .iter()
        .map(|&(t, id)| from_kept.then(|| DECIDED.entry(database, t, id)).flatten())
        .collect();
    let after = |k: &Option<Kept>| k.as_ref().map_or(0, |k| k.version);
    let wanted: Vec<(&str, &str, u64)> = keys
        .iter()
        .zip(&kept)
        .map(|(&(t, id), k)| (t, id, after(k)))
        .collect();
    let mut rows = read_streams(pool, &wanted).await?;
    // Kept states whose last event is no longer where it was: read those streams whole.
    let mut stale = Vec::new();
    for (&(t, id), k) in keys.iter().zip(&kept) {
        let Some(k) = k else { continue };
        let at_kept = rows.iter().any(|r| {
            r.event.aggregate_type == t
                && r.event.aggregate_id == id
                && r.event.sequence as u64 == k.version
                && r.at == k.at
        });
        if !at_kept {
            stale.push((t, id, 0));
        }
    }
    if !stale.is_empty() {
        rows.retain(|r| {
            !stale
                .iter()
                .any(|&(t, id, _)| r.event.aggregate_type == t && r.event.aggregate_id == id)
        });
        rows.extend(read_streams(pool, &stale).await?);
    }
    let mut starts: HashMap<UnitStream, Start> = HashMap::new();
    for (&(t, id), k) in keys.iter().zip(kept) {
        let fresh = stale.iter().any(|&(st, sid, _)| st == t && sid == id);
        starts.insert(
            (t, id.to_owned()),
            Start {
                kept: k.filter(|_| !fresh),
                last: None,
            },
        );
    }
    let mut loaded = Loaded {
        events: Vec::with_capacity(rows.len()),
        cursors: Vec::with_capacity(rows.len()),
        starts,
    };
    for row in rows {
        let key = (
            keys.iter()
                .map(|&(t, _)| t)
                .find(|t| *t == row.event.aggregate_type)
                .unwrap_or("unknown"),
            row.event.aggregate_id.clone(),
        );
        let start = loaded.starts.entry(key).or_default();
        // The kept last event itself comes without its payload: the state holds it.
        if start
            .kept
            .as_ref()
            .is_some_and(|k| k.version == row.event.sequence as u64)
        {
            continue;
        }
        let keepable = start.last.is_none_or(|(_, _, keepable)| keepable) && !row.sealed;
        start.last = Some((row.event.sequence as u64, row.at, keepable));
        loaded.events.push(row.event);
        loaded.cursors.push(row.at);
    }
    Ok(loaded)
}

impl Unit {
    /// The unit of `streams`, as `loaded`.
    fn of(
        pool: &PgPool,
        database: String,
        streams: Streams,
        metadata: HashMap<String, String>,
        loaded: Loaded,
    ) -> Self {
        Unit(Arc::new(Attempt {
            pool: pool.clone(),
            database,
            streams: StdMutex::new(streams),
            metadata,
            starts: StdMutex::new(loaded.starts),
            events: StdMutex::new(loaded.events),
            decided: StdMutex::new(Vec::new()),
            leaves: StdMutex::new(HashMap::new()),
            known_keys: StdMutex::new(Vec::new()),
        }))
    }

    /// Decides `command` on stream `id` of aggregate `A` (declared in the unit's
    /// [`Streams`]) as the stream stands in this attempt; its events are appended with
    /// the rest of the unit's, or not at all. A refusal is the domain's, typed.
    pub async fn decide<A>(
        &self,
        id: &str,
        command: A::Command,
        services: A::Services,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate + Clone + 'static,
    {
        CqrsFramework::new(UnitStore::<A>::new(self), vec![], services)
            .execute_with_metadata(id, command, self.0.metadata.clone())
            .await
            .map_err(CommandError::from)
    }

    /// Stream `id` of aggregate `A` as it stands in this attempt (its events decided so
    /// far included) and its version.
    pub async fn state<A>(&self, id: &str) -> Result<(A, u64), CommandError<A::Error>>
    where
        A: Aggregate + Clone + 'static,
    {
        let context = UnitStore::<A>::new(self).load_aggregate(id).await?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    /// Adds streams `more` to the unit, loaded in one statement: for streams known only
    /// from what a declared one holds (the days an appointment's slots are on). A
    /// concurrent writer on them loses the unit its race, as on any other. Their expected
    /// versions are not checked, and the run's earlier commit is recognised on the
    /// declared streams only: a unit's declared streams include one it always writes.
    pub async fn include(&self, more: Streams) -> Result<(), CommandError<Infallible>> {
        let new: Vec<Declared> = {
            let streams = self.0.streams.lock().unwrap_or_else(|e| e.into_inner());
            more.0
                .into_iter()
                .filter(|d| !streams.holds(d.aggregate_type, &d.id))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let keys: Vec<(&'static str, &str)> = new
            .iter()
            .map(|d| (d.aggregate_type, d.id.as_str()))
            .collect();
        // The run is looked for on the declared streams only: these may start from kept
        // states even inside keyed work.
        let loaded = load(&self.0.pool, &self.0.database, &keys, true)
            .await
            .map_err(store_error)?;
        self.0
            .starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(loaded.starts);
        let events = loaded.events;
        self.0
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .extend(new);
        self.0
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
        Ok(())
    }

    /// Notes what a decision on stream `id` of `A` leaves to keep: its state after the
    /// decision at `version`, unless the decision sealed personal data.
    fn leave<A>(&self, id: &str, from: u64, after: Option<(A, u64)>)
    where
        A: Aggregate + 'static,
    {
        let database = self.0.database.clone();
        let stream_id = id.to_owned();
        let keep = after.map(|(state, version)| {
            Box::new(move |from: u64, at: LogCursor| {
                DECIDED.advance::<A>(&database, &stream_id, from, state, version, at)
            }) as Box<dyn FnOnce(u64, LogCursor) + Send>
        });
        let mut leaves = self.0.leaves.lock().unwrap_or_else(|e| e.into_inner());
        match leaves.entry((A::TYPE, id.to_owned())) {
            std::collections::hash_map::Entry::Occupied(mut earlier) => {
                // A later decision on the same stream: its state follows the earlier one's.
                let earlier = earlier.get_mut();
                earlier.keep = earlier.keep.take().and(keep);
            }
            std::collections::hash_map::Entry::Vacant(first) => {
                first.insert(Leaves { from, keep });
            }
        }
    }

    /// Keeps each decided stream's state after the unit, now that its `appended` events
    /// landed at `cursors` (one each, in order).
    fn keep_landed(&self, appended: &[SerializedEvent], cursors: &[LogCursor]) {
        if appended.len() != cursors.len() {
            return;
        }
        let mut last: HashMap<(&str, &str), LogCursor> = HashMap::new();
        for (event, at) in appended.iter().zip(cursors) {
            last.insert((&event.aggregate_type, &event.aggregate_id), *at);
        }
        let leaves = std::mem::take(&mut *self.0.leaves.lock().unwrap_or_else(|e| e.into_inner()));
        for ((aggregate_type, id), leaves) in leaves {
            if let (Some(keep), Some(at)) = (leaves.keep, last.get(&(aggregate_type, id.as_str())))
            {
                keep(leaves.from, *at);
            }
        }
    }

    /// Hands the unit a patient's data key read with the decisions' facts: the unit's
    /// events are sealed with it, without asking the key table.
    pub fn knows_key(&self, key: personal::KnownKey) {
        self.0
            .known_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
    }

    fn known_keys(&self) -> Vec<personal::KnownKey> {
        self.0
            .known_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn start_of(&self, aggregate_type: &'static str, id: &str) -> Start {
        self.0
            .starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(aggregate_type, id.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    fn events_of(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let declared = self
            .0
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holds(aggregate_type, id);
        if !declared {
            return Err(PersistenceError::UnknownError(
                format!("stream {aggregate_type}/{id} is not one of the unit's").into(),
            ));
        }
        let events = self.0.events.lock().unwrap_or_else(|e| e.into_inner());
        Ok(events
            .iter()
            .filter(|e| e.aggregate_type == aggregate_type && e.aggregate_id == id)
            .cloned()
            .collect())
    }
}

impl PersistedEventRepository for Unit {
    async fn get_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events_of(A::TYPE, id)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = self.events_of(A::TYPE, id)?;
        events.retain(|e| e.sequence > last_sequence);
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    /// Keeps the decided events for the unit's one append.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "a unit keeps no snapshots".into(),
            ));
        }
        self.0
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(events);
        self.0
            .decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(events);
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        _id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "a unit's streams are not replayed".into(),
        ))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "a unit's streams are not replayed".into(),
        ))
    }
}

/// cqrs-es's event store over one attempt of a unit: a stream starts from its kept state
/// where it has one, then takes the loaded and decided events after it, decoded as every
/// load decodes them (upcasters). A state loaded before any decision of the attempt on it
/// is kept for the next unit (docs/adr/0014).
struct UnitStore<A: Aggregate> {
    unit: Unit,
    inner: PersistedEventStore<Unit, A>,
}

impl<A: Aggregate> UnitStore<A> {
    fn new(unit: &Unit) -> Self {
        Self {
            unit: unit.clone(),
            inner: PersistedEventStore::new_event_store(unit.clone())
                .with_upcasters(hms_domain::upcasters()),
        }
    }
}

impl<A: Aggregate + Clone + 'static> EventStore<A> for UnitStore<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.inner.load_events(id).await
    }

    async fn load_aggregate(
        &self,
        id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let start = self.unit.start_of(A::TYPE, id);
        let (mut aggregate, mut version) = match start.kept {
            Some(kept) => kept.state_of::<A>().ok_or_else(|| {
                AggregateError::UnexpectedError(
                    format!("the state kept of {}/{id} is of another type", A::TYPE).into(),
                )
            })?,
            None => (A::default(), 0),
        };
        for event in self.unit.events_of(A::TYPE, id)? {
            version = event.sequence as u64;
            let event = DECIDED.decode::<A>(event).map_err(kept::aggregate_error)?;
            aggregate.apply(event.payload);
        }
        if let Some((last, at, true)) = start.last {
            // As loaded: no decision of this attempt on the stream yet.
            if last == version {
                DECIDED.keep::<A>(&self.unit.0.database, id, version, at, || aggregate.clone());
            }
        }
        Ok(kept::context(id, aggregate, version))
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        mut context: EventStoreAggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let from = context.current_sequence as u64;
        let version = from + events.len() as u64;
        let after = kept::state_after(&events, &mut context).map(|state| (state, version));
        let id = context.aggregate_id.clone();
        let committed = self.inner.commit(events, context, metadata).await?;
        self.unit.leave::<A>(&id, from, after);
        Ok(committed)
    }
}

/// How one attempt ended, short of a refusal.
enum Ended {
    /// The unit's events were appended; the last landed here, with the rows the append
    /// wrote inline, as stored.
    Appended(Option<LogCursor>, Option<WrittenInline>),
    /// An earlier attempt of this request committed the unit; its last event is here.
    Earlier(LogCursor),
    /// A concurrent writer appended to one of the decided streams first.
    Lost,
    /// The attempt assumed the streams as kept (docs/adr/0016) and was refused, lost a
    /// race, or found them moved on: it is decided again, at once, on a read.
    Unconfirmed,
}

/// Runs `decide` on `streams` as one unit (see the module notes), then waits until the
/// read models show it. `decide` is called once per attempt with that attempt's
/// [`Unit`]; its error is the caller's refusal, reported as `Rejected`.
pub async fn together<E, F, Fut>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    metadata: &EventMetadata,
    streams: Streams,
    decide: F,
) -> Result<(), CommandError<E>>
where
    E: std::error::Error,
    F: FnMut(Unit) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    together_then(pool, runner, metadata, streams, decide, Answer::ReadModels)
        .await
        .map(drop)
}

/// As [`together`], for a unit whose answer is the rows its append writes inline (a
/// booking's appointment, docs/adr/0011): when it wrote some, it returns them at commit
/// without waiting for the read models; otherwise (an earlier attempt of the request
/// booked, or the rows were held back) it waits as [`together`] does and returns none.
pub async fn together_inline<E, F, Fut>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    metadata: &EventMetadata,
    streams: Streams,
    decide: F,
) -> Result<Option<WrittenInline>, CommandError<E>>
where
    E: std::error::Error,
    F: FnMut(Unit) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    together_then(pool, runner, metadata, streams, decide, Answer::Inline).await
}

async fn together_then<E, F, Fut>(
    pool: &PgPool,
    runner: &ProjectionRunner,
    metadata: &EventMetadata,
    streams: Streams,
    mut decide: F,
    answer: Answer,
) -> Result<Option<WrittenInline>, CommandError<E>>
where
    E: std::error::Error,
    F: FnMut(Unit) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let run = current_run().map(|run| run.to_string());
    let mut map = metadata.to_map();
    if let Some(run) = &run {
        map.insert(RUN_METADATA_KEY.to_owned(), run.clone());
    }
    // The unit's own name in the conflict counter: its last stream, the record it is
    // about (the appointment of a booking).
    let label = streams.0.last().map_or("unit", |d| d.aggregate_type);
    let mut order: Vec<(&'static str, &str)> = streams
        .0
        .iter()
        .map(|d| (d.aggregate_type, d.id.as_str()))
        .collect();
    // `Streams` names each stream once.
    order.sort_unstable();
    let mut backoff = Backoff::default();
    // Keyed work looks for its run among the streams' events, so it always reads them.
    let mut assume = run.is_none();
    for attempt in 1..=MAX_ATTEMPTS {
        let ended = {
            let mut turns = Vec::with_capacity(order.len());
            for (aggregate_type, id) in &order {
                turns.push(TURNS.take_of(pool, aggregate_type, id).await);
            }
            let _under_way = runner.appending(pool);
            let attempt = Attempting {
                streams: &streams,
                metadata: &map,
                run: run.as_deref(),
                assume,
                label,
            };
            attempt_once(pool, attempt, &mut decide).await?
        };
        let head = match ended {
            Ended::Appended(_, Some(inline)) if answer == Answer::Inline && inline.wrote_any() => {
                return Ok(Some(inline));
            }
            Ended::Appended(head, _) => head,
            Ended::Earlier(head) => Some(head),
            Ended::Unconfirmed => {
                assume = false;
                continue;
            }
            Ended::Lost if attempt < MAX_ATTEMPTS => {
                telemetry::command_conflict(label, true);
                backoff.pause().await;
                continue;
            }
            Ended::Lost => {
                telemetry::command_conflict(label, false);
                break;
            }
        };
        if let Some(head) = head {
            // The write stands whatever the read side does now (see `execute`).
            if let Err(error) = runner
                .catch_up_through(pool, head, READ_YOUR_WRITES_TIMEOUT)
                .await
            {
                tracing::warn!(%error, unit = label, "read models are behind the unit just written");
            }
        }
        return Ok(None);
    }
    tracing::warn!(
        unit = label,
        attempts = MAX_ATTEMPTS,
        "concurrent writers won every attempt"
    );
    Err(CommandError::Contended)
}

/// What one attempt of a unit is given.
struct Attempting<'a> {
    streams: &'a Streams,
    metadata: &'a HashMap<String, String>,
    /// Keyed work's run.
    run: Option<&'a str>,
    /// Whether the attempt may assume the streams as kept, without a read.
    assume: bool,
    /// The unit's name in the counters.
    label: &'static str,
}

async fn attempt_once<E, F, Fut>(
    pool: &PgPool,
    attempt: Attempting<'_>,
    decide: &mut F,
) -> Result<Ended, CommandError<E>>
where
    E: std::error::Error,
    F: FnMut(Unit) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let Attempting {
        streams,
        metadata,
        run,
        assume: may_assume,
        label,
    } = attempt;
    let database = super::database_of(pool);
    let assumed = may_assume.then(|| assume(&database, streams)).flatten();
    let assuming = assumed.is_some();
    let loaded = match assumed {
        Some(assumed) => assumed,
        None => {
            let keys: Vec<(&'static str, &str)> = streams
                .0
                .iter()
                .map(|d| (d.aggregate_type, d.id.as_str()))
                .collect();
            // Keyed work looks for its run among all of the declared streams' events.
            load(pool, &database, &keys, run.is_none())
                .await
                .map_err(store_error)?
        }
    };
    let (events, cursors) = (&loaded.events, &loaded.cursors);
    if let Some(run) = run {
        let ours = events
            .iter()
            .zip(cursors)
            .filter(|(e, _)| e.metadata.get(RUN_METADATA_KEY).and_then(Value::as_str) == Some(run));
        if let Some(head) = ours.map(|(_, cursor)| *cursor).max() {
            return Ok(Ended::Earlier(head));
        }
    }
    for declared in &streams.0 {
        let Some(expected) = declared.expected else {
            continue;
        };
        let start = loaded
            .starts
            .get(&(declared.aggregate_type, declared.id.clone()));
        let version = start
            .and_then(|s| s.last.map(|(version, _, _)| version))
            .or_else(|| start.and_then(|s| s.kept.as_ref().map(|k| k.version)))
            .unwrap_or(0);
        if version != expected {
            telemetry::command_conflict(declared.aggregate_type, false);
            return Err(CommandError::Conflict);
        }
    }
    // The kept last event each declared stream was assumed at (`None`: assumed new).
    let heads: Vec<Option<KeptHead>> = if assuming {
        streams
            .0
            .iter()
            .map(|d| {
                loaded
                    .starts
                    .get(&(d.aggregate_type, d.id.clone()))
                    .and_then(|s| s.kept.as_ref())
                    .map(Kept::head)
            })
            .collect()
    } else {
        Vec::new()
    };
    let unit = Unit::of(pool, database, streams.clone(), metadata.clone(), loaded);
    if let Err(refused) = decide(unit.clone()).await {
        if assuming {
            // Refused on memory: no answer until the streams are read.
            telemetry::kept_state_assumed(label, false);
            return Ok(Ended::Unconfirmed);
        }
        return Err(CommandError::Rejected(refused));
    }
    let decided = std::mem::take(&mut *unit.0.decided.lock().unwrap_or_else(|e| e.into_inner()));
    let assumed: Vec<Assumed<'_>> = streams
        .0
        .iter()
        .zip(heads)
        .map(|(declared, head)| Assumed {
            aggregate_type: declared.aggregate_type,
            aggregate_id: &declared.id,
            head,
            appended: decided.iter().any(|e| {
                e.aggregate_type == declared.aggregate_type && e.aggregate_id == declared.id
            }),
        })
        .collect();
    let known = unit.known_keys();
    // Built from the events as decided, before their personal data is sealed.
    let inline = rows_written_inline(&decided)
        .map_err(|e| store_error(PersistenceError::UnknownError(Box::new(e))))?;
    let sealed = seal_events(pool, &decided, &known)
        .await
        .map_err(store_error)?;
    let appended = append_events(pool, &sealed, &[], &assumed, &inline).await;
    if assuming {
        let unconfirmed = match &appended {
            Ok(_) => {
                telemetry::kept_state_assumed(label, true);
                false
            }
            Err(PersistenceError::OptimisticLockError) => true,
            Err(PersistenceError::UnknownError(e)) => e.is::<AssumedStale>(),
            Err(_) => false,
        };
        if unconfirmed {
            telemetry::kept_state_assumed(label, false);
            return Ok(Ended::Unconfirmed);
        }
    }
    match appended {
        Ok(landed) => {
            if let Some(landed) = &landed {
                unit.keep_landed(&sealed, &landed.cursors);
            }
            let written = match landed.as_ref().and_then(|l| l.inline.as_deref()) {
                Some(rows) => match WrittenInline::parse(rows) {
                    Ok(rows) => Some(rows),
                    // The unit stands; its answer is read from the read models instead.
                    Err(error) => {
                        tracing::warn!(%error, unit = label, "rows written inline unreadable");
                        None
                    }
                },
                None => None,
            };
            Ok(Ended::Appended(landed.map(|l| l.head), written))
        }
        Err(PersistenceError::OptimisticLockError) => Ok(Ended::Lost),
        Err(e) => Err(store_error(e)),
    }
}

/// A failure of the store, as the single-stream path reports it (unreachable, erased
/// patient, anything else).
pub(super) fn store_error<E: std::error::Error>(e: PersistenceError) -> CommandError<E> {
    CommandError::from(AggregateError::<E>::from(e))
}
