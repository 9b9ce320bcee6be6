//! The GraphQL shapes of hospital administration: output objects built from the
//! application's views, input objects, and enums mirroring the domain's.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc, Weekday};
use hms_app::usecases::hospital as uc;
use hms_app::usecases::stored_name;
use hms_domain::common::{Email, Phone};
use hms_domain::hospital::HospitalSettings;
use hms_domain::permissions::Operation;
use hms_projections::projectors::DepartmentRow;
use uuid::Uuid;

use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{page_cost, Page, RECORD_READ_COST};
use crate::graphql::session::{authorize, hospital_scope};
use crate::graphql::types::{AddressInput, AddressOut, Role};

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
pub struct Hospital(uc::HospitalView);

impl From<uc::HospitalView> for Hospital {
    fn from(h: uc::HospitalView) -> Self {
        Self(h)
    }
}

#[Object]
impl Hospital {
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// TRIAL, BASIC, PROFESSIONAL or ENTERPRISE.
    async fn plan(&self) -> &str {
        self.0.plan.as_str()
    }
    /// MONTHLY or YEARLY; null during the trial.
    async fn billing_cycle(&self) -> Result<Option<String>> {
        Ok(self.0.billing_cycle.as_ref().map(stored_name).transpose()?)
    }
    /// TRIAL, ACTIVE, PAST_DUE, SUSPENDED or CANCELLED. A suspended or cancelled hospital,
    /// or one whose trial ended, can read but not write.
    async fn subscription_status(&self) -> Result<String> {
        Ok(stored_name(&self.0.subscription_status)?)
    }
    async fn trial_ends_at(&self) -> Option<DateTime<Utc>> {
        self.0.trial_ends_at
    }
    async fn period_ends_at(&self) -> Option<DateTime<Utc>> {
        self.0.period_ends_at
    }
    /// Why the subscription was suspended or cancelled.
    async fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
    }
    /// The enabled modules.
    async fn modules(&self) -> Result<Vec<String>> {
        Ok(self
            .0
            .modules
            .iter()
            .map(stored_name)
            .collect::<hms_app::Result<_>>()?)
    }
    async fn contact_email(&self) -> Option<&str> {
        self.0
            .profile
            .as_ref()
            .and_then(|p| p.contact_email.as_ref())
            .map(Email::as_str)
    }
    async fn contact_phone(&self) -> Option<&str> {
        self.0
            .profile
            .as_ref()
            .and_then(|p| p.contact_phone.as_ref())
            .map(Phone::as_str)
    }
    async fn address(&self) -> Option<AddressOut> {
        self.0
            .profile
            .as_ref()
            .and_then(|p| p.address.as_ref())
            .map(AddressOut::from)
    }
    /// IANA time zone, e.g. Africa/Nairobi; appointments are booked in it.
    async fn time_zone(&self) -> Option<&str> {
        self.0.profile.as_ref().map(|p| p.time_zone.as_str())
    }
    /// ISO 4217 currency of invoices.
    async fn currency(&self) -> Option<&str> {
        self.0.profile.as_ref().map(|p| p.currency.as_str())
    }
    async fn branding(&self) -> BrandingOut {
        let b = &self.0.branding;
        BrandingOut {
            logo_ref: b.logo_ref.as_ref().map(|t| t.to_string()),
            primary_color: b.primary_color.as_ref().map(|c| c.as_str().to_owned()),
            accent_color: b.accent_color.as_ref().map(|c| c.as_str().to_owned()),
        }
    }
    async fn settings(&self) -> SettingsOut {
        SettingsOut::from(&self.0.settings)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Every department, active or not.
    async fn departments(&self, ctx: &Context<'_>) -> Result<Vec<Department>> {
        let scope = hospital_scope(ctx).await?;
        let all = uc::departments(&scope, false).await?;
        Ok(all.into_iter().map(Department::from).collect())
    }
    /// The hospital's change history (needs the audit permission).
    #[graphql(complexity = "RECORD_READ_COST + page_cost(first, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        audit::history(&auth, "hospital", &self.0.code, first, after).await
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
    /// A clinician with an appointment or lab order for a patient within this many days
    /// is on the care team of the patient's restricted record.
    care_team_window_days: i32,
    /// How long a break-glass access to a restricted record lasts.
    break_glass_minutes: i32,
    /// How long a record is kept after the patient's last contact before it may be
    /// erased.
    retention_days: i64,
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
            care_team_window_days: i32::from(s.privacy.care_team_window_days),
            break_glass_minutes: i32::from(s.privacy.break_glass_minutes),
            retention_days: i64::from(s.privacy.retention_days),
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

impl From<DayOfWeek> for Weekday {
    fn from(d: DayOfWeek) -> Self {
        WEEK[d as usize]
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

impl From<&WorkingDay> for uc::WorkingDay {
    fn from(d: &WorkingDay) -> Self {
        Self {
            weekday: d.weekday.into(),
            open: d.open.clone(),
            close: d.close.clone(),
        }
    }
}

#[derive(SimpleObject, Clone)]
pub struct Department {
    id: Uuid,
    name: String,
    active: bool,
}

impl From<DepartmentRow> for Department {
    fn from(d: DepartmentRow) -> Self {
        Self {
            id: d.id,
            name: d.name,
            active: d.active,
        }
    }
}

/// A staff account of the hospital.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct StaffUser {
    id: Uuid,
    username: String,
    email: String,
    full_name: String,
    department_id: Option<Uuid>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    role: Role,
}

impl From<uc::StaffUser> for StaffUser {
    fn from(u: uc::StaffUser) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            department_id: u.department_id,
            active: u.active,
            created_at: u.created_at,
            updated_at: u.updated_at,
            role: u.role.into(),
        }
    }
}

