//! The platform super administrator's operations: the directory of hospitals, their
//! subscriptions and platform-wide figures. Only a super administrator (a token without
//! a hospital) gets past [`platform_scope`]; nothing here reads patient records, only
//! counts kept in the platform database.
//!
//! Two switches, deliberately separate:
//!
//! - The **subscription** lives in the hospital's own event log (the `Hospital`
//!   aggregate): `changeSubscription`, `suspendHospital`, `reactivateHospital`,
//!   `cancelHospital`. A suspended or cancelled hospital still signs in and reads its
//!   records, but every write is refused with SUBSCRIPTION_INACTIVE (decided in
//!   [`super::session::HospitalScope::authorize`]).
//! - The **directory status** lives in the platform database: `closeHospital` and
//!   `reopenHospital`. A closed hospital is unreachable: nobody signs in and tokens
//!   already issued stop working. It is the operator's emergency brake (legal hold,
//!   abuse, a hospital that left after exporting its data), not a billing state.
//!
//! Figures (`statistics`, `platformStats`) come from the `tenant_stats` rows of the
//! platform database, refreshed per hospital by [`refresh_tenant_stats`], so a request
//! never opens every tenant database.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use chrono::{DateTime, Months, Utc};
use cqrs_es::Aggregate;
use hms_domain::common::{BoundedText, HospitalCode, ValidationError};
use hms_domain::hospital::{self, Hospital, HospitalCommand};
use hms_domain::permissions::{ensure_allowed, Operation};
use hms_domain::{Actor, EventMetadata};
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use super::error::ApiError;
use super::pagination::{Keyset, Page, PageRequest};
// The hospital aggregate's refusals map as in hospital administration
// (`DomainErrorCode for HospitalError`).
use super::session::{command_error, MutationOptions};
use super::{principal, request, state};
use crate::auth::{password, Principal};
use crate::commands;
use crate::state::AppState;
use crate::tenancy::directory::ProvisioningStep;
use crate::tenancy::provisioning::{NewHospital, ProvisionOutcome, Provisioner};
use crate::tenancy::{TenancyError, TenantLease};

/// Longest reason accepted for a suspension, cancellation or closure.
pub const MAX_REASON_CHARS: usize = 500;

// ---------------------------------------------------------------------------------------
// Scope

/// The authenticated super administrator.
pub struct PlatformScope<'a> {
    pub principal: &'a Principal,
    pub state: &'a AppState,
    request_id: &'a str,
    client_addr: Option<&'a str>,
}

/// The caller as a platform super administrator, or UNAUTHENTICATED / FORBIDDEN
/// (hospital staff, whatever their role).
pub fn platform_scope<'a>(ctx: &Context<'a>) -> Result<PlatformScope<'a>, ApiError> {
    let principal = principal(ctx)?;
    if principal.role != hms_domain::Role::SuperAdmin || principal.tenant.is_some() {
        return Err(ApiError::Forbidden);
    }
    let request = request(ctx);
    Ok(PlatformScope {
        principal,
        state: state(ctx),
        request_id: &request.request_id,
        client_addr: request.client_addr.as_deref(),
    })
}

