//! The platform super administrator's use cases: the directory of hospitals, their
//! subscriptions and platform-wide figures. Only a super administrator (a token without
//! a hospital) gets a [`PlatformScope`]; nothing here reads patient records, only
//! counts kept in the platform database.
//!
//! Two switches, deliberately separate:
//!
//! - The **subscription** lives in the hospital's own event log (the `Hospital`
//!   aggregate): change, suspend, reactivate, cancel. A suspended or cancelled hospital
//!   still signs in and reads its records, but every write is refused with
//!   SUBSCRIPTION_INACTIVE (decided in [`crate::scope::HospitalScope::authorize`]).
//! - The **directory status** lives in the platform database: close and reopen. A
//!   closed hospital is unreachable: nobody signs in and tokens already issued stop
//!   working. It is the operator's emergency brake (legal hold, abuse, a hospital that
//!   left after exporting its data), not a billing state.
//!
//! Figures come from the `tenant_stats` rows of the platform database, refreshed per
//! hospital by [`refresh_tenant_stats`], so a request never opens every tenant database.

use chrono::{DateTime, Months, Utc};
use hms_domain::common::{BoundedText, HospitalCode, Username, ValidationError};
use hms_domain::hospital::{BillingCycle, Hospital, HospitalCommand, SubscriptionStatus};
use hms_domain::permissions::{ensure_allowed, Operation};
use hms_domain::plan::Plan;
use hms_domain::user::{user_id_for, User, UserCommand};
use hms_domain::Role;
use hms_domain::{Actor, EventMetadata};
use sqlx::PgPool;

use super::hospital::StaffUser;
use super::stored;
use crate::auth::{password, Principal};
use crate::commands;
use crate::error::{command_error, AppError, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{MutationOptions, RequestInfo};
use crate::state::AppState;
use crate::tenancy::directory::ProvisioningStep;
use crate::tenancy::provisioning::{NewHospital, ProvisionOutcome, Provisioner};
use crate::tenancy::{TenancyError, TenantLease, TenantStatus};
use crate::tenant_stats::refresh_tenant_stats;

/// Longest reason accepted for a suspension, cancellation or closure.
pub const MAX_REASON_CHARS: usize = 500;

// ---------------------------------------------------------------------------------------
// Scope

/// The authenticated super administrator.
pub struct PlatformScope<'a> {
    pub principal: &'a Principal,
    pub state: &'a AppState,
    request: &'a RequestInfo,
}

