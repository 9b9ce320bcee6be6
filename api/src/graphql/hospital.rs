//! Hospital administration: the hospital's profile, settings, branding, departments,
//! modules and staff accounts, and the dashboard statistics.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};
use hms_domain::access::{LimitedResource, PlanLimitReached};
use hms_domain::common::{BoundedText, Currency, Email, Phone, Username, ValidationError};
use hms_domain::hospital::{
    Branding, HexColor, Hospital as HospitalAggregate, HospitalCommand, HospitalProfile,
    HospitalSettings, InvoicePrefix, SlotLength, TimeZoneName, WorkingHours, WorkingWeek,
    MAX_NAME_CHARS,
};
use hms_domain::permissions::Operation;
use hms_domain::user::{user_id_for, User, UserCommand, MAX_FULL_NAME_CHARS};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequestExt};
use super::session::{authorize, hospital_scope, Authorized, MutationOptions};
use super::types::{AddressInput, AddressOut, Role};
use hms_app::auth::password;

// ---------------------------------------------------------------------------------
// Output types

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(
    remote = "hms_domain::plan::Module",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum Module {
    Appointments,
    Patients,
    Billing,
    Laboratory,
    Pharmacy,
    Radiology,
    Emergency,
    Ipd,
    Opd,
    Reports,
    Telemedicine,
}

/// A hospital as its staff see it.
pub struct Hospital {
    code: String,
    name: String,
    plan: String,
    billing_cycle: Option<String>,
    subscription_status: String,
    trial_ends_at: Option<DateTime<Utc>>,
    period_ends_at: Option<DateTime<Utc>>,
    status_reason: Option<String>,
    modules: Vec<String>,
    profile: Option<HospitalProfile>,
    branding: Branding,
    settings: HospitalSettings,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct HospitalRow {
    code: String,
    name: String,
    plan: String,
    billing_cycle: Option<String>,
    subscription_status: String,
    trial_ends_at: Option<DateTime<Utc>>,
    period_ends_at: Option<DateTime<Utc>>,
    status_reason: Option<String>,
    modules: Vec<String>,
    profile: Option<serde_json::Value>,
    branding: serde_json::Value,
    settings: Option<serde_json::Value>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<HospitalRow> for Hospital {
    type Error = ApiError;
    fn try_from(r: HospitalRow) -> Result<Self, ApiError> {
        Ok(Self {
            code: r.code,
            name: r.name,
            plan: r.plan,
            billing_cycle: r.billing_cycle,
            subscription_status: r.subscription_status,
            trial_ends_at: r.trial_ends_at,
            period_ends_at: r.period_ends_at,
            status_reason: r.status_reason,
            modules: r.modules,
            profile: r
                .profile
                .map(serde_json::from_value)
                .transpose()
                .map_err(ApiError::internal)?,
            branding: serde_json::from_value(r.branding).map_err(ApiError::internal)?,
            settings: r
                .settings
                .map(serde_json::from_value)
                .transpose()
                .map_err(ApiError::internal)?
                .unwrap_or_default(),
            updated_at: r.updated_at,
        })
    }
}

#[Object]
impl Hospital {
    async fn code(&self) -> &str {
        &self.code
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// TRIAL, BASIC, PROFESSIONAL or ENTERPRISE.
    async fn plan(&self) -> &str {
        &self.plan
    }
    /// MONTHLY or YEARLY; null during the trial.
    async fn billing_cycle(&self) -> Option<&str> {
        self.billing_cycle.as_deref()
    }
    /// TRIAL, ACTIVE, PAST_DUE, SUSPENDED or CANCELLED. A suspended or cancelled hospital,
    /// or one whose trial ended, can read but not write.
    async fn subscription_status(&self) -> &str {
        &self.subscription_status
    }
    async fn trial_ends_at(&self) -> Option<DateTime<Utc>> {
        self.trial_ends_at
    }
    async fn period_ends_at(&self) -> Option<DateTime<Utc>> {
        self.period_ends_at
    }
    /// Why the subscription was suspended or cancelled.
    async fn status_reason(&self) -> Option<&str> {
        self.status_reason.as_deref()
    }
    /// The enabled modules.
    async fn modules(&self) -> &[String] {
        &self.modules
    }
    async fn contact_email(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .and_then(|p| p.contact_email.as_ref())
            .map(Email::as_str)
    }
    async fn contact_phone(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .and_then(|p| p.contact_phone.as_ref())
            .map(Phone::as_str)
    }
    async fn address(&self) -> Option<AddressOut> {
        self.profile
            .as_ref()
            .and_then(|p| p.address.as_ref())
            .map(AddressOut::from)
    }
    /// IANA time zone, e.g. Africa/Nairobi; appointments are booked in it.
    async fn time_zone(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.time_zone.as_str())
    }
    /// ISO 4217 currency of invoices.
    async fn currency(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.currency.as_str())
    }
    async fn branding(&self) -> BrandingOut {
        BrandingOut {
            logo_ref: self.branding.logo_ref.as_ref().map(|t| t.to_string()),
            primary_color: self
                .branding
                .primary_color
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            accent_color: self
                .branding
                .accent_color
                .as_ref()
                .map(|c| c.as_str().to_owned()),
        }
    }
    async fn settings(&self) -> SettingsOut {
        SettingsOut::from(&self.settings)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// Every department, active or not.
    async fn departments(&self, ctx: &Context<'_>) -> Result<Vec<Department>> {
        let scope = hospital_scope(ctx).await?;
        departments(scope.pool()).await
    }
    /// The hospital's change history (needs the audit permission).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        audit::history(auth.pool(), "hospital", &self.code, first, after).await
    }
}

#[derive(SimpleObject)]
pub struct BrandingOut {
    /// A reference to the logo (URL or object key); no files are stored here.
    logo_ref: Option<String>,
    /// `#rrggbb`.
    primary_color: Option<String>,
    accent_color: Option<String>,
}

#[derive(SimpleObject)]
pub struct SettingsOut {
    /// Length of one appointment slot.
    slot_length_minutes: i32,
    /// Prefix of invoice numbers.
    invoice_prefix: String,
    /// Opening hours, Monday first; days without hours are closed.
    working_hours: Vec<WorkingDay>,
}

impl From<&HospitalSettings> for SettingsOut {
    fn from(s: &HospitalSettings) -> Self {
        Self {
            slot_length_minutes: i32::try_from(s.slot_length.get()).unwrap_or(i32::MAX),
            invoice_prefix: s.invoice_prefix.as_str().to_owned(),
            working_hours: WEEK
                .iter()
                .filter_map(|day| {
                    s.working_week.on(*day).map(|h| WorkingDay {
                        weekday: DayOfWeek::from(*day),
                        open: h.open().format("%H:%M").to_string(),
                        close: h.close().format("%H:%M").to_string(),
                    })
                })
                .collect(),
        }
    }
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum DayOfWeek {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<Weekday> for DayOfWeek {
    fn from(d: Weekday) -> Self {
        match d {
            Weekday::Mon => DayOfWeek::Monday,
            Weekday::Tue => DayOfWeek::Tuesday,
            Weekday::Wed => DayOfWeek::Wednesday,
            Weekday::Thu => DayOfWeek::Thursday,
            Weekday::Fri => DayOfWeek::Friday,
            Weekday::Sat => DayOfWeek::Saturday,
            Weekday::Sun => DayOfWeek::Sunday,
        }
    }
}

impl DayOfWeek {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "WorkingDayInput")]
pub struct WorkingDay {
    weekday: DayOfWeek,
    /// `HH:MM`, local time.
    open: String,
    /// `HH:MM`, local time; after `open`.
    close: String,
}

#[derive(SimpleObject, Clone, sqlx::FromRow)]
pub struct Department {
    id: Uuid,
    name: String,
    active: bool,
}

/// A staff account of the hospital.
#[derive(SimpleObject, Clone, sqlx::FromRow)]
#[graphql(complex)]
pub struct StaffUser {
    id: Uuid,
    username: String,
    email: String,
    full_name: String,
    #[graphql(skip)]
    role_name: String,
    department_id: Option<Uuid>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[async_graphql::ComplexObject]
impl StaffUser {
    async fn role(&self) -> Result<Role> {
        let role = hms_domain::Role::parse(&self.role_name).map_err(ApiError::internal)?;
        Ok(role.into())
    }
    /// The account's change history (needs the audit permission).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        audit::history(auth.pool(), "user", &self.id.to_string(), first, after).await
    }
}

/// The hospital dashboard.
#[derive(SimpleObject)]
pub struct HospitalStats {
    patients: i64,
    active_staff: i64,
    /// Today's appointments (hospital-local day, taken as UTC when no time zone is set).
    appointments_today: Vec<StatusCount>,
    appointments_this_week: Vec<StatusCount>,
    /// Payments minus refunds this month, in minor units of the hospital's currency.
    revenue_this_month_minor: i64,
    /// Balance still owed on issued invoices, in minor units.
    outstanding_minor: i64,
}

#[derive(SimpleObject, sqlx::FromRow)]
pub struct StatusCount {
    status: String,
    count: i64,
}

// ---------------------------------------------------------------------------------
// Queries

#[derive(Default)]
pub struct HospitalQuery;

const STAFF_COLUMNS: &str =
    "id, username, email, full_name, role AS role_name, department_id, active, created_at, updated_at";

#[Object]
impl HospitalQuery {
    /// The caller's hospital.
    async fn hospital(&self, ctx: &Context<'_>) -> Result<Hospital> {
        let scope = hospital_scope(ctx).await?;
        load_hospital(scope.pool()).await
    }

    /// The hospital's departments.
    async fn departments(
        &self,
        ctx: &Context<'_>,
        active_only: Option<bool>,
    ) -> Result<Vec<Department>> {
        let scope = hospital_scope(ctx).await?;
        let all = departments(scope.pool()).await?;
        Ok(all
            .into_iter()
            .filter(|d| d.active || !active_only.unwrap_or(false))
            .collect())
    }

    /// Staff accounts, by username.
    async fn users(
        &self,
        ctx: &Context<'_>,
        role: Option<Role>,
        department_id: Option<Uuid>,
        active: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<StaffUser>> {
        let auth = authorize(ctx, Operation::ViewStaff).await?;
        let page = page_request(first, after)?;
        let (after_key, after_id) = page.after_or("");
        let after_id = if after_id.is_empty() {
            Uuid::nil()
        } else {
            Uuid::parse_str(&after_id)
                .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))?
        };
        let role = role.map(|r| hms_domain::Role::from(r).as_str());
        let rows: Vec<StaffUser> = sqlx::query_as(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff \
              WHERE (lower(username), id) > ($1, $2) \
                AND ($3::text IS NULL OR role = $3) \
                AND ($4::uuid IS NULL OR department_id = $4) \
                AND ($5::boolean IS NULL OR active = $5) \
              ORDER BY lower(username), id LIMIT $6"
        ))
        .bind(after_key)
        .bind(after_id)
        .bind(role)
        .bind(department_id)
        .bind(active)
        .bind(page.fetch_limit())
        .fetch_all(auth.pool())
        .await
        .map_err(ApiError::internal)?;
        Ok(page.connection(rows, |u| Keyset {
            key: u.username.to_lowercase(),
            id: u.id.to_string(),
        }))
    }

    /// One staff account.
    async fn user(&self, ctx: &Context<'_>, id: Uuid) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ViewStaff).await?;
        load_user(auth.pool(), id).await
    }

    /// Figures for the hospital dashboard.
    async fn hospital_stats(&self, ctx: &Context<'_>) -> Result<HospitalStats> {
        let auth = authorize(ctx, Operation::ViewReports).await?;
        hospital_stats(&auth).await
    }
}

async fn load_hospital(pool: &sqlx::PgPool) -> Result<Hospital, ApiError> {
    let row: HospitalRow = sqlx::query_as(
        "SELECT code, name, plan, billing_cycle, subscription_status, trial_ends_at, period_ends_at, \
                status_reason, modules, profile, branding, settings, updated_at FROM hospital_profile LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?
    .ok_or(ApiError::NotFound)?;
    row.try_into()
}

async fn departments(pool: &sqlx::PgPool) -> Result<Vec<Department>, ApiError> {
    sqlx::query_as("SELECT id, name, active FROM departments ORDER BY lower(name), id")
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)
}

async fn load_department(pool: &sqlx::PgPool, id: Uuid) -> Result<Department, ApiError> {
    sqlx::query_as("SELECT id, name, active FROM departments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)
}

async fn load_user(pool: &sqlx::PgPool, id: Uuid) -> Result<StaffUser, ApiError> {
    sqlx::query_as(&format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)
}

async fn active_admin_count(pool: &sqlx::PgPool) -> Result<u32, ApiError> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM staff WHERE role = 'HOSPITAL_ADMIN' AND active")
            .fetch_one(pool)
            .await
            .map_err(ApiError::internal)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

async fn hospital_stats(auth: &Authorized<'_>) -> Result<HospitalStats, ApiError> {
    let pool = auth.pool();
    let today = auth.now.date_naive();
    let week_start = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let month_start = today.with_day(1).unwrap_or(today);
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(ApiError::internal)
    };
    let by_status = |from: chrono::NaiveDate, to: chrono::NaiveDate| async move {
        sqlx::query_as::<_, StatusCount>(
            "SELECT status, count(*) AS count FROM appointments WHERE local_date >= $1 AND local_date < $2 \
              GROUP BY status ORDER BY status",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)
    };
    let revenue: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE kind WHEN 'PAYMENT' THEN amount_minor ELSE -amount_minor END), 0)::bigint \
           FROM invoice_payments WHERE at >= $1",
    )
    .bind(month_start.and_time(NaiveTime::MIN).and_utc())
    .fetch_one(pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(HospitalStats {
        patients: count("SELECT count(*) FROM patients WHERE status <> 'MERGED'").await?,
        active_staff: count("SELECT count(*) FROM staff WHERE active").await?,
        appointments_today: by_status(today, today + Duration::days(1)).await?,
        appointments_this_week: by_status(week_start, week_start + Duration::days(7)).await?,
        revenue_this_month_minor: revenue,
        outstanding_minor: count(
            "SELECT coalesce(sum(balance_minor), 0)::bigint FROM invoices WHERE status IN ('ISSUED', 'PARTIALLY_PAID')",
        )
        .await?,
    })
}

