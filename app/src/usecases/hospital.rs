//! Hospital administration: the hospital's profile, settings, branding, departments,
//! modules and staff accounts, and the dashboard statistics.
//!
//! Every use case takes the capability ([`Authorized`], or the caller's
//! [`HospitalScope`] for what any signed-in staff member may read) and answers with the
//! record as the read models show it after the change. Staff accounts are read through
//! the projector's one row type ([`StaffRow`]); a password hash never leaves this
//! module.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use hms_domain::access::LimitedResource;
use hms_domain::appointment::AppointmentStatus;
use hms_domain::common::{BoundedText, Email, Username, ValidationError};
use hms_domain::hospital::{
    BillingCycle, Branding, Hospital, HospitalCommand, HospitalProfile, HospitalSettings,
    SubscriptionStatus, WorkingHours, WorkingWeek, MAX_NAME_CHARS,
};
use hms_domain::plan::{Module, Plan};
use hms_domain::user::{user_id_for, User, UserCommand, MAX_FULL_NAME_CHARS};
use hms_domain::Role;
use hms_projections::projectors::{DepartmentRow, HospitalProfileRow, StaffFilter, StaffRow};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::stored;
use crate::auth::{password, AuthError};
use crate::error::{AppError, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, HospitalScope, MutationOptions};

// ---------------------------------------------------------------------------------------
// What staff see

