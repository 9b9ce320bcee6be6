//! Keeps every hospital's read models moving without a request to drive them.
//!
//! Most commands catch up the read models themselves (read-your-writes). This task
//! covers the rest: the log sealer (kept out of the commands' way, see docs/adr/0006),
//! registrations and recorded views, which do not wait (docs/adr/0011), events written by
//! *other* processes, and projectors that failed and must be retried. It wakes on a hint
//! sent on one channel of the platform database (one listening connection for all
//! tenants: `LISTEN` is per database, and a listener per tenant database would pin a
//! connection per tenant) and on a timer, which also covers a lost hint. Only tenants
//! with work are visited: the one named by a hint, and those with an open pool (recently
//! active) on the timer. Once a minute the timer also sweeps those hospitals for slots a
//! broken booking left held.
//!
//! A hint from another replica is that replica's work: it is only noted, and taken over
//! on the timer when its sender is dead or does no background work
//! ([`super::replicas`]).

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hms_projections::projectors::seal;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use sqlx::PgPool;
use uuid::Uuid;

use super::{leases, replicas};
use crate::hints::{self, CHANNEL};
use crate::state::Platform;

/// How often the recently active hospitals are swept for slots a broken booking left held.
const SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// How old a hospital's figures in the platform database may grow, and how long the
/// replica refreshing them holds the lease.
const STATISTICS_MAX_AGE: chrono::Duration = chrono::Duration::minutes(5);
const STATISTICS_LEASE: Duration = Duration::from_secs(60);

/// How often this process asks the platform database whether a hospital's figures are
/// stale: not on every catch-up (under load there is one per few commands). Only when
/// to ask lives here; whether to refresh, and who does, is decided in the platform
/// database.
const STATISTICS_LOOK_PERIOD: Duration = Duration::from_secs(30);

/// When this process last asked about each hospital's figures.
static STATISTICS_LOOKS: LazyLock<Looks> = LazyLock::new(Looks::default);

#[derive(Default)]
struct Looks(Mutex<HashMap<String, Instant>>);

impl Looks {
    /// Whether it is time to look at `code` again; if so, the look is noted now.
    fn due(&self, code: &str) -> bool {
        let mut looks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if looks
            .get(code)
            .is_some_and(|at| at.elapsed() < STATISTICS_LOOK_PERIOD)
        {
            return false;
        }
        // Hospitals not looked at for a period are forgotten (bounds the map).
        if looks.len() >= MAX_NOTED {
            looks.retain(|_, at| at.elapsed() < STATISTICS_LOOK_PERIOD);
        }
        looks.insert(code.to_owned(), Instant::now());
        true
    }
}

/// How many hospitals the daemon catches up at once: hints from many hospitals (a load
/// spread over a fleet) are not handled one after another, and a catch-up holds one of
/// a hospital's connections and, briefly, one of the platform's.
const CATCH_UP_CONCURRENCY: usize = 4;

/// Hospitals with another replica's hints waiting (bounds the daemon's memory; beyond it
/// a hint is handled as this replica's own).
const MAX_NOTED: usize = 100_000;

/// Other replicas' hints not yet looked at: per hospital, when the first came and from
/// whom.
#[derive(Default)]
struct Noted(HashMap<String, (Instant, HashSet<Uuid>)>);

/// How often this process's own hints catch one hospital up. Most of its commands have
/// caught up the read models already (read-your-writes); what the hint's catch-up adds is
/// the seal and the recorded head, and events appended without waiting (registrations,
/// views of records, docs/adr/0011).
/// One round a period covers every command of the period: under load a round per hint
/// batch cost about as many statements as the commands' own rounds (one hospital), or
/// more (a load spread over a few hospitals, a few clients each).
const OWN_HINT_PERIOD: Duration = Duration::from_millis(250);

/// This process's own hints, at most one catch-up per hospital per [`OWN_HINT_PERIOD`]:
/// a hint within the period waits for its end. Only *when* lives here; what a catch-up
/// applies is the log's.
struct Paced {
    period: Duration,
    last: HashMap<String, tokio::time::Instant>,
    waiting: HashMap<String, tokio::time::Instant>,
}

