//! The per-principal request budget: what one signed-in user (or the operator) may cost
//! the service per minute, in the same units as the per-request complexity limit (a page
//! of 100 records costs about 100 times one record). It bounds what a stolen or runaway
//! token can do (scrape the register, fill the access log) while a person's use never
//! comes near it.
//!
//! The spending is counted in the platform database (`request_budgets`, one row per
//! principal and minute), so every replica charges the same counter and the limit holds
//! however requests are spread. One statement per request, committed without waiting for
//! the disk: a crash may forget a second of spending, which costs nothing that matters.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;
use uuid::Uuid;

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
}

impl RequestBudget {
    /// `per_minute`: `None` for [`DEFAULT_PER_MINUTE`], `Some(0)` for no budget.
    pub fn new(control: PgPool, per_minute: Option<u64>) -> Self {
        Self {
            control,
            per_minute: per_minute.unwrap_or(DEFAULT_PER_MINUTE),
            charges: AtomicU64::new(0),
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
        let limit = i64::try_from(self.per_minute).unwrap_or(i64::MAX);
        // One statement: the charge is added only where it fits, atomically against
        // every other replica's; no row back means it did not fit. The setting makes
        // this statement's commit not wait for the disk.
        let charged: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
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
        .fetch_optional(&self.control)
        .await;
        let charged = match charged {
            Ok(charged) => charged,
            // A throttle, not an authority: while the platform database is down the
            // hospitals keep working, unmetered.
            Err(e) if crate::tenancy::platform::is_unreachable(&e) => {
                tracing::warn!(error = %e, "request budget not charged: the platform database is unreachable");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        match charged {
            Some(_) => Ok(()),
            None => Err(AppError::RateLimited),
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