impl PlatformScope<'_> {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.principal.user_id,
            username: self.principal.username.clone(),
            role: self.principal.role,
        }
    }

    /// The permission matrix, for the platform's own operations.
    fn allow(&self, operation: Operation) -> Result<(), ApiError> {
        ensure_allowed(&self.actor(), operation).map_err(|_| ApiError::Forbidden)
    }

    fn metadata(&self, code: &str, at: DateTime<Utc>) -> EventMetadata {
        EventMetadata {
            actor: self.actor(),
            tenant: code.to_owned(),
            request_id: self.request_id.to_owned(),
            client_addr: self.client_addr.map(str::to_owned),
            at,
        }
    }

    /// A lease on an open hospital's database: unknown and unfinished hospitals are
    /// NOT_FOUND; a closed one is a CONFLICT (reopen it first).
    async fn open_hospital(&self, code: &HospitalCode) -> Result<TenantLease, ApiError> {
        let record = self
            .state
            .directory
            .get(code.as_str())
            .await
            .map_err(ApiError::internal)?
            .filter(|r| r.provisioning_step == ProvisioningStep::Ready)
            .ok_or(ApiError::NotFound)?;
        if !record.is_open() {
            return Err(ApiError::Conflict(format!(
                "hospital {code} is closed; reopen it first"
            )));
        }
        self.state
            .registry
            .get(code.as_str())
            .await
            .map_err(tenancy_error)
    }

    /// Brings the hospital's figures in the platform database up to date. A failure is
    /// logged, not returned: the change it follows is already done.
    async fn refresh(&self, code: &str, lease: &TenantLease) {
        if let Err(e) = refresh_tenant_stats(&self.state.control, code, &lease.pool).await {
            tracing::warn!(code, error = %e, "refreshing the hospital's statistics failed");
        }
    }

    /// Refreshes one hospital's figures if it is open; a busy or closed hospital keeps
    /// the figures it has.
    async fn refresh_if_open(&self, code: &HospitalCode) -> Result<(), ApiError> {
        let open = self
            .state
            .directory
            .get(code.as_str())
            .await
            .map_err(ApiError::internal)?
            .is_some_and(|r| r.is_open());
        if open {
            if let Ok(lease) = self.state.registry.get(code.as_str()).await {
                self.refresh(code.as_str(), &lease).await;
            }
        }
        Ok(())
    }

    /// Runs one subscription command on the hospital aggregate and returns the hospital
    /// as the platform now sees it.
    async fn subscription_command(
        &self,
        raw_code: &str,
        expected_version: Option<i64>,
        command: impl FnOnce(Actor, DateTime<Utc>) -> HospitalCommand,
    ) -> Result<PlatformHospital, ApiError> {
        let code = parse_code(raw_code)?;
        let options = MutationOptions::new(expected_version, None)?;
        let now = Utc::now();
        let command = command(self.actor(), now);
        self.allow(command.operation())?;
        let lease = self.open_hospital(&code).await?;
        commands::execute_expecting::<Hospital>(
            &lease.pool,
            &self.state.runner,
            code.as_str(),
            command,
            (),
            &self.metadata(code.as_str(), now),
            options.expected_version,
        )
        .await
        .map_err(command_error)?;
        self.refresh(code.as_str(), &lease).await;
        drop(lease);
        load_hospital(&self.state.control, code.as_str())
            .await?
            .ok_or(ApiError::NotFound)
    }
}

fn tenancy_error(e: TenancyError) -> ApiError {
    match e {
        TenancyError::NotFound(_) => ApiError::NotFound,
        TenancyError::Busy => ApiError::RateLimited,
        other => ApiError::internal(other),
    }
}

fn parse_code(raw: &str) -> Result<HospitalCode, ApiError> {
    Ok(HospitalCode::parse(raw.trim())?)
}

fn parse_reason(raw: &str) -> Result<BoundedText, ApiError> {
    Ok(BoundedText::parse("reason", raw, MAX_REASON_CHARS)?)
}

/// The end of a new billing period: `explicit`, or one cycle from `now`.
fn period_end(
    cycle: BillingCycle,
    explicit: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    if let Some(at) = explicit {
        return Ok(at);
    }
    let months = match cycle {
        BillingCycle::Monthly => 1,
        BillingCycle::Yearly => 12,
    };
    now.checked_add_months(Months::new(months))
        .ok_or_else(|| ApiError::validation("periodEndsAt", "is out of range"))
}

// ---------------------------------------------------------------------------------------
// Types

