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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

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

pub struct RequestBudget {
    control: PgPool,
    /// Units per principal and minute; 0: no budget.
    limit: i64,
    charges: AtomicU64,
    queued: Batcher<Charge>,
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
        let queued = Batcher::new({
            let control = control.clone();
            move |charges: Vec<Charge>| {
                let control = control.clone();
                async move { charge_batch(&control, limit, charges).await }
            }
        });
        Self {
            control,
            limit,
            charges: AtomicU64::new(0),
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
        if self.charges.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.spawn_purge();
        }
        let cost = i64::try_from(cost.max(1)).unwrap_or(i64::MAX);
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
/// where they fit. A principal whose several charges do not fit together has them charged
/// one by one, so that those that still fit pass (as they would have, sent alone).
async fn charge_batch(control: &PgPool, limit: i64, charges: Vec<Charge>) {
    let mut totals: HashMap<Uuid, i64> = HashMap::new();
    for c in &charges {
        let total = totals.entry(c.principal).or_default();
        *total = total.saturating_add(c.cost);
    }
    let (principals, costs): (Vec<Uuid>, Vec<i64>) = totals.into_iter().unzip();
    let fitted = match add_where_fits(control, limit, &principals, &costs).await {
        Ok(Some(fitted)) => fitted,
        failed => {
            for c in charges {
                let _ = c.outcome.send(unfitted(&failed));
            }
            return;
        }
    };
    let mut refused: HashMap<Uuid, Vec<Charge>> = HashMap::new();
    for c in charges {
        if fitted.contains(&c.principal) {
            let _ = c.outcome.send(Ok(()));
        } else {
            refused.entry(c.principal).or_default().push(c);
        }
    }
    for charges in refused.into_values() {
        if let [_] = charges.as_slice() {
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

/// One charge in a statement of its own.
async fn charge_alone(control: &PgPool, limit: i64, principal: Uuid, cost: i64) -> Result<()> {
    match add_where_fits(control, limit, &[principal], &[cost]).await {
        Ok(Some(fitted)) if fitted.is_empty() => Err(AppError::RateLimited),
        Ok(Some(_)) => Ok(()),
        failed => unfitted(&failed),
    }
}

/// What a charge gets when its statement gave no answer (`None`: unreachable, or the
/// error).
fn unfitted(failed: &std::result::Result<Option<Vec<Uuid>>, sqlx::Error>) -> Result<()> {
    match failed {
        Err(e) => Err(AppError::internal(e.to_string())),
        // Unmetered: see `add_where_fits`.
        Ok(_) => Ok(()),
    }
}

/// Adds each principal's cost to its current minute where the sum stays within `limit`,
/// atomically against every other replica's, in one statement committed without waiting
/// for the disk. Returns the principals charged (the others did not fit), or `None`
/// while the platform database is unreachable: a throttle, not an authority, so the
/// hospitals keep working, unmetered.
async fn add_where_fits(
    control: &PgPool,
    limit: i64,
    principals: &[Uuid],
    costs: &[i64],
) -> std::result::Result<Option<Vec<Uuid>>, sqlx::Error> {
    let charged = sqlx::query_scalar(
        "WITH _ AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO request_budgets AS b (principal, window_start, spent) \
         SELECT c.principal, date_trunc('minute', now()), c.cost \
           FROM unnest($1::uuid[], $2::bigint[]) AS c(principal, cost), _ WHERE c.cost <= $3 \
         ON CONFLICT (principal, window_start) \
         DO UPDATE SET spent = b.spent + EXCLUDED.spent \
         WHERE b.spent + EXCLUDED.spent <= $3 \
         RETURNING principal",
    )
    .bind(principals)
    .bind(costs)
    .bind(limit)
    .fetch_all(control)
    .await;
    match charged {
        Ok(charged) => Ok(Some(charged)),
        Err(e) if crate::tenancy::platform::is_unreachable(&e) => {
            tracing::warn!(error = %e, "request budget not charged: the platform database is unreachable");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