impl<'a> PlatformScope<'a> {
    /// The caller as a platform super administrator, or FORBIDDEN (hospital staff,
    /// whatever their role).
    pub fn open(
        state: &'a AppState,
        principal: &'a Principal,
        request: &'a RequestInfo,
    ) -> Result<Self> {
        if principal.role != hms_domain::Role::SuperAdmin || principal.tenant.is_some() {
            return Err(AppError::Forbidden);
        }
        Ok(Self {
            principal,
            state,
            request,
        })
    }

    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.principal.user_id,
            username: self.principal.username.clone(),
            role: self.principal.role,
        }
    }

    /// The permission matrix, for the platform's own operations.
    fn allow(&self, operation: Operation) -> Result<()> {
        ensure_allowed(&self.actor(), operation).map_err(|_| AppError::Forbidden)
    }

    fn metadata(&self, code: &str, at: DateTime<Utc>) -> EventMetadata {
        EventMetadata {
            actor: self.actor(),
            tenant: code.to_owned(),
            request_id: self.request.request_id.clone(),
            client_addr: self.request.client_addr.clone(),
            at,
        }
    }

    /// A lease on an open hospital's database: unknown and unfinished hospitals are
    /// NOT_FOUND; a closed one is a CONFLICT (reopen it first).
    async fn open_hospital(&self, code: &HospitalCode) -> Result<TenantLease> {
        let record = self
            .state
            .directory
            .get(code.as_str())
            .await
            .map_err(AppError::internal)?
            .filter(|r| r.provisioning_step == ProvisioningStep::Ready)
            .ok_or(AppError::NotFound)?;
        if !record.is_open() {
            return Err(AppError::Conflict(format!(
                "hospital {code} is closed; reopen it first"
            )));
        }
        Ok(self.state.registry.get(code.as_str()).await?)
    }

    /// Brings the hospital's figures in the platform database up to date. A failure is
    /// logged, not returned: the change it follows is already done.
    async fn refresh(&self, code: &str, lease: &TenantLease) {
        if let Err(e) = refresh_tenant_stats(&self.state.control, lease).await {
            tracing::warn!(code, error = %e, "refreshing the hospital's statistics failed");
        }
    }

    /// Refreshes one hospital's figures if it is open; a busy or closed hospital keeps
    /// the figures it has.
    async fn refresh_if_open(&self, code: &HospitalCode) -> Result<()> {
        let open = self
            .state
            .directory
            .get(code.as_str())
            .await
            .map_err(AppError::internal)?
            .is_some_and(|r| r.is_open());
        if open {
            if let Ok(lease) = self.state.registry.get(code.as_str()).await {
                self.refresh(code.as_str(), &lease).await;
            }
        }
        Ok(())
    }

    /// The operator's way back in for a hospital whose administrators are all locked out
    /// (deactivated, or the password lost): the named HOSPITAL_ADMIN account is
    /// reactivated if it was deactivated and given a new password, so every earlier token
    /// of it stops working. Both acts are recorded in the hospital's log under the
    /// operator. Other roles are refused, and no patient data is read.
    pub async fn restore_hospital_admin(
        &self,
        raw_code: &str,
        raw_username: &str,
        new_password: String,
    ) -> Result<StaffUser> {
        let code = parse_code(raw_code)?;
        let username = Username::parse(raw_username)?;
        self.allow(Operation::ReactivateUser)?;
        self.allow(Operation::ResetUserPassword)?;
        password::check_policy(&new_password)
            .map_err(|e| AppError::validation("newPassword", e.to_string()))?;
        let lease = self.open_hospital(&code).await?;
        let user_id = user_id_for(&username);
        let id = user_id.to_string();
        // The account as its own stream has it now (the write side, not the staff list).
        let (user, _) = commands::load::<User>(&lease.pool, &id)
            .await
            .map_err(crate::error::load_error)?;
        if user.id.is_none() {
            return Err(AppError::NotFound);
        }
        if user.role != Some(Role::HospitalAdmin) {
            return Err(AppError::validation(
                "username",
                "is not a hospital administrator",
            ));
        }
        // Hashed (~19 MiB, tens of ms) only for an account that will get it.
        let password_hash = self
            .state
            .auth
            .hash_password(new_password)
            .await
            .map_err(|e| AppError::validation("newPassword", e.to_string()))?;
        let now = Utc::now();
        let metadata = self.metadata(&lease.log_identity, now);
        if !user.active {
            let command = UserCommand::ReactivateUser { now };
            commands::execute::<User>(&lease.pool, &self.state.runner, &id, command, (), &metadata)
                .await
                .map_err(command_error)?;
        }
        let command = UserCommand::ResetPassword {
            actor: self.actor(),
            password_hash,
            now,
        };
        commands::execute::<User>(&lease.pool, &self.state.runner, &id, command, (), &metadata)
            .await
            .map_err(command_error)?;
        self.state.hints.notify(code.as_str());
        super::hospital::load_user(&lease.pool, user_id).await
    }

    /// Runs one subscription command on the hospital aggregate and returns the hospital
    /// as the platform now sees it.
    async fn subscription_command(
        &self,
        raw_code: &str,
        expected_version: Option<i64>,
        command: impl FnOnce(Actor, DateTime<Utc>) -> HospitalCommand,
    ) -> Result<PlatformHospital> {
        let code = parse_code(raw_code)?;
        let options = MutationOptions::new(expected_version, None)?;
        let now = Utc::now();
        let command = command(self.actor(), now);
        self.allow(command.operation())?;
        let lease = self.open_hospital(&code).await?;
        commands::execute_expecting::<Hospital>(
            &lease.pool,
            &self.state.runner,
            &lease.log_identity,
            command,
            (),
            &self.metadata(&lease.log_identity, now),
            options.expected_version,
        )
        .await
        .map_err(command_error)?;
        self.refresh(code.as_str(), &lease).await;
        drop(lease);
        load_hospital(&self.state.control, code.as_str())
            .await?
            .ok_or(AppError::NotFound)
    }
}