impl Paced {
    fn every(period: Duration) -> Self {
        Self {
            period,
            last: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Of the hinted `codes`, those to catch up now; the others wait for their period.
    fn due_now(&mut self, codes: HashSet<String>) -> HashSet<String> {
        let now = tokio::time::Instant::now();
        // Hospitals not caught up for a period are forgotten (bounds the map).
        if self.last.len() >= MAX_NOTED {
            let period = self.period;
            self.last.retain(|_, at| now.duration_since(*at) < period);
        }
        let mut due = HashSet::new();
        for code in codes {
            match self.last.get(&code) {
                Some(at) if now.duration_since(*at) < self.period => {
                    self.waiting.entry(code).or_insert(*at + self.period);
                }
                _ => {
                    self.waiting.remove(&code);
                    self.last.insert(code.clone(), now);
                    due.insert(code);
                }
            }
        }
        due
    }

    /// When the first waiting hospital is due.
    fn next(&self) -> Option<tokio::time::Instant> {
        self.waiting.values().min().copied()
    }

    /// The waiting hospitals whose period has ended, taken (and noted as caught up now).
    fn take_due(&mut self) -> HashSet<String> {
        let now = tokio::time::Instant::now();
        let due: HashSet<String> = self
            .waiting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(code, _)| code.clone())
            .collect();
        for code in &due {
            self.waiting.remove(code);
            self.last.insert(code.clone(), now);
        }
        due
    }
}

/// Runs the daemon until the returned handle is aborted.
pub fn spawn(platform: Platform, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener = None;
        let mut last_sweep = tokio::time::Instant::now();
        let me = platform.hints.replica();
        let mut noted = Noted::default();
        let mut paced = Paced::every(OWN_HINT_PERIOD);
        loop {
            if listener.is_none() {
                listener = listen(&platform.control).await;
            }
            let hint = async {
                match listener.as_mut() {
                    Some(l) => Some(l.recv().await),
                    None => std::future::pending().await,
                }
            };
            let waited = async {
                match paced.next() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = waited => {
                    let due = paced.take_due();
                    catch_up_each(&platform, due).await;
                }
                received = hint => match received {
                    Some(Ok(first)) => {
                        // Every hint already waiting is taken too, and each hospital is
                        // caught up once for all of them: under load a hint comes with
                        // every command, and a catch-up covers all events written before
                        // it starts.
                        let mut mine = HashSet::new();
                        let mut next = Some(first);
                        while let Some(notification) = next.take() {
                            let (code, sender) = hints::parse(notification.payload());
                            match sender {
                                Some(sender) if sender != me && noted.0.len() < MAX_NOTED => {
                                    noted
                                        .0
                                        .entry(code.to_owned())
                                        .or_insert_with(|| (Instant::now(), HashSet::new()))
                                        .1
                                        .insert(sender);
                                }
                                _ => {
                                    mine.insert(code.to_owned());
                                }
                            }
                            if let Some(l) = listener.as_mut() {
                                next = waiting_hint(l).await;
                            }
                        }
                        let due = paced.due_now(mine);
                        catch_up_each(&platform, due).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "projection hint listener failed; reconnecting");
                        listener = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => {}
                },
                _ = tick.tick() => {
                    take_over(&platform, &mut noted).await;
                    let sweep_due = last_sweep.elapsed() >= SWEEP_PERIOD;
                    if sweep_due {
                        last_sweep = tokio::time::Instant::now();
                    }
                    let open = platform.registry.open_codes();
                    if sweep_due {
                        for code in &open {
                            sweep_reservations(&platform, code).await;
                        }
                    }
                    catch_up_each(&platform, open.into_iter().collect()).await;
                }
            }
        }
    })
}

/// Catches up the hospitals whose noted hints are older than
/// [`replicas::TAKEOVER_AFTER`] and came from a replica that is gone or does no
/// background work.
async fn take_over(platform: &Platform, noted: &mut Noted) {
    let due: Vec<String> = noted
        .0
        .iter()
        .filter(|(_, (first, _))| first.elapsed() >= replicas::TAKEOVER_AFTER)
        .map(|(code, _)| code.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    let working = match replicas::working(&platform.control).await {
        Ok(working) => working,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the replicas' heartbeats; will retry");
            return;
        }
    };
    for code in due {
        let Some((_, senders)) = noted.0.remove(&code) else {
            continue;
        };
        if let Some(gone) = senders.iter().find(|s| !working.contains(s)) {
            tracing::info!(code, replica = %gone, "catching up for a replica that is gone or does no background work");
            catch_up(platform, &code).await;
        }
    }
}

/// A hint that has arrived already, without waiting for one (a failure is left for the
/// next wait to report).
async fn waiting_hint(listener: &mut PgListener) -> Option<sqlx::postgres::PgNotification> {
    // `recv` is cancel-safe: a hint not complete yet stays for the next call.
    match tokio::time::timeout(Duration::ZERO, listener.recv()).await {
        Ok(Ok(notification)) => Some(notification),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Catches up each hospital of `codes`, [`CATCH_UP_CONCURRENCY`] at a time.
async fn catch_up_each(platform: &Platform, codes: HashSet<String>) {
    futures::stream::iter(codes)
        .for_each_concurrent(CATCH_UP_CONCURRENCY, |code| async move {
            catch_up(platform, &code).await;
        })
        .await;
}

async fn listen(control: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(control).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for projection hints; relying on the timer");
            return None;
        }
    };
    match listener.listen(CHANNEL).await {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for projection hints; relying on the timer");
            None
        }
    }
}

