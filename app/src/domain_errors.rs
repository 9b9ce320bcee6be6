//! How each aggregate's refusal reaches a client: one mapping per domain error type,
//! from the domain's reason to a category (NOT_FOUND, CONFLICT, VALIDATION with its
//! field, FORBIDDEN).

use hms_domain::appointment::AppointmentError;
use hms_domain::billing::InvoiceError;
use hms_domain::billing::MoneyError;
use hms_domain::break_glass::BreakGlassError;
use hms_domain::hospital::HospitalError;
use hms_domain::lab::LabError;
use hms_domain::patient::PatientError;
use hms_domain::record_access::RecordAccessError;
use hms_domain::schedule::ScheduleError;
use hms_domain::user::UserError;

use crate::error::{AppError, DomainErrorCode};

impl DomainErrorCode for AppointmentError {
    fn to_app_error(&self) -> AppError {
        use AppointmentError as E;
        let message = self.to_string();
        match self {
            E::NotFound => AppError::NotFound,
            E::AlreadyScheduled
            | E::IllegalTransition { .. }
            | E::DoctorInactive
            | E::PatientInactive
            | E::NoShowBeforeStart => AppError::Conflict(message),
            E::InThePast | E::ClosedThatDay | E::OutsideWorkingHours | E::NotOnSlotGrid(_) => {
                AppError::validation("start", message)
            }
            E::NotADoctor(_) => AppError::validation("doctorId", message),
            E::NotTheAppointmentsDoctor | E::Forbidden(_) => AppError::Forbidden,
            E::Validation(e) => AppError::validation(e.field, e.message.clone()),
        }
    }
}

impl DomainErrorCode for ScheduleError {
    fn to_app_error(&self) -> AppError {
        use ScheduleError as E;
        match self {
            E::SlotTaken { .. } => AppError::Conflict(
                "the time slot is already taken by an overlapping appointment".into(),
            ),
            E::AlreadyReservedDifferently(_) | E::NotReserved(_) => {
                AppError::Conflict(self.to_string())
            }
            E::CrossesMidnight => AppError::validation("start", self.to_string()),
            // Stream ids are made here from the owner and the day: a mismatch is a bug.
            E::WrongStream { .. } => AppError::internal(self.to_string()),
            E::Forbidden(_) => AppError::Forbidden,
            E::Validation(e) => AppError::validation(e.field, e.message.clone()),
        }
    }
}

impl DomainErrorCode for InvoiceError {
    fn to_app_error(&self) -> AppError {
        use InvoiceError as E;
        match self {
            E::NotFound | E::LineNotFound(_) | E::PaymentNotFound(_) => AppError::NotFound,
            // States that forbid the request whatever its values: reload and rethink.
            E::AlreadyDrafted
            | E::NotDraft(_)
            | E::DuplicateLine(_)
            | E::NoLines
            | E::NothingToBill
            | E::NotPayable(_)
            | E::DuplicatePayment(_)
            | E::DuplicateRefund(_)
            | E::HasPayments
            | E::NotVoidable(_) => AppError::Conflict(self.to_string()),
            // The amount given is wrong for this invoice: the client fixes the field.
            E::NonPositiveAmount | E::Overpayment { .. } | E::RefundExceedsPayment { .. } => {
                AppError::validation("amountMinor", self.to_string())
            }
            E::Money(MoneyError::CurrencyMismatch { .. }) => {
                AppError::validation("currency", self.to_string())
            }
            E::Money(MoneyError::Overflow) => AppError::validation("amountMinor", self.to_string()),
            E::Forbidden(_) => AppError::Forbidden,
            E::Validation(v) => AppError::validation(api_field(v.field), v.message.clone()),
        }
    }
}

impl DomainErrorCode for HospitalError {
    fn to_app_error(&self) -> AppError {
        match self {
            HospitalError::NotRegistered | HospitalError::DepartmentNotFound(_) => {
                AppError::NotFound
            }
            HospitalError::Forbidden(_) => AppError::Forbidden,
            HospitalError::Subscription(e) => AppError::SubscriptionInactive(e.to_string()),
            HospitalError::Module(e) => AppError::ModuleDisabled(e.to_string()),
            HospitalError::Validation(e) => AppError::from(e.clone()),
            HospitalError::TrialIsNotAPaidPlan => AppError::validation("plan", self.to_string()),
            HospitalError::PeriodEndNotInFuture => {
                AppError::validation("periodEndsAt", self.to_string())
            }
            HospitalError::CoreModule(_) => AppError::validation("module", self.to_string()),
            HospitalError::AlreadyRegistered
            | HospitalError::DuplicateDepartment(_)
            | HospitalError::DepartmentIdTaken(_)
            | HospitalError::DepartmentAlreadyInactive(_)
            | HospitalError::DepartmentAlreadyActive(_)
            | HospitalError::ModuleAlreadyEnabled(_)
            | HospitalError::ModuleAlreadyDisabled(_)
            | HospitalError::IllegalSubscriptionChange { .. } => {
                AppError::Conflict(self.to_string())
            }
        }
    }
}