fn parse_code(raw: &str) -> Result<HospitalCode> {
    Ok(HospitalCode::parse(raw.trim())?)
}

fn parse_reason(raw: &str) -> Result<BoundedText> {
    Ok(BoundedText::parse("reason", raw, MAX_REASON_CHARS)?)
}

/// The end of a new billing period: `explicit`, or one cycle from `now`.
fn period_end(
    cycle: BillingCycle,
    explicit: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    if let Some(at) = explicit {
        return Ok(at);
    }
    let months = match cycle {
        BillingCycle::Monthly => 1,
        BillingCycle::Yearly => 12,
    };
    now.checked_add_months(Months::new(months))
        .ok_or_else(|| AppError::validation("periodEndsAt", "is out of range"))
}

// ---------------------------------------------------------------------------------------
// What the platform shows

/// A hospital as the platform operator sees it: no patient data, only the directory,
/// the subscription and counts.
#[derive(Clone, Debug)]
pub struct PlatformHospital {
    pub code: String,
    pub name: String,
    pub status: TenantStatus,
    pub closed_reason: Option<String>,
    pub closed_by: Option<String>,
    pub plan: Plan,
    pub database_server: String,
    pub database_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub subscription: Option<PlatformSubscription>,
    pub statistics: Option<HospitalStatistics>,
}

#[derive(Clone, Debug)]
pub struct PlatformSubscription {
    pub status: SubscriptionStatus,
    pub plan: Plan,
    pub cycle: Option<BillingCycle>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_ends_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub can_write: bool,
    pub version: i64,
}

#[derive(Clone, Debug)]
pub struct HospitalStatistics {
    pub users: i64,
    pub active_users: i64,
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    pub revenue: Vec<CurrencyRevenue>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub refreshed_at: DateTime<Utc>,
}

/// Money in one currency, in minor units (cents).
#[derive(Clone, Debug)]
pub struct CurrencyRevenue {
    pub currency: String,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    pub net_minor: i64,
}

