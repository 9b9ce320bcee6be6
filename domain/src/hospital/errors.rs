//! The errors the hospital aggregate refuses commands with.

use uuid::Uuid;

use super::SubscriptionStatus;
use crate::access::{ModuleError, SubscriptionError};
use crate::common::ValidationError;
use crate::permissions::PermissionDenied;
use crate::plan::Module;

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