/// A hospital as its staff see it.
#[derive(Debug, Clone)]
pub struct HospitalView {
    pub code: String,
    pub name: String,
    pub plan: Plan,
    /// `None` during the trial.
    pub billing_cycle: Option<BillingCycle>,
    pub subscription_status: SubscriptionStatus,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_ends_at: Option<DateTime<Utc>>,
    /// Why the subscription was suspended or cancelled.
    pub status_reason: Option<String>,
    /// The enabled modules, in the order they were enabled.
    pub modules: Vec<Module>,
    /// `None` until the profile is first set.
    pub profile: Option<HospitalProfile>,
    pub branding: Branding,
    pub settings: HospitalSettings,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<HospitalProfileRow> for HospitalView {
    type Error = AppError;
    fn try_from(r: HospitalProfileRow) -> Result<Self> {
        Ok(Self {
            plan: stored(&r.plan)?,
            billing_cycle: r.billing_cycle.as_deref().map(stored).transpose()?,
            subscription_status: stored(&r.subscription_status)?,
            modules: r.modules.iter().map(|m| stored(m)).collect::<Result<_>>()?,
            profile: r
                .profile
                .map(serde_json::from_value)
                .transpose()
                .map_err(AppError::internal)?,
            branding: serde_json::from_value(r.branding).map_err(AppError::internal)?,
            settings: r
                .settings
                .map(serde_json::from_value)
                .transpose()
                .map_err(AppError::internal)?
                .unwrap_or_default(),
            code: r.code,
            name: r.name,
            trial_ends_at: r.trial_ends_at,
            period_ends_at: r.period_ends_at,
            status_reason: r.status_reason,
            updated_at: r.updated_at,
        })
    }
}

/// A staff account of the hospital (without its password hash).
#[derive(Debug, Clone)]
pub struct StaffUser {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub department_id: Option<Uuid>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<StaffRow> for StaffUser {
    type Error = AppError;
    fn try_from(r: StaffRow) -> Result<Self> {
        Ok(Self {
            role: Role::parse(&r.role).map_err(AppError::internal)?,
            id: r.id,
            username: r.username,
            email: r.email,
            full_name: r.full_name,
            department_id: r.department_id,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// The hospital dashboard.
#[derive(Debug, Clone)]
pub struct HospitalStats {
    /// Patients, not counting records merged into another.
    pub patients: i64,
    pub active_staff: i64,
    /// Today's appointments (hospital-local day, taken as UTC when no time zone is set).
    pub appointments_today: Vec<StatusCount>,
    pub appointments_this_week: Vec<StatusCount>,
    /// Payments minus refunds this month, in minor units of the hospital's currency.
    pub revenue_this_month_minor: i64,
    /// Balance still owed on issued invoices, in minor units.
    pub outstanding_minor: i64,
}

/// How many appointments are in one status.
#[derive(Debug, Clone)]
pub struct StatusCount {
    pub status: AppointmentStatus,
    pub count: i64,
}

// ---------------------------------------------------------------------------------------
// Reading

async fn load_hospital(pool: &PgPool) -> Result<HospitalView> {
    HospitalProfileRow::load(pool)
        .await?
        .ok_or(AppError::NotFound)?
        .try_into()
}

async fn load_department(pool: &PgPool, id: Uuid) -> Result<DepartmentRow> {
    DepartmentRow::find(pool, id)
        .await?
        .ok_or(AppError::NotFound)
}

/// A department staff may be placed in: one of the hospital's, and active (as the
/// hospital's own stream has it now, like scheduling into a department).
fn check_department(hospital: &Hospital, id: Option<Uuid>) -> Result<()> {
    let Some(id) = id else { return Ok(()) };
    match hospital.department(id) {
        None => Err(AppError::validation("departmentId", "no such department")),
        Some(department) if !department.active => Err(AppError::validation(
            "departmentId",
            "the department is inactive",
        )),
        Some(_) => Ok(()),
    }
}

pub(crate) async fn load_user(pool: &PgPool, id: Uuid) -> Result<StaffUser> {
    StaffRow::find(pool, id)
        .await?
        .ok_or(AppError::NotFound)?
        .try_into()
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Active hospital administrators now: the domain keeps at least one.
async fn active_admin_count(pool: &PgPool) -> Result<u32> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM staff WHERE role = $1 AND active")
        .bind(Role::HospitalAdmin.as_str())
        .fetch_one(pool)
        .await?;
    Ok(count(n))
}

async fn active_staff_count(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM staff WHERE active")
            .fetch_one(pool)
            .await?,
    )
}

/// The caller's hospital.
pub async fn hospital(scope: &HospitalScope<'_>) -> Result<HospitalView> {
    load_hospital(scope.pool()).await
}

/// The hospital's departments by name, all of them or only the active ones.
pub async fn departments(
    scope: &HospitalScope<'_>,
    active_only: bool,
) -> Result<Vec<DepartmentRow>> {
    let all = DepartmentRow::all(scope.pool()).await?;
    Ok(all
        .into_iter()
        .filter(|d| d.active || !active_only)
        .collect())
}

/// Staff accounts by username (ignoring case), filtered by role, department and state.
pub async fn users(
    auth: &Authorized<'_>,
    page: &PageRequest,
    filter: &StaffFilter,
) -> Result<Page<StaffUser>> {
    let (after_key, after_id) = page.after_or("");
    let after_id = if after_id.is_empty() {
        Uuid::nil()
    } else {
        Uuid::parse_str(&after_id)
            .map_err(|_| AppError::validation("after", "is not a cursor from this API"))?
    };
    let rows = StaffRow::list(
        auth.pool(),
        filter,
        (&after_key, after_id),
        page.fetch_limit(),
    )
    .await?;
    let users = rows
        .into_iter()
        .map(StaffUser::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(page.page(users, |u| Keyset {
        key: u.username.to_lowercase(),
        id: u.id.to_string(),
    }))
}

/// One staff account.
pub async fn user(auth: &Authorized<'_>, id: Uuid) -> Result<StaffUser> {
    load_user(auth.pool(), id).await
}

/// Figures for the hospital dashboard: weeks start on Monday, months on the 1st.
pub async fn hospital_stats(auth: &Authorized<'_>) -> Result<HospitalStats> {
    let pool = auth.pool();
    let today = auth.now.date_naive();
    let week_start = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let month_start = today.with_day(1).unwrap_or(today);
    let scalar = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(AppError::from)
    };
    let by_status = |from: NaiveDate, to: NaiveDate| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) AS count FROM appointments WHERE local_date >= $1 AND local_date < $2 \
              GROUP BY status ORDER BY status",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(status, count)| {
                Ok(StatusCount {
                    status: stored(&status)?,
                    count,
                })
            })
            .collect::<Result<Vec<_>>>()
    };
    let revenue: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE kind WHEN 'PAYMENT' THEN amount_minor ELSE -amount_minor END), 0)::bigint \
           FROM invoice_payments WHERE at >= $1",
    )
    .bind(month_start.and_time(NaiveTime::MIN).and_utc())
    .fetch_one(pool)
    .await?;
    Ok(HospitalStats {
        patients: scalar("SELECT count(*) FROM patients WHERE status <> 'MERGED'").await?,
        active_staff: active_staff_count(pool).await?,
        appointments_today: by_status(today, today + Duration::days(1)).await?,
        appointments_this_week: by_status(week_start, week_start + Duration::days(7)).await?,
        revenue_this_month_minor: revenue,
        outstanding_minor: scalar(
            "SELECT coalesce(sum(balance_minor), 0)::bigint FROM invoices WHERE status IN ('ISSUED', 'PARTIALLY_PAID')",
        )
        .await?,
    })
}

