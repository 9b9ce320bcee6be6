//! The checkpointed projection runner.
//!
//! For each projector, a batch is one transaction: take the projector's advisory lock
//! (transaction-scoped, so no connection is pinned and only one process advances a
//! projector at a time), read the events after its checkpoint, apply them, move the
//! checkpoint, commit. A crash anywhere rolls all of it back together: nothing is lost
//! and nothing is applied twice. A projector that fails on an event stops there, with
//! the failure recorded on its checkpoint row; the other projectors go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::log::{self, LogCursor, StoredEvent, HORIZON};
use crate::{ProjectionError, Result};

/// Events read per transaction. Large enough to amortise the round trips, small enough
/// to keep transactions (which hold back this tenant's other readers) short.
pub(crate) const BATCH_SIZE: i64 = 500;
/// Events read per transaction when every projector shares one read.
const SHARED_BATCH_SIZE: i64 = 1_000;
/// Events per batch of a fanned-out catch-up: fewer, larger transactions per projector.
const FAN_OUT_BATCH_SIZE: i64 = 4_000;

/// A fold from events to SQL. It must be deterministic and free of side effects outside
/// the given transaction, so that replaying the log always gives the same rows.
#[async_trait]
pub trait Projector: Send + Sync {
    /// Persisted identity of the projector's checkpoint: never rename.
    fn name(&self) -> &'static str;

    /// The tables this projector owns and nothing else writes. A rebuild recreates
    /// exactly these. The projector's SQL names them unqualified, so that a rebuild can
    /// point it at fresh copies through `search_path`.
    fn tables(&self) -> &'static [&'static str];

    /// Whether a rebuild may replace this projector's tables. The log sealer's table is
    /// evidence: re-sealing a tampered log would hide the tampering.
    fn rebuildable(&self) -> bool {
        true
    }

    /// Whether the projector reads the personal data in payloads: it then gets the events
    /// with their sealed fields opened ([`crate::personal`]). The log sealer must see the
    /// stored bytes, and the audit index copies no payload.
    fn reads_personal_data(&self) -> bool {
        true
    }

    /// Whether a command's answer reads this projector's tables. The audit index and the
    /// access log record what happened, and no answer is read from them: commands do not
    /// wait for them (docs/adr/0018). The daemon follows the log with them, and their
    /// readers catch them up first ([`ProjectionRunner::catch_up_read_side_through`]).
    fn answers_commands(&self) -> bool {
        true
    }

    /// Applies one event (of any aggregate type: skip the ones that don't concern you).
    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()>;

    /// Applies events in log order: always a contiguous run of the log, with nothing
    /// left out between the first and the last. Projectors with a set-based form (one
    /// statement for the whole batch) override this; the result must equal applying
    /// them one by one.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        for event in events {
            self.apply(tx, event)
                .await
                .map_err(|e| ProjectionError::ProjectorFailed {
                    projector: self.name(),
                    position: event.position,
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }
}

/// Prometheus name of the count of events applied, per projector.
pub const EVENTS_APPLIED: &str = "hms_projection_events_applied_total";

/// [`ProjectionRunner::lag`] counts unapplied events up to this many (a rebuild's or a
/// new projector's backlog would otherwise be a full scan).
pub const LAG_COUNT_LIMIT: i64 = 100_000;

/// How far one group of projectors is behind the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// [`Lag::READ_MODELS`] or [`Lag::SEAL`].
    pub group: &'static str,
    pub events: u64,
    /// Age of the oldest event not yet applied; 0 when none is waiting.
    pub seconds: f64,
}

impl Lag {
    pub const READ_MODELS: &'static str = "read_models";
    pub const SEAL: &'static str = "seal";
}

/// What one `catch_up` did for one projector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorProgress {
    pub projector: &'static str,
    pub applied: u64,
    pub checkpoint: LogCursor,
    /// Another process holds this projector's lock; it will do the work.
    pub busy: bool,
}

/// A pool on the same database with more connections, lent to a catch-up that found a
/// backlog on a pool too small to spread it over lanes (see
/// [`ProjectionRunner::with_widener`]); the guard keeps it open while in use.
pub struct WiderPool {
    pub pool: PgPool,
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

/// Gives a wider pool for the database of the given one, if the caller's budget allows.
pub type Widener = Arc<dyn Fn(&PgPool) -> Option<WiderPool> + Send + Sync>;

#[derive(Clone)]
pub struct ProjectionRunner {
    projectors: Projectors,
    /// The rebuildable projectors (read models, not the sealer's evidence), committed
    /// without waiting for the disk: what a reader of the audit trail or the access log
    /// waits for ([`ProjectionRunner::catch_up_read_side_through`]).
    read_side: Projectors,
    /// The read models a command's answer reads: what a command waits for
    /// ([`ProjectionRunner::catch_up_through`]).
    answers: Projectors,
    /// Every other projector (the derived views and the sealer): the daemon's catch-up
    /// runs them outside the tenant's round, so no command queues behind them.
    trailing: Projectors,
    rounds: Arc<Rounds>,
    widener: Option<Widener>,
}

type Projectors = Arc<Vec<Arc<dyn Projector>>>;

/// The catch-ups of this runner, one at a time per tenant database, each guarding the
/// lowest checkpoint its last round left behind.
///
/// Commands waiting for their own events (read-your-writes) queue on their tenant's
/// round instead of racing for the projectors' locks: whoever holds the round reads
/// everything readable, so one transaction applies the events of every command that
/// committed meanwhile (group commit), and the commands behind it find their events
/// applied and return without touching the database. Other processes still take turns
/// through the projectors' advisory locks.
///
/// The remembered checkpoint is replaced by what each round finds (it can move back
/// when an operator resets a projector); between rounds it only lets a waiter skip a
/// round that another one already did for it.
#[derive(Default)]
struct Rounds(StdMutex<HashMap<String, Arc<TenantRounds>>>);

/// One tenant database's round, and the appends to it in flight in this process.
#[derive(Default)]
struct TenantRounds {
    round: tokio::sync::Mutex<Reached>,
    appends: Appends,
}

/// The lowest checkpoints the last rounds left behind, of the two sets a caller can wait
/// for: the read models commands wait for, and every read model.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    answers: LogCursor,
    read_side: LogCursor,
}

