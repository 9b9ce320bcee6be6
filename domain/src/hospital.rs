//! The hospital aggregate: one per tenant database, with the hospital's code as its id.
//!
//! It owns what is hospital-wide and changes rarely: profile, branding, settings,
//! departments, modules and subscription. Nothing per patient or per appointment goes
//! through it, so its stream stays short and loading it stays cheap (there are no
//! snapshots: see DESIGN.md).
//!
//! Subscription lifecycle (anything not listed is refused with
//! [`HospitalError::IllegalSubscriptionChange`]):
//!
//! | from                     | command                  | to          |
//! |--------------------------|--------------------------|-------------|
//! | TRIAL, ACTIVE, PAST_DUE  | `ChangePlan` (paid plan) | ACTIVE      |
//! | ACTIVE                   | `MarkPastDue`            | PAST_DUE    |
//! | ACTIVE, PAST_DUE         | `RenewSubscription`      | ACTIVE      |
//! | TRIAL, ACTIVE, PAST_DUE  | `SuspendSubscription`    | SUSPENDED   |
//! | SUSPENDED                | `ReactivateSubscription` | ACTIVE      |
//! | anything but CANCELLED   | `CancelSubscription`     | CANCELLED   |
//!
//! Whether the hospital may write at an instant is [`Hospital::write_access`] (in
//! [`crate::access`]); an expired trial is not a stored state but a function of `now`, so
//! a trial expires without anyone having to run a job.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::{ModuleError, SubscriptionError};
use crate::common::{
    Actor, Address, BoundedText, Currency, Email, HospitalCode, Phone, ValidationError,
};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};
use crate::plan::{Module, Plan, TRIAL_DAYS};

/// The departments every new hospital starts with.
pub const DEFAULT_DEPARTMENTS: [&str; 7] = [
    "Emergency",
    "Surgery",
    "Cardiology",
    "Pediatrics",
    "Radiology",
    "Laboratory",
    "Pharmacy",
];

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DEPARTMENT_NAME_CHARS: usize = 100;
pub const MAX_LOGO_REF_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
}

/// An IANA time-zone name such as `Africa/Nairobi` or `UTC`, checked for shape. The
/// domain has no time-zone database: the API converts instants with it and hands the
/// domain offset-carrying times (see [`crate::appointment`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let segment_ok = |s: &str| {
            s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        };
        if raw.len() <= 64 && raw.split('/').all(segment_ok) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "time_zone",
                "must be an IANA time-zone name such as Africa/Nairobi",
            ))
        }
    }

    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A colour as `#RRGGBB`, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexColor(String);