// ---------------------------------------------------------------------------------
// Inputs

#[derive(InputObject, serde::Serialize)]
pub struct UpdateHospitalProfileInput {
    name: String,
    contact_email: Option<String>,
    contact_phone: Option<String>,
    address: Option<AddressInput>,
    /// IANA time zone, e.g. Africa/Nairobi.
    time_zone: String,
    /// ISO 4217, e.g. KES.
    currency: String,
    expected_version: Option<i64>,
    idempotency_key: Option<String>,
}

#[derive(InputObject, serde::Serialize)]
pub struct UpdateHospitalSettingsInput {
    slot_length_minutes: i32,
    invoice_prefix: String,
    /// Opening hours per day; days not listed are closed.
    working_hours: Vec<WorkingDay>,
    expected_version: Option<i64>,
    idempotency_key: Option<String>,
}

#[derive(InputObject, serde::Serialize)]
pub struct UpdateBrandingInput {
    logo_ref: Option<String>,
    primary_color: Option<String>,
    accent_color: Option<String>,
    expected_version: Option<i64>,
    idempotency_key: Option<String>,
}

#[derive(InputObject, serde::Serialize)]
pub struct CreateUserInput {
    username: String,
    email: String,
    full_name: String,
    role: Role,
    department_id: Option<Uuid>,
    /// 10 to 256 characters.
    password: String,
    idempotency_key: Option<String>,
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(hms_domain::Role::from(*self).as_str())
    }
}

