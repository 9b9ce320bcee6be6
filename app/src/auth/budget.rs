//! The per-principal request budget: what one signed-in user (or the operator) may cost
//! the service per minute, in the same units as the per-request complexity limit (a page
//! of 100 records costs about 100 times one record). It bounds what a stolen or runaway
//! token can do (scrape the register, fill the access log) while a person's use never
//! comes near it.
//!
//! The spending is counted in the platform database (`request_budgets`, one row per
//! principal and minute), so every replica charges the same counter and the limit holds
//! however requests are spread. Charges made at the same time in one process go in one
//! statement ([`crate::batching`]), committed without waiting for the disk: a crash may
//! forget a second of spending, which costs nothing that matters.
//!
//! Under a large limit a process charges a *grant* at a time (a fraction of the limit,
//! [`grant_for`]) and spends it on the principal's next requests without a statement
//! each (docs/adr/0006, change 18). The counter holds every unit granted, spent or not,
//! so the limit still holds across replicas; what a grant leaves unspent when its minute
//! ends, or when the process stops, is charged and unused, at most one grant per replica.
//! A grant is spent only within the window the database charged it to. Under a small
//! limit (below [`GRANT_DIVISOR`] × [`GRANT_MIN`]) every charge is a statement of its
//! own, exact to the unit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::batching::Batcher;
use crate::error::{AppError, Result};

/// The default budget per principal and minute: 10,000 units a second on average, some
/// fifty full pages of 100 records a minute, far above what a person clicks.
pub const DEFAULT_PER_MINUTE: u64 = 300_000;
/// Windows past are purged after about this many charges of a process.
const PURGE_EVERY: u64 = 1_000;
/// A grant is this fraction of the limit: what one replica may hold charged and unspent.
const GRANT_DIVISOR: i64 = 64;
/// A grant smaller than this would save few statements: the budget is charged exactly.
const GRANT_MIN: i64 = 100;
/// However large the limit, a grant is at most this (a few hundred requests).
const GRANT_MAX: i64 = 10_000;
/// Principals whose grants this process remembers before it forgets expired ones.
const HELD_PRUNE_AT: usize = 4_096;

/// The units a process charges to a principal at a time under `limit`; 0: none, every
/// charge is exact.
pub fn grant_for(limit: i64) -> i64 {
    let grant = limit / GRANT_DIVISOR;
    if grant < GRANT_MIN {
        0
    } else {
        grant.min(GRANT_MAX)
    }
}

pub struct RequestBudget {
    control: PgPool,
    /// Units per principal and minute; 0: no budget.
    limit: i64,
    charges: AtomicU64,
    held: Arc<Held>,
    queued: Batcher<Charge>,
}

/// Units charged to principals in the database and not spent yet by this process, each
/// with the end of the window they were charged to.
#[derive(Default)]
struct Held(Mutex<HashMap<Uuid, Grant>>);

#[derive(Debug, Clone, Copy)]
struct Grant {
    units: i64,
    until: Instant,
}

impl Held {
    /// Spends `cost` of `principal`'s grant, if it has that much left in its window.
    fn spend(&self, principal: Uuid, cost: i64) -> bool {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match held.get_mut(&principal) {
            Some(grant) if grant.until > Instant::now() && grant.units >= cost => {
                grant.units -= cost;
                true
            }
            _ => false,
        }
    }

    /// Keeps `units` charged to `principal` in the window ending at `until`. Added to
    /// what is left of a grant still in its window, both then end at the earlier end:
    /// units are never spent past the window they were charged to.
    fn keep(&self, principal: Uuid, units: i64, until: Instant) {
        let now = Instant::now();
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= HELD_PRUNE_AT {
            held.retain(|_, grant| grant.until > now);
        }
        let grant = held.entry(principal).or_insert(Grant { units: 0, until });
        if grant.until <= now {
            *grant = Grant { units: 0, until };
        }
        grant.units = grant.units.saturating_add(units);
        grant.until = grant.until.min(until);
    }
}

/// One request's charge, waiting for its batch.
struct Charge {
    principal: Uuid,
    cost: i64,
    outcome: oneshot::Sender<Result<()>>,
}

