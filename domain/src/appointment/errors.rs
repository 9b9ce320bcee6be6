//! The errors the appointment aggregate refuses commands with.

use super::{AppointmentAction, AppointmentStatus};
use crate::common::{Role, ValidationError};
use crate::permissions::PermissionDenied;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppointmentError {
    #[error("the appointment exists already")]
    AlreadyScheduled,
    #[error("the appointment does not exist")]
    NotFound,
    #[error("an appointment that is {from:?} cannot {action}")]
    IllegalTransition {
        from: AppointmentStatus,
        action: AppointmentAction,
    },
    #[error("the appointment would start in the past")]
    InThePast,
    #[error("the hospital is closed on that day")]
    ClosedThatDay,
    #[error("the appointment is outside working hours")]
    OutsideWorkingHours,
    #[error("appointments start and last in whole slots of {0} minutes")]
    NotOnSlotGrid(u32),
    #[error("the doctor's account is not active")]
    DoctorInactive,
    #[error("the user is a {0}, not a DOCTOR")]
    NotADoctor(Role),
    #[error("the patient is not active")]
    PatientInactive,
    #[error("a patient cannot be marked as a no-show before the appointment starts")]
    NoShowBeforeStart,
    #[error("only the appointment's own doctor can do this")]
    NotTheAppointmentsDoctor,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}