/// Figures across all hospitals, from the platform database only.
#[derive(Clone, Debug)]
pub struct PlatformStats {
    pub hospitals: i64,
    pub by_status: Vec<(TenantStatus, i64)>,
    pub by_plan: Vec<(Plan, i64)>,
    pub by_subscription_status: Vec<(SubscriptionStatus, i64)>,
    pub users: i64,
    pub active_users: i64,
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    pub revenue: Vec<CurrencyRevenue>,
    pub hospitals_without_statistics: i64,
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

fn revenue(paid_minor: i64, refunded_minor: i64, currency: String) -> CurrencyRevenue {
    CurrencyRevenue {
        currency,
        paid_minor,
        refunded_minor,
        net_minor: paid_minor.saturating_sub(refunded_minor),
    }
}

fn to_hospital(row: HospitalRow, revenue_rows: &[RevenueRow]) -> Result<PlatformHospital> {
    let now = Utc::now();
    let subscription = match (&row.subscription_status, &row.subscription_plan) {
        (Some(status), Some(plan)) => {
            let status: SubscriptionStatus = stored(status)?;
            let plan: Plan = stored(plan)?;
            let cycle: Option<BillingCycle> =
                row.billing_cycle.as_deref().map(stored).transpose()?;
            // The domain's rule, on the copied state.
            let probe = Hospital {
                status: Some(status),
                trial_ends_at: row.trial_ends_at,
                ..Hospital::default()
            };
            Some(PlatformSubscription {
                status,
                plan,
                cycle,
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
    let status: TenantStatus = stored(&row.status)?;
    let plan: Plan = stored(&row.plan)?;
    let closed = status != TenantStatus::Active;
    Ok(PlatformHospital {
        status,
        closed_reason: row.status_reason.filter(|_| closed),
        closed_by: row.status_changed_by.filter(|_| closed),
        plan,
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

async fn revenue_of(control: &PgPool, codes: &[String]) -> Result<Vec<RevenueRow>> {
    sqlx::query_as(
        "SELECT code, currency, paid_minor, refunded_minor FROM tenant_revenue \
          WHERE code = ANY($1) ORDER BY code, currency",
    )
    .bind(codes)
    .fetch_all(control)
    .await
    .map_err(AppError::from)
}

pub(crate) async fn load_hospital(
    control: &PgPool,
    code: &str,
) -> Result<Option<PlatformHospital>> {
    let row: Option<HospitalRow> = sqlx::query_as(&format!("{HOSPITAL_SELECT} WHERE t.code = $1"))
        .bind(code)
        .fetch_optional(control)
        .await
        .map_err(AppError::from)?;
    let Some(row) = row else { return Ok(None) };
    let revenue = revenue_of(control, std::slice::from_ref(&row.code)).await?;
    to_hospital(row, &revenue).map(Some)
}

async fn platform_stats(control: &PgPool) -> Result<PlatformStats> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status")
            .fetch_all(control)
            .await
            .map_err(AppError::from)?;
    let by_plan: Vec<(String, i64)> =
        sqlx::query_as("SELECT plan, count(*) FROM tenants GROUP BY plan")
            .fetch_all(control)
            .await
            .map_err(AppError::from)?;
    let by_subscription: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subscription_status, count(*) FROM tenant_stats GROUP BY subscription_status",
    )
    .fetch_all(control)
    .await
    .map_err(AppError::from)?;
    #[allow(clippy::type_complexity)]
    let totals: (i64, i64, i64, i64, i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(users), 0)::bigint, coalesce(sum(active_users), 0)::bigint, \
                coalesce(sum(patients), 0)::bigint, coalesce(sum(appointments), 0)::bigint, \
                coalesce(sum(invoices), 0)::bigint, min(refreshed_at) \
           FROM tenant_stats",
    )
    .fetch_one(control)
    .await
    .map_err(AppError::from)?;
    let revenue_rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, sum(paid_minor)::bigint, sum(refunded_minor)::bigint \
           FROM tenant_revenue GROUP BY currency ORDER BY currency",
    )
    .fetch_all(control)
    .await
    .map_err(AppError::from)?;

    let count_of = |rows: &[(String, i64)], name: &str| {
        rows.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    };
    let hospitals: i64 = by_status.iter().map(|(_, c)| c).sum();
    use TenantStatus as T;
    let by_status = [T::Provisioning, T::Active, T::Suspended, T::Cancelled]
        .into_iter()
        .map(|s| (s, count_of(&by_status, s.as_str())))
        .collect();
    let by_plan = Plan::ALL
        .into_iter()
        .map(|p| (p, count_of(&by_plan, p.as_str())))
        .collect();
    use SubscriptionStatus as S;
    let mut by_subscription_status = Vec::new();
    for s in [S::Trial, S::Active, S::PastDue, S::Suspended, S::Cancelled] {
        let name = super::stored_name(&s)?;
        by_subscription_status.push((s, count_of(&by_subscription, &name)));
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
// Use cases

impl PlatformScope<'_> {
    /// Every hospital on the platform, by code, optionally with one directory status.
    pub async fn hospitals(
        &self,
        page: &PageRequest,
        status: Option<TenantStatus>,
    ) -> Result<Page<PlatformHospital>> {
        let (after_code, _) = page.after_or("");
        let rows: Vec<HospitalRow> = sqlx::query_as(&format!(
            "{HOSPITAL_SELECT} WHERE t.code > $1 AND ($2::text IS NULL OR t.status = $2) \
             ORDER BY t.code LIMIT $3"
        ))
        .bind(&after_code)
        .bind(status.map(TenantStatus::as_str))
        .bind(page.fetch_limit())
        .fetch_all(&self.state.control)
        .await?;
        let codes: Vec<String> = rows.iter().map(|r| r.code.clone()).collect();
        let revenue = revenue_of(&self.state.control, &codes).await?;
        let hospitals = rows
            .into_iter()
            .map(|r| to_hospital(r, &revenue))
            .collect::<Result<Vec<_>>>()?;
        Ok(page.page(hospitals, |h| Keyset {
            key: h.code.clone(),
            id: h.code.clone(),
        }))
    }

    /// One hospital by code. Its subscription and figures are first refreshed from its
    /// own database when it is open, so `version` is current.
    pub async fn hospital(&self, raw_code: &str) -> Result<PlatformHospital> {
        let code = HospitalCode::parse(raw_code.trim()).map_err(|_| AppError::NotFound)?;
        self.refresh_if_open(&code).await?;
        load_hospital(&self.state.control, code.as_str())
            .await?
            .ok_or(AppError::NotFound)
    }

    /// Hospitals by status and plan, and activity totals across them.
    pub async fn stats(&self) -> Result<PlatformStats> {
        platform_stats(&self.state.control).await
    }

    /// Onboards a hospital exactly as `hms setup-hospital` does. A code in use is a
    /// CONFLICT; retrying after an interruption completes the first request.
    pub async fn create_hospital(&self, input: CreateHospital) -> Result<PlatformHospital> {
        self.allow(Operation::RegisterHospital)?;
        let parse = |hash: String| {
            NewHospital::parse(
                input.code.trim(),
                &input.name,
                input.plan.as_str(),
                &input.admin_username,
                &input.admin_email,
                &input.admin_name,
                hash,
            )
            .and_then(|request| request.on_server(input.server.clone()))
            .map_err(|e| match e {
                TenancyError::Config(message) => AppError::validation("server", message),
                TenancyError::Invalid(v) => create_validation(v),
                other => AppError::internal(other),
            })
        };
        // Everything is validated, and the code checked, before the slow hash.
        let checked = parse(String::new())?;
        password::check_policy(&input.admin_password)
            .map_err(|e| AppError::validation("adminPassword", e.to_string()))?;
        let code = checked.code.to_string();
        let existing = self
            .state
            .directory
            .get(&code)
            .await
            .map_err(AppError::internal)?;
        if existing.is_some_and(|r| r.provisioning_step == ProvisioningStep::Ready) {
            return Err(already_exists(&code));
        }
        let hash = self
            .state
            .auth
            .hash_password(input.admin_password.clone())
            .await
            .map_err(AppError::internal)?;
        let request = parse(hash)?;
        match provision(self.state.provisioner(), request).await {
            Ok(ProvisionOutcome::Ready { resumed, .. }) => {
                tracing::info!(
                    code = %code,
                    actor = %self.principal.username,
                    resumed,
                    "hospital created"
                );
            }
            Ok(ProvisionOutcome::StoppedAfter(step)) => {
                return Err(AppError::internal(format!(
                    "provisioning of {code} stopped after {}",
                    step.as_str()
                )))
            }
            Err(TenancyError::AlreadyExists(_)) => return Err(already_exists(&code)),
            Err(TenancyError::Invalid(v)) => return Err(create_validation(v)),
            Err(TenancyError::Placement(message)) => {
                return Err(AppError::validation("server", message))
            }
            Err(TenancyError::Busy) => return Err(AppError::RateLimited),
            Err(other) => return Err(AppError::internal(other)),
        }
        let lease = self.state.registry.get(&code).await?;
        self.refresh(&code, &lease).await;
        drop(lease);
        load_hospital(&self.state.control, &code)
            .await?
            .ok_or(AppError::NotFound)
    }

    /// Moves the hospital to a paid plan (from a trial, an active or a past-due
    /// subscription). Modules the plan lacks are switched off.
    pub async fn change_subscription(&self, input: PaidPeriod) -> Result<PlatformHospital> {
        let period_ends_at = period_end(input.cycle, input.period_ends_at, Utc::now())?;
        self.subscription_command(&input.code, input.expected_version, |actor, now| {
            HospitalCommand::ChangePlan {
                actor,
                plan: input.plan,
                cycle: input.cycle,
                period_ends_at,
                now,
            }
        })
        .await
    }

    /// Suspends the subscription: reads stay open, every write is refused.
    pub async fn suspend_hospital(
        &self,
        code: &str,
        reason: &str,
        expected_version: Option<i64>,
    ) -> Result<PlatformHospital> {
        let reason = parse_reason(reason)?;
        self.subscription_command(code, expected_version, |actor, now| {
            HospitalCommand::SuspendSubscription { actor, reason, now }
        })
        .await
    }

    /// Lifts a suspension onto a paid plan: writes work again.
    pub async fn reactivate_hospital(&self, input: PaidPeriod) -> Result<PlatformHospital> {
        let period_ends_at = period_end(input.cycle, input.period_ends_at, Utc::now())?;
        self.subscription_command(&input.code, input.expected_version, |actor, now| {
            HospitalCommand::ReactivateSubscription {
                actor,
                plan: input.plan,
                cycle: input.cycle,
                period_ends_at,
                now,
            }
        })
        .await
    }

    /// Cancels the subscription for good: the history stays readable, nothing is written.
    pub async fn cancel_hospital(
        &self,
        code: &str,
        reason: &str,
        expected_version: Option<i64>,
    ) -> Result<PlatformHospital> {
        let reason = parse_reason(reason)?;
        self.subscription_command(code, expected_version, |actor, now| {
            HospitalCommand::CancelSubscription { actor, reason, now }
        })
        .await
    }

    /// Closes the hospital (directory status SUSPENDED): nobody can sign in and tokens
    /// already issued stop working, whatever the subscription.
    pub async fn close_hospital(&self, raw_code: &str, reason: &str) -> Result<PlatformHospital> {
        self.allow(Operation::AdministerSubscription)?;
        let code = parse_code(raw_code)?;
        let reason = parse_reason(reason)?;
        let changed = self
            .state
            .directory
            .close(code.as_str(), reason.as_str(), &self.principal.username)
            .await?;
        let hospital = load_hospital(&self.state.control, code.as_str())
            .await?
            .ok_or(AppError::NotFound)?;
        if !changed {
            return Err(match hospital.status {
                TenantStatus::Provisioning => AppError::NotFound,
                _ => AppError::Conflict(format!("hospital {code} is closed already")),
            });
        }
        // This process stops serving it at once.
        self.state.registry.forget(code.as_str()).await;
        tracing::warn!(code = %code, actor = %self.principal.username, reason = reason.as_str(), "hospital closed");
        Ok(hospital)
    }

    /// Reopens a closed hospital: its staff can sign in again.
    pub async fn reopen_hospital(&self, raw_code: &str) -> Result<PlatformHospital> {
        self.allow(Operation::AdministerSubscription)?;
        let code = parse_code(raw_code)?;
        let changed = self
            .state
            .directory
            .reopen(code.as_str(), &self.principal.username)
            .await?;
        if !changed {
            let hospital = load_hospital(&self.state.control, code.as_str())
                .await?
                .ok_or(AppError::NotFound)?;
            return Err(match hospital.status {
                TenantStatus::Provisioning => AppError::NotFound,
                _ => AppError::Conflict(format!("hospital {code} is open already")),
            });
        }
        tracing::warn!(code = %code, actor = %self.principal.username, "hospital reopened");
        let lease = self.open_hospital(&code).await?;
        self.refresh(code.as_str(), &lease).await;
        drop(lease);
        load_hospital(&self.state.control, code.as_str())
            .await?
            .ok_or(AppError::NotFound)
    }
}

/// A new hospital and its first administrator, as entered.
#[derive(Debug, Clone)]
pub struct CreateHospital {
    pub code: String,
    pub name: String,
    pub plan: Plan,
    pub admin_username: String,
    pub admin_email: String,
    pub admin_name: String,
    pub admin_password: String,
    /// The database server to place it on (`hms servers list`); by placement when `None`.
    pub server: Option<String>,
}

/// A paid plan for a period: changing or reactivating a subscription.
#[derive(Debug, Clone)]
pub struct PaidPeriod {
    pub code: String,
    pub plan: Plan,
    pub cycle: BillingCycle,
    /// End of the paid period; one cycle from now when left out.
    pub period_ends_at: Option<DateTime<Utc>>,
    pub expected_version: Option<i64>,
}

/// Where a validation error of `NewHospital::parse` points in the API's input.
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

fn create_validation(e: ValidationError) -> AppError {
    AppError::validation(create_input_field(e.field), e.message)
}

/// Runs provisioning to its end in a task of its own, so that a client that disconnects
/// does not interrupt it half-way (an interrupted run would be completed by the next,
/// but need not be).
async fn provision(
    provisioner: Provisioner,
    request: NewHospital,
) -> std::result::Result<ProvisionOutcome, TenancyError> {
    tokio::spawn(async move { provisioner.provision(&request).await })
        .await
        .map_err(|e| TenancyError::Command(format!("provisioning task failed: {e}")))?
}

fn already_exists(code: &str) -> AppError {
    AppError::Conflict(format!("a hospital with code {code} exists already"))
}
