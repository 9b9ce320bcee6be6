//! The events of the hospital aggregate, with their persisted names and versions.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BillingCycle, Branding, Department, HospitalProfile, HospitalSettings};
use crate::plan::{Module, Plan};

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
