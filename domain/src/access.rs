//! Gating beyond roles: the hospital's subscription and its modules, with their own
//! error types so the API can answer SUBSCRIPTION_INACTIVE and MODULE_DISABLED
//! distinctly from FORBIDDEN.
//!
//! [`authorize`] is the one check the API makes before dispatching a command: role
//! (the [`crate::permissions`] matrix), then subscription, then module. All three are
//! pure functions of the hospital's state and the instant, so they are tested here and
//! not re-implemented in resolvers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::Actor;
use crate::hospital::{Hospital, SubscriptionStatus};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};
use crate::plan::{Module, Plan};

/// Why a hospital may read but not write. Each case has its own variant because each
/// has a different remedy (choose a plan, pay, contact the platform).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the hospital is not registered")]
    NotRegistered,
    #[error("the free trial ended at {ended_at}; choose a plan to continue")]
    TrialExpired { ended_at: DateTime<Utc> },
    #[error("the subscription is suspended; the hospital can read but not write")]
    Suspended,
    #[error("the subscription is cancelled; the hospital can read but not write")]
    Cancelled,
}

/// A module the operation needs is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("the {plan} plan does not include the {module:?} module")]
    NotInPlan { module: Module, plan: Plan },
    #[error("the {0:?} module is disabled for this hospital")]
    Disabled(Module),
}

/// The things a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitedResource {
    Users,
    Patients,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {plan} plan allows at most {limit} {resource:?}")]
pub struct PlanLimitReached {
    pub resource: LimitedResource,
    pub limit: u32,
    pub plan: Plan,
}

/// Everything [`authorize`] can refuse, one variant per API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Module(#[from] ModuleError),
}

impl Hospital {
    /// May the hospital write at `now`? Reads are always allowed. A past-due
    /// subscription still writes: it is the grace period before suspension.
    pub fn write_access(&self, now: DateTime<Utc>) -> Result<(), SubscriptionError> {
        match self.status {
            None => Err(SubscriptionError::NotRegistered),
            Some(SubscriptionStatus::Cancelled) => Err(SubscriptionError::Cancelled),
            Some(SubscriptionStatus::Suspended) => Err(SubscriptionError::Suspended),
            Some(SubscriptionStatus::Trial) => match self.trial_ends_at {
                Some(ended_at) if now >= ended_at => {
                    Err(SubscriptionError::TrialExpired { ended_at })
                }
                _ => Ok(()),
            },
            Some(SubscriptionStatus::Active | SubscriptionStatus::PastDue) => Ok(()),
        }
    }

    /// Is `module` usable: in the plan and switched on?
    pub fn module_access(&self, module: Module) -> Result<(), ModuleError> {
        let plan = self.plan.unwrap_or(Plan::Trial);
        if !plan.allows(module) {
            return Err(ModuleError::NotInPlan { module, plan });
        }
        if module.is_core() || self.modules.contains(&module) {
            Ok(())
        } else {
            Err(ModuleError::Disabled(module))
        }
    }

    /// How many of `resource` the plan allows; `None` when unlimited (then nothing needs
    /// counting).
    pub fn capacity_of(&self, resource: LimitedResource) -> Option<u32> {
        let limits = self.plan.unwrap_or(Plan::Trial).limits();
        match resource {
            LimitedResource::Users => limits.max_users,
            LimitedResource::Patients => limits.max_patients,
        }
    }

    /// May one more `resource` be added when `current` exist? The count comes from a read
    /// model, so two racing creations can overshoot the limit by one: acceptable for a
    /// commercial limit, and the reason it is not a hard invariant in an aggregate.
    pub fn ensure_capacity(
        &self,
        resource: LimitedResource,
        current: u32,
    ) -> Result<(), PlanLimitReached> {
        match self.capacity_of(resource) {
            Some(limit) if current >= limit => Err(PlanLimitReached {
                resource,
                limit,
                plan: self.plan.unwrap_or(Plan::Trial),
            }),
            _ => Ok(()),
        }
    }
}