/// A subscription plan.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::plan::Plan")]
pub enum Plan {
    /// Free for 30 days, everything at a small scale.
    Trial,
    Basic,
    Professional,
    Enterprise,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::hospital::BillingCycle")]
pub enum BillingCycle {
    Monthly,
    Yearly,
}

/// The state of a hospital's subscription (its own event log). Only TRIAL (until it
/// expires), ACTIVE and PAST_DUE may write; every state may read.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::hospital::SubscriptionStatus")]
pub enum SubscriptionStatus {
    Trial,
    Active,
    /// A renewal failed: still writes, during the grace period.
    PastDue,
    /// Read-only until the platform reactivates it.
    Suspended,
    /// Read-only for good; the history is kept.
    Cancelled,
}

/// Whether a hospital is reachable at all (the platform directory), independent of its
/// subscription.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::tenancy::TenantStatus")]
pub enum TenantStatus {
    /// Being created; not reachable yet.
    Provisioning,
    /// Open: staff sign in (what they may do then depends on the subscription).
    Active,
    /// Closed by the platform operator: nobody signs in.
    Suspended,
    /// Closed for good.
    Cancelled,
}

/// A hospital as the platform operator sees it: no patient data, only the directory,
/// the subscription and counts.
#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformHospital {
    pub code: String,
    pub name: String,
    /// Reachability (directory); see `subscription` for read-only states.
    pub status: TenantStatus,
    /// Why the operator closed the hospital, while it is closed.
    pub closed_reason: Option<String>,
    /// Who closed it, while it is closed.
    pub closed_by: Option<String>,
    pub plan: Plan,
    /// The PostgreSQL server holding the hospital's database ("default": the
    /// platform's own).
    pub database_server: String,
    pub database_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The subscription as of `statistics.refreshedAt`; null until first refreshed.
    pub subscription: Option<PlatformSubscription>,
    /// Activity counts; null until first refreshed.
    pub statistics: Option<HospitalStatistics>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformSubscription {
    pub status: SubscriptionStatus,
    pub plan: Plan,
    pub cycle: Option<BillingCycle>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_ends_at: Option<DateTime<Utc>>,
    /// The reason given for a suspension or cancellation.
    pub reason: Option<String>,
    /// Whether the hospital may write now (an expired trial may not).
    pub can_write: bool,
    /// The hospital record's version: pass it as `expectedVersion` to a subscription
    /// change to be sure nobody changed the hospital since.
    pub version: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct HospitalStatistics {
    /// Staff accounts, active or not.
    pub users: i64,
    pub active_users: i64,
    /// Patients, not counting records merged into another.
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    /// Money collected, per currency.
    pub revenue: Vec<CurrencyRevenue>,
    /// When the hospital's log last grew.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// When these figures were read from the hospital's database.
    pub refreshed_at: DateTime<Utc>,
}

/// Money in one currency, in minor units (cents).
#[derive(SimpleObject, Clone, Debug)]
pub struct CurrencyRevenue {
    pub currency: String,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    /// Paid minus refunded.
    pub net_minor: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TenantStatusCount {
    pub status: TenantStatus,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PlanCount {
    pub plan: Plan,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SubscriptionStatusCount {
    pub status: SubscriptionStatus,
    pub count: i64,
}

/// Figures across all hospitals, from the platform database only.
#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformStats {
    /// Every hospital in the directory, in any state.
    pub hospitals: i64,
    pub by_status: Vec<TenantStatusCount>,
    pub by_plan: Vec<PlanCount>,
    /// Over hospitals with figures.
    pub by_subscription_status: Vec<SubscriptionStatusCount>,
    pub users: i64,
    pub active_users: i64,
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    /// Per currency, summed over hospitals.
    pub revenue: Vec<CurrencyRevenue>,
    /// Hospitals whose figures were never read yet (not in the totals).
    pub hospitals_without_statistics: i64,
    /// The oldest figures in the totals.
    pub oldest_statistics_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------
// Reading the platform database

#[derive(sqlx::FromRow)]
struct HospitalRow {
    code: String,
    name: String,
    status: String,
    status_reason: Option<String>,
    status_changed_by: Option<String>,
    plan: String,
    db_server: String,
    database_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    subscription_status: Option<String>,
    subscription_plan: Option<String>,
    billing_cycle: Option<String>,
    trial_ends_at: Option<DateTime<Utc>>,
    period_ends_at: Option<DateTime<Utc>>,
    subscription_reason: Option<String>,
    hospital_version: Option<i64>,
    last_activity_at: Option<DateTime<Utc>>,
    users: Option<i64>,
    active_users: Option<i64>,
    patients: Option<i64>,
    appointments: Option<i64>,
    invoices: Option<i64>,
    refreshed_at: Option<DateTime<Utc>>,
}

const HOSPITAL_SELECT: &str = "\
    SELECT t.code, t.name, t.status, t.status_reason, t.status_changed_by, t.plan, t.db_server, \
           t.database_name, t.created_at, t.updated_at, \
           s.subscription_status, s.plan AS subscription_plan, s.billing_cycle, s.trial_ends_at, \
           s.period_ends_at, s.status_reason AS subscription_reason, s.hospital_version, \
           s.last_activity_at, s.users, s.active_users, s.patients, s.appointments, s.invoices, \
           s.refreshed_at \
      FROM tenants t LEFT JOIN tenant_stats s ON s.code = t.code";

#[derive(sqlx::FromRow)]
struct RevenueRow {
    code: String,
    currency: String,
    paid_minor: i64,
    refunded_minor: i64,
}

/// Parses a stored enum name (`PAST_DUE`) with the type's serde names.
fn stored<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| ApiError::internal(format!("unexpected stored value {raw:?}: {e}")))
}

fn revenue(paid_minor: i64, refunded_minor: i64, currency: String) -> CurrencyRevenue {
    CurrencyRevenue {
        currency,
        paid_minor,
        refunded_minor,
        net_minor: paid_minor.saturating_sub(refunded_minor),
    }
}

fn to_hospital(
    row: HospitalRow,
    revenue_rows: &[RevenueRow],
) -> Result<PlatformHospital, ApiError> {
    let now = Utc::now();
    let subscription = match (&row.subscription_status, &row.subscription_plan) {
        (Some(status), Some(plan)) => {
            let status: hospital::SubscriptionStatus = stored(status)?;
            let plan: hms_domain::plan::Plan = stored(plan)?;
            let cycle: Option<hospital::BillingCycle> =
                row.billing_cycle.as_deref().map(stored).transpose()?;
            // The domain's rule, on the copied state.
            let probe = Hospital {
                status: Some(status),
                trial_ends_at: row.trial_ends_at,
                ..Hospital::default()
            };
            Some(PlatformSubscription {
                status: status.into(),
                plan: plan.into(),
                cycle: cycle.map(Into::into),
                trial_ends_at: row.trial_ends_at,
                period_ends_at: row.period_ends_at,
                reason: row.subscription_reason.clone(),
                can_write: probe.write_access(now).is_ok(),
                version: row.hospital_version.unwrap_or(0),
            })
        }
        _ => None,
    };
    let statistics = row.refreshed_at.map(|refreshed_at| HospitalStatistics {
        users: row.users.unwrap_or(0),
        active_users: row.active_users.unwrap_or(0),
        patients: row.patients.unwrap_or(0),
        appointments: row.appointments.unwrap_or(0),
        invoices: row.invoices.unwrap_or(0),
        revenue: revenue_rows
            .iter()
            .filter(|r| r.code == row.code)
            .map(|r| revenue(r.paid_minor, r.refunded_minor, r.currency.clone()))
            .collect(),
        last_activity_at: row.last_activity_at,
        refreshed_at,
    });
    let status: crate::tenancy::TenantStatus = stored(&row.status)?;
    let plan: hms_domain::plan::Plan = stored(&row.plan)?;
    let closed = status != crate::tenancy::TenantStatus::Active;
    Ok(PlatformHospital {
        status: status.into(),
        closed_reason: row.status_reason.filter(|_| closed),
        closed_by: row.status_changed_by.filter(|_| closed),
        plan: plan.into(),
        database_server: row.db_server,
        database_name: row.database_name,
        created_at: row.created_at,
        updated_at: row.updated_at,
        subscription,
        statistics,
        code: row.code,
        name: row.name,
    })
}

async fn revenue_of(control: &PgPool, codes: &[String]) -> Result<Vec<RevenueRow>, ApiError> {
    sqlx::query_as(
        "SELECT code, currency, paid_minor, refunded_minor FROM tenant_revenue \
          WHERE code = ANY($1) ORDER BY code, currency",
    )
    .bind(codes)
    .fetch_all(control)
    .await
    .map_err(ApiError::internal)
}

async fn load_hospital(control: &PgPool, code: &str) -> Result<Option<PlatformHospital>, ApiError> {
    let row: Option<HospitalRow> = sqlx::query_as(&format!("{HOSPITAL_SELECT} WHERE t.code = $1"))
        .bind(code)
        .fetch_optional(control)
        .await
        .map_err(ApiError::internal)?;
    let Some(row) = row else { return Ok(None) };
    let revenue = revenue_of(control, std::slice::from_ref(&row.code)).await?;
    to_hospital(row, &revenue).map(Some)
}

// ---------------------------------------------------------------------------------------
// Statistics

#[derive(sqlx::FromRow)]
struct TenantFigures {
    plan: String,
    subscription_status: String,
    billing_cycle: Option<String>,
    trial_ends_at: Option<DateTime<Utc>>,
    period_ends_at: Option<DateTime<Utc>>,
    status_reason: Option<String>,
    hospital_version: i64,
    last_activity_at: Option<DateTime<Utc>>,
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
    code: &str,
    tenant: &PgPool,
) -> Result<bool, sqlx::Error> {
    // Taken before reading: a reading that started earlier never overwrites this one.
    let read_at = Utc::now();
    let mut snapshot = tenant.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let figures: Option<TenantFigures> = sqlx::query_as(
        "SELECT h.plan, h.subscription_status, h.billing_cycle, h.trial_ends_at, h.period_ends_at, \
                h.status_reason, \
                (SELECT coalesce(max(sequence), 0) FROM events \
                  WHERE aggregate_type = $2 AND aggregate_id = h.code) AS hospital_version, \
                (SELECT recorded_at FROM events \
                  ORDER BY transaction_id DESC, position DESC LIMIT 1) AS last_activity_at, \
                (SELECT count(*) FROM staff) AS users, \
                (SELECT count(*) FROM staff WHERE active) AS active_users, \
                (SELECT count(*) FROM patients WHERE status <> 'MERGED') AS patients, \
                (SELECT count(*) FROM appointments) AS appointments, \
                (SELECT count(*) FROM invoices) AS invoices \
           FROM hospital_profile h WHERE h.code = $1",
    )
    .bind(code)
    .bind(Hospital::TYPE)
    .fetch_optional(&mut *snapshot)
    .await?;
    let Some(figures) = figures else {
        return Ok(false);
    };
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
    .bind(figures.hospital_version)
    .bind(figures.last_activity_at)
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

/// [`refresh_tenant_stats`], unless the hospital's figures are younger than `max_age`:
/// for periodic callers (e.g. after a projection catch-up), so that a busy hospital is
/// counted at most once per `max_age`. Returns whether figures were written.
pub async fn refresh_tenant_stats_if_stale(
    control: &PgPool,
    code: &str,
    tenant: &PgPool,
    max_age: chrono::Duration,
) -> Result<bool, sqlx::Error> {
    let fresh: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_stats WHERE code = $1 AND refreshed_at > $2)",
    )
    .bind(code)
    .bind(Utc::now() - max_age)
    .fetch_one(control)
    .await?;
    if fresh {
        return Ok(false);
    }
    refresh_tenant_stats(control, code, tenant).await
}

async fn platform_stats(control: &PgPool) -> Result<PlatformStats, ApiError> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status")
            .fetch_all(control)
            .await
            .map_err(ApiError::internal)?;
    let by_plan: Vec<(String, i64)> =
        sqlx::query_as("SELECT plan, count(*) FROM tenants GROUP BY plan")
            .fetch_all(control)
            .await
            .map_err(ApiError::internal)?;
    let by_subscription: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subscription_status, count(*) FROM tenant_stats GROUP BY subscription_status",
    )
    .fetch_all(control)
    .await
    .map_err(ApiError::internal)?;
    #[allow(clippy::type_complexity)]
    let totals: (i64, i64, i64, i64, i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(users), 0)::bigint, coalesce(sum(active_users), 0)::bigint, \
                coalesce(sum(patients), 0)::bigint, coalesce(sum(appointments), 0)::bigint, \
                coalesce(sum(invoices), 0)::bigint, min(refreshed_at) \
           FROM tenant_stats",
    )
    .fetch_one(control)
    .await
    .map_err(ApiError::internal)?;
    let revenue_rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, sum(paid_minor)::bigint, sum(refunded_minor)::bigint \
           FROM tenant_revenue GROUP BY currency ORDER BY currency",
    )
    .fetch_all(control)
    .await
    .map_err(ApiError::internal)?;

    let count_of = |rows: &[(String, i64)], name: &str| {
        rows.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    };
    let hospitals: i64 = by_status.iter().map(|(_, c)| c).sum();
    use crate::tenancy::TenantStatus as T;
    let by_status = [T::Provisioning, T::Active, T::Suspended, T::Cancelled]
        .into_iter()
        .map(|s| TenantStatusCount {
            status: s.into(),
            count: count_of(&by_status, s.as_str()),
        })
        .collect();
    let by_plan = hms_domain::plan::Plan::ALL
        .into_iter()
        .map(|p| PlanCount {
            plan: p.into(),
            count: count_of(&by_plan, p.as_str()),
        })
        .collect();
    use hospital::SubscriptionStatus as S;
    let mut by_subscription_status = Vec::new();
    for s in [S::Trial, S::Active, S::PastDue, S::Suspended, S::Cancelled] {
        let name = serde_json::to_value(s)
            .map_err(ApiError::internal)?
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        by_subscription_status.push(SubscriptionStatusCount {
            status: s.into(),
            count: count_of(&by_subscription, &name),
        });
    }
    let (with_figures, users, active_users, patients, appointments, invoices, oldest) = totals;
    Ok(PlatformStats {
        hospitals,
        by_status,
        by_plan,
        by_subscription_status,
        users,
        active_users,
        patients,
        appointments,
        invoices,
        revenue: revenue_rows
            .into_iter()
            .map(|(c, p, r)| revenue(p, r, c))
            .collect(),
        hospitals_without_statistics: (hospitals - with_figures).max(0),
        oldest_statistics_at: oldest,
    })
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Default)]
pub struct PlatformQuery;

