//! The caller's account and hospital as their streams stand *now*, without decoding
//! either stream on every request.
//!
//! Every request needs both (authentication, then authorization), and both streams
//! change rarely. A decoded state is kept per process with the place of its stream's
//! last event (sequence and log cursor). Each read is still one statement against the
//! write side: it returns that last event's place and any event after it, so a change
//! committed by any process counts on the next request, exactly as a full load would.
//! When the last event is no longer where it was (a restore, or a move that re-based
//! the log) the stream is read in full again. Memory only saves decoding; it never
//! decides anything.
//!
//! Only streams without sealed personal data are kept (accounts and hospitals have
//! none): an erasure must not leave a patient's name in a process's memory.
//!
//! The command path keeps the streams it decides on in an instance of its own
//! (`kept::DECIDED`): an invoice paid from many tills is read from its last event on,
//! not decoded from its first one on every payment.

use std::any::Any;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope};
use hashlink::LruCache;
use hms_projections::LogCursor;
use sqlx::PgPool;

use super::kept::KeptHead;
use super::{read_streams, together, CommandError, StreamEvent};

/// States kept per process by the authenticator: a hospital's and its active staff's,
/// for every hospital this process serves recently. A few kilobytes each at most.
const KEPT_STATES: usize = 8_192;

/// Decoded states of rarely changing streams, confirmed against the log on every read.
#[derive(Clone)]
pub struct CurrentStates {
    kept: Arc<Mutex<LruCache<Key, Kept>>>,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
}

/// A stream in one hospital's database: the directory's code names the database (a
/// restored copy under another code is another database).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    database: String,
    aggregate_type: &'static str,
    aggregate_id: String,
}

/// A kept state, with the place of the last event it includes.
#[derive(Clone)]
pub(super) struct Kept {
    state: Arc<dyn Any + Send + Sync>,
    /// The sequence of the stream's last event the state includes (≥ 1).
    pub(super) version: u64,
    /// Where that event is in the log: a stream rewritten under it (restore, move) is
    /// told apart by this.
    pub(super) at: LogCursor,
}

impl Kept {
    /// The kept last event: what an append on the assumed state requires (docs/adr/0016).
    pub(super) fn head(&self) -> KeptHead {
        KeptHead {
            version: self.version,
            at: self.at,
        }
    }

    /// The kept state as an `A`, with its version.
    pub(super) fn state_of<A: Aggregate + Clone + 'static>(self) -> Option<(A, u64)> {
        let state = self.state.downcast::<A>().ok()?;
        Some(((*state).clone(), self.version))
    }
}

/// A stream's last event as a read found it: its sequence (0: no events), and its place
/// in the log where the state may be kept (no sealed data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHead {
    pub version: u64,
    pub at: Option<LogCursor>,
}

impl ReadHead {
    /// Whether the stream is still where a kept state had it: the same last event, not
    /// only the same version (a stream rewritten under a kept state, by a restore, may
    /// have another event at that sequence).
    pub fn is(&self, kept: &KeptHead) -> bool {
        self.version == kept.version && self.at == Some(kept.at)
    }
}

/// One stream to read, and what is kept of it.
struct Wanted<'a> {
    aggregate_type: &'static str,
    aggregate_id: &'a str,
    kept: Option<Kept>,
}

/// The events a read returned for one stream, in sequence order; a kept last event comes
/// first, without its payload.
type Rows = Vec<StreamEvent>;

impl Default for CurrentStates {
    fn default() -> Self {
        Self::new()
    }
}

impl CurrentStates {
    pub fn new() -> Self {
        Self::with_capacity(KEPT_STATES)
    }

    /// Keeping at most `states` states, the least recently read ones going first.
    pub fn with_capacity(states: usize) -> Self {
        Self {
            kept: Arc::new(Mutex::new(LruCache::new(states))),
            upcasters: Arc::new(hms_domain::upcasters()),
        }
    }