/// Brings one tenant's read models up to date; failures are logged and recorded on the
/// projector's checkpoint (and retried on the next visit).
pub async fn catch_up(platform: &Platform, code: &str) {
    let lease = match platform.registry.get(code).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::debug!(code, error = %e, "skipping projection catch-up");
            return;
        }
    };
    if let Err(e) = platform.runner.catch_up(&lease.pool).await {
        tracing::warn!(code, error = %e, "projection catch-up failed; will retry");
    }
    // Move the log's recorded head forward (an auditor's digest lives in the platform
    // database, out of reach of whoever can write the tenant database).
    // Where the head row is gone but events are sealed, it refuses: recording the
    // tenant's newest seal then would bless a rewritten chain (an operator decides, with
    // `hms-replay seal --accept-missing-head`).
    match seal::record_head(
        &platform.control,
        code,
        &lease.pool,
        seal::MissingHead::Refuse,
    )
    .await
    {
        Ok(_) => {}
        Err(e @ seal::SealError::HeadDiverged { .. }) => {
            tracing::error!(code, error = %e, "ALERT: the event log no longer matches its recorded head");
        }
        Err(e @ seal::SealError::HeadMissing { .. }) => {
            tracing::error!(code, error = %e, "ALERT: the event log's recorded head is missing");
        }
        Err(e) => tracing::warn!(code, error = %e, "could not record the log head; will retry"),
    }
    // The super administrator's dashboard reads these figures from the platform
    // database instead of visiting every tenant on each request; one replica refreshes
    // a hospital's figures when they are stale.
    if !STATISTICS_LOOKS.due(code) {
        return;
    }
    let refreshed = async {
        let stale =
            crate::tenant_stats::is_stale(&platform.control, code, STATISTICS_MAX_AGE).await?;
        if stale
            && leases::take(
                &platform.control,
                leases::STATISTICS,
                code,
                platform.hints.replica(),
                STATISTICS_LEASE,
            )
            .await?
        {
            crate::tenant_stats::refresh_tenant_stats(&platform.control, &lease).await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if let Err(e) = refreshed {
        tracing::warn!(code, error = %e, "could not refresh the hospital's statistics");
    }
}

/// Releases the slots a broken booking left held in one hospital (see
/// [`super::reservation_sweep`]); failures are logged and retried on the next sweep.
async fn sweep_reservations(platform: &Platform, code: &str) {
    // One replica sweeps a hospital per period.
    let mine = leases::take(
        &platform.control,
        leases::RESERVATION_SWEEP,
        code,
        platform.hints.replica(),
        SWEEP_PERIOD,
    )
    .await;
    match mine {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(code, error = %e, "cannot take the reservation sweep's lease; will retry");
            return;
        }
    }
    let Ok(lease) = platform.registry.get(code).await else {
        return;
    };
    let swept = super::reservation_sweep::sweep(
        &lease.pool,
        code,
        super::reservation_sweep::GRACE,
        chrono::Utc::now(),
    )
    .await;
    match swept {
        Ok(released) => crate::telemetry::reservations_released(released),
        Err(e) => tracing::warn!(code, error = %e, "the reservation sweep failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_hospital_hinted_again_within_the_period_waits_for_its_end_and_is_not_lost() {
        let period = Duration::from_millis(40);
        let mut paced = Paced::every(period);
        assert_eq!(paced.due_now(codes(&["A", "B"])), codes(&["A", "B"]));
        assert_eq!(paced.next(), None, "nothing waits");

        // Hinted again at once: it waits for the end of its period, once however often.
        assert!(paced.due_now(codes(&["A"])).is_empty());
        assert!(paced.due_now(codes(&["A"])).is_empty());
        let due_at = paced.next().expect("A waits");
        assert!(due_at > tokio::time::Instant::now());
        assert!(paced.take_due().is_empty(), "not before its time");

        tokio::time::sleep_until(due_at).await;
        assert_eq!(paced.take_due(), codes(&["A"]));
        assert_eq!(paced.next(), None);
        // Caught up just now: a new hint waits for a new period.
        assert!(paced.due_now(codes(&["A"])).is_empty());
        // B's period has passed: hinted again, it goes at once.
        tokio::time::sleep(period).await;
        assert_eq!(paced.due_now(codes(&["B"])), codes(&["B"]));
    }
}
