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

mod commands;
mod errors;
mod events;
mod values;

pub use commands::*;
pub use errors::*;
pub use events::*;
pub use values::*;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Datelike, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::ModuleError;
use crate::common::{Actor, ValidationError};
use crate::permissions::{ensure_allowed, Operation};
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