// ---------------------------------------------------------------------------------------
// The hospital record

/// Opening hours of one day, as entered (`HH:MM`, local time).
#[derive(Debug, Clone)]
pub struct WorkingDay {
    pub weekday: Weekday,
    pub open: String,
    pub close: String,
}

fn parse_time(field: &'static str, raw: &str) -> Result<NaiveTime, ValidationError> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .map_err(|_| ValidationError::new(field, "must be a time of day as HH:MM"))
}

/// The opening hours of a week from the days listed (a day not listed is closed; a day
/// listed twice is refused).
pub fn working_week(days: &[WorkingDay]) -> Result<WorkingWeek, ValidationError> {
    let mut week: [Option<WorkingHours>; 7] = [None; 7];
    for day in days {
        let slot = &mut week[day.weekday.num_days_from_monday() as usize];
        if slot.is_some() {
            return Err(ValidationError::new("workingHours", "lists a day twice"));
        }
        *slot = Some(WorkingHours::new(
            parse_time("workingHours.open", &day.open)?,
            parse_time("workingHours.close", &day.close)?,
        )?);
    }
    Ok(WorkingWeek::new(week))
}

/// Runs a command on the hospital aggregate under the mutation's options (`request` is
/// the input as the client sent it: a retry with the same idempotency key must repeat
/// it) and returns the hospital.
async fn hospital_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    request: &impl Serialize,
    command: HospitalCommand,
) -> Result<HospitalView> {
    let code = auth.code().to_string();
    auth.idempotent(options, request, || async {
        auth.execute::<Hospital>(&code, command, options.expected_version)
            .await?;
        Ok::<_, AppError>(code.clone())
    })
    .await?;
    load_hospital(auth.pool()).await
}

/// Changes the hospital's name, contacts, address, time zone and currency.
pub async fn update_profile(
    auth: &Authorized<'_>,
    profile: HospitalProfile,
    options: &MutationOptions,
    request: &impl Serialize,
) -> Result<HospitalView> {
    let command = HospitalCommand::UpdateProfile {
        actor: auth.actor(),
        profile,
        now: auth.now,
    };
    hospital_command(auth, options, request, command).await
}

/// Changes the slot length, invoice prefix and opening hours.
pub async fn update_settings(
    auth: &Authorized<'_>,
    settings: HospitalSettings,
    options: &MutationOptions,
    request: &impl Serialize,
) -> Result<HospitalView> {
    let command = HospitalCommand::UpdateSettings {
        actor: auth.actor(),
        settings,
        now: auth.now,
    };
    hospital_command(auth, options, request, command).await
}

/// Changes the logo reference and colours.
pub async fn update_branding(
    auth: &Authorized<'_>,
    branding: Branding,
    options: &MutationOptions,
    request: &impl Serialize,
) -> Result<HospitalView> {
    let command = HospitalCommand::UpdateBranding {
        actor: auth.actor(),
        branding,
        now: auth.now,
    };
    hospital_command(auth, options, request, command).await
}

/// Switches a module on, within what the plan allows.
pub async fn enable_module(auth: &Authorized<'_>, module: Module) -> Result<HospitalView> {
    let command = HospitalCommand::EnableModule {
        actor: auth.actor(),
        module,
        now: auth.now,
    };
    auth.execute::<Hospital>(auth.code().as_str(), command, None)
        .await?;
    load_hospital(auth.pool()).await
}

/// Switches a module off (appointments and patients are always on).
pub async fn disable_module(auth: &Authorized<'_>, module: Module) -> Result<HospitalView> {
    let command = HospitalCommand::DisableModule {
        actor: auth.actor(),
        module,
        now: auth.now,
    };
    auth.execute::<Hospital>(auth.code().as_str(), command, None)
        .await?;
    load_hospital(auth.pool()).await
}

