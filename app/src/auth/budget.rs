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
    /// 0: no budget.
    per_minute: u64,
    charges: AtomicU64,
    queued: Batcher<Charge>,
}

/// One request's charge, waiting for its batch.
struct Charge {
    principal: Uuid,
    cost: i64,
    outcome: oneshot::Sender<Result<()>>,
}

/// What the budget statements answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charged {
    Fits,
    OverBudget,
    /// The platform database is unreachable: a throttle, not an authority, so the
    /// hospitals keep working, unmetered.
    Unmetered,
}

impl RequestBudget {
    /// `per_minute`: `None` for [`DEFAULT_PER_MINUTE`], `Some(0)` for no budget.
    pub fn new(control: PgPool, per_minute: Option<u64>) -> Self {
        let per_minute = per_minute.unwrap_or(DEFAULT_PER_MINUTE);
        let limit = i64::try_from(per_minute).unwrap_or(i64::MAX);
        let queued = Batcher::new({
            let control = control.clone();
            move |charges: Vec<Charge>| {
                let control = control.clone();
                async move { charge_batch(&control, limit, charges).await }
            }
        });
        Self {
            control,
            per_minute,
            charges: AtomicU64::new(0),
            queued,
        }
    }

    /// Charges `cost` to `principal`'s current minute; RATE_LIMITED if that would take
    /// it over the budget (the refused request is not charged). A request costs at least
    /// one unit.
    pub async fn charge(&self, principal: Uuid, cost: usize) -> Result<()> {
        if self.per_minute == 0 {
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
            Err(_) => {
                let limit = i64::try_from(self.per_minute).unwrap_or(i64::MAX);
                answer_of(charge_one(&self.control, principal, cost, limit).await)
            }
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

fn answer_of(charged: Result<Charged>) -> Result<()> {
    match charged? {
        Charged::Fits | Charged::Unmetered => Ok(()),
        Charged::OverBudget => Err(AppError::RateLimited),
    }
}

/// Charges a batch: one statement for all of it, each principal's charges added together
/// where they fit. A principal whose several charges do not fit together has them charged
/// one by one, so that those that still fit pass (as they would have, sent alone).
async fn charge_batch(control: &PgPool, limit: i64, charges: Vec<Charge>) {
    if let [_] = charges.as_slice() {
        for c in charges {
            let charged = charge_one(control, c.principal, c.cost, limit).await;
            let _ = c.outcome.send(answer_of(charged));
        }
        return;
    }
    let mut totals: HashMap<Uuid, i64> = HashMap::new();
    for c in &charges {
        let total = totals.entry(c.principal).or_default();
        *total = total.saturating_add(c.cost);
    }
    let (principals, costs): (Vec<Uuid>, Vec<i64>) = totals.into_iter().unzip();
    let fitted: std::result::Result<Vec<Uuid>, sqlx::Error> = sqlx::query_scalar(
        "WITH _ AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO request_budgets AS b (principal, window_start, spent) \
         SELECT c.principal, date_trunc('minute', now()), c.cost \
           FROM unnest($1::uuid[], $2::bigint[]) AS c(principal, cost), _ WHERE c.cost <= $3 \
         ON CONFLICT (principal, window_start) \
         DO UPDATE SET spent = b.spent + EXCLUDED.spent \
         WHERE b.spent + EXCLUDED.spent <= $3 \
         RETURNING principal",
    )
    .bind(&principals)
    .bind(&costs)
    .bind(limit)
    .fetch_all(control)
    .await;
    let fitted = match fitted {
        Ok(fitted) => fitted,
        Err(e) => {
            let charged = charged_on_error(e);
            for c in charges {
                let _ = c.outcome.send(answer_of(match &charged {
                    Ok(charged) => Ok(*charged),
                    Err(message) => Err(AppError::internal(message.clone())),
                }));
            }
            return;
        }
    };
    let mut left: HashMap<Uuid, Vec<Charge>> = HashMap::new();
    for c in charges {
        if fitted.contains(&c.principal) {
            let _ = c.outcome.send(Ok(()));
        } else {
            left.entry(c.principal).or_default().push(c);
        }
    }
    for (_, charges) in left {
        let together = charges.len() > 1;
        for c in charges {
            let outcome = if together {
                answer_of(charge_one(control, c.principal, c.cost, limit).await)
            } else {
                Err(AppError::RateLimited)
            };
            let _ = c.outcome.send(outcome);
        }
    }
}

/// One charge, in one statement: added only where it fits, atomically against every
/// other replica's; no row back means it did not fit. The setting makes the statement's
/// commit not wait for the disk.
async fn charge_one(control: &PgPool, principal: Uuid, cost: i64, limit: i64) -> Result<Charged> {
    let charged: std::result::Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
        "WITH _ AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO request_budgets AS b (principal, window_start, spent) \
         SELECT $1, date_trunc('minute', now()), $2 FROM _ WHERE $2 <= $3 \
         ON CONFLICT (principal, window_start) \
         DO UPDATE SET spent = b.spent + EXCLUDED.spent \
         WHERE b.spent + EXCLUDED.spent <= $3 \
         RETURNING spent",
    )
    .bind(principal)
    .bind(cost)
    .bind(limit)
    .fetch_optional(control)
    .await;
    match charged {
        Ok(Some(_)) => Ok(Charged::Fits),
        Ok(None) => Ok(Charged::OverBudget),
        Err(e) => charged_on_error(e).map_err(AppError::internal),
    }
}

/// A failed budget statement: unmetered while the platform database is unreachable,
/// otherwise an internal error (its text is logged, never shown to the client).
fn charged_on_error(e: sqlx::Error) -> std::result::Result<Charged, String> {
    if crate::tenancy::platform::is_unreachable(&e) {
        tracing::warn!(error = %e, "request budget not charged: the platform database is unreachable");
        Ok(Charged::Unmetered)
    } else {
        Err(e.to_string())
    }
}
