//! Subscription plans and the one table of what each allows. Plan limits are enforced
//! here and by the command path, never only displayed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::ValidationError;

/// Length of the free trial every hospital starts with.
pub const TRIAL_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Plan {
    Trial,
    Basic,
    Professional,
    Enterprise,
}

/// The modules a hospital can switch on or off. Appointments and patients are always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

impl Module {
    pub const ALL: [Module; 11] = [
        Module::Appointments,
        Module::Patients,
        Module::Billing,
        Module::Laboratory,
        Module::Pharmacy,
        Module::Radiology,
        Module::Emergency,
        Module::Ipd,
        Module::Opd,
        Module::Reports,
        Module::Telemedicine,
    ];

    /// Modules that cannot be switched off: without them there is no hospital to run.
    pub fn is_core(self) -> bool {
        matches!(self, Module::Appointments | Module::Patients)
    }
}

/// What a plan allows. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_users: Option<u32>,
    pub max_patients: Option<u32>,
    pub modules: &'static [Module],
}

const BASIC_MODULES: &[Module] = &[
    Module::Appointments,
    Module::Patients,
    Module::Billing,
    Module::Opd,
];
const PROFESSIONAL_MODULES: &[Module] = &[
    Module::Appointments,
    Module::Patients,
    Module::Billing,
    Module::Opd,
    Module::Laboratory,
    Module::Pharmacy,
    Module::Radiology,
    Module::Emergency,
    Module::Reports,
];

impl Plan {
    pub const ALL: [Plan; 4] = [
        Plan::Trial,
        Plan::Basic,
        Plan::Professional,
        Plan::Enterprise,
    ];

    /// The one table of plan limits. A trial shows everything, at a small scale.
    pub fn limits(self) -> PlanLimits {
        match self {
            Plan::Trial => PlanLimits {
                max_users: Some(10),
                max_patients: Some(500),
                modules: &Module::ALL,
            },
            Plan::Basic => PlanLimits {
                max_users: Some(25),
                max_patients: Some(5_000),
                modules: BASIC_MODULES,
            },
            Plan::Professional => PlanLimits {
                max_users: Some(200),
                max_patients: Some(100_000),
                modules: PROFESSIONAL_MODULES,
            },
            Plan::Enterprise => PlanLimits {
                max_users: None,
                max_patients: None,
                modules: &Module::ALL,
            },
        }
    }

    pub fn allows(self, module: Module) -> bool {
        self.limits().modules.contains(&module)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Trial => "TRIAL",
            Plan::Basic => "BASIC",
            Plan::Professional => "PROFESSIONAL",
            Plan::Enterprise => "ENTERPRISE",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(raw.trim()))
            .ok_or_else(|| {
                ValidationError::new(
                    "plan",
                    "must be one of TRIAL, BASIC, PROFESSIONAL, ENTERPRISE",
                )
            })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_includes_the_core_modules() {
        for plan in Plan::ALL {
            for module in Module::ALL.into_iter().filter(|m| m.is_core()) {
                assert!(plan.allows(module), "{plan} must allow {module:?}");
            }
        }
    }

    #[test]
    fn higher_plans_allow_at_least_what_lower_ones_do() {
        let ladder = [Plan::Basic, Plan::Professional, Plan::Enterprise];
        for pair in ladder.windows(2) {
            for m in pair[0].limits().modules {
                assert!(pair[1].allows(*m), "{} lost {m:?}", pair[1]);
            }
        }
    }

    #[test]
    fn plans_parse_from_their_names() {
        assert_eq!(Plan::parse("professional"), Ok(Plan::Professional));
        assert!(Plan::parse("GOLD").is_err());
    }
}
