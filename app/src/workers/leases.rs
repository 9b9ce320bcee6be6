//! Time leases in the platform database for periodic background work that one replica
//! should do per hospital and period (the reservation sweep, the statistics refresh).
//!
//! A lease is taken by one atomic statement and expires on its own: whoever takes it
//! does the work for that period, every other replica skips it, and when the holder
//! dies the work passes to another replica once the lease has expired. Unlike an
//! advisory lock held while working, it also keeps replicas from repeating the work one
//! after another within the period.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// The reservation sweep of one hospital.
pub const RESERVATION_SWEEP: &str = "reservation-sweep";
/// The copy of one hospital's figures into the platform database.
pub const STATISTICS: &str = "statistics";

/// Takes the lease on `task` for hospital `code` for `period` if nobody holds it
/// (expired leases are nobody's). Returns whether `holder` now holds it.
pub async fn take(
    control: &PgPool,
    task: &str,
    code: &str,
    holder: Uuid,
    period: Duration,
) -> Result<bool, sqlx::Error> {
    let taken: Option<bool> = sqlx::query_scalar(
        "INSERT INTO background_leases (task, code, holder, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (task, code) DO UPDATE \
            SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
          WHERE background_leases.expires_at <= now() \
         RETURNING true",
    )
    .bind(task)
    .bind(code)
    .bind(holder)
    .bind(period.as_secs_f64())
    .fetch_optional(control)
    .await?;
    Ok(taken.is_some())
}