    /// Streams `a_id` of `A` and `b_id` of `B` in `database` (the directory's code of the
    /// hospital behind `pool`) as they are now, each with its last event's version and,
    /// for a stream of no sealed data, its place in the log; one statement.
    pub async fn pair<A, B>(
        &self,
        pool: &PgPool,
        database: &str,
        a_id: &str,
        b_id: &str,
    ) -> Result<((A, ReadHead), (B, ReadHead)), CommandError<Infallible>>
    where
        A: Aggregate + Clone + 'static,
        B: Aggregate + Clone + 'static,
    {
        let [a, b] = [
            self.wanted::<A>(database, a_id),
            self.wanted::<B>(database, b_id),
        ];
        let (a_rows, b_rows) = read(pool, &[&a, &b]).await?.into_iter().partition(|f| {
            f.event.aggregate_type == a.aggregate_type && f.event.aggregate_id == a.aggregate_id
        });
        Ok((
            self.settle::<A>(pool, database, a, a_rows).await?,
            self.settle::<B>(pool, database, b, b_rows).await?,
        ))
    }

    /// Stream `id` of `A` in `database` as it is now, with its version; one statement.
    pub async fn one<A>(
        &self,
        pool: &PgPool,
        database: &str,
        id: &str,
    ) -> Result<(A, u64), CommandError<Infallible>>
    where
        A: Aggregate + Clone + 'static,
    {
        let wanted = self.wanted::<A>(database, id);
        let rows = read(pool, &[&wanted]).await?;
        let (state, head) = self.settle::<A>(pool, database, wanted, rows).await?;
        Ok((state, head.version))
    }

    /// Streams `a_id` of `A` and `b_id` of `B` in `database` as this process last read
    /// them, with their last events, without asking the database: what a request may
    /// assume until a guarded append or a read confirms it (docs/adr/0012). `None` unless
    /// both are kept.
    pub fn kept_pair<A, B>(
        &self,
        database: &str,
        a_id: &str,
        b_id: &str,
    ) -> Option<((A, KeptHead), (B, KeptHead))>
    where
        A: Aggregate + Clone + 'static,
        B: Aggregate + Clone + 'static,
    {
        let a = self.wanted::<A>(database, a_id).kept?;
        let b = self.wanted::<B>(database, b_id).kept?;
        let (a_head, b_head) = (a.head(), b.head());
        Some((
            (a.state_of::<A>()?.0, a_head),
            (b.state_of::<B>()?.0, b_head),
        ))
    }

    /// Stream `id` of `A` in `database` is at `version`, its last event at `at`, with
    /// `state`: what this process just appended to it, decided on the stream at `from`.
    /// Kept only where the state decided on was kept at `from` (a stream of no sealed
    /// data, this process's read of it current) or the stream is new (`from` 0, nothing
    /// kept); the caller leaves out appends of sealed data.
    pub(super) fn advance<A>(
        &self,
        database: &str,
        id: &str,
        from: u64,
        state: A,
        version: u64,
        at: LogCursor,
    ) where
        A: Aggregate + 'static,
    {
        let key = Self::key::<A>(database, id);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let follows = match kept.peek(&key) {
            Some(k) => k.version == from,
            None => from == 0,
        };
        if follows {
            let state = Arc::new(state);
            kept.insert(key, Kept { state, version, at });
        }
    }