// ---------------------------------------------------------------------------------------
// Departments

fn department_name(raw: &str) -> Result<BoundedText> {
    Ok(BoundedText::parse("name", raw, MAX_NAME_CHARS)?)
}

/// Adds a department; names are unique ignoring case. A retry with the same idempotency
/// key answers with the department the first attempt added.
pub async fn add_department(
    auth: &Authorized<'_>,
    name: &str,
    idempotency_key: Option<String>,
) -> Result<DepartmentRow> {
    let options = MutationOptions::new(None, idempotency_key)?;
    let name = department_name(name)?;
    let id = auth.new_id(&options);
    let code = auth.code().to_string();
    let request = name.to_string();
    let id = auth
        .idempotent_id(&options, &request, || async {
            let command = HospitalCommand::AddDepartment {
                actor: auth.actor(),
                department_id: id,
                name,
                now: auth.now,
            };
            auth.execute::<Hospital>(&code, command, None).await?;
            Ok::<_, AppError>(id)
        })
        .await?;
    load_department(auth.pool(), id).await
}

/// Renames a department.
pub async fn rename_department(
    auth: &Authorized<'_>,
    department_id: Uuid,
    name: &str,
    expected_version: Option<i64>,
) -> Result<DepartmentRow> {
    let options = MutationOptions::new(expected_version, None)?;
    let command = HospitalCommand::RenameDepartment {
        actor: auth.actor(),
        department_id,
        name: department_name(name)?,
        now: auth.now,
    };
    auth.execute::<Hospital>(auth.code().as_str(), command, options.expected_version)
        .await?;
    load_department(auth.pool(), department_id).await
}

/// Deactivates a department (its history stays).
pub async fn deactivate_department(
    auth: &Authorized<'_>,
    department_id: Uuid,
) -> Result<DepartmentRow> {
    let command = HospitalCommand::DeactivateDepartment {
        actor: auth.actor(),
        department_id,
        now: auth.now,
    };
    auth.execute::<Hospital>(auth.code().as_str(), command, None)
        .await?;
    load_department(auth.pool(), department_id).await
}

/// Reactivates a department.
pub async fn reactivate_department(
    auth: &Authorized<'_>,
    department_id: Uuid,
) -> Result<DepartmentRow> {
    let command = HospitalCommand::ReactivateDepartment {
        actor: auth.actor(),
        department_id,
        now: auth.now,
    };
    auth.execute::<Hospital>(auth.code().as_str(), command, None)
        .await?;
    load_department(auth.pool(), department_id).await
}

// ---------------------------------------------------------------------------------------
// Staff accounts

/// A new staff account, as entered.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub department_id: Option<Uuid>,
    /// 10 to 256 characters; only its hash is kept.
    pub password: String,
    pub idempotency_key: Option<String>,
}

/// Creates a staff account, within the plan's limit of active users. Usernames are
/// unique in the hospital, ignoring case (the account's id derives from it).
pub async fn create_user(auth: &Authorized<'_>, input: CreateUser) -> Result<StaffUser> {
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let username = Username::parse(&input.username)?;
    let email = Email::parse(&input.email)?;
    let full_name = BoundedText::parse("fullName", &input.full_name, MAX_FULL_NAME_CHARS)?;
    password::check_policy(&input.password)
        .map_err(|e| AppError::validation("password", e.to_string()))?;
    check_department(&auth.hospital, input.department_id)?;
    let users = active_staff_count(auth.pool()).await?;
    auth.hospital
        .ensure_capacity(LimitedResource::Users, count(users))
        .map_err(AppError::from)?;
    let id = user_id_for(&username);
    // What a retry must repeat (the password is not part of it).
    let request = (
        &input.username,
        &input.email,
        &input.full_name,
        input.role.as_str(),
        input.department_id,
    );
    let id = auth
        .idempotent_id(&options, &request, || async {
            let password_hash = auth
                .scope
                .state
                .auth
                .hash_password(input.password.clone())
                .await
                .map_err(AppError::internal)?;
            let command = UserCommand::CreateUser {
                username,
                email,
                full_name,
                role: input.role,
                department_id: input.department_id,
                password_hash,
                now: auth.now,
            };
            auth.execute::<User>(&id.to_string(), command, None).await?;
            Ok::<_, AppError>(id)
        })
        .await?;
    load_user(auth.pool(), id).await
}

