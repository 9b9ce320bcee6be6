//! The commands of the appointment aggregate, the outside facts they carry
//! ([`BookingPolicy`], [`DoctorFacts`]), and the permission and status-changing act of
//! each one.

use chrono::{DateTime, FixedOffset, Utc};
use uuid::Uuid;

use super::AppointmentAction;
use crate::common::{Actor, BoundedText, Role};
use crate::hospital::{HospitalSettings, SlotLength, WorkingWeek};
use crate::permissions::Operation;

/// The hospital settings a booking is checked against (from
/// [`crate::hospital::Hospital::settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingPolicy {
    pub working_week: WorkingWeek,
    pub slot_length: SlotLength,
}

impl From<&HospitalSettings> for BookingPolicy {
    fn from(settings: &HospitalSettings) -> Self {
        Self {
            working_week: settings.working_week,
            slot_length: settings.slot_length,
        }
    }
}

/// What the caller found out about the doctor (from the staff read model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoctorFacts {
    pub active: bool,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppointmentCommand {
    Schedule {
        actor: Actor,
        appointment_id: Uuid,
        patient_id: Uuid,
        doctor_id: Uuid,
        department_id: Option<Uuid>,
        /// The start in the hospital's local time, with its UTC offset at that instant.
        start: DateTime<FixedOffset>,
        minutes: u32,
        reason: BoundedText,
        policy: BookingPolicy,
        doctor: DoctorFacts,
        patient_active: bool,
        now: DateTime<Utc>,
    },
    Reschedule {
        actor: Actor,
        start: DateTime<FixedOffset>,
        minutes: u32,
        policy: BookingPolicy,
        now: DateTime<Utc>,
    },
    CheckIn {
        actor: Actor,
        now: DateTime<Utc>,
    },
    Start {
        actor: Actor,
        now: DateTime<Utc>,
    },
    Complete {
        actor: Actor,
        notes: Option<BoundedText>,
        now: DateTime<Utc>,
    },
    Cancel {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    MarkNoShow {
        actor: Actor,
        now: DateTime<Utc>,
    },
}

impl AppointmentCommand {
    pub fn actor(&self) -> &Actor {
        use AppointmentCommand as C;
        match self {
            C::Schedule { actor, .. }
            | C::Reschedule { actor, .. }
            | C::CheckIn { actor, .. }
            | C::Start { actor, .. }
            | C::Complete { actor, .. }
            | C::Cancel { actor, .. }
            | C::MarkNoShow { actor, .. } => actor,
        }
    }

    pub fn operation(&self) -> Operation {
        use AppointmentCommand as C;
        match self {
            C::Schedule { .. } => Operation::ScheduleAppointment,
            C::Reschedule { .. } => Operation::RescheduleAppointment,
            C::CheckIn { .. } => Operation::CheckInAppointment,
            C::Start { .. } => Operation::StartAppointment,
            C::Complete { .. } => Operation::CompleteAppointment,
            C::Cancel { .. } => Operation::CancelAppointment,
            C::MarkNoShow { .. } => Operation::MarkNoShow,
        }
    }

    /// The status-changing act, for all but `Schedule` (which starts the stream).
    pub fn action(&self) -> Option<AppointmentAction> {
        use AppointmentAction as A;
        use AppointmentCommand as C;
        match self {
            C::Schedule { .. } => None,
            C::Reschedule { .. } => Some(A::Reschedule),
            C::CheckIn { .. } => Some(A::CheckIn),
            C::Start { .. } => Some(A::Start),
            C::Complete { .. } => Some(A::Complete),
            C::Cancel { .. } => Some(A::Cancel),
            C::MarkNoShow { .. } => Some(A::MarkNoShow),
        }
    }
}
