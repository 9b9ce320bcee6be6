//! "Hospital X has new events": a hint sent on one channel of the platform database after
//! a commit, so every server process's projection daemon catches that hospital up soon.
//! One channel for all tenants (`LISTEN` is per database: a listener per tenant database
//! would pin a connection per tenant). Best effort: the daemon's timer covers a lost hint.

use sqlx::PgPool;

/// The platform-database channel carrying "tenant X has new events" hints.
pub const CHANNEL: &str = "hms_events";

/// Tells every server process that `code` has new events. Best effort, after the commit:
/// the timer covers a lost hint.
pub async fn notify(control: &PgPool, code: &str) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(code)
        .execute(control)
        .await
    {
        tracing::debug!(error = %e, code, "could not send the projection hint");
    }
}
