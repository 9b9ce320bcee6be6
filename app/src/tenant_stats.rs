//! Each hospital's subscription and activity counts, copied from its read models into
//! the platform database (`tenant_stats`, `tenant_revenue`), so the super
//! administrator's figures never open every tenant database. Refreshed after platform
//! changes and, throttled, by the projection daemon.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use hms_domain::hospital::Hospital;
use hms_projections::log;
use sqlx::PgPool;

use crate::tenancy::pools::TenantDb;

#[derive(sqlx::FromRow)]
struct TenantFigures {
    plan: String,
    subscription_status: String,
    billing_cycle: Option<String>,
    trial_ends_at: Option<DateTime<Utc>>,
    period_ends_at: Option<DateTime<Utc>>,
    status_reason: Option<String>,
    users: i64,
    active_users: i64,
    patients: i64,
    appointments: i64,
    invoices: i64,
}

/// Copies one hospital's subscription and activity counts from its read models (behind
/// `tenant`) into the platform database (`control`), and keeps the directory's plan in
/// step with the subscription. Returns `false` when the hospital is not registered yet
/// (nothing to copy) or a newer reading got there first.
///
/// The counts are `count(*)` over read-model tables, a scan whose cost grows with the
/// hospital: call it after changes (throttled), not per request.
pub async fn refresh_tenant_stats(
    control: &PgPool,
    tenant: &TenantDb,
) -> std::result::Result<bool, sqlx::Error> {
    // Platform rows are keyed by the directory's code; inside its own database the
    // hospital is known by its log identity (another for one restored under a new code).
    let code = tenant.code.as_str();
    let identity = tenant.log_identity.as_str();
    let tenant = &tenant.pool;
    // Taken before reading: a reading that started earlier never overwrites this one.
    let read_at = Utc::now();
    let mut snapshot = tenant.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let figures: Option<TenantFigures> = sqlx::query_as(
        "SELECT h.plan, h.subscription_status, h.billing_cycle, h.trial_ends_at, h.period_ends_at, \
                h.status_reason, \
                (SELECT count(*) FROM staff) AS users, \
                (SELECT count(*) FROM staff WHERE active) AS active_users, \
                (SELECT count(*) FROM patients WHERE status <> 'MERGED') AS patients, \
                (SELECT count(*) FROM appointments) AS appointments, \
                (SELECT count(*) FROM invoices) AS invoices \
           FROM hospital_profile h WHERE h.code = $1",
    )
    .bind(identity)
    .fetch_optional(&mut *snapshot)
    .await?;
    let Some(figures) = figures else {
        return Ok(false);
    };
    // The hospital's version and last activity come from its log, in the same snapshot.
    let hospital_version = log::stream_version(&mut snapshot, Hospital::TYPE, identity)
        .await
        .map_err(log_error)?;
    let last_activity_at = log::last_recorded_at(&mut snapshot)
        .await
        .map_err(log_error)?;
    let revenue: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, coalesce(sum(paid_minor), 0)::bigint, \
                coalesce(sum(refunded_minor), 0)::bigint \
           FROM invoices GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut *snapshot)
    .await?;
    snapshot.commit().await?;

    let mut tx = control.begin().await?;
    let written = sqlx::query(
        "INSERT INTO tenant_stats (code, subscription_status, plan, billing_cycle, trial_ends_at, \
                period_ends_at, status_reason, hospital_version, last_activity_at, users, \
                active_users, patients, appointments, invoices, refreshed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (code) DO UPDATE SET \
                subscription_status = EXCLUDED.subscription_status, plan = EXCLUDED.plan, \
                billing_cycle = EXCLUDED.billing_cycle, trial_ends_at = EXCLUDED.trial_ends_at, \
                period_ends_at = EXCLUDED.period_ends_at, status_reason = EXCLUDED.status_reason, \
                hospital_version = EXCLUDED.hospital_version, \
                last_activity_at = EXCLUDED.last_activity_at, users = EXCLUDED.users, \
                active_users = EXCLUDED.active_users, patients = EXCLUDED.patients, \
                appointments = EXCLUDED.appointments, invoices = EXCLUDED.invoices, \
                refreshed_at = EXCLUDED.refreshed_at \
          WHERE tenant_stats.refreshed_at <= EXCLUDED.refreshed_at",
    )
    .bind(code)
    .bind(&figures.subscription_status)
    .bind(&figures.plan)
    .bind(&figures.billing_cycle)
    .bind(figures.trial_ends_at)
    .bind(figures.period_ends_at)
    .bind(&figures.status_reason)
    .bind(hospital_version)
    .bind(last_activity_at)
    .bind(figures.users)
    .bind(figures.active_users)
    .bind(figures.patients)
    .bind(figures.appointments)
    .bind(figures.invoices)
    .bind(read_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !written {
        return Ok(false);
    }
    sqlx::query("DELETE FROM tenant_revenue WHERE code = $1")
        .bind(code)
        .execute(&mut *tx)
        .await?;
    let (currencies, amounts): (Vec<String>, Vec<(i64, i64)>) =
        revenue.into_iter().map(|(c, p, r)| (c, (p, r))).unzip();
    let (paid, refunded): (Vec<i64>, Vec<i64>) = amounts.into_iter().unzip();
    sqlx::query(
        "INSERT INTO tenant_revenue (code, currency, paid_minor, refunded_minor) \
         SELECT $1, c, p, r FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS u (c, p, r)",
    )
    .bind(code)
    .bind(&currencies)
    .bind(&paid)
    .bind(&refunded)
    .execute(&mut *tx)
    .await?;
    // The directory's plan follows the subscription (a hospital admin may change it).
    sqlx::query("UPDATE tenants SET plan = $2, updated_at = now() WHERE code = $1 AND plan <> $2")
        .bind(code)
        .bind(&figures.plan)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// A failure of the log reader as the database error it is (its reads only fail so).
fn log_error(e: hms_projections::ProjectionError) -> sqlx::Error {
    match e {
        hms_projections::ProjectionError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Whether hospital `code`'s figures are missing or older than `max_age`: periodic
/// callers (the projection daemon, after a catch-up) refresh only stale figures, so a
/// busy hospital is counted at most once per `max_age`.
pub async fn is_stale(
    control: &PgPool,
    code: &str,
    max_age: chrono::Duration,
) -> std::result::Result<bool, sqlx::Error> {
    let fresh: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_stats WHERE code = $1 AND refreshed_at > $2)",
    )
    .bind(code)
    .bind(Utc::now() - max_age)
    .fetch_one(control)
    .await?;
    Ok(!fresh)
}