/// Role, then subscription, then module: the order in which a user can do something
/// about the refusal.
pub fn authorize(
    actor: &Actor,
    operation: Operation,
    hospital: &Hospital,
    now: DateTime<Utc>,
) -> Result<(), AccessError> {
    ensure_allowed(actor, operation)?;
    if operation.needs_active_subscription() {
        hospital.write_access(now)?;
    }
    if let Some(module) = operation.module() {
        hospital.module_access(module)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Role;
    use crate::hospital::{test_support::*, HospitalCommand};
    use chrono::Duration;

    fn actor(role: Role) -> Actor {
        Actor {
            user_id: uuid::Uuid::from_u128(7),
            username: "someone".into(),
            role,
        }
    }

    #[test]
    fn a_trial_hospital_writes_until_the_trial_ends() {
        let h = hospital_after(Plan::Trial, vec![]);
        assert_eq!(h.write_access(now()), Ok(()));
        assert_eq!(h.write_access(now() + Duration::days(29)), Ok(()));
        assert_eq!(
            h.write_access(now() + Duration::days(30)),
            Err(SubscriptionError::TrialExpired {
                ended_at: now() + Duration::days(30)
            })
        );
    }

    #[test]
    fn suspended_cancelled_and_unregistered_hospitals_get_distinct_errors() {
        let admin = platform();
        let suspended = hospital_after(
            Plan::Basic,
            vec![HospitalCommand::SuspendSubscription {
                actor: admin.clone(),
                reason: text("unpaid"),
                now: now(),
            }],
        );
        assert_eq!(
            suspended.write_access(now()),
            Err(SubscriptionError::Suspended)
        );
        let cancelled = hospital_after(
            Plan::Basic,
            vec![HospitalCommand::CancelSubscription {
                actor: admin,
                reason: text("closing"),
                now: now(),
            }],
        );
        assert_eq!(
            cancelled.write_access(now()),
            Err(SubscriptionError::Cancelled)
        );
        assert_eq!(
            Hospital::default().write_access(now()),
            Err(SubscriptionError::NotRegistered)
        );
    }

    #[test]
    fn a_past_due_hospital_still_writes() {
        let h = hospital_after(
            Plan::Basic,
            vec![HospitalCommand::MarkPastDue {
                actor: platform(),
                now: now(),
            }],
        );
        assert_eq!(h.status, Some(SubscriptionStatus::PastDue));
        assert_eq!(h.write_access(now()), Ok(()));
    }

    #[test]
    fn authorize_checks_role_then_subscription_then_module() {
        let basic = hospital_after(Plan::Basic, vec![]);
        let later = now() + Duration::days(400);
        assert!(matches!(
            authorize(&actor(Role::Staff), Operation::DraftInvoice, &basic, now()),
            Err(AccessError::Forbidden(_))
        ));
        assert_eq!(
            authorize(
                &actor(Role::Accountant),
                Operation::DraftInvoice,
                &basic,
                now()
            ),
            Ok(())
        );
        assert_eq!(
            authorize(&actor(Role::Doctor), Operation::ViewReports, &basic, now()),
            Err(AccessError::Module(ModuleError::NotInPlan {
                module: Module::Reports,
                plan: Plan::Basic
            }))
        );
        let expired = hospital_after(Plan::Trial, vec![]);
        assert!(matches!(
            authorize(
                &actor(Role::Receptionist),
                Operation::RegisterPatient,
                &expired,
                later
            ),
            Err(AccessError::Subscription(
                SubscriptionError::TrialExpired { .. }
            ))
        ));
        // Reads stay open, and so does the way out (the operator moving it to a plan).
        assert_eq!(
            authorize(
                &actor(Role::Receptionist),
                Operation::ViewPatient,
                &expired,
                later
            ),
            Ok(())
        );
        assert_eq!(
            authorize(
                &actor(Role::SuperAdmin),
                Operation::ChangePlan,
                &expired,
                later
            ),
            Ok(())
        );
    }

    #[test]
    fn a_disabled_module_refuses_its_operations() {
        let h = hospital_after(
            Plan::Basic,
            vec![HospitalCommand::DisableModule {
                actor: admin(),
                module: Module::Billing,
                now: now(),
            }],
        );
        assert_eq!(
            authorize(&actor(Role::Accountant), Operation::IssueInvoice, &h, now()),
            Err(AccessError::Module(ModuleError::Disabled(Module::Billing)))
        );
    }

    #[test]
    fn plan_limits_are_enforced_not_displayed() {
        let h = hospital_after(Plan::Trial, vec![]);
        assert_eq!(h.ensure_capacity(LimitedResource::Users, 9), Ok(()));
        assert_eq!(
            h.ensure_capacity(LimitedResource::Users, 10),
            Err(PlanLimitReached {
                resource: LimitedResource::Users,
                limit: 10,
                plan: Plan::Trial
            })
        );
        let e = hospital_after(Plan::Enterprise, vec![]);
        assert_eq!(
            e.ensure_capacity(LimitedResource::Patients, u32::MAX),
            Ok(())
        );
    }
}
