//! The errors the patient aggregate refuses commands with.

use uuid::Uuid;

use super::{PatientStatus, MAX_AGE_YEARS};
use crate::common::ValidationError;
use crate::permissions::PermissionDenied;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientError {
    #[error("the patient is already registered")]
    AlreadyRegistered,
    #[error("the patient does not exist")]
    NotFound,
    #[error("MRN {mrn} was not issued by hospital {hospital}")]
    MrnFromAnotherHospital { mrn: String, hospital: String },
    #[error("the date of birth is in the future")]
    DateOfBirthInFuture,
    #[error("the date of birth is more than {MAX_AGE_YEARS} years ago")]
    DateOfBirthTooOld,
    #[error("an allergy to '{0}' is already recorded")]
    AllergyAlreadyRecorded(String),
    #[error("no allergy to '{0}' is recorded")]
    AllergyNotFound(String),
    #[error("alert {0} exists already")]
    AlertAlreadyExists(Uuid),
    #[error("alert {0} does not exist")]
    AlertNotFound(Uuid),
    #[error("the patient is already recorded as deceased")]
    AlreadyDeceased,
    #[error("the time of death is in the future")]
    DeathInFuture,
    #[error("the time of death is before the date of birth")]
    DeathBeforeBirth,
    #[error("the patient is {0:?}, not active")]
    NotActive(PatientStatus),
    #[error("the patient is not inactive")]
    NotInactive,
    #[error("this record was merged into patient {survivor_id} and is read-only")]
    Merged { survivor_id: Uuid },
    #[error("the patient's record was erased")]
    Erased,
    #[error("erasure was asked for already; a second administrator approves it")]
    ErasureAlreadyRequested,
    #[error("no erasure was asked for")]
    NoErasureRequested,
    #[error("the administrator who asked for the erasure cannot also approve it")]
    SameAdministrator,
    #[error("the record must be kept until {0} (the retention period after the last contact)")]
    InRetention(chrono::DateTime<chrono::Utc>),
    #[error("the record is not restricted")]
    NotRestricted,
    #[error("at most {0} staff can be named on a restricted record")]
    TooManyNamed(usize),
    #[error("a patient cannot be merged into itself")]
    CannotMergeIntoSelf,
    #[error("the surviving record is not active")]
    SurvivorNotActive,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}