impl HexColor {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        match raw.strip_prefix('#') {
            Some(hex) if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self(raw.to_ascii_uppercase()))
            }
            _ => Err(ValidationError::new(
                field,
                "must be a colour such as #1A2B3C",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The prefix of a hospital's invoice numbers: an upper-case letter then up to nine
/// upper-case letters or digits (`INV`, `DMC24`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvoicePrefix(String);

impl InvoicePrefix {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let b = raw.trim().as_bytes();
        let ok = (1..=10).contains(&b.len())
            && b[0].is_ascii_uppercase()
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(raw.trim().to_owned()))
        } else {
            Err(ValidationError::new(
                "invoice_prefix",
                "must be 1 to 10 upper-case letters or digits, starting with a letter",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InvoicePrefix {
    fn default() -> Self {
        Self("INV".to_owned())
    }
}

impl fmt::Display for InvoicePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length of one appointment slot in minutes: 5 to 240, a multiple of 5. Booked
/// durations are whole multiples of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SlotLength(u32);

impl SlotLength {
    pub fn minutes(minutes: u32) -> Result<Self, ValidationError> {
        if (5..=240).contains(&minutes) && minutes.checked_rem(5) == Some(0) {
            Ok(Self(minutes))
        } else {
            Err(ValidationError::new(
                "slot_length",
                "must be 5 to 240 minutes, in steps of 5",
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for SlotLength {
    fn default() -> Self {
        Self(15)
    }
}

impl TryFrom<u32> for SlotLength {
    type Error = ValidationError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::minutes(value)
    }
}

impl From<SlotLength> for u32 {
    fn from(value: SlotLength) -> Self {
        value.0
    }
}

/// Opening hours of one day, in the hospital's local time; `open < close`, so a day's
/// hours never wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingHours {
    open: NaiveTime,
    close: NaiveTime,
}

impl WorkingHours {
    pub fn new(open: NaiveTime, close: NaiveTime) -> Result<Self, ValidationError> {
        if open < close {
            Ok(Self { open, close })
        } else {
            Err(ValidationError::new(
                "working_hours",
                "opening time must be before closing time",
            ))
        }
    }

    pub fn open(&self) -> NaiveTime {
        self.open
    }

    pub fn close(&self) -> NaiveTime {
        self.close
    }

    /// Does `[start, end)` lie within the day's hours?
    pub fn contains(&self, start: NaiveTime, end: NaiveTime) -> bool {
        self.open <= start && start < end && end <= self.close
    }
}

/// Working hours for each weekday (Monday first); `None` means closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingWeek([Option<WorkingHours>; 7]);

impl WorkingWeek {
    pub fn new(monday_first: [Option<WorkingHours>; 7]) -> Self {
        Self(monday_first)
    }

    /// Monday to Friday, 08:00 to 17:00.
    pub fn standard() -> Self {
        let hours = match (
            NaiveTime::from_hms_opt(8, 0, 0),
            NaiveTime::from_hms_opt(17, 0, 0),
        ) {
            (Some(open), Some(close)) => Some(WorkingHours { open, close }),
            _ => None,
        };
        Self([hours, hours, hours, hours, hours, None, None])
    }

    pub fn on(&self, day: Weekday) -> Option<WorkingHours> {
        self.0
            .get(day.num_days_from_monday() as usize)
            .copied()
            .flatten()
    }
}

impl Default for WorkingWeek {
    fn default() -> Self {
        Self::standard()
    }
}

/// Who the hospital is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HospitalProfile {
    pub name: BoundedText,
    pub contact_email: Option<Email>,
    pub contact_phone: Option<Phone>,
    pub address: Option<Address>,
    pub time_zone: TimeZoneName,
    pub currency: Currency,
}

/// How the hospital's front ends look. The logo is a reference (a URL or object key):
/// the domain stores no files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branding {
    pub logo_ref: Option<BoundedText>,
    pub primary_color: Option<HexColor>,
    pub accent_color: Option<HexColor>,
}

/// Operational settings that other aggregates' commands are checked against (the API
/// reads them from here and passes them in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HospitalSettings {
    pub slot_length: SlotLength,
    pub working_week: WorkingWeek,
    pub invoice_prefix: InvoicePrefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    Trial,
    Active,
    PastDue,
    Suspended,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingCycle {
    Monthly,
    Yearly,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HospitalCommand {
    /// Start the hospital's history. Department ids are generated by the caller so that
    /// handling stays deterministic. Run by the platform (`setup-hospital`), hence no
    /// actor: contact details, time zone and currency follow with [`Self::UpdateProfile`].
    RegisterHospital {
        code: HospitalCode,
        name: BoundedText,
        plan: Plan,
        departments: Vec<(Uuid, BoundedText)>,
        now: DateTime<Utc>,
    },
    UpdateProfile {
        actor: Actor,
        profile: HospitalProfile,
        now: DateTime<Utc>,
    },
    UpdateBranding {
        actor: Actor,
        branding: Branding,
        now: DateTime<Utc>,
    },
    UpdateSettings {
        actor: Actor,
        settings: HospitalSettings,
        now: DateTime<Utc>,
    },
    AddDepartment {
        actor: Actor,
        department_id: Uuid,
        name: BoundedText,
        now: DateTime<Utc>,
    },
    RenameDepartment {
        actor: Actor,
        department_id: Uuid,
        name: BoundedText,
        now: DateTime<Utc>,
    },
    DeactivateDepartment {
        actor: Actor,
        department_id: Uuid,
        now: DateTime<Utc>,
    },
    ReactivateDepartment {
        actor: Actor,
        department_id: Uuid,
        now: DateTime<Utc>,
    },
    EnableModule {
        actor: Actor,
        module: Module,
        now: DateTime<Utc>,
    },
    DisableModule {
        actor: Actor,
        module: Module,
        now: DateTime<Utc>,
    },
    /// Buy or change a paid plan. Also the way out of an expired trial or a past-due state.
    ChangePlan {
        actor: Actor,
        plan: Plan,
        cycle: BillingCycle,
        period_ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The platform's billing saw a failed renewal: the grace period starts.
    MarkPastDue { actor: Actor, now: DateTime<Utc> },
    /// A renewal was paid: the current plan continues to `period_ends_at`.
    RenewSubscription {
        actor: Actor,
        period_ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    SuspendSubscription {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    /// Lift a suspension onto a paid plan.
    ReactivateSubscription {
        actor: Actor,
        plan: Plan,
        cycle: BillingCycle,
        period_ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The end: the hospital keeps its history and can read it, but never writes again.
    CancelSubscription {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
}

impl HospitalCommand {
    /// The permission this command needs (see [`crate::permissions`]).
    pub fn operation(&self) -> Operation {
        use HospitalCommand as C;
        match self {
            C::RegisterHospital { .. } => Operation::RegisterHospital,
            C::UpdateProfile { .. } => Operation::UpdateHospitalProfile,
            C::UpdateBranding { .. } => Operation::UpdateHospitalBranding,
            C::UpdateSettings { .. } => Operation::UpdateHospitalSettings,
            C::AddDepartment { .. }
            | C::RenameDepartment { .. }
            | C::DeactivateDepartment { .. }
            | C::ReactivateDepartment { .. } => Operation::ManageDepartments,
            C::EnableModule { .. } | C::DisableModule { .. } => Operation::ManageModules,
            C::ChangePlan { .. } => Operation::ChangePlan,
            C::CancelSubscription { .. } => Operation::CancelSubscription,
            C::MarkPastDue { .. }
            | C::RenewSubscription { .. }
            | C::SuspendSubscription { .. }
            | C::ReactivateSubscription { .. } => Operation::AdministerSubscription,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HospitalEvent {
    HospitalRegistered {
        code: String,
        name: String,
        plan: Plan,
        /// When the trial ends; `None` for a hospital that starts on a paid plan.
        trial_ends_at: Option<DateTime<Utc>>,
        departments: Vec<Department>,
        modules: Vec<Module>,
        registered_at: DateTime<Utc>,
    },
    HospitalProfileUpdated {
        profile: HospitalProfile,
        at: DateTime<Utc>,
    },
    BrandingUpdated {
        branding: Branding,
        at: DateTime<Utc>,
    },
    SettingsUpdated {
        settings: HospitalSettings,
        at: DateTime<Utc>,
    },
    DepartmentAdded {
        department: Department,
        at: DateTime<Utc>,
    },
    DepartmentRenamed {
        department_id: Uuid,
        name: String,
        at: DateTime<Utc>,
    },
    DepartmentDeactivated {
        department_id: Uuid,
        at: DateTime<Utc>,
    },
    DepartmentReactivated {
        department_id: Uuid,
        at: DateTime<Utc>,
    },
    ModuleEnabled {
        module: Module,
        at: DateTime<Utc>,
    },
    ModuleDisabled {
        module: Module,
        at: DateTime<Utc>,
    },
    /// `modules` is the enabled set after the change: modules the new plan lacks are
    /// switched off, modules it newly includes are switched on.
    PlanChanged {
        plan: Plan,
        cycle: BillingCycle,
        period_ends_at: DateTime<Utc>,
        modules: Vec<Module>,
        at: DateTime<Utc>,
    },
    SubscriptionPastDue {
        at: DateTime<Utc>,
    },
    SubscriptionRenewed {
        period_ends_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    SubscriptionSuspended {
        reason: String,
        at: DateTime<Utc>,
    },
    SubscriptionReactivated {
        plan: Plan,
        cycle: BillingCycle,
        period_ends_at: DateTime<Utc>,
        modules: Vec<Module>,
        at: DateTime<Utc>,
    },
    SubscriptionCancelled {
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for HospitalEvent {
    fn event_type(&self) -> String {
        use HospitalEvent as E;
        match self {
            E::HospitalRegistered { .. } => "HospitalRegistered",
            E::HospitalProfileUpdated { .. } => "HospitalProfileUpdated",
            E::BrandingUpdated { .. } => "BrandingUpdated",
            E::SettingsUpdated { .. } => "SettingsUpdated",
            E::DepartmentAdded { .. } => "DepartmentAdded",
            E::DepartmentRenamed { .. } => "DepartmentRenamed",
            E::DepartmentDeactivated { .. } => "DepartmentDeactivated",
            E::DepartmentReactivated { .. } => "DepartmentReactivated",
            E::ModuleEnabled { .. } => "ModuleEnabled",
            E::ModuleDisabled { .. } => "ModuleDisabled",
            E::PlanChanged { .. } => "PlanChanged",
            E::SubscriptionPastDue { .. } => "SubscriptionPastDue",
            E::SubscriptionRenewed { .. } => "SubscriptionRenewed",
            E::SubscriptionSuspended { .. } => "SubscriptionSuspended",
            E::SubscriptionReactivated { .. } => "SubscriptionReactivated",
            E::SubscriptionCancelled { .. } => "SubscriptionCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HospitalError {
    #[error("the hospital is already registered")]
    AlreadyRegistered,
    #[error("the hospital is not registered")]
    NotRegistered,
    #[error("department '{0}' exists already")]
    DuplicateDepartment(String),
    #[error("a department with id {0} exists already")]
    DepartmentIdTaken(Uuid),
    #[error("department {0} does not exist")]
    DepartmentNotFound(Uuid),
    #[error("department {0} is already inactive")]
    DepartmentAlreadyInactive(Uuid),
    #[error("department {0} is already active")]
    DepartmentAlreadyActive(Uuid),
    #[error("the {0:?} module is always on")]
    CoreModule(Module),
    #[error("the {0:?} module is already enabled")]
    ModuleAlreadyEnabled(Module),
    #[error("the {0:?} module is already disabled")]
    ModuleAlreadyDisabled(Module),
    #[error("a trial cannot be bought; choose BASIC, PROFESSIONAL or ENTERPRISE")]
    TrialIsNotAPaidPlan,
    #[error("the new billing period must end after now")]
    PeriodEndNotInFuture,
    #[error("a subscription that is {from:?} cannot be {action}")]
    IllegalSubscriptionChange {
        from: SubscriptionStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hospital {
    pub registered: bool,
    pub code: String,
    pub name: String,
    pub plan: Option<Plan>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub departments: Vec<Department>,
    /// The enabled modules.
    pub modules: Vec<Module>,
    pub status: Option<SubscriptionStatus>,
    pub cycle: Option<BillingCycle>,
    pub period_ends_at: Option<DateTime<Utc>>,
    pub profile: Option<HospitalProfile>,
    pub branding: Branding,
    pub settings: HospitalSettings,
}

fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// The enabled modules after moving from `old` to `new`: keep what the admin chose where
/// the new plan allows it, and switch on what the new plan adds.
fn modules_after_plan_change(enabled: &[Module], old: Option<Plan>, new: Plan) -> Vec<Module> {
    Module::ALL
        .into_iter()
        .filter(|m| new.allows(*m))
        .filter(|m| enabled.contains(m) || m.is_core() || !old.is_some_and(|o| o.allows(*m)))
        .collect()
}

impl Hospital {
    fn ensure_registered(&self) -> Result<(), HospitalError> {
        if self.registered {
            Ok(())
        } else {
            Err(HospitalError::NotRegistered)
        }
    }

    /// The guard of every profile-like change: exists, role allows, subscription writes.
    fn guard_write(
        &self,
        actor: &Actor,
        op: Operation,
        now: DateTime<Utc>,
    ) -> Result<(), HospitalError> {
        self.ensure_registered()?;
        ensure_allowed(actor, op)?;
        self.write_access(now)?;
        Ok(())
    }

    fn status(&self) -> SubscriptionStatus {
        self.status.unwrap_or(SubscriptionStatus::Cancelled)
    }

    fn illegal(&self, action: &'static str) -> HospitalError {
        HospitalError::IllegalSubscriptionChange {
            from: self.status(),
            action,
        }
    }

    pub fn department(&self, id: Uuid) -> Option<&Department> {
        self.departments.iter().find(|d| d.id == id)
    }

    fn department_or_err(&self, id: Uuid) -> Result<&Department, HospitalError> {
        self.department(id)
            .ok_or(HospitalError::DepartmentNotFound(id))
    }

    fn ensure_unique_name(&self, name: &str, except: Option<Uuid>) -> Result<(), HospitalError> {
        if self
            .departments
            .iter()
            .any(|d| Some(d.id) != except && same_name(&d.name, name))
        {
            Err(HospitalError::DuplicateDepartment(name.to_owned()))
        } else {
            Ok(())
        }
    }

    /// Decide which events a command produces, without changing anything. `handle` writes
    /// them; tests and property tests call this directly (it is synchronous).
    pub fn decide(&self, command: HospitalCommand) -> Result<Vec<HospitalEvent>, HospitalError> {
        use HospitalCommand as C;
        use HospitalEvent as E;
        let op = command.operation();
        let event = match command {
            C::RegisterHospital {
                code,
                name,
                plan,
                departments,
                now,
            } => {
                if self.registered {
                    return Err(HospitalError::AlreadyRegistered);
                }
                let mut seen = std::collections::HashSet::new();
                for (_, dept) in &departments {
                    if !seen.insert(dept.as_str().to_lowercase()) {
                        return Err(HospitalError::DuplicateDepartment(dept.to_string()));
                    }
                }
                E::HospitalRegistered {
                    code: code.to_string(),
                    name: name.to_string(),
                    plan,
                    trial_ends_at: (plan == Plan::Trial).then(|| now + Duration::days(TRIAL_DAYS)),
                    departments: departments
                        .into_iter()
                        .map(|(id, name)| Department {
                            id,
                            name: name.to_string(),
                            active: true,
                        })
                        .collect(),
                    modules: plan.limits().modules.to_vec(),
                    registered_at: now,
                }
            }
            C::UpdateProfile {
                actor,
                profile,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                E::HospitalProfileUpdated { profile, at: now }
            }
            C::UpdateBranding {
                actor,
                branding,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                if let Some(logo) = &branding.logo_ref {
                    if logo.as_str().chars().count() > MAX_LOGO_REF_CHARS {
                        return Err(ValidationError::new("logo_ref", "is too long").into());
                    }
                }
                E::BrandingUpdated { branding, at: now }
            }
            C::UpdateSettings {
                actor,
                settings,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                E::SettingsUpdated { settings, at: now }
            }
            C::AddDepartment {
                actor,
                department_id,
                name,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                if self.department(department_id).is_some() {
                    return Err(HospitalError::DepartmentIdTaken(department_id));
                }
                self.ensure_unique_name(name.as_str(), None)?;
                E::DepartmentAdded {
                    department: Department {
                        id: department_id,
                        name: name.to_string(),
                        active: true,
                    },
                    at: now,
                }
            }
            C::RenameDepartment {
                actor,
                department_id,
                name,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                self.department_or_err(department_id)?;
                self.ensure_unique_name(name.as_str(), Some(department_id))?;
                E::DepartmentRenamed {
                    department_id,
                    name: name.to_string(),
                    at: now,
                }
            }
            C::DeactivateDepartment {
                actor,
                department_id,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                if !self.department_or_err(department_id)?.active {
                    return Err(HospitalError::DepartmentAlreadyInactive(department_id));
                }
                E::DepartmentDeactivated {
                    department_id,
                    at: now,
                }
            }
            C::ReactivateDepartment {
                actor,
                department_id,
                now,
            } => {
                self.guard_write(&actor, op, now)?;
                if self.department_or_err(department_id)?.active {
                    return Err(HospitalError::DepartmentAlreadyActive(department_id));
                }
                E::DepartmentReactivated {
                    department_id,
                    at: now,
                }
            }
            C::EnableModule { actor, module, now } => {
                self.guard_write(&actor, op, now)?;
                if module.is_core() {
                    return Err(HospitalError::CoreModule(module));
                }
                let plan = self.plan.unwrap_or(Plan::Trial);
                if !plan.allows(module) {
                    return Err(ModuleError::NotInPlan { module, plan }.into());
                }
                if self.modules.contains(&module) {
                    return Err(HospitalError::ModuleAlreadyEnabled(module));
                }
                E::ModuleEnabled { module, at: now }
            }
            C::DisableModule { actor, module, now } => {
                self.guard_write(&actor, op, now)?;
                if module.is_core() {
                    return Err(HospitalError::CoreModule(module));
                }
                if !self.modules.contains(&module) {
                    return Err(HospitalError::ModuleAlreadyDisabled(module));
                }
                E::ModuleDisabled { module, at: now }
            }
            C::ChangePlan {
                actor,
                plan,
                cycle,
                period_ends_at,
                now,
            } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if !matches!(
                    self.status(),
                    SubscriptionStatus::Trial
                        | SubscriptionStatus::Active
                        | SubscriptionStatus::PastDue
                ) {
                    return Err(self.illegal("moved to another plan"));
                }
                if plan == Plan::Trial {
                    return Err(HospitalError::TrialIsNotAPaidPlan);
                }
                if period_ends_at <= now {
                    return Err(HospitalError::PeriodEndNotInFuture);
                }
                E::PlanChanged {
                    plan,
                    cycle,
                    period_ends_at,
                    modules: modules_after_plan_change(&self.modules, self.plan, plan),
                    at: now,
                }
            }
            C::MarkPastDue { actor, now } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if self.status() != SubscriptionStatus::Active {
                    return Err(self.illegal("marked past due"));
                }
                E::SubscriptionPastDue { at: now }
            }
            C::RenewSubscription {
                actor,
                period_ends_at,
                now,
            } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if !matches!(
                    self.status(),
                    SubscriptionStatus::Active | SubscriptionStatus::PastDue
                ) {
                    return Err(self.illegal("renewed"));
                }
                if period_ends_at <= now {
                    return Err(HospitalError::PeriodEndNotInFuture);
                }
                E::SubscriptionRenewed {
                    period_ends_at,
                    at: now,
                }
            }
            C::SuspendSubscription { actor, reason, now } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if matches!(
                    self.status(),
                    SubscriptionStatus::Suspended | SubscriptionStatus::Cancelled
                ) {
                    return Err(self.illegal("suspended"));
                }
                E::SubscriptionSuspended {
                    reason: reason.to_string(),
                    at: now,
                }
            }
            C::ReactivateSubscription {
                actor,
                plan,
                cycle,
                period_ends_at,
                now,
            } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if self.status() != SubscriptionStatus::Suspended {
                    return Err(self.illegal("reactivated"));
                }
                if plan == Plan::Trial {
                    return Err(HospitalError::TrialIsNotAPaidPlan);
                }
                if period_ends_at <= now {
                    return Err(HospitalError::PeriodEndNotInFuture);
                }
                E::SubscriptionReactivated {
                    plan,
                    cycle,
                    period_ends_at,
                    modules: modules_after_plan_change(&self.modules, self.plan, plan),
                    at: now,
                }
            }
            C::CancelSubscription { actor, reason, now } => {
                self.ensure_registered()?;
                ensure_allowed(&actor, op)?;
                if self.status() == SubscriptionStatus::Cancelled {
                    return Err(self.illegal("cancelled"));
                }
                E::SubscriptionCancelled {
                    reason: reason.to_string(),
                    at: now,
                }
            }
        };
        Ok(vec![event])
    }

    /// The working hours of `date`'s weekday, if the hospital is open that day.
    pub fn working_hours_on(&self, date: chrono::NaiveDate) -> Option<WorkingHours> {
        self.settings.working_week.on(date.weekday())
    }
}

impl Aggregate for Hospital {
    const TYPE: &'static str = "hospital";
    type Command = HospitalCommand;
    type Event = HospitalEvent;
    type Error = HospitalError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use HospitalEvent as E;
        match event {
            E::HospitalRegistered {
                code,
                name,
                plan,
                trial_ends_at,
                departments,
                modules,
                ..
            } => {
                self.registered = true;
                self.code = code;
                self.name = name;
                self.plan = Some(plan);
                self.trial_ends_at = trial_ends_at;
                self.departments = departments;
                self.modules = modules;
                self.status = Some(if plan == Plan::Trial {
                    SubscriptionStatus::Trial
                } else {
                    SubscriptionStatus::Active
                });
            }
            E::HospitalProfileUpdated { profile, .. } => {
                self.name = profile.name.to_string();
                self.profile = Some(profile);
            }
            E::BrandingUpdated { branding, .. } => self.branding = branding,
            E::SettingsUpdated { settings, .. } => self.settings = settings,
            E::DepartmentAdded { department, .. } => self.departments.push(department),
            E::DepartmentRenamed {
                department_id,
                name,
                ..
            } => {
                if let Some(d) = self.departments.iter_mut().find(|d| d.id == department_id) {
                    d.name = name;
                }
            }
            E::DepartmentDeactivated { department_id, .. }
            | E::DepartmentReactivated { department_id, .. } => {
                let active = matches!(event, E::DepartmentReactivated { .. });
                if let Some(d) = self.departments.iter_mut().find(|d| d.id == department_id) {
                    d.active = active;
                }
            }
            E::ModuleEnabled { module, .. } => {
                if !self.modules.contains(&module) {
                    self.modules.push(module);
                    self.modules.sort();
                }
            }
            E::ModuleDisabled { module, .. } => self.modules.retain(|m| *m != module),
            E::PlanChanged {
                plan,
                cycle,
                period_ends_at,
                modules,
                ..
            }
            | E::SubscriptionReactivated {
                plan,
                cycle,
                period_ends_at,
                modules,
                ..
            } => {
                self.plan = Some(plan);
                self.cycle = Some(cycle);
                self.period_ends_at = Some(period_ends_at);
                self.modules = modules;
                self.status = Some(SubscriptionStatus::Active);
            }
            E::SubscriptionPastDue { .. } => self.status = Some(SubscriptionStatus::PastDue),
            E::SubscriptionRenewed { period_ends_at, .. } => {
                self.period_ends_at = Some(period_ends_at);
                self.status = Some(SubscriptionStatus::Active);
            }
            E::SubscriptionSuspended { .. } => self.status = Some(SubscriptionStatus::Suspended),
            E::SubscriptionCancelled { .. } => self.status = Some(SubscriptionStatus::Cancelled),
        }
    }
}

/// Builders shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::common::Role;

    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    pub fn text(s: &str) -> BoundedText {
        BoundedText::parse("name", s, MAX_NAME_CHARS).expect("valid")
    }

    pub fn admin() -> Actor {
        Actor {
            user_id: Uuid::from_u128(0xAD),
            username: "dmc_admin".into(),
            role: Role::HospitalAdmin,
        }
    }

    pub fn platform() -> Actor {
        Actor::system()
    }

    pub fn register(plan: Plan, departments: &[(u128, &str)]) -> HospitalCommand {
        HospitalCommand::RegisterHospital {
            code: HospitalCode::parse("DMC001").expect("valid"),
            name: text("Downtown Medical Center"),
            plan,
            departments: departments
                .iter()
                .map(|(id, n)| (Uuid::from_u128(*id), text(n)))
                .collect(),
            now: now(),
        }
    }

    /// The events of registering on `plan` with two departments, then running `commands`
    /// (each must succeed).
    pub fn history(plan: Plan, commands: Vec<HospitalCommand>) -> Vec<HospitalEvent> {
        let mut h = Hospital::default();
        let mut events = Vec::new();
        for cmd in
            std::iter::once(register(plan, &[(1, "Surgery"), (2, "Cardiology")])).chain(commands)
        {
            for e in h.decide(cmd).expect("command succeeds") {
                h.apply(e.clone());
                events.push(e);
            }
        }
        events
    }

    pub fn hospital_after(plan: Plan, commands: Vec<HospitalCommand>) -> Hospital {
        let mut h = Hospital::default();
        for e in history(plan, commands) {
            h.apply(e);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::common::{CountryCode, Role};
    use cqrs_es::test::TestFramework;

    fn basic() -> Vec<HospitalEvent> {
        history(Plan::Basic, vec![])
    }

    fn expect_error(given: Vec<HospitalEvent>, cmd: HospitalCommand, err: HospitalError) {
        TestFramework::<Hospital>::with(())
            .given(given)
            .when(cmd)
            .then_expect_error(err);
    }

    fn doctor() -> Actor {
        Actor {
            user_id: Uuid::from_u128(0xD0C),
            username: "doc".into(),
            role: Role::Doctor,
        }
    }

    fn profile() -> HospitalProfile {
        HospitalProfile {
            name: text("Downtown Medical Centre"),
            contact_email: Some(Email::parse("info@dmc.example").expect("valid")),
            contact_phone: Some(Phone::parse("phone", "+254 700 000 001").expect("valid")),
            address: Some(Address {
                line1: text("1 Hospital Road"),
                line2: None,
                city: text("Nairobi"),
                region: None,
                postal_code: Some(text("00100")),
                country: CountryCode::parse("KE").expect("valid"),
            }),
            time_zone: TimeZoneName::parse("Africa/Nairobi").expect("valid"),
            currency: Currency::parse("KES").expect("valid"),
        }
    }

    #[test]
    fn registering_a_trial_hospital_starts_a_30_day_trial_with_every_module() {
        TestFramework::<Hospital>::with(())
            .given_no_previous_events()
            .when(register(Plan::Trial, &[(1, "Emergency")]))
            .then_expect_events(vec![HospitalEvent::HospitalRegistered {
                code: "DMC001".into(),
                name: "Downtown Medical Center".into(),
                plan: Plan::Trial,
                trial_ends_at: Some(now() + Duration::days(30)),
                departments: vec![Department {
                    id: Uuid::from_u128(1),
                    name: "Emergency".into(),
                    active: true,
                }],
                modules: Module::ALL.to_vec(),
                registered_at: now(),
            }]);
    }

    #[test]
    fn registering_twice_is_refused() {
        expect_error(
            basic(),
            register(Plan::Basic, &[]),
            HospitalError::AlreadyRegistered,
        );
    }

    #[test]
    fn department_names_must_be_unique_ignoring_case() {
        expect_error(
            vec![],
            register(Plan::Basic, &[(1, "Surgery"), (2, "surgery")]),
            HospitalError::DuplicateDepartment("surgery".into()),
        );
    }

    #[test]
    fn commands_before_registration_are_refused() {
        expect_error(
            vec![],
            HospitalCommand::UpdateProfile {
                actor: admin(),
                profile: profile(),
                now: now(),
            },
            HospitalError::NotRegistered,
        );
        expect_error(
            vec![],
            HospitalCommand::MarkPastDue {
                actor: platform(),
                now: now(),
            },
            HospitalError::NotRegistered,
        );
    }

    #[test]
    fn the_admin_updates_profile_branding_and_settings() {
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::UpdateProfile {
                actor: admin(),
                profile: profile(),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::HospitalProfileUpdated {
                profile: profile(),
                at: now(),
            }]);
        let branding = Branding {
            logo_ref: Some(text("s3://logos/dmc.png")),
            primary_color: Some(HexColor::parse("primary_color", "#0a3d62").expect("valid")),
            accent_color: None,
        };
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::UpdateBranding {
                actor: admin(),
                branding: branding.clone(),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::BrandingUpdated {
                branding,
                at: now(),
            }]);
        let hours = WorkingHours::new(
            NaiveTime::from_hms_opt(7, 0, 0).expect("valid"),
            NaiveTime::from_hms_opt(19, 0, 0).expect("valid"),
        )
        .expect("valid");
        let settings = HospitalSettings {
            slot_length: SlotLength::minutes(20).expect("valid"),
            working_week: WorkingWeek::new([Some(hours); 7]),
            invoice_prefix: InvoicePrefix::parse("DMC").expect("valid"),
        };
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::UpdateSettings {
                actor: admin(),
                settings: settings.clone(),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::SettingsUpdated {
                settings,
                at: now(),
            }]);
    }

    #[test]
    fn only_an_admin_changes_the_hospital() {
        expect_error(
            basic(),
            HospitalCommand::UpdateBranding {
                actor: doctor(),
                branding: Branding::default(),
                now: now(),
            },
            PermissionDenied {
                role: Role::Doctor,
                operation: Operation::UpdateHospitalBranding,
            }
            .into(),
        );
    }

    #[test]
    fn an_expired_trial_cannot_change_the_profile_but_can_buy_a_plan() {
        let later = now() + Duration::days(31);
        expect_error(
            history(Plan::Trial, vec![]),
            HospitalCommand::UpdateSettings {
                actor: admin(),
                settings: HospitalSettings::default(),
                now: later,
            },
            SubscriptionError::TrialExpired {
                ended_at: now() + Duration::days(30),
            }
            .into(),
        );
        let period = later + Duration::days(365);
        let trial_modules = Module::ALL.to_vec();
        TestFramework::<Hospital>::with(())
            .given(history(Plan::Trial, vec![]))
            .when(HospitalCommand::ChangePlan {
                actor: admin(),
                plan: Plan::Basic,
                cycle: BillingCycle::Yearly,
                period_ends_at: period,
                now: later,
            })
            .then_expect_events(vec![HospitalEvent::PlanChanged {
                plan: Plan::Basic,
                cycle: BillingCycle::Yearly,
                period_ends_at: period,
                modules: modules_after_plan_change(&trial_modules, Some(Plan::Trial), Plan::Basic),
                at: later,
            }]);
    }

    #[test]
    fn plan_changes_keep_choices_drop_what_the_plan_lacks_and_add_what_it_brings() {
        let basic_without_opd = vec![Module::Appointments, Module::Patients, Module::Billing];
        let pro =
            modules_after_plan_change(&basic_without_opd, Some(Plan::Basic), Plan::Professional);
        assert!(!pro.contains(&Module::Opd), "the admin switched OPD off");
        assert!(pro.contains(&Module::Laboratory), "new in PROFESSIONAL");
        let down = modules_after_plan_change(&Module::ALL, Some(Plan::Trial), Plan::Basic);
        assert_eq!(
            down,
            vec![
                Module::Appointments,
                Module::Patients,
                Module::Billing,
                Module::Opd
            ]
        );
    }

    #[test]
    fn departments_are_added_renamed_deactivated_and_reactivated() {
        let id = Uuid::from_u128(3);
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::AddDepartment {
                actor: admin(),
                department_id: id,
                name: text("Oncology"),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::DepartmentAdded {
                department: Department {
                    id,
                    name: "Oncology".into(),
                    active: true,
                },
                at: now(),
            }]);
        // Renaming to another case of its own name is fine.
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::RenameDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(1),
                name: text("SURGERY"),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::DepartmentRenamed {
                department_id: Uuid::from_u128(1),
                name: "SURGERY".into(),
                at: now(),
            }]);
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(HospitalCommand::DeactivateDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(2),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::DepartmentDeactivated {
                department_id: Uuid::from_u128(2),
                at: now(),
            }]);
        let deactivated = history(
            Plan::Basic,
            vec![HospitalCommand::DeactivateDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(2),
                now: now(),
            }],
        );
        TestFramework::<Hospital>::with(())
            .given(deactivated.clone())
            .when(HospitalCommand::ReactivateDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(2),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::DepartmentReactivated {
                department_id: Uuid::from_u128(2),
                at: now(),
            }]);
        expect_error(
            deactivated,
            HospitalCommand::DeactivateDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(2),
                now: now(),
            },
            HospitalError::DepartmentAlreadyInactive(Uuid::from_u128(2)),
        );
        expect_error(
            basic(),
            HospitalCommand::ReactivateDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(2),
                now: now(),
            },
            HospitalError::DepartmentAlreadyActive(Uuid::from_u128(2)),
        );
    }

    #[test]
    fn department_refusals() {
        let add = |id: u128, name: &str| HospitalCommand::AddDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(id),
            name: text(name),
            now: now(),
        };
        expect_error(
            basic(),
            add(9, "cardiology"),
            HospitalError::DuplicateDepartment("cardiology".into()),
        );
        expect_error(
            basic(),
            add(1, "Oncology"),
            HospitalError::DepartmentIdTaken(Uuid::from_u128(1)),
        );
        expect_error(
            basic(),
            HospitalCommand::RenameDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(1),
                name: text("Cardiology"),
                now: now(),
            },
            HospitalError::DuplicateDepartment("Cardiology".into()),
        );
        expect_error(
            basic(),
            HospitalCommand::RenameDepartment {
                actor: admin(),
                department_id: Uuid::from_u128(42),
                name: text("X-ray"),
                now: now(),
            },
            HospitalError::DepartmentNotFound(Uuid::from_u128(42)),
        );
    }

    #[test]
    fn modules_switch_within_the_plan_and_core_modules_stay_on() {
        let disable = |module| HospitalCommand::DisableModule {
            actor: admin(),
            module,
            now: now(),
        };
        let enable = |module| HospitalCommand::EnableModule {
            actor: admin(),
            module,
            now: now(),
        };
        TestFramework::<Hospital>::with(())
            .given(basic())
            .when(disable(Module::Billing))
            .then_expect_events(vec![HospitalEvent::ModuleDisabled {
                module: Module::Billing,
                at: now(),
            }]);
        let no_billing = history(Plan::Basic, vec![disable(Module::Billing)]);
        TestFramework::<Hospital>::with(())
            .given(no_billing.clone())
            .when(enable(Module::Billing))
            .then_expect_events(vec![HospitalEvent::ModuleEnabled {
                module: Module::Billing,
                at: now(),
            }]);
        expect_error(
            no_billing,
            disable(Module::Billing),
            HospitalError::ModuleAlreadyDisabled(Module::Billing),
        );
        expect_error(
            basic(),
            enable(Module::Billing),
            HospitalError::ModuleAlreadyEnabled(Module::Billing),
        );
        expect_error(
            basic(),
            disable(Module::Patients),
            HospitalError::CoreModule(Module::Patients),
        );
        expect_error(
            basic(),
            enable(Module::Appointments),
            HospitalError::CoreModule(Module::Appointments),
        );
        expect_error(
            basic(),
            enable(Module::Telemedicine),
            ModuleError::NotInPlan {
                module: Module::Telemedicine,
                plan: Plan::Basic,
            }
            .into(),
        );
    }

    #[test]
    fn the_subscription_follows_its_lifecycle() {
        let p = platform();
        let period = now() + Duration::days(30);
        let past_due = history(
            Plan::Basic,
            vec![HospitalCommand::MarkPastDue {
                actor: p.clone(),
                now: now(),
            }],
        );
        TestFramework::<Hospital>::with(())
            .given(past_due.clone())
            .when(HospitalCommand::RenewSubscription {
                actor: p.clone(),
                period_ends_at: period,
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::SubscriptionRenewed {
                period_ends_at: period,
                at: now(),
            }]);
        TestFramework::<Hospital>::with(())
            .given(past_due)
            .when(HospitalCommand::SuspendSubscription {
                actor: p.clone(),
                reason: text("unpaid"),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::SubscriptionSuspended {
                reason: "unpaid".into(),
                at: now(),
            }]);
        let suspended = history(
            Plan::Professional,
            vec![HospitalCommand::SuspendSubscription {
                actor: p.clone(),
                reason: text("unpaid"),
                now: now(),
            }],
        );
        let mut modules = Plan::Professional.limits().modules.to_vec();
        modules.sort();
        TestFramework::<Hospital>::with(())
            .given(suspended.clone())
            .when(HospitalCommand::ReactivateSubscription {
                actor: p.clone(),
                plan: Plan::Professional,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::SubscriptionReactivated {
                plan: Plan::Professional,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                modules,
                at: now(),
            }]);
        TestFramework::<Hospital>::with(())
            .given(suspended)
            .when(HospitalCommand::CancelSubscription {
                actor: admin(),
                reason: text("closing"),
                now: now(),
            })
            .then_expect_events(vec![HospitalEvent::SubscriptionCancelled {
                reason: "closing".into(),
                at: now(),
            }]);
    }

    #[test]
    fn illegal_subscription_changes_are_refused() {
        let p = platform();
        let period = now() + Duration::days(30);
        let cancelled = history(
            Plan::Basic,
            vec![HospitalCommand::CancelSubscription {
                actor: p.clone(),
                reason: text("closing"),
                now: now(),
            }],
        );
        let illegal = |from, action| HospitalError::IllegalSubscriptionChange { from, action };
        expect_error(
            cancelled.clone(),
            HospitalCommand::ChangePlan {
                actor: admin(),
                plan: Plan::Enterprise,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            },
            illegal(SubscriptionStatus::Cancelled, "moved to another plan"),
        );
        expect_error(
            cancelled.clone(),
            HospitalCommand::CancelSubscription {
                actor: p.clone(),
                reason: text("again"),
                now: now(),
            },
            illegal(SubscriptionStatus::Cancelled, "cancelled"),
        );
        expect_error(
            cancelled,
            HospitalCommand::SuspendSubscription {
                actor: p.clone(),
                reason: text("x"),
                now: now(),
            },
            illegal(SubscriptionStatus::Cancelled, "suspended"),
        );
        expect_error(
            history(Plan::Trial, vec![]),
            HospitalCommand::MarkPastDue {
                actor: p.clone(),
                now: now(),
            },
            illegal(SubscriptionStatus::Trial, "marked past due"),
        );
        expect_error(
            history(Plan::Trial, vec![]),
            HospitalCommand::RenewSubscription {
                actor: p.clone(),
                period_ends_at: period,
                now: now(),
            },
            illegal(SubscriptionStatus::Trial, "renewed"),
        );
        expect_error(
            basic(),
            HospitalCommand::ReactivateSubscription {
                actor: p.clone(),
                plan: Plan::Basic,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            },
            illegal(SubscriptionStatus::Active, "reactivated"),
        );
        let suspended = history(
            Plan::Basic,
            vec![HospitalCommand::SuspendSubscription {
                actor: p.clone(),
                reason: text("x"),
                now: now(),
            }],
        );
        expect_error(
            suspended.clone(),
            HospitalCommand::ChangePlan {
                actor: admin(),
                plan: Plan::Basic,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            },
            illegal(SubscriptionStatus::Suspended, "moved to another plan"),
        );
        expect_error(
            suspended.clone(),
            HospitalCommand::ReactivateSubscription {
                actor: p.clone(),
                plan: Plan::Trial,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            },
            HospitalError::TrialIsNotAPaidPlan,
        );
        expect_error(
            suspended,
            HospitalCommand::ReactivateSubscription {
                actor: p.clone(),
                plan: Plan::Basic,
                cycle: BillingCycle::Monthly,
                period_ends_at: now(),
                now: now(),
            },
            HospitalError::PeriodEndNotInFuture,
        );
        expect_error(
            basic(),
            HospitalCommand::ChangePlan {
                actor: admin(),
                plan: Plan::Trial,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            },
            HospitalError::TrialIsNotAPaidPlan,
        );
        expect_error(
            basic(),
            HospitalCommand::RenewSubscription {
                actor: p,
                period_ends_at: now() - Duration::days(1),
                now: now(),
            },
            HospitalError::PeriodEndNotInFuture,
        );
        expect_error(
            basic(),
            HospitalCommand::SuspendSubscription {
                actor: admin(),
                reason: text("x"),
                now: now(),
            },
            PermissionDenied {
                role: Role::HospitalAdmin,
                operation: Operation::AdministerSubscription,
            }
            .into(),
        );
    }

    #[test]
    fn value_objects_of_the_hospital_validate() {
        assert!(TimeZoneName::parse("Africa/Nairobi").is_ok());
        assert!(TimeZoneName::parse("America/Argentina/Buenos_Aires").is_ok());
        assert!(TimeZoneName::parse("Etc/GMT+3").is_ok());
        for bad in ["", "/Nairobi", "Africa//Nairobi", "Africa/Nai robi", "1/2"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            HexColor::parse("c", "#a1b2c3").expect("valid").as_str(),
            "#A1B2C3"
        );
        assert!(HexColor::parse("c", "a1b2c3").is_err());
        assert!(HexColor::parse("c", "#a1b2cz").is_err());
        assert!(InvoicePrefix::parse("INV2").is_ok());
        for bad in ["", "inv", "2INV", "ABCDEFGHIJK", "IN-V"] {
            assert!(InvoicePrefix::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SlotLength::minutes(15).is_ok());
        for bad in [0, 3, 7, 245] {
            assert!(SlotLength::minutes(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<SlotLength>("7").is_err());
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("valid");
        assert!(WorkingHours::new(t(9), t(9)).is_err());
        let week = WorkingWeek::standard();
        assert!(week.on(Weekday::Sat).is_none());
        let mon = week.on(Weekday::Mon).expect("open on mondays");
        assert!(mon.contains(t(8), t(17)));
        assert!(!mon.contains(t(7), t(9)));
        assert!(!mon.contains(t(16), t(18)));
    }
}