impl RequestBudget {
    /// `per_minute`: `None` for [`DEFAULT_PER_MINUTE`], `Some(0)` for no budget.
    pub fn new(control: PgPool, per_minute: Option<u64>) -> Self {
        let limit = i64::try_from(per_minute.unwrap_or(DEFAULT_PER_MINUTE)).unwrap_or(i64::MAX);
        let held = Arc::new(Held::default());
        let queued = Batcher::new({
            let (control, held) = (control.clone(), held.clone());
            move |charges: Vec<Charge>| {
                let (control, held) = (control.clone(), held.clone());
                async move { charge_batch(&control, limit, &held, charges).await }
            }
        });
        Self {
            control,
            limit,
            charges: AtomicU64::new(0),
            held,
            queued,
        }
    }

    /// Charges `cost` to `principal`'s current minute; RATE_LIMITED if that would take
    /// it over the budget (the refused request is not charged). A request costs at least
    /// one unit.
    pub async fn charge(&self, principal: Uuid, cost: usize) -> Result<()> {
        if self.limit == 0 {
            return Ok(());
        }
        let cost = i64::try_from(cost.max(1)).unwrap_or(i64::MAX);
        if self.held.spend(principal, cost) {
            return Ok(());
        }
        if self.charges.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.spawn_purge();
        }
        let (outcome, answer) = oneshot::channel();
        self.queued.push(Charge {
            principal,
            cost,
            outcome,
        });
        match answer.await {
            Ok(outcome) => outcome,
            // The batch was dropped unanswered (its task's runtime is shutting down).
            Err(_) => charge_alone(&self.control, self.limit, principal, cost).await,
        }
    }

    fn spawn_purge(&self) {
        let control = self.control.clone();
        tokio::spawn(async move {
            let purged = sqlx::query(
                "DELETE FROM request_budgets WHERE window_start < date_trunc('minute', now())",
            )
            .execute(&control)
            .await;
            if let Err(e) = purged {
                tracing::warn!(error = %e, "purging past request budgets failed");
            }
        });
    }
}

/// Charges a batch: one statement for all of it, each principal's charges added together
/// (and rounded up to a grant, kept for the principal's next requests) where they fit. A
/// principal whose charges do not fit that way has them charged one by one, exactly, so
/// that those that still fit pass (as they would have, sent alone).
async fn charge_batch(control: &PgPool, limit: i64, held: &Held, charges: Vec<Charge>) {
    // Queued while the batch before kept a grant: spend that first.
    let charges: Vec<Charge> = charges
        .into_iter()
        .filter_map(|c| {
            if held.spend(c.principal, c.cost) {
                let _ = c.outcome.send(Ok(()));
                None
            } else {
                Some(c)
            }
        })
        .collect();
    if charges.is_empty() {
        return;
    }
    let mut needs: HashMap<Uuid, i64> = HashMap::new();
    for c in &charges {
        let need = needs.entry(c.principal).or_default();
        *need = need.saturating_add(c.cost);
    }
    let grant = grant_for(limit);
    let (principals, asks): (Vec<Uuid>, Vec<i64>) = needs
        .iter()
        .map(|(principal, need)| (*principal, (*need).max(grant)))
        .unzip();
    let sent = Instant::now();
    let fitted = match add_where_fits(control, limit, &principals, &asks).await {
        Ok(Some(fitted)) => fitted,
        failed => {
            for c in charges {
                let _ = c.outcome.send(unfitted(&failed));
            }
            return;
        }
    };
    let asked: HashMap<Uuid, i64> = principals.into_iter().zip(asks).collect();
    for (principal, window_left) in &fitted {
        let surplus = asked[principal] - needs[principal];
        if surplus > 0 {
            held.keep(*principal, surplus, sent + *window_left);
        }
    }
    let mut refused: HashMap<Uuid, Vec<Charge>> = HashMap::new();
    for c in charges {
        if fitted.contains_key(&c.principal) {
            let _ = c.outcome.send(Ok(()));
        } else {
            refused.entry(c.principal).or_default().push(c);
        }
    }
    for (principal, charges) in refused {
        // Asked for exactly its one charge, and that did not fit.
        if charges.len() == 1 && asked[&principal] == needs[&principal] {
            for c in charges {
                let _ = c.outcome.send(Err(AppError::RateLimited));
            }
            continue;
        }
        for c in charges {
            let outcome = charge_alone(control, limit, c.principal, c.cost).await;
            let _ = c.outcome.send(outcome);
        }
    }
}