#[Object]
impl PlatformQuery {
    /// Every hospital on the platform, by code (super administrator only).
    async fn hospitals(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Only hospitals with this directory status.")] status: Option<
            TenantStatus,
        >,
    ) -> async_graphql::Result<Page<PlatformHospital>> {
        let scope = platform_scope(ctx)?;
        let page = PageRequest::new(first, after)?;
        let (after_code, _) = page.after_or("");
        let status = status.map(|s| crate::tenancy::TenantStatus::from(s).as_str());
        let rows: Vec<HospitalRow> = sqlx::query_as(&format!(
            "{HOSPITAL_SELECT} WHERE t.code > $1 AND ($2::text IS NULL OR t.status = $2) \
             ORDER BY t.code LIMIT $3"
        ))
        .bind(&after_code)
        .bind(status)
        .bind(page.fetch_limit())
        .fetch_all(&scope.state.control)
        .await
        .map_err(ApiError::internal)?;
        let codes: Vec<String> = rows.iter().map(|r| r.code.clone()).collect();
        let revenue = revenue_of(&scope.state.control, &codes).await?;
        let hospitals = rows
            .into_iter()
            .map(|r| to_hospital(r, &revenue))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.connection(hospitals, |h| Keyset {
            key: h.code.clone(),
            id: h.code.clone(),
        }))
    }

    /// One hospital by code (super administrator only). Its subscription and figures
    /// are first refreshed from its own database when it is open, so `version` is
    /// current; lists show the figures as last refreshed.
    async fn platform_hospital(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let code = HospitalCode::parse(code.trim()).map_err(|_| ApiError::NotFound)?;
        scope.refresh_if_open(&code).await?;
        Ok(load_hospital(&scope.state.control, code.as_str())
            .await?
            .ok_or(ApiError::NotFound)?)
    }

    /// Hospitals by status and plan, and activity totals across them, as of each
    /// hospital's last statistics refresh (super administrator only).
    async fn platform_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<PlatformStats> {
        let scope = platform_scope(ctx)?;
        Ok(platform_stats(&scope.state.control).await?)
    }
}

