//! Keeps every hospital's read models moving without a request to drive them.
//!
//! The command path already catches up the read models inline (read-your-writes). This
//! task covers the rest: the log sealer (kept out of the commands' way, see
//! docs/adr/0006), events written by *other* processes, and projectors that failed and
//! must be retried. It wakes on a hint sent on one channel of the platform database (one
//! listening connection for all tenants: `LISTEN` is per database, and a listener per
//! tenant database would pin a connection per tenant) and on a timer, which also covers
//! a lost hint. Only tenants with work are visited: the one named by a hint, and those
//! with an open pool (recently active) on the timer. Once a minute the timer also sweeps
//! those hospitals for slots a broken booking left held.
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
static STATISTICS_LOOKS: LazyLock<Looks> = LazyLock::new(|| Looks::every(STATISTICS_LOOK_PERIOD));

/// How often a hint from this process's own commands moves a hospital's recorded log
/// head (their rounds seal as they go; the timer records it too, every
/// [`crate::application`] tick).
const HEAD_RECORD_PERIOD: Duration = Duration::from_secs(1);

/// When this process last recorded each hospital's head on a hint of its own.
static HEAD_RECORDS: LazyLock<Looks> = LazyLock::new(|| Looks::every(HEAD_RECORD_PERIOD));

/// When something was last done per hospital, to do it at most once a period. Only
/// *when* lives here; what is done reads and writes the databases.
struct Looks {
    period: Duration,
    at: Mutex<HashMap<String, Instant>>,
}

impl Looks {
    fn every(period: Duration) -> Self {
        Self {
            period,
            at: Mutex::default(),
        }
    }

    /// Whether it is time to look at `code` again; if so, the look is noted now.
    fn due(&self, code: &str) -> bool {
        let mut looks = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if looks.get(code).is_some_and(|at| at.elapsed() < self.period) {
            return false;
        }
        // Hospitals not looked at for a period are forgotten (bounds the map).
        if looks.len() >= MAX_NOTED {
            looks.retain(|_, at| at.elapsed() < self.period);
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

/// Runs the daemon until the returned handle is aborted.
pub fn spawn(platform: Platform, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener = None;
        let mut last_sweep = tokio::time::Instant::now();
        let me = platform.hints.replica();
        let mut noted = Noted::default();
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
            tokio::select! {
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
                        catch_up_hinted(&platform, mine).await;
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

/// Hospitals this process's own commands hinted, [`CATCH_UP_CONCURRENCY`] at a time.
/// Their rounds have usually applied and sealed everything they wrote: a round runs
/// only where they have not (see [`hms_projections::ProjectionRunner::catch_up_own`]),
/// and the head is recorded at most every [`HEAD_RECORD_PERIOD`] otherwise.
async fn catch_up_hinted(platform: &Platform, codes: HashSet<String>) {
    futures::stream::iter(codes)
        .for_each_concurrent(CATCH_UP_CONCURRENCY, |code| async move {
            let lease = match platform.registry.get(&code).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::debug!(code, error = %e, "skipping projection catch-up");
                    return;
                }
            };
            let ran = platform
                .runner
                .catch_up_own(&lease.pool)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(code, error = %e, "projection catch-up failed; will retry");
                    true
                });
            if ran || HEAD_RECORDS.due(&code) {
                record_head(platform, &code, &lease).await;
            }
            refresh_statistics(platform, &code, &lease).await;
        })
        .await;
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
    record_head(platform, code, &lease).await;
    refresh_statistics(platform, code, &lease).await;
}

async fn record_head(platform: &Platform, code: &str, lease: &crate::tenancy::TenantLease) {
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
}

async fn refresh_statistics(platform: &Platform, code: &str, lease: &crate::tenancy::TenantLease) {
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
            crate::tenant_stats::refresh_tenant_stats(&platform.control, lease).await?;
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