/// One charge in a statement of its own, exactly its cost.
async fn charge_alone(control: &PgPool, limit: i64, principal: Uuid, cost: i64) -> Result<()> {
    match add_where_fits(control, limit, &[principal], &[cost]).await {
        Ok(Some(fitted)) if fitted.is_empty() => Err(AppError::RateLimited),
        Ok(Some(_)) => Ok(()),
        failed => unfitted(&failed),
    }
}

/// What a charge gets when its statement gave no answer (`None`: unreachable, or the
/// error).
fn unfitted<T>(failed: &std::result::Result<Option<T>, sqlx::Error>) -> Result<()> {
    match failed {
        Err(e) => Err(AppError::internal(e.to_string())),
        // Unmetered: see `add_where_fits`.
        Ok(_) => Ok(()),
    }
}

/// Adds each principal's cost to its current minute where the sum stays within `limit`,
/// atomically against every other replica's, in one statement committed without waiting
/// for the disk. Returns the principals charged (the others did not fit), each with how
/// much of the window it was charged to was left by the database's clock; or `None`
/// while the platform database is unreachable: a throttle, not an authority, so the
/// hospitals keep working, unmetered.
async fn add_where_fits(
    control: &PgPool,
    limit: i64,
    principals: &[Uuid],
    costs: &[i64],
) -> std::result::Result<Option<HashMap<Uuid, Duration>>, sqlx::Error> {
    let charged: std::result::Result<Vec<(Uuid, i64)>, _> = sqlx::query_as(
        "WITH _ AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO request_budgets AS b (principal, window_start, spent) \
         SELECT c.principal, date_trunc('minute', now()), c.cost \
           FROM unnest($1::uuid[], $2::bigint[]) AS c(principal, cost), _ WHERE c.cost <= $3 \
         ON CONFLICT (principal, window_start) \
         DO UPDATE SET spent = b.spent + EXCLUDED.spent \
         WHERE b.spent + EXCLUDED.spent <= $3 \
         RETURNING principal, \
           (extract(epoch FROM b.window_start + interval '1 minute' - now()) * 1000)::bigint",
    )
    .bind(principals)
    .bind(costs)
    .bind(limit)
    .fetch_all(control)
    .await;
    match charged {
        Ok(charged) => Ok(Some(
            charged
                .into_iter()
                .map(|(principal, left_ms)| {
                    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
                    (principal, left)
                })
                .collect(),
        )),
        Err(e) if crate::tenancy::platform::is_unreachable(&e) => {
            tracing::warn!(error = %e, "request budget not charged: the platform database is unreachable");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_limits_are_charged_exactly_and_large_ones_in_bounded_grants() {
        assert_eq!(grant_for(1_000), 0);
        assert_eq!(grant_for(GRANT_DIVISOR * GRANT_MIN - 1), 0);
        assert_eq!(grant_for(GRANT_DIVISOR * GRANT_MIN), GRANT_MIN);
        assert_eq!(grant_for(300_000), 300_000 / GRANT_DIVISOR);
        assert_eq!(grant_for(i64::MAX), GRANT_MAX);
    }

    #[test]
    fn a_grant_is_spent_only_within_its_window_and_never_past_it() {
        let held = Held::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        held.keep(alice, 100, now + Duration::from_secs(30));
        assert!(!held.spend(bob, 1), "nothing held for another principal");
        assert!(held.spend(alice, 60));
        assert!(!held.spend(alice, 41), "only 40 left");
        assert!(held.spend(alice, 40));
        assert!(!held.spend(alice, 1));

        // A later grant adds to what is left, and both end with the earlier window.
        held.keep(alice, 10, now + Duration::from_secs(30));
        held.keep(alice, 10, now + Duration::from_secs(90));
        let kept = held.0.lock().expect("held")[&alice];
        assert_eq!(kept.until, now + Duration::from_secs(30));
        assert!(held.spend(alice, 20));

        // Expired units are never spent, and a grant after them starts afresh.
        held.keep(bob, 100, now);
        assert!(!held.spend(bob, 1), "its window is over");
        held.keep(bob, 5, now + Duration::from_secs(30));
        assert!(held.spend(bob, 5));
        assert!(!held.spend(bob, 1), "the expired 100 did not come back");
    }
}