impl DomainErrorCode for UserError {
    fn to_app_error(&self) -> AppError {
        match self {
            UserError::NotFound => AppError::NotFound,
            UserError::Forbidden(_) => AppError::Forbidden,
            UserError::Validation(e) => AppError::from(e.clone()),
            UserError::RoleNotAllowed(_) => AppError::validation("role", self.to_string()),
            UserError::InvalidPasswordHash => AppError::internal(self.to_string()),
            UserError::AlreadyExists => {
                AppError::Conflict("a user with this username exists already".into())
            }
            UserError::AlreadyDeactivated
            | UserError::AlreadyActive
            | UserError::RoleUnchanged(_)
            | UserError::LastActiveAdmin
            | UserError::CannotDeactivateSelf => AppError::Conflict(self.to_string()),
        }
    }
}

impl DomainErrorCode for PatientError {
    fn to_app_error(&self) -> AppError {
        use PatientError as E;
        let message = self.to_string();
        match self {
            E::NotFound | E::AlertNotFound(_) => AppError::NotFound,
            E::AlreadyRegistered
            | E::AllergyAlreadyRecorded(_)
            | E::AlertAlreadyExists(_)
            | E::AlreadyDeceased
            | E::NotActive(_)
            | E::NotInactive
            | E::Merged { .. }
            | E::NotRestricted
            | E::Erased
            | E::ErasureAlreadyRequested
            | E::NoErasureRequested
            | E::InRetention(_)
            // Four eyes: the same administrator cannot do both halves.
            | E::SameAdministrator
            | E::SurvivorNotActive => AppError::Conflict(message),
            E::TooManyNamed(_) => AppError::validation("namedUsers", message),
            E::DateOfBirthInFuture | E::DateOfBirthTooOld => {
                AppError::validation("dateOfBirth", message)
            }
            E::DeathInFuture | E::DeathBeforeBirth => AppError::validation("diedAt", message),
            E::AllergyNotFound(_) => AppError::validation("substance", message),
            E::CannotMergeIntoSelf => AppError::validation("survivorId", message),
            // The MRN is made by this API from the tenant's own code: a mismatch is a bug.
            E::MrnFromAnotherHospital { .. } => AppError::internal(message),
            E::Forbidden(_) => AppError::Forbidden,
            E::Validation(e) => AppError::validation(e.field, e.message.clone()),
        }
    }
}

impl DomainErrorCode for RecordAccessError {
    fn to_app_error(&self) -> AppError {
        match self {
            // Each view has a fresh stream id, so this means the id was reused: a bug.
            RecordAccessError::AlreadyRecorded => AppError::internal(self.to_string()),
            // The use cases name each patient of a page once: a bug too.
            RecordAccessError::PatientCount => AppError::internal(self.to_string()),
        }
    }
}

/// The API's input field a billing validation error is about.
fn api_field(domain_field: &str) -> &str {
    match domain_field {
        "unit_price" => "unitPriceMinor",
        "discount" => "discount",
        "tax" => "basisPoints",
        "invoice_number" => "number",
        other => other,
    }
}

impl DomainErrorCode for LabError {
    fn to_app_error(&self) -> AppError {
        use LabError as E;
        let message = self.to_string();
        match self {
            E::TestNotFound | E::OrderNotFound | E::ItemNotFound(_) | E::SpecimenNotFound(_) => {
                AppError::NotFound
            }
            // The record's state forbids the request whatever its values.
            E::TestExists(_)
            | E::TestRetired
            | E::NothingChanged
            | E::OrderExists
            | E::OrderClosed(_)
            | E::SpecimenExists(_)
            | E::SpecimenAlreadyCollected(_)
            | E::SpecimenNotAwaited(_)
            | E::SpecimenInUse
            | E::SpecimenNotReceived(_)
            | E::ResultFinal
            | E::NotFinal
            | E::NothingToVerify(_)
            | E::SameTechnician
            | E::HasResults
            | E::NotVerified
            | E::AlreadyBilled => AppError::Conflict(message),
            E::LabelTaken(_) => AppError::Conflict(message),
            E::CodeChanged => AppError::validation("code", message),
            E::NoTests | E::TooManyTests(_) | E::DuplicateTest(_) | E::PanelIncomplete(_) => {
                AppError::validation("tests", message)
            }
            E::MixedCurrencies => AppError::validation("tests", message),
            E::NoTestsForSpecimen(_) => AppError::validation("specimenType", message),
            E::WrongUnit { .. } => AppError::validation("unit", message),
            E::WrongKind { .. } | E::UnknownAnswer { .. } => AppError::validation("value", message),
            E::Forbidden(_) => AppError::Forbidden,
            E::Validation(e) => AppError::validation(e.field, e.message.clone()),
        }
    }
}

impl DomainErrorCode for BreakGlassError {
    fn to_app_error(&self) -> AppError {
        use BreakGlassError as E;
        let message = self.to_string();
        match self {
            E::GrantNotFound(_) => AppError::NotFound,
            E::DuplicateGrant(_) | E::AlreadyReviewed(_) => AppError::Conflict(message),
            // Streams are named here from the user and the patient: a mismatch is a bug.
            E::WrongStream => AppError::internal(message),
            E::OwnAccess | E::Forbidden(_) => AppError::Forbidden,
            E::Validation(e) => AppError::validation(e.field, e.message.clone()),
        }
    }
}