/// Runs a command on an existing staff account and returns the account.
async fn user_command(
    auth: &Authorized<'_>,
    user_id: Uuid,
    command: UserCommand,
    expected_version: Option<u64>,
) -> Result<StaffUser> {
    // An id of another hospital (or none) is simply not found here.
    load_user(auth.pool(), user_id).await?;
    auth.execute::<User>(&user_id.to_string(), command, expected_version)
        .await?;
    load_user(auth.pool(), user_id).await
}

/// Gives a staff account another role (the hospital keeps at least one active admin).
pub async fn change_user_role(
    auth: &Authorized<'_>,
    user_id: Uuid,
    role: Role,
    expected_version: Option<i64>,
) -> Result<StaffUser> {
    let options = MutationOptions::new(expected_version, None)?;
    let command = UserCommand::ChangeRole {
        actor: auth.actor(),
        role,
        active_admin_count: active_admin_count(auth.pool()).await?,
        now: auth.now,
    };
    user_command(auth, user_id, command, options.expected_version).await
}

/// Moves a staff account to another department (or none).
pub async fn change_user_department(
    auth: &Authorized<'_>,
    user_id: Uuid,
    department_id: Option<Uuid>,
) -> Result<StaffUser> {
    check_department(&auth.hospital, department_id)?;
    let command = UserCommand::ChangeDepartment {
        actor: auth.actor(),
        department_id,
        now: auth.now,
    };
    user_command(auth, user_id, command, None).await
}

/// Deactivates a staff account: it can no longer sign in, and its tokens stop working
/// (the hospital keeps at least one active admin).
pub async fn deactivate_user(
    auth: &Authorized<'_>,
    user_id: Uuid,
    expected_version: Option<i64>,
) -> Result<StaffUser> {
    let options = MutationOptions::new(expected_version, None)?;
    let command = UserCommand::DeactivateUserChecked {
        actor: auth.actor(),
        active_admin_count: active_admin_count(auth.pool()).await?,
        now: auth.now,
    };
    user_command(auth, user_id, command, options.expected_version).await
}

/// Reactivates a staff account.
pub async fn reactivate_user(auth: &Authorized<'_>, user_id: Uuid) -> Result<StaffUser> {
    let command = UserCommand::ReactivateUser { now: auth.now };
    user_command(auth, user_id, command, None).await
}

/// Sets a new password for a staff account; its earlier tokens stop working.
pub async fn reset_user_password(
    auth: &Authorized<'_>,
    user_id: Uuid,
    new_password: String,
) -> Result<StaffUser> {
    let password_hash = auth
        .scope
        .state
        .auth
        .hash_password(new_password)
        .await
        .map_err(|e| AppError::validation("newPassword", e.to_string()))?;
    let command = UserCommand::ResetPassword {
        actor: auth.actor(),
        password_hash,
        now: auth.now,
    };
    user_command(auth, user_id, command, None).await
}

/// Changes the caller's own password, which they must know; every earlier token of the
/// caller stops working.
pub async fn change_password(
    auth: &Authorized<'_>,
    current_password: String,
    new_password: String,
) -> Result<()> {
    let id = auth.scope.principal.user_id;
    let stored_hash = StaffRow::find(auth.pool(), id)
        .await?
        .map(|row| row.password_hash);
    // Throttled and bounded like a sign-in: a stolen token must not become an
    // unthrottled password oracle.
    let scope = &auth.scope;
    let known = scope
        .state
        .auth
        .check_password(
            scope.principal,
            scope.request.client_addr.as_deref(),
            current_password,
            stored_hash,
        )
        .await
        .map_err(|e| match e {
            AuthError::Throttled | AuthError::Busy => AppError::RateLimited,
            other => AppError::internal(other),
        })?;
    if !known {
        return Err(AppError::validation(
            "currentPassword",
            "is not your current password",
        ));
    }
    let password_hash = auth
        .scope
        .state
        .auth
        .hash_password(new_password)
        .await
        .map_err(|e| AppError::validation("newPassword", e.to_string()))?;
    let command = UserCommand::ChangePassword {
        password_hash,
        now: auth.now,
    };
    auth.execute::<User>(&id.to_string(), command, None)
        .await
        .map(drop)
}
