//! The events of the appointment aggregate, with their persisted names and versions.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppointmentStatus;

/// Events carry both UTC instants and the local day, which is what "appointments by
/// doctor and day" read models and the schedule streams are keyed by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppointmentEvent {
    AppointmentScheduled {
        appointment_id: Uuid,
        patient_id: Uuid,
        doctor_id: Uuid,
        department_id: Option<Uuid>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        local_date: NaiveDate,
        reason: String,
        status: AppointmentStatus,
        at: DateTime<Utc>,
    },
    AppointmentRescheduled {
        previous_start: DateTime<Utc>,
        previous_end: DateTime<Utc>,
        previous_local_date: NaiveDate,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        local_date: NaiveDate,
        at: DateTime<Utc>,
    },
    AppointmentCheckedIn {
        at: DateTime<Utc>,
    },
    AppointmentStarted {
        at: DateTime<Utc>,
    },
    AppointmentCompleted {
        notes: Option<String>,
        at: DateTime<Utc>,
    },
    AppointmentCancelled {
        reason: String,
        at: DateTime<Utc>,
    },
    AppointmentNoShow {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AppointmentEvent {
    fn event_type(&self) -> String {
        use AppointmentEvent as E;
        match self {
            E::AppointmentScheduled { .. } => "AppointmentScheduled",
            E::AppointmentRescheduled { .. } => "AppointmentRescheduled",
            E::AppointmentCheckedIn { .. } => "AppointmentCheckedIn",
            E::AppointmentStarted { .. } => "AppointmentStarted",
            E::AppointmentCompleted { .. } => "AppointmentCompleted",
            E::AppointmentCancelled { .. } => "AppointmentCancelled",
            E::AppointmentNoShow { .. } => "AppointmentNoShow",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