// ---------------------------------------------------------------------------------------
// Mutations

#[derive(InputObject)]
pub struct CreateHospitalInput {
    /// 3 to 16 characters: an upper-case letter, then upper-case letters or digits. It
    /// names the hospital's database and never changes.
    pub code: String,
    pub name: String,
    /// TRIAL when left out.
    pub plan: Option<Plan>,
    pub admin_username: String,
    pub admin_email: String,
    pub admin_name: String,
    /// The first administrator's password (10 to 256 characters); only its hash is kept.
    pub admin_password: String,
}

#[derive(InputObject)]
pub struct ChangeSubscriptionInput {
    pub code: String,
    /// A paid plan.
    pub plan: Plan,
    pub cycle: BillingCycle,
    /// End of the paid period; one cycle from now when left out.
    pub period_ends_at: Option<DateTime<Utc>>,
    /// The hospital's `subscription.version` last seen; a stale one is a CONFLICT.
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct SuspendHospitalInput {
    pub code: String,
    pub reason: String,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct ReactivateHospitalInput {
    pub code: String,
    /// A paid plan.
    pub plan: Plan,
    pub cycle: BillingCycle,
    /// End of the paid period; one cycle from now when left out.
    pub period_ends_at: Option<DateTime<Utc>>,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct CancelHospitalInput {
    pub code: String,
    pub reason: String,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct CloseHospitalInput {
    pub code: String,
    pub reason: String,
}

#[derive(InputObject)]
pub struct ReopenHospitalInput {
    pub code: String,
}

/// Where a validation error of `NewHospital::parse` points in `CreateHospitalInput`.
fn create_input_field(domain_field: &str) -> &'static str {
    match domain_field {
        "code" => "code",
        "name" => "name",
        "plan" => "plan",
        "username" => "adminUsername",
        "email" => "adminEmail",
        "admin_name" => "adminName",
        _ => "input",
    }
}

fn create_validation(e: ValidationError) -> ApiError {
    ApiError::validation(create_input_field(e.field), e.message)
}

#[derive(Default)]
pub struct PlatformMutation;

#[Object]
impl PlatformMutation {
    /// Onboards a hospital exactly as `hms setup-hospital` does: its own database,
    /// its registration and its first administrator. A code in use is a CONFLICT.
    /// Retrying after an interruption completes the first request.
    async fn create_hospital(
        &self,
        ctx: &Context<'_>,
        input: CreateHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        scope.allow(Operation::RegisterHospital)?;
        let plan = hms_domain::plan::Plan::from(input.plan.unwrap_or(Plan::Trial));
        let parse = |hash: String| {
            NewHospital::parse(
                input.code.trim(),
                &input.name,
                plan.as_str(),
                &input.admin_username,
                &input.admin_email,
                &input.admin_name,
                hash,
            )
            .map_err(|e| match e {
                TenancyError::Invalid(v) => create_validation(v),
                other => ApiError::internal(other),
            })
        };
        // Everything is validated, and the code checked, before the slow hash.
        let checked = parse(String::new())?;
        password::check_policy(&input.admin_password)
            .map_err(|e| ApiError::validation("adminPassword", e.to_string()))?;
        let code = checked.code.to_string();
        let existing = scope
            .state
            .directory
            .get(&code)
            .await
            .map_err(ApiError::internal)?;
        if existing.is_some_and(|r| r.provisioning_step == ProvisioningStep::Ready) {
            return Err(already_exists(&code).into());
        }
        let hash = password::hash(input.admin_password.clone())
            .await
            .map_err(ApiError::internal)?;
        let request = parse(hash)?;
        let provisioner = scope.state.provisioner();
        match provision(provisioner, request).await {
            Ok(ProvisionOutcome::Ready { resumed, .. }) => {
                tracing::info!(
                    code = %code,
                    actor = %scope.principal.username,
                    resumed,
                    "hospital created"
                );
            }
            Ok(ProvisionOutcome::StoppedAfter(step)) => {
                return Err(ApiError::internal(format!(
                    "provisioning of {code} stopped after {}",
                    step.as_str()
                ))
                .into())
            }
            Err(TenancyError::AlreadyExists(_)) => return Err(already_exists(&code).into()),
            Err(TenancyError::Invalid(v)) => return Err(create_validation(v).into()),
            Err(TenancyError::Busy) => return Err(ApiError::RateLimited.into()),
            Err(other) => return Err(ApiError::internal(other).into()),
        }
        let lease = scope
            .state
            .registry
            .get(&code)
            .await
            .map_err(tenancy_error)?;
        scope.refresh(&code, &lease).await;
        drop(lease);
        Ok(load_hospital(&scope.state.control, &code)
            .await?
            .ok_or(ApiError::NotFound)?)
    }

    /// Moves the hospital to a paid plan (from a trial, an active or a past-due
    /// subscription). Modules the plan lacks are switched off.
    async fn change_subscription(
        &self,
        ctx: &Context<'_>,
        input: ChangeSubscriptionInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let now = Utc::now();
        let period_ends_at = period_end(input.cycle, input.period_ends_at, now)?;
        Ok(scope
            .subscription_command(&input.code, input.expected_version, |actor, now| {
                HospitalCommand::ChangePlan {
                    actor,
                    plan: input.plan.into(),
                    cycle: input.cycle.into(),
                    period_ends_at,
                    now,
                }
            })
            .await?)
    }

    /// Suspends the subscription: the hospital's staff still sign in and read, but
    /// every write is refused (SUBSCRIPTION_INACTIVE) until `reactivateHospital`. To
    /// shut a hospital out entirely, use `closeHospital`.
    async fn suspend_hospital(
        &self,
        ctx: &Context<'_>,
        input: SuspendHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let reason = parse_reason(&input.reason)?;
        Ok(scope
            .subscription_command(&input.code, input.expected_version, |actor, now| {
                HospitalCommand::SuspendSubscription { actor, reason, now }
            })
            .await?)
    }

    /// Lifts a suspension onto a paid plan: writes work again.
    async fn reactivate_hospital(
        &self,
        ctx: &Context<'_>,
        input: ReactivateHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let now = Utc::now();
        let period_ends_at = period_end(input.cycle, input.period_ends_at, now)?;
        Ok(scope
            .subscription_command(&input.code, input.expected_version, |actor, now| {
                HospitalCommand::ReactivateSubscription {
                    actor,
                    plan: input.plan.into(),
                    cycle: input.cycle.into(),
                    period_ends_at,
                    now,
                }
            })
            .await?)
    }

    /// Cancels the subscription for good: the hospital keeps its history and can still
    /// sign in and read it (e.g. to export), but never writes again.
    async fn cancel_hospital(
        &self,
        ctx: &Context<'_>,
        input: CancelHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let reason = parse_reason(&input.reason)?;
        Ok(scope
            .subscription_command(&input.code, input.expected_version, |actor, now| {
                HospitalCommand::CancelSubscription { actor, reason, now }
            })
            .await?)
    }

    /// Closes the hospital (directory status SUSPENDED): nobody can sign in and tokens
    /// already issued stop working, whatever the subscription. The operator's emergency
    /// brake; for unpaid bills use `suspendHospital`, which keeps reads open.
    async fn close_hospital(
        &self,
        ctx: &Context<'_>,
        input: CloseHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        scope.allow(Operation::AdministerSubscription)?;
        let code = parse_code(&input.code)?;
        let reason = parse_reason(&input.reason)?;
        let changed = sqlx::query(
            "UPDATE tenants SET status = 'SUSPENDED', status_reason = $2, status_changed_by = $3, \
                    updated_at = now() \
              WHERE code = $1 AND status = 'ACTIVE' AND provisioning_step = 'READY'",
        )
        .bind(code.as_str())
        .bind(reason.as_str())
        .bind(&scope.principal.username)
        .execute(&scope.state.control)
        .await
        .map_err(ApiError::internal)?
        .rows_affected()
            == 1;
        let hospital = load_hospital(&scope.state.control, code.as_str())
            .await?
            .ok_or(ApiError::NotFound)?;
        if !changed {
            return Err(match hospital.status {
                TenantStatus::Provisioning => ApiError::NotFound,
                _ => ApiError::Conflict(format!("hospital {code} is closed already")),
            }
            .into());
        }
        // This process stops serving it at once.
        scope.state.registry.forget(code.as_str()).await;
        tracing::warn!(code = %code, actor = %scope.principal.username, reason = reason.as_str(), "hospital closed");
        Ok(hospital)
    }

    /// Reopens a closed hospital: its staff can sign in again (what they may do then
    /// depends on the subscription).
    async fn reopen_hospital(
        &self,
        ctx: &Context<'_>,
        input: ReopenHospitalInput,
    ) -> async_graphql::Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        scope.allow(Operation::AdministerSubscription)?;
        let code = parse_code(&input.code)?;
        let changed = sqlx::query(
            "UPDATE tenants SET status = 'ACTIVE', status_reason = NULL, status_changed_by = $2, \
                    updated_at = now() \
              WHERE code = $1 AND status IN ('SUSPENDED', 'CANCELLED') \
                AND provisioning_step = 'READY'",
        )
        .bind(code.as_str())
        .bind(&scope.principal.username)
        .execute(&scope.state.control)
        .await
        .map_err(ApiError::internal)?
        .rows_affected()
            == 1;
        if !changed {
            let hospital = load_hospital(&scope.state.control, code.as_str())
                .await?
                .ok_or(ApiError::NotFound)?;
            return Err(match hospital.status {
                TenantStatus::Provisioning => ApiError::NotFound,
                _ => ApiError::Conflict(format!("hospital {code} is open already")),
            }
            .into());
        }
        tracing::warn!(code = %code, actor = %scope.principal.username, "hospital reopened");
        let lease = scope.open_hospital(&code).await?;
        scope.refresh(code.as_str(), &lease).await;
        drop(lease);
        Ok(load_hospital(&scope.state.control, code.as_str())
            .await?
            .ok_or(ApiError::NotFound)?)
    }
}

/// Runs provisioning to its end in a task of its own, so that a client that disconnects
/// does not interrupt it half-way (an interrupted run would be completed by the next,
/// but need not be).
async fn provision(
    provisioner: Provisioner,
    request: NewHospital,
) -> Result<ProvisionOutcome, TenancyError> {
    tokio::spawn(async move { provisioner.provision(&request).await })
        .await
        .map_err(|e| TenancyError::Command(format!("provisioning task failed: {e}")))?
}

fn already_exists(code: &str) -> ApiError {
    ApiError::Conflict(format!("a hospital with code {code} exists already"))
}