    /// What is kept of stream `id` of type `aggregate_type` in `database`, for a caller
    /// that reads the events after it itself and checks the kept last event's place.
    pub(super) fn entry(
        &self,
        database: &str,
        aggregate_type: &'static str,
        id: &str,
    ) -> Option<Kept> {
        let key = Key {
            database: database.to_owned(),
            aggregate_type,
            aggregate_id: id.to_owned(),
        };
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Keeps `state()` as stream `id` of `A` in `database` at `version`, its last event
    /// at `at`: a state read from the stream by a caller (all of its events unsealed),
    /// unless a later one is kept already.
    pub(super) fn keep<A>(
        &self,
        database: &str,
        id: &str,
        version: u64,
        at: LogCursor,
        state: impl FnOnce() -> A,
    ) where
        A: Aggregate + 'static,
    {
        let key = Self::key::<A>(database, id);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.peek(&key).is_none_or(|k| k.version < version) {
            let state = Arc::new(state());
            kept.insert(key, Kept { state, version, at });
        }
    }

    fn key<A: Aggregate>(database: &str, id: &str) -> Key {
        Key {
            database: database.to_owned(),
            aggregate_type: A::TYPE,
            aggregate_id: id.to_owned(),
        }
    }

    fn wanted<'a, A: Aggregate>(&self, database: &str, id: &'a str) -> Wanted<'a> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key::<A>(database, id))
            .cloned();
        Wanted {
            aggregate_type: A::TYPE,
            aggregate_id: id,
            kept,
        }
    }

    /// The state of a stream from what a read returned for it, kept for the next read.
    /// When the kept last event is no longer where it was, the stream is read in full.
    async fn settle<A>(
        &self,
        pool: &PgPool,
        database: &str,
        wanted: Wanted<'_>,
        rows: Rows,
    ) -> Result<(A, ReadHead), CommandError<Infallible>>
    where
        A: Aggregate + Clone + 'static,
    {
        let key = Self::key::<A>(database, wanted.aggregate_id);
        let kept_version = wanted.kept.as_ref().map(|k| k.version);
        let mut rows = rows.into_iter().peekable();
        let resumed = match &wanted.kept {
            Some(kept) => resume::<A>(kept, &mut rows),
            None => Some(Start::new()),
        };
        let (state, version, at) = match resumed {
            Some(start) => self.follow(start, rows)?,
            None => {
                // Rewritten under the kept state (a restore, a move): read as if new.
                self.kept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let fresh = Wanted {
                    kept: None,
                    ..wanted
                };
                let rows = read(pool, &[&fresh]).await?;
                self.follow(Start::new(), rows.into_iter())?
            }
        };
        if let (true, Some(at)) = (kept_version != Some(version), at) {
            // A concurrent request may have kept a later state meanwhile.
            self.keep::<A>(database, wanted.aggregate_id, version, at, || state.clone());
        }
        Ok((state, ReadHead { version, at }))
    }

    /// `start` with the events of `rows` applied. The place of the last event comes back
    /// only where the state may be kept (no sealed data among the events).
    fn follow<A: Aggregate>(
        &self,
        start: Start<A>,
        rows: impl Iterator<Item = StreamEvent>,
    ) -> Result<(A, u64, Option<LogCursor>), CommandError<Infallible>> {
        let Start {
            mut state,
            mut version,
            mut last,
        } = start;
        let mut keepable = true;
        for fetched in rows {
            keepable &= !fetched.sealed;
            version = fetched.event.sequence as u64;
            last = Some(fetched.at);
            state.apply(self.decode::<A>(fetched.event)?.payload);
        }
        Ok((state, version, last.filter(|_| keepable)))
    }

    /// An event as cqrs-es decodes it on a load: through the domain's upcasters.
    pub(super) fn decode<A: Aggregate>(
        &self,
        mut event: SerializedEvent,
    ) -> Result<EventEnvelope<A>, CommandError<Infallible>> {
        for upcaster in self.upcasters.iter() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        EventEnvelope::<A>::try_from(event).map_err(|e| CommandError::Store(e.to_string()))
    }
}

/// Where applying a stream's events starts: a new aggregate, or a kept state.
struct Start<A> {
    state: A,
    version: u64,
    last: Option<LogCursor>,
}

impl<A: Default> Start<A> {
    fn new() -> Self {
        Self {
            state: A::default(),
            version: 0,
            last: None,
        }
    }
}

/// The kept state, when `rows` start at its last event, in the same place of the log
/// (that row is taken); `None` when the stream was rewritten under it.
fn resume<A: Aggregate + Clone + 'static>(
    kept: &Kept,
    rows: &mut std::iter::Peekable<std::vec::IntoIter<StreamEvent>>,
) -> Option<Start<A>> {
    rows.next_if(|f| f.event.sequence as u64 == kept.version && f.at == kept.at)?;
    let (state, version) = kept.clone().state_of::<A>()?;
    Some(Start {
        state,
        version,
        last: Some(kept.at),
    })
}

/// One statement for every wanted stream (see [`read_streams`]): from the kept last event
/// on, or the whole stream where nothing is kept.
async fn read(pool: &PgPool, wanted: &[&Wanted<'_>]) -> Result<Rows, CommandError<Infallible>> {
    let streams: Vec<(&str, &str, u64)> = wanted
        .iter()
        .map(|w| {
            let after = w.kept.as_ref().map_or(0, |k| k.version);
            (w.aggregate_type, w.aggregate_id, after)
        })
        .collect();
    read_streams(pool, &streams)
        .await
        .map_err(together::store_error)
}