/// Which read models a [`ProjectionRunner::catch_up_through`]-like wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Views {
    /// The read models a command's answer reads.
    Answers,
    /// Every read model, the audit index and the access log included.
    ReadSide,
}

impl Reached {
    fn of(&mut self, views: Views) -> &mut LogCursor {
        match views {
            Views::Answers => &mut self.answers,
            Views::ReadSide => &mut self.read_side,
        }
    }
}

impl Rounds {
    fn of(&self, pool: &PgPool) -> Arc<TenantRounds> {
        let key = crate::database_key(pool);
        let mut rounds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rounds.entry(key).or_default().clone()
    }
}

/// How long a read-your-writes round waits for the appends that were in flight when it
/// was about to start (see [`Appends`]).
const GATHER_WAIT: Duration = Duration::from_millis(2);

/// The appends to one tenant database in flight in this process, by ticket.
///
/// A read-your-writes round about to start waits, briefly ([`GATHER_WAIT`]), for the
/// appends already under way to commit, so that one round applies them all: without it,
/// a hospital with a few busy clients runs a round per command (each command's events
/// arrive just after the previous round read the log), and the round is most of a
/// command's statements. Under a single client nothing is in flight and nothing waits.
/// Only *when to start* depends on it: what a round applies is still the log's.
#[derive(Default)]
struct Appends {
    state: StdMutex<AppendsState>,
    finished: tokio::sync::Notify,
}

#[derive(Default)]
struct AppendsState {
    next: u64,
    in_flight: std::collections::BTreeSet<u64>,
}

impl Appends {
    fn state(&self) -> std::sync::MutexGuard<'_, AppendsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every append that started before this call has ended, or until
    /// `deadline`.
    async fn gather(&self, deadline: tokio::time::Instant) {
        let horizon = self.state().next;
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let earlier_in_flight = self
                .state()
                .in_flight
                .first()
                .is_some_and(|&oldest| oldest < horizon);
            if !earlier_in_flight {
                return;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return;
            }
        }
    }
}

/// An append in flight (see [`ProjectionRunner::appending`]); it ends when dropped.
pub struct Appending {
    tenant: Arc<TenantRounds>,
    ticket: u64,
}

impl Appending {
    fn start(tenant: Arc<TenantRounds>) -> Self {
        let ticket = {
            let mut state = tenant.appends.state();
            let ticket = state.next;
            state.next += 1;
            state.in_flight.insert(ticket);
            ticket
        };
        Appending { tenant, ticket }
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        self.tenant.appends.state().in_flight.remove(&self.ticket);
        self.tenant.appends.finished.notify_waiters();
    }
}

/// One log read shared by the two rounds of a daemon visit ([`ProjectionRunner::catch_up`]).
///
/// The first round reads from the lower of its own start and the next round's (read
/// from the checkpoint table, unlocked: a hint, never authority) and lends the read to
/// the next round. The next round uses it only when it covers the start it finds under
/// its own locks: the read was everything readable after `after` when it was made, so
/// the events past any later start are the log's, in its order (nothing can commit
/// before a readable event later: the read stops at the oldest transaction in flight).
/// Whatever committed since is left to the next visit.
#[derive(Default)]
struct SharedRead {
    /// The projectors of the round the read is lent to.
    next: Vec<String>,
    lent: Option<LentRead>,
}

struct LentRead {
    after: LogCursor,
    events: Arc<Vec<StoredEvent>>,
}

impl SharedRead {
    fn for_next(set: &Projectors) -> Self {
        SharedRead {
            next: set.iter().map(|p| p.name().to_owned()).collect(),
            lent: None,
        }
    }

    /// The next round's lowest checkpoint among `rows`; `None` when one has none yet.
    fn next_start(&self, rows: &[CheckpointRow]) -> Option<LogCursor> {
        self.next
            .iter()
            .map(|name| checkpoint_in(rows, name))
            .min()
            .flatten()
    }
}

/// A checkpoint as read: projector, transaction id, position.
type CheckpointRow = (String, i64, i64);

/// `name`'s checkpoint among `rows`, if it has one.
fn checkpoint_in(rows: &[CheckpointRow], name: &str) -> Option<LogCursor> {
    rows.iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, transaction_id, position)| LogCursor {
            transaction_id: *transaction_id,
            position: *position,
        })
}

/// The lowest checkpoint of a catch-up that held every projector's lock (`None` when
/// another process had some: their checkpoints say nothing of what is applied now).
fn lowest_checkpoint(progress: &[ProjectorProgress]) -> Option<LogCursor> {
    if progress.iter().any(|p| p.busy) {
        return None;
    }
    progress.iter().map(|p| p.checkpoint).min()
}