impl serde::Serialize for Module {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&hms_domain::plan::Module::from(*self), s)
    }
}

impl serde::Serialize for DayOfWeek {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(u8::try_from(self.index()).unwrap_or(u8::MAX))
    }
}

impl serde::Serialize for WorkingDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.weekday, &self.open, &self.close).serialize(s)
    }
}

fn parse_time(field: &'static str, raw: &str) -> Result<NaiveTime, ValidationError> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .map_err(|_| ValidationError::new(field, "must be a time of day as HH:MM"))
}

fn parse_week(days: &[WorkingDay]) -> Result<WorkingWeek, ValidationError> {
    let mut week: [Option<WorkingHours>; 7] = [None; 7];
    for day in days {
        let slot = &mut week[day.weekday.index()];
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

// ---------------------------------------------------------------------------------
// Mutations

#[derive(Default)]
pub struct HospitalMutation;

#[Object]
impl HospitalMutation {
    /// Changes the hospital's name, contacts, address, time zone and currency.
    async fn update_hospital_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateHospitalProfileInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalProfile).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let profile = HospitalProfile {
            name: BoundedText::parse("name", &input.name, MAX_NAME_CHARS)
                .map_err(ApiError::from)?,
            contact_email: input
                .contact_email
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(ApiError::from)?,
            contact_phone: input
                .contact_phone
                .as_deref()
                .map(|p| Phone::parse("contactPhone", p))
                .transpose()
                .map_err(ApiError::from)?,
            address: input
                .address
                .as_ref()
                .map(AddressInput::parse)
                .transpose()?,
            time_zone: TimeZoneName::parse(&input.time_zone).map_err(ApiError::from)?,
            currency: Currency::parse(&input.currency).map_err(ApiError::from)?,
        };
        let command = HospitalCommand::UpdateProfile {
            actor: auth.actor(),
            profile,
            now: auth.now,
        };
        hospital_command(&auth, &options, &input, command).await
    }

    /// Changes the slot length, invoice prefix and opening hours.
    async fn update_hospital_settings(
        &self,
        ctx: &Context<'_>,
        input: UpdateHospitalSettingsInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalSettings).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let minutes = u32::try_from(input.slot_length_minutes)
            .map_err(|_| ApiError::validation("slotLengthMinutes", "must be positive"))?;
        let settings = HospitalSettings {
            slot_length: SlotLength::minutes(minutes).map_err(ApiError::from)?,
            working_week: parse_week(&input.working_hours).map_err(ApiError::from)?,
            invoice_prefix: InvoicePrefix::parse(&input.invoice_prefix).map_err(ApiError::from)?,
        };
        let command = HospitalCommand::UpdateSettings {
            actor: auth.actor(),
            settings,
            now: auth.now,
        };
        hospital_command(&auth, &options, &input, command).await
    }

    /// Changes the logo reference and colours.
    async fn update_branding(
        &self,
        ctx: &Context<'_>,
        input: UpdateBrandingInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalBranding).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let color = |field: &'static str, v: &Option<String>| {
            v.as_deref().map(|c| HexColor::parse(field, c)).transpose()
        };
        let branding = Branding {
            logo_ref: input
                .logo_ref
                .as_deref()
                .map(|l| BoundedText::parse("logoRef", l, 500))
                .transpose()
                .map_err(ApiError::from)?,
            primary_color: color("primaryColor", &input.primary_color).map_err(ApiError::from)?,
            accent_color: color("accentColor", &input.accent_color).map_err(ApiError::from)?,
        };
        let command = HospitalCommand::UpdateBranding {
            actor: auth.actor(),
            branding,
            now: auth.now,
        };
        hospital_command(&auth, &options, &input, command).await
    }

    /// Adds a department; names are unique ignoring case.
    async fn add_department(
        &self,
        ctx: &Context<'_>,
        name: String,
        idempotency_key: Option<String>,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        let options = MutationOptions::new(None, idempotency_key)?;
        let name = BoundedText::parse("name", &name, MAX_NAME_CHARS).map_err(ApiError::from)?;
        let id = auth.new_id(&options);
        let code = auth.scope.code.to_string();
        let request = name.to_string();
        let id = auth
            .idempotent_id(&options, &request, || async {
                let command = HospitalCommand::AddDepartment {
                    actor: auth.actor(),
                    department_id: id,
                    name,
                    now: auth.now,
                };
                auth.execute::<HospitalAggregate>(&code, command, None)
                    .await?;
                Ok::<_, ApiError>(id)
            })
            .await?;
        load_department(auth.pool(), id).await
    }

    /// Renames a department.
    async fn rename_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
        name: String,
        expected_version: Option<i64>,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        let options = MutationOptions::new(expected_version, None)?;
        let name = BoundedText::parse("name", &name, MAX_NAME_CHARS).map_err(ApiError::from)?;
        let command = HospitalCommand::RenameDepartment {
            actor: auth.actor(),
            department_id,
            name,
            now: auth.now,
        };
        auth.execute::<HospitalAggregate>(
            auth.scope.code.as_str(),
            command,
            options.expected_version,
        )
        .await?;
        load_department(auth.pool(), department_id).await
    }

    /// Deactivates a department (its history stays).
    async fn deactivate_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        let command = HospitalCommand::DeactivateDepartment {
            actor: auth.actor(),
            department_id,
            now: auth.now,
        };
        auth.execute::<HospitalAggregate>(auth.scope.code.as_str(), command, None)
            .await?;
        load_department(auth.pool(), department_id).await
    }

    /// Reactivates a department.
    async fn reactivate_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        let command = HospitalCommand::ReactivateDepartment {
            actor: auth.actor(),
            department_id,
            now: auth.now,
        };
        auth.execute::<HospitalAggregate>(auth.scope.code.as_str(), command, None)
            .await?;
        load_department(auth.pool(), department_id).await
    }

    /// Switches a module on, within what the plan allows.
    async fn enable_module(&self, ctx: &Context<'_>, module: Module) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::ManageModules).await?;
        let command = HospitalCommand::EnableModule {
            actor: auth.actor(),
            module: module.into(),
            now: auth.now,
        };
        auth.execute::<HospitalAggregate>(auth.scope.code.as_str(), command, None)
            .await?;
        load_hospital(auth.pool()).await
    }

    /// Switches a module off (appointments and patients are always on).
    async fn disable_module(&self, ctx: &Context<'_>, module: Module) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::ManageModules).await?;
        let command = HospitalCommand::DisableModule {
            actor: auth.actor(),
            module: module.into(),
            now: auth.now,
        };
        auth.execute::<HospitalAggregate>(auth.scope.code.as_str(), command, None)
            .await?;
        load_hospital(auth.pool()).await
    }

    /// Creates a staff account. Usernames are unique in the hospital, ignoring case.
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::CreateUser).await?;
        let options = MutationOptions::new(None, input.idempotency_key.clone())?;
        let username = Username::parse(&input.username).map_err(ApiError::from)?;
        let email = Email::parse(&input.email).map_err(ApiError::from)?;
        let full_name = BoundedText::parse("fullName", &input.full_name, MAX_FULL_NAME_CHARS)
            .map_err(ApiError::from)?;
        password::check_policy(&input.password)
            .map_err(|e| ApiError::validation("password", e.to_string()))?;
        let role: hms_domain::Role = input.role.into();
        if let Some(dept) = input.department_id {
            load_department(auth.pool(), dept)
                .await
                .map_err(|_| ApiError::validation("departmentId", "no such department"))?;
        }
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM staff WHERE active")
            .fetch_one(auth.pool())
            .await
            .map_err(ApiError::internal)?;
        auth.hospital
            .ensure_capacity(
                LimitedResource::Users,
                u32::try_from(users).unwrap_or(u32::MAX),
            )
            .map_err(limit_error)?;
        let id = user_id_for(&username);
        let id = auth
            .idempotent_id(
                &options,
                &(
                    &input.username,
                    &input.email,
                    &input.full_name,
                    input.role,
                    input.department_id,
                ),
                || async {
                    let password_hash = password::hash(input.password.clone())
                        .await
                        .map_err(ApiError::internal)?;
                    let command = UserCommand::CreateUser {
                        username,
                        email,
                        full_name,
                        role,
                        department_id: input.department_id,
                        password_hash,
                        now: auth.now,
                    };
                    auth.execute::<User>(&id.to_string(), command, None).await?;
                    Ok::<_, ApiError>(id)
                },
            )
            .await?;
        load_user(auth.pool(), id).await
    }

    /// Gives a staff account another role (the hospital keeps at least one active admin).
    async fn change_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        role: Role,
        expected_version: Option<i64>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ChangeUserRole).await?;
        let options = MutationOptions::new(expected_version, None)?;
        let command = UserCommand::ChangeRole {
            actor: auth.actor(),
            role: role.into(),
            active_admin_count: active_admin_count(auth.pool()).await?,
            now: auth.now,
        };
        user_command(&auth, user_id, command, options.expected_version).await
    }

    /// Moves a staff account to another department (or none).
    async fn change_user_department(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        department_id: Option<Uuid>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ChangeUserDepartment).await?;
        if let Some(dept) = department_id {
            load_department(auth.pool(), dept)
                .await
                .map_err(|_| ApiError::validation("departmentId", "no such department"))?;
        }
        let command = UserCommand::ChangeDepartment {
            actor: auth.actor(),
            department_id,
            now: auth.now,
        };
        user_command(&auth, user_id, command, None).await
    }

    /// Deactivates a staff account: it can no longer sign in, and its tokens stop working.
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::DeactivateUser).await?;
        let options = MutationOptions::new(expected_version, None)?;
        let command = UserCommand::DeactivateUserChecked {
            actor: auth.actor(),
            active_admin_count: active_admin_count(auth.pool()).await?,
            now: auth.now,
        };
        user_command(&auth, user_id, command, options.expected_version).await
    }

    /// Reactivates a staff account.
    async fn reactivate_user(&self, ctx: &Context<'_>, user_id: Uuid) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ReactivateUser).await?;
        load_user(auth.pool(), user_id).await?;
        auth.execute::<User>(
            &user_id.to_string(),
            UserCommand::ReactivateUser { now: auth.now },
            None,
        )
        .await?;
        load_user(auth.pool(), user_id).await
    }

    /// Sets a new password for a staff account; its earlier tokens stop working.
    async fn reset_user_password(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        new_password: String,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ResetUserPassword).await?;
        let password_hash = password::hash(new_password)
            .await
            .map_err(|e| ApiError::validation("newPassword", e.to_string()))?;
        let command = UserCommand::ResetPassword {
            actor: auth.actor(),
            password_hash,
            now: auth.now,
        };
        user_command(&auth, user_id, command, None).await
    }

    /// Changes the caller's own password; every earlier token of the caller stops working.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let auth = authorize(ctx, Operation::ChangeOwnPassword).await?;
        let id = auth.scope.principal.user_id;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM staff WHERE id = $1")
                .bind(id)
                .fetch_optional(auth.pool())
                .await
                .map_err(ApiError::internal)?;
        if !password::verify(current_password, stored).await {
            return Err(ApiError::validation(
                "currentPassword",
                "is not your current password",
            ));
        }
        let password_hash = password::hash(new_password)
            .await
            .map_err(|e| ApiError::validation("newPassword", e.to_string()))?;
        auth.execute::<User>(
            &id.to_string(),
            UserCommand::ChangePassword {
                password_hash,
                now: auth.now,
            },
            None,
        )
        .await?;
        Ok(true)
    }
}

/// Runs a hospital command under the mutation's options and returns the hospital.
async fn hospital_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl serde::Serialize,
    command: HospitalCommand,
) -> Result<Hospital> {
    let code = auth.scope.code.to_string();
    auth.idempotent(options, input, || async {
        auth.execute::<HospitalAggregate>(&code, command, options.expected_version)
            .await?;
        Ok::<_, ApiError>(code.clone())
    })
    .await?;
    load_hospital(auth.pool()).await
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

fn limit_error(e: PlanLimitReached) -> ApiError {
    ApiError::Conflict(format!(
        "the {} plan allows {} {}; upgrade the plan to add more",
        e.plan,
        e.limit,
        match e.resource {
            LimitedResource::Users => "active users",
            LimitedResource::Patients => "patients",
        }
    ))
}