#[async_graphql::ComplexObject]
impl StaffUser {
    /// The account's change history (needs the audit permission).
    #[graphql(complexity = "RECORD_READ_COST + page_cost(first, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        audit::history(&auth, "user", &self.id.to_string(), first, after).await
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

#[derive(SimpleObject)]
pub struct StatusCount {
    status: String,
    count: i64,
}

fn status_counts(counts: Vec<uc::StatusCount>) -> hms_app::Result<Vec<StatusCount>> {
    counts
        .into_iter()
        .map(|c| {
            Ok(StatusCount {
                status: stored_name(&c.status)?,
                count: c.count,
            })
        })
        .collect()
}

impl TryFrom<uc::HospitalStats> for HospitalStats {
    type Error = hms_app::AppError;
    fn try_from(s: uc::HospitalStats) -> hms_app::Result<Self> {
        Ok(Self {
            patients: s.patients,
            active_staff: s.active_staff,
            appointments_today: status_counts(s.appointments_today)?,
            appointments_this_week: status_counts(s.appointments_this_week)?,
            revenue_this_month_minor: s.revenue_this_month_minor,
            outstanding_minor: s.outstanding_minor,
        })
    }
}

// ---------------------------------------------------------------------------------
// Inputs. The hospital's documents are serialized as sent: a retry with the same
// idempotency key must repeat them.

#[derive(InputObject, serde::Serialize)]
pub struct UpdateHospitalProfileInput {
    pub(super) name: String,
    pub(super) contact_email: Option<String>,
    pub(super) contact_phone: Option<String>,
    pub(super) address: Option<AddressInput>,
    /// IANA time zone, e.g. Africa/Nairobi.
    pub(super) time_zone: String,
    /// ISO 4217, e.g. KES.
    pub(super) currency: String,
    pub(super) expected_version: Option<i64>,
    pub(super) idempotency_key: Option<String>,
}

#[derive(InputObject, serde::Serialize)]
pub struct UpdateHospitalSettingsInput {
    pub(super) slot_length_minutes: i32,
    pub(super) invoice_prefix: String,
    /// Opening hours per day; days not listed are closed.
    pub(super) working_hours: Vec<WorkingDay>,
    /// 1 to 365; unchanged when null (30 for a new hospital).
    pub(super) care_team_window_days: Option<i32>,
    /// 5 to 1440; unchanged when null (60 for a new hospital).
    pub(super) break_glass_minutes: Option<i32>,
    /// 0 to 36600; unchanged when null (3653, ten years, for a new hospital).
    pub(super) retention_days: Option<i32>,
    pub(super) expected_version: Option<i64>,
    pub(super) idempotency_key: Option<String>,
}

#[derive(InputObject, serde::Serialize)]
pub struct UpdateBrandingInput {
    pub(super) logo_ref: Option<String>,
    pub(super) primary_color: Option<String>,
    pub(super) accent_color: Option<String>,
    pub(super) expected_version: Option<i64>,
    pub(super) idempotency_key: Option<String>,
}

#[derive(InputObject)]
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

impl From<CreateUserInput> for uc::CreateUser {
    fn from(i: CreateUserInput) -> Self {
        Self {
            username: i.username,
            email: i.email,
            full_name: i.full_name,
            role: i.role.into(),
            department_id: i.department_id,
            password: i.password,
            idempotency_key: i.idempotency_key,
        }
    }
}

/// Days as their index from Monday (the form idempotency records hash).
impl serde::Serialize for DayOfWeek {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl serde::Serialize for WorkingDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.weekday, &self.open, &self.close).serialize(s)
    }
}