impl ProjectionRunner {
    pub fn new(projectors: Vec<Box<dyn Projector>>) -> Self {
        let projectors: Vec<Arc<dyn Projector>> = projectors.into_iter().map(Arc::from).collect();
        let pick = |keep: &dyn Fn(&dyn Projector) -> bool| -> Projectors {
            Arc::new(
                projectors
                    .iter()
                    .filter(|p| keep(p.as_ref()))
                    .cloned()
                    .collect(),
            )
        };
        let answered = |p: &dyn Projector| p.rebuildable() && p.answers_commands();
        Self {
            read_side: pick(&|p| p.rebuildable()),
            answers: pick(&answered),
            trailing: pick(&|p| !answered(p)),
            projectors: Arc::new(projectors),
            rounds: Arc::default(),
            widener: None,
        }
    }

    /// The same runner, asking `widener` for more connections when a backlog meets a
    /// pool with too few to fan out (the server's pools start with one connection).
    pub fn with_widener(mut self, widener: Widener) -> Self {
        self.widener = Some(widener);
        self
    }

    /// The projector with this name, if any.
    pub fn projector(&self, name: &str) -> Option<&dyn Projector> {
        self.projectors
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// Every projector a rebuild may replace.
    pub fn rebuildable(&self) -> Vec<&dyn Projector> {
        self.projectors
            .iter()
            .filter(|p| p.rebuildable())
            .map(|p| p.as_ref())
            .collect()
    }

    pub fn projector_names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// Applies every readable event to every projector. A failing projector is recorded
    /// and reported in the result; the others are still brought up to date.
    ///
    /// The read models commands wait for are caught up in the tenant's round (after a
    /// round of this process already under way); the derived views and the sealer after
    /// it, outside the round, so that commands never queue behind a seal's commit or a
    /// few hundred events of audit rows (docs/adr/0018). Each set is one transaction per
    /// batch.
    ///
    /// The first round also reads the log from where the second one will start, when
    /// that is close behind, and lends it its read: one log read a visit, not two.
    pub async fn catch_up(&self, pool: &PgPool) -> Result<Vec<ProjectorProgress>> {
        let mut shared = SharedRead::for_next(&self.trailing);
        let answered = {
            let tenant = self.rounds.of(pool);
            let mut reached = tenant.round.lock().await;
            let answered = self.catch_up_round(pool, &self.answers, &mut shared).await;
            if let Some(low) = answered.as_ref().ok().and_then(|p| lowest_checkpoint(p)) {
                reached.answers = low;
            }
            answered
        };
        // The second round lends to nobody.
        shared.next.clear();
        let trailing = self.catch_up_round(pool, &self.trailing, &mut shared).await;
        let mut progress = answered?;
        progress.extend(trailing?);
        Ok(progress)
    }

    /// One catch-up of the projectors in `set`; the caller holds the tenant's round.
    /// Counts the events each projector applied (`hms_projection_events_applied_total`,
    /// whose rate is the catch-up rate).
    async fn catch_up_round(
        &self,
        pool: &PgPool,
        set: &Projectors,
        shared: &mut SharedRead,
    ) -> Result<Vec<ProjectorProgress>> {
        let progress = self.catch_up_round_uncounted(pool, set, shared).await?;
        for p in progress.iter().filter(|p| p.applied > 0) {
            metrics::counter!(EVENTS_APPLIED, "projector" => p.projector).increment(p.applied);
        }
        Ok(progress)
    }

    async fn catch_up_round_uncounted(
        &self,
        pool: &PgPool,
        set: &Projectors,
        shared: &mut SharedRead,
    ) -> Result<Vec<ProjectorProgress>> {
        // The fast path reads each batch once for every projector; anything unusual (a
        // failing projector, another process holding a lock) falls back to one projector
        // at a time, which isolates the failure and records it.
        if set.len() > 1 {
            // Boxed: the round's future is large, and every command's wait holds it.
            let together = Box::pin(crate::fresh::in_round(
                pool,
                self.catch_up_together(pool, set, shared),
            ));
            if let Ok(Some(progress)) = together.await {
                return Ok(progress);
            }
        }
        let mut progress = Vec::with_capacity(set.len());
        let mut first_failure = None;
        for projector in set.iter() {
            match catch_up_one(pool, projector.as_ref(), Target::Live, &mut |_, _| {}).await {
                Ok(p) => progress.push(p),
                Err(e) => {
                    tracing::error!(projector = projector.name(), error = %e, "projector failed");
                    first_failure.get_or_insert(e);
                }
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(progress),
        }
    }

    /// All projectors of `set` in one transaction per batch, reading the log once. `None`
    /// when another process holds a projector's lock. A set of read models only commits
    /// without waiting for the disk: should a crash lose the commit, its checkpoints go
    /// with it and the events are applied again.
    async fn catch_up_together(
        &self,
        pool: &PgPool,
        set: &Projectors,
        shared: &mut SharedRead,
    ) -> Result<Option<Vec<ProjectorProgress>>> {
        let names: Vec<String> = set.iter().map(|p| p.name().to_owned()).collect();
        // The checkpoints read: this set's, then (unlocked, only to know where the next
        // round starts) those of the round this one lends its read to.
        let read_names: Vec<String> = names.iter().chain(&shared.next).cloned().collect();
        let derived_only = set.iter().all(|p| p.rebuildable());
        let keys: Vec<String> = names.iter().map(|n| Target::Live.lock_key(n)).collect();
        let mut applied = vec![0u64; set.len()];
        loop {
            // One statement for the locks (and the commit mode), one for reading all
            // checkpoints (and one more to make them, the first time), one for moving
            // them: each is a round trip on every command's read-your-writes, and a
            // prepare on a fresh connection.
            crate::fresh::discarded();
            let mut tx = pool.begin().await?;
            let (locked, _): (Option<bool>, Option<String>) = sqlx::query_as(
                "SELECT bool_and(pg_try_advisory_xact_lock(hashtextextended(k, 0))), \
                        CASE WHEN $2 THEN set_config('synchronous_commit', 'off', true) END \
                   FROM unnest($1::text[]) AS k",
            )
            .bind(&keys)
            .bind(derived_only)
            .fetch_one(&mut *tx)
            .await?;
            if locked != Some(true) {
                return Ok(None);
            }
            let rows: Vec<CheckpointRow> = sqlx::query_as(
                "SELECT projector, last_transaction_id::text::bigint, last_position \
                   FROM public.projection_checkpoints WHERE projector = ANY($1)",
            )
            .bind(&read_names)
            .fetch_all(&mut *tx)
            .await?;
            if names
                .iter()
                .any(|name| checkpoint_in(&rows, name).is_none())
            {
                // A projector's row is made on its first catch-up, and starts at the
                // log's start. Only then: an insert that finds its rows in every round
                // cost more than the read (0.08 ms a round, measured). The locks held
                // keep any other round from making or moving these rows meanwhile.
                sqlx::query(
                    "INSERT INTO public.projection_checkpoints (projector) \
                     SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                )
                .bind(&names)
                .execute(&mut *tx)
                .await?;
            }
            let checkpoints: Vec<LogCursor> = names
                .iter()
                .map(|name| checkpoint_in(&rows, name).unwrap_or(LogCursor::START))
                .collect();
            let from = checkpoints
                .iter()
                .copied()
                .min()
                .unwrap_or(LogCursor::START);
            // The next round's start, when it is close behind this one's: read from
            // there, so that this read covers it too.
            let lend_from = shared.next_start(&rows).filter(|next| {
                *next <= from && from.position - next.position < SHARED_BATCH_SIZE / 2
            });
            let (read, full) = match shared.lent.take() {
                Some(lent) if lent.after <= from => (lent.events, false),
                _ => {
                    let read_from = lend_from.unwrap_or(from);
                    let read =
                        Arc::new(log::read_batch(&mut tx, read_from, SHARED_BATCH_SIZE).await?);
                    let full = read.len() >= SHARED_BATCH_SIZE as usize;
                    if !full && !shared.next.is_empty() {
                        // Everything readable after `read_from`, where the next round
                        // starts or before: its read, unless more commits meanwhile.
                        shared.lent = Some(LentRead {
                            after: read_from,
                            events: read.clone(),
                        });
                    }
                    (read, full)
                }
            };
            // A read from before this set's start (lent, or widened for the next round)
            // holds events every projector here has applied.
            let batch = &read[read.partition_point(|e| e.cursor() <= from)..];
            let progress = |checkpoints: Vec<LogCursor>, applied: &[u64]| {
                set.iter()
                    .zip(checkpoints)
                    .zip(applied)
                    .map(|((p, checkpoint), n)| ProjectorProgress {
                        projector: p.name(),
                        applied: *n,
                        checkpoint,
                        busy: false,
                    })
                    .collect()
            };
            let Some(last) = batch.last().map(StoredEvent::cursor) else {
                tx.commit().await?;
                return Ok(Some(progress(checkpoints, &applied)));
            };
            let (mut moved, mut counts) = (Vec::new(), Vec::new());
            // Sealed personal data is opened once for every projector that reads it (each
            // takes the suffix of the batch after its checkpoint): one look-up of the
            // patients' keys per batch, not one per projector.
            let mut opened_batch: Option<Vec<StoredEvent>> = None;
            for (i, projector) in set.iter().enumerate() {
                let start = batch.partition_point(|e| e.cursor() <= checkpoints[i]);
                let events = &batch[start..];
                if events.is_empty() {
                    continue;
                }
                if opened_batch.is_none() && needs_opening(projector.as_ref(), events) {
                    let mut all = batch.to_vec();
                    crate::personal::unseal_stored(&mut tx, &mut all).await?;
                    opened_batch = Some(all);
                }
                let events = match &opened_batch {
                    Some(all) if projector.reads_personal_data() => &all[start..],
                    _ => events,
                };
                projector.apply_batch(&mut tx, events).await?;
                moved.push(names[i].clone());
                counts.push(i64::try_from(events.len()).unwrap_or(i64::MAX));
                applied[i] += events.len() as u64;
            }
            sqlx::query(
                "UPDATE public.projection_checkpoints AS c \
                    SET last_transaction_id = $2::text::xid8, last_position = $3, \
                        events_applied = c.events_applied + u.n, updated_at = now(), \
                        failing_position = NULL, last_error = NULL \
                   FROM unnest($1::text[], $4::bigint[]) AS u(name, n) \
                  WHERE c.projector = u.name",
            )
            .bind(&moved)
            .bind(last.transaction_id.to_string())
            .bind(last.position)
            .bind(&counts)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            crate::fresh::committed();
            // A short batch was everything readable: no need to read again to find out
            // (this saves a round of statements on every command's read-your-writes).
            if !full {
                let reached = checkpoints.into_iter().map(|c| c.max(last)).collect();
                return Ok(Some(progress(reached, &applied)));
            }
            // A full batch means a backlog (a restart, a burst): spread it over lanes,
            // on a wider pool when this one has too few connections.
            let wider = match &self.widener {
                Some(widen) if fan_out_lanes(pool, set.len()) <= 1 => widen(pool),
                _ => None,
            };
            let lane_pool = wider.as_ref().map_or(pool, |w| &w.pool);
            let lanes = fan_out_lanes(lane_pool, set.len());
            if lanes > 1 {
                let outcomes = self.fan_out(lane_pool, set, last, lanes).await?;
                drop(wider);
                let reached = checkpoints
                    .into_iter()
                    .zip(&outcomes)
                    .map(|(c, (_, r))| c.max(last).max(*r))
                    .collect();
                for (n, (more, _)) in applied.iter_mut().zip(&outcomes) {
                    *n += more;
                }
                return Ok(Some(progress(reached, &applied)));
            }
        }
    }

    /// Catches up a backlog with the projectors working side by side, each on its own
    /// connection and transactions, while one reader reads the log ahead of them: the
    /// database's work spreads over several backends (and cores) instead of waiting for
    /// one. Every projector still applies each batch in log order, in one transaction
    /// with its checkpoint, under its lock. Returns what each projector applied and the
    /// checkpoint it reached. Any failure ends the whole fan-out with an error: what was
    /// committed stays, and the caller's careful path (one projector at a time) takes
    /// over, isolating and recording the failure.
    async fn fan_out(
        &self,
        pool: &PgPool,
        set: &Projectors,
        from: LogCursor,
        lanes: usize,
    ) -> Result<Vec<(u64, LogCursor)>> {
        tracing::info!(
            lanes,
            "catching up a backlog with the projectors side by side"
        );
        let permits = Arc::new(Semaphore::new(lanes));
        let mut followers = JoinSet::new();
        let mut feeds = Vec::with_capacity(set.len());
        for index in 0..set.len() {
            // Two batches of read-ahead per projector bound the memory held.
            let (feed, batches) = mpsc::channel::<Arc<Vec<StoredEvent>>>(2);
            feeds.push(feed);
            let (projectors, pool, permits) = (set.clone(), pool.clone(), permits.clone());
            followers.spawn(async move {
                let projector = projectors[index].as_ref();
                let outcome = follow(projector, &pool, &permits, batches, from).await;
                (index, outcome)
            });
        }
        let read = read_ahead(pool, from, &feeds).await;
        drop(feeds);
        let mut outcomes = vec![(0, from); set.len()];
        let mut failure = None;
        while let Some(joined) = followers.join_next().await {
            match joined {
                Ok((index, Ok(outcome))) => outcomes[index] = outcome,
                Ok((index, Err(e))) => {
                    let projector = set[index].name();
                    if matches!(e, ProjectionError::Busy(_)) {
                        // Another catch-up (a command's, another process's) has it.
                        tracing::debug!(projector, error = %e, "fanned-out catch-up yielded");
                    } else {
                        tracing::warn!(projector, error = %e,
                            "fanned-out catch-up stopped; continuing one projector at a time");
                    }
                    failure.get_or_insert(e);
                }
                Err(e) => {
                    failure.get_or_insert(ProjectionError::Busy(format!(
                        "a projection task ended abnormally: {e}"
                    )));
                }
            }
        }
        // A follower's own failure explains the reader's "a projector stopped".
        match failure.or(read.err()) {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Marks an append to the database behind `pool` as under way until the guard is
    /// dropped: a read-your-writes round about to start lets it join (see [`Appends`]).
    pub fn appending(&self, pool: &PgPool) -> Appending {
        Appending::start(self.rounds.of(pool))
    }

    /// Catches up the read models a command's answer reads until their checkpoints have
    /// reached `target` (an event the caller wrote), or fails after `timeout`. The derived
    /// views (audit index, access log) and the sealer are left to the full catch-ups
    /// ([`Self::catch_up`], the daemon's) and to their readers
    /// ([`Self::catch_up_read_side_through`]): no answer reads them, and the seals'
    /// commit must wait for the disk. The caller queues on the tenant's round (see
    /// [`Rounds`]) and returns at once when a round ahead of it got there. Events of
    /// transactions still in flight elsewhere hold the log back, hence the short pauses.
    pub async fn catch_up_through(
        &self,
        pool: &PgPool,
        target: LogCursor,
        timeout: Duration,
    ) -> Result<()> {
        self.through(pool, target, timeout, Views::Answers).await
    }

    /// Catches up every read model, the audit index and the access log included, until
    /// their checkpoints have reached `target`, or fails after `timeout`: what a reader
    /// of those derived views waits for first. Queues on the tenant's round like
    /// [`Self::catch_up_through`].
    pub async fn catch_up_read_side_through(
        &self,
        pool: &PgPool,
        target: LogCursor,
        timeout: Duration,
    ) -> Result<()> {
        self.through(pool, target, timeout, Views::ReadSide).await
    }

    async fn through(
        &self,
        pool: &PgPool,
        target: LogCursor,
        timeout: Duration,
        views: Views,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let tenant = self.rounds.of(pool);
        let mut reached = tokio::time::timeout_at(deadline, tenant.round.lock())
            .await
            .map_err(|_| ProjectionError::CatchUpTimeout(timeout))?;
        if *reached.of(views) >= target {
            return Ok(());
        }
        // Let the appends under way join this round (see [`Appends`]).
        tenant
            .appends
            .gather(deadline.min(tokio::time::Instant::now() + GATHER_WAIT))
            .await;
        let set = match views {
            Views::Answers => &self.answers,
            Views::ReadSide => &self.read_side,
        };
        let mut pause = Duration::from_millis(1);
        loop {
            if *reached.of(views) >= target {
                return Ok(());
            }
            let progress = self
                .catch_up_round(pool, set, &mut SharedRead::default())
                .await?;
            if let Some(low) = lowest_checkpoint(&progress) {
                *reached.of(views) = low;
            } else if self.all_reached(pool, set, target).await? {
                // Another process holds a projector: its checkpoint table says how far
                // that process got.
                return Ok(());
            }
            if *reached.of(views) >= target {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProjectionError::CatchUpTimeout(timeout));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// How far behind the log's readable head the read models (their lowest checkpoint)
    /// and the sealer are: events not yet applied (counted up to [`LAG_COUNT_LIMIT`])
    /// and the age of the oldest of them.
    pub async fn lag(&self, pool: &PgPool) -> Result<Vec<Lag>> {
        let sealers: Vec<&'static str> = self
            .projectors
            .iter()
            .filter(|p| !p.rebuildable())
            .map(|p| p.name())
            .collect();
        let read_models: Vec<&'static str> = self.read_side.iter().map(|p| p.name()).collect();
        let mut lags = Vec::with_capacity(2);
        for (group, names) in [(Lag::READ_MODELS, read_models), (Lag::SEAL, sealers)] {
            if names.is_empty() {
                continue;
            }
            // A projector without a checkpoint row has applied nothing: it counts from
            // the start of the log.
            let (events, seconds): (i64, f64) = sqlx::query_as(&format!(
                "WITH low AS ( \
                     SELECT coalesce(c.last_transaction_id, '0'::xid8) AS tx, \
                            coalesce(c.last_position, 0) AS pos \
                       FROM unnest($1::text[]) AS n(projector) \
                       LEFT JOIN public.projection_checkpoints c USING (projector) \
                      ORDER BY 1, 2 LIMIT 1) \
                 SELECT count(*), coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8 \
                   FROM (SELECT e.recorded_at FROM public.events e, low \
                          WHERE (e.transaction_id, e.position) > (low.tx, low.pos) \
                            AND e.transaction_id < {HORIZON} \
                          ORDER BY e.transaction_id, e.position LIMIT {LAG_COUNT_LIMIT}) behind"
            ))
            .bind(&names)
            .fetch_one(pool)
            .await?;
            lags.push(Lag {
                group,
                events: u64::try_from(events).unwrap_or(0),
                seconds: seconds.max(0.0),
            });
        }
        Ok(lags)
    }

    /// Whether the checkpoint of every projector of `set` is at `target` or past it.
    async fn all_reached(
        &self,
        pool: &PgPool,
        set: &Projectors,
        target: LogCursor,
    ) -> Result<bool> {
        let names: Vec<&str> = set.iter().map(|p| p.name()).collect();
        let reached: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM public.projection_checkpoints \
              WHERE projector = ANY($1) \
                AND (last_transaction_id, last_position) >= ($2::text::xid8, $3)",
        )
        .bind(&names)
        .bind(target.transaction_id.to_string())
        .bind(target.position)
        .fetch_one(pool)
        .await?;
        Ok(reached == i64::try_from(names.len()).unwrap_or(i64::MAX))
    }
}

/// How many projectors may work side by side on a backlog: every connection of the
/// tenant's pool but one, which stays free for the reader and for requests.
fn fan_out_lanes(pool: &PgPool, projectors: usize) -> usize {
    let connections = pool.options().get_max_connections() as usize;
    connections.saturating_sub(1).min(projectors)
}

/// Reads the log after `from` in batches and hands each batch to every follower, until a
/// short batch shows the readable end. It stops early when a follower has gone (failed).
async fn read_ahead(
    pool: &PgPool,
    from: LogCursor,
    feeds: &[mpsc::Sender<Arc<Vec<StoredEvent>>>],
) -> Result<()> {
    let mut after = from;
    loop {
        // A connection only for the read: the followers and requests need the others.
        let batch = {
            let mut conn = pool.acquire().await?;
            log::read_batch(&mut conn, after, FAN_OUT_BATCH_SIZE).await?
        };
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            return Ok(());
        };
        let short = batch.len() < FAN_OUT_BATCH_SIZE as usize;
        let batch = Arc::new(batch);
        for feed in feeds {
            if feed.send(batch.clone()).await.is_err() {
                return Err(ProjectionError::Busy("a projector stopped".into()));
            }
        }
        if short {
            return Ok(());
        }
        after = last;
    }
}

/// One projector's side of a fan-out: each batch from the reader in its own transaction
/// (lock, checkpoint, apply, move the checkpoint), holding one of the lanes meanwhile.
/// `expected` is where the batches start; a checkpoint found behind it (reset by an
/// operator meanwhile) or a lock held elsewhere stops the follower with an error.
async fn follow(
    projector: &dyn Projector,
    pool: &PgPool,
    permits: &Semaphore,
    mut batches: mpsc::Receiver<Arc<Vec<StoredEvent>>>,
    mut expected: LogCursor,
) -> Result<(u64, LogCursor)> {
    let name = Target::Live.checkpoint_name(projector.name());
    let (mut applied, mut reached) = (0u64, expected);
    while let Some(batch) = batches.recv().await {
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            continue;
        };
        let _lane = permits
            .acquire()
            .await
            .map_err(|_| ProjectionError::Busy("the catch-up was stopped".into()))?;
        let mut tx = pool.begin().await?;
        if projector.rebuildable() {
            // A read model is derived: if a crash loses this commit, its checkpoint goes
            // with it and the batch is applied again. So the commit need not wait for the
            // disk. Not so for the seals, whose head the platform may have recorded.
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        if !try_lock(&mut tx, projector, Target::Live).await? {
            return Err(ProjectionError::Busy(format!(
                "another process is catching up {}",
                projector.name()
            )));
        }
        let checkpoint = read_checkpoint(&mut tx, &name).await?;
        if checkpoint < expected {
            return Err(ProjectionError::Busy(format!(
                "the checkpoint of {} moved back during the catch-up",
                projector.name()
            )));
        }
        let start = batch.partition_point(|e| e.cursor() <= checkpoint);
        if start < batch.len() {
            apply_events(&mut tx, projector, &batch[start..]).await?;
            move_checkpoint(&mut tx, &name, last, batch.len() - start).await?;
            tx.commit().await?;
            applied += (batch.len() - start) as u64;
        }
        expected = last;
        reached = checkpoint.max(last);
    }
    Ok((applied, reached))
}

/// Where a projector's output goes: its live tables, or the fresh copies a rebuild
/// fills (see [`crate::rebuild`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Live,
    Rebuild,
}

impl Target {
    pub(crate) fn checkpoint_name(self, projector: &str) -> String {
        match self {
            Target::Live => projector.to_owned(),
            Target::Rebuild => format!("rebuild:{projector}"),
        }
    }

    pub(crate) fn lock_key(self, projector: &str) -> String {
        format!("hms.projector.{}", self.checkpoint_name(projector))
    }
}

/// One batch inside the caller's transaction: events after the checkpoint, applied,
/// checkpoint moved. Returns how many events were applied and the new checkpoint.
/// The caller holds the target's advisory lock.
pub(crate) async fn apply_batch(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    target: Target,
    limit: i64,
) -> Result<(usize, LogCursor)> {
    let (checkpoint, batch) = pending(tx, projector, target, limit).await?;
    let Some(last) = batch.last().map(StoredEvent::cursor) else {
        return Ok((0, checkpoint));
    };
    apply_events(tx, projector, &batch).await?;
    move_checkpoint(
        tx,
        &target.checkpoint_name(projector.name()),
        last,
        batch.len(),
    )
    .await?;
    Ok((batch.len(), last))
}

/// The checkpoint and up to `limit` events after it, with the connection pointed at the
/// target's tables.
async fn pending(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    target: Target,
    limit: i64,
) -> Result<(LogCursor, Vec<StoredEvent>)> {
    use_target(tx, target).await?;
    let checkpoint = read_checkpoint(tx, &target.checkpoint_name(projector.name())).await?;
    let batch = log::read_batch(tx, checkpoint, limit).await?;
    Ok((checkpoint, batch))
}

/// Takes the projector's lock for this transaction, unless another process holds it.
async fn try_lock(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    target: Target,
) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(target.lock_key(projector.name()))
            .fetch_one(tx)
            .await?,
    )
}

/// Points the transaction's unqualified table names at the target's tables.
async fn use_target(tx: &mut PgConnection, target: Target) -> Result<()> {
    if target == Target::Rebuild {
        sqlx::query(&format!(
            "SET LOCAL search_path = {}, public",
            crate::rebuild::REBUILD_SCHEMA
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Applies events, reporting a failure as the projector's, at the batch's first event
/// when the projector cannot say which (see [`isolate_failure`]).
async fn apply_events(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    batch: &[StoredEvent],
) -> Result<()> {
    let opened = open_for(tx, projector, batch).await?;
    projector
        .apply_batch(tx, &opened)
        .await
        .map_err(|e| match e {
            e @ ProjectionError::ProjectorFailed { .. } => e,
            other => ProjectionError::ProjectorFailed {
                projector: projector.name(),
                position: batch.first().map_or(0, |e| e.position),
                message: other.to_string(),
            },
        })
}

/// The batch as `projector` reads it: with sealed personal data opened when it reads
/// such data (one key query for the batch), as stored otherwise.
/// Whether `projector` needs `batch` with its personal data opened.
fn needs_opening(projector: &dyn Projector, batch: &[StoredEvent]) -> bool {
    projector.reads_personal_data()
        && batch
            .iter()
            .any(|e| crate::personal::has_sealed(e.payload.get()))
}

async fn open_for<'b>(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    batch: &'b [StoredEvent],
) -> Result<std::borrow::Cow<'b, [StoredEvent]>> {
    if !needs_opening(projector, batch) {
        return Ok(std::borrow::Cow::Borrowed(batch));
    }
    let mut opened = batch.to_vec();
    crate::personal::unseal_stored(tx, &mut opened).await?;
    Ok(std::borrow::Cow::Owned(opened))
}

/// A set-based batch fails as a whole. This goes through the same events again, one at a
/// time in savepoints, inside a fresh transaction: the events before the failing one are
/// applied and checkpointed, and the failure is reported at the event that causes it. When
/// every event passes on its own (a transient fault), the original error stands.
async fn isolate_failure(
    pool: &PgPool,
    projector: &dyn Projector,
    target: Target,
    batch: &[StoredEvent],
    error: ProjectionError,
) -> Result<ProjectionError> {
    let name = target.checkpoint_name(projector.name());
    let mut tx = pool.begin().await?;
    let locked = try_lock(&mut tx, projector, target).await?;
    use_target(&mut tx, target).await?;
    let checkpoint = read_checkpoint(&mut tx, &name).await?;
    let unchanged = batch
        .first()
        .is_some_and(|first| checkpoint < first.cursor());
    if !locked || !unchanged {
        // Another process moved on meanwhile; it reports what it finds.
        return Ok(error);
    }
    for (i, event) in batch.iter().enumerate() {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match apply_events(&mut savepoint, projector, std::slice::from_ref(event)).await {
            Ok(()) => savepoint.commit().await?,
            Err(failure) => {
                savepoint.rollback().await?;
                if i > 0 {
                    move_checkpoint(&mut tx, &name, batch[i - 1].cursor(), i).await?;
                }
                tx.commit().await?;
                return Ok(failure);
            }
        }
    }
    Ok(error)
}

/// Moves a checkpoint past `applied` more events, ending at `last`; clears a failure.
async fn move_checkpoint(
    tx: &mut PgConnection,
    name: &str,
    last: LogCursor,
    applied: usize,
) -> Result<()> {
    sqlx::query(
        "UPDATE public.projection_checkpoints \
            SET last_transaction_id = $2::text::xid8, last_position = $3, \
                events_applied = events_applied + $4, updated_at = now(), \
                failing_position = NULL, last_error = NULL \
          WHERE projector = $1",
    )
    .bind(name)
    .bind(last.transaction_id.to_string())
    .bind(last.position)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn ensure_checkpoint(pool: &PgPool, name: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO public.projection_checkpoints (projector) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// Applies batches until the projector has read everything readable, one transaction
/// per batch. `on_batch` sees each committed batch (for progress reports).
pub(crate) async fn catch_up_one(
    pool: &PgPool,
    projector: &dyn Projector,
    target: Target,
    on_batch: &mut (dyn FnMut(usize, LogCursor) + Send),
) -> Result<ProjectorProgress> {
    let name = target.checkpoint_name(projector.name());
    ensure_checkpoint(pool, &name).await?;
    let mut applied = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let locked = try_lock(&mut tx, projector, target).await?;
        if !locked {
            let checkpoint = read_checkpoint(&mut tx, &name).await?;
            return Ok(ProjectorProgress {
                projector: projector.name(),
                applied,
                checkpoint,
                busy: true,
            });
        }
        let (checkpoint, batch) = pending(&mut tx, projector, target, BATCH_SIZE).await?;
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            tx.commit().await?;
            return Ok(ProjectorProgress {
                projector: projector.name(),
                applied,
                checkpoint,
                busy: false,
            });
        };
        let outcome = match apply_events(&mut tx, projector, &batch).await {
            Ok(()) => move_checkpoint(&mut tx, &name, last, batch.len()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            drop(tx);
            let e = if batch.len() > 1 {
                isolate_failure(pool, projector, target, &batch, e).await?
            } else {
                e
            };
            let position = match &e {
                ProjectionError::ProjectorFailed { position, .. } => Some(*position),
                _ => None,
            };
            record_failure(pool, &name, position, &e).await;
            return Err(e);
        }
        tx.commit().await?;
        applied += batch.len() as u64;
        on_batch(batch.len(), last);
        if (batch.len() as i64) < BATCH_SIZE {
            return Ok(ProjectorProgress {
                projector: projector.name(),
                applied,
                checkpoint: last,
                busy: false,
            });
        }
    }
}

pub(crate) async fn read_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogCursor> {
    let (transaction_id, position): (i64, i64) = sqlx::query_as(
        "SELECT last_transaction_id::text::bigint, last_position \
           FROM public.projection_checkpoints WHERE projector = $1",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(LogCursor {
        transaction_id,
        position,
    })
}

/// Best effort: the failure is already logged and returned; this makes it visible to
/// health checks and operators.
async fn record_failure(pool: &PgPool, name: &str, position: Option<i64>, error: &ProjectionError) {
    let result = sqlx::query(
        "UPDATE public.projection_checkpoints \
            SET failing_position = coalesce($2, failing_position), last_error = $3, updated_at = now() \
          WHERE projector = $1",
    )
    .bind(name)
    .bind(position)
    .bind(error.to_string())
    .execute(pool)
    .await;
    if let Err(e) = result {
        tracing::warn!(projector = name, error = %e, "could not record projector failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const FAR: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_round_with_nothing_in_flight_starts_at_once() {
        let tenant = Arc::new(TenantRounds::default());
        let gathered = tokio::time::timeout(
            Duration::from_secs(1),
            tenant.appends.gather(Instant::now() + FAR),
        )
        .await;
        assert!(gathered.is_ok());
    }

    #[tokio::test]
    async fn a_round_waits_for_the_appends_under_way_and_not_for_later_ones() {
        let tenant = Arc::new(TenantRounds::default());
        let earlier = Appending::start(tenant.clone());
        let waiting = tokio::spawn({
            let tenant = tenant.clone();
            async move { tenant.appends.gather(Instant::now() + FAR).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "an earlier append is under way");
        let later = Appending::start(tenant.clone());
        drop(earlier);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the round starts once the earlier append ended")
            .expect("no panic");
        drop(later);
    }

    #[tokio::test]
    async fn a_round_waits_no_longer_than_its_deadline() {
        let tenant = Arc::new(TenantRounds::default());
        let _stuck = Appending::start(tenant.clone());
        let started = Instant::now();
        tenant
            .appends
            .gather(started + Duration::from_millis(30))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
