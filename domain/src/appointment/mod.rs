//! The appointment aggregate: one stream per appointment, owning its status machine.
//!
//! ```text
//! SCHEDULED ──CheckIn──▶ CHECKED_IN ──Start──▶ IN_PROGRESS ──Complete──▶ COMPLETED
//!    │  ▲                    │
//!    │  └─Reschedule         └──Cancel──▶ CANCELLED
//!    ├──Cancel──▶ CANCELLED
//!    └──MarkNoShow (at or after the start)──▶ NO_SHOW
//! ```
//! [`transition`] is that table; everything else is refused with
//! [`AppointmentError::IllegalTransition`].
//!
//! No double booking is not decided here but in the per-day schedules of
//! [`crate::schedule`] (ADR 0002). A booking is three decisions that the caller appends
//! together, in one statement, or not at all:
//! 1. `Reserve` on the doctor's [`crate::schedule::DoctorSchedule`] of that local day;
//! 2. `Reserve` on the patient's [`crate::schedule::PatientSchedule`];
//! 3. [`AppointmentCommand::Schedule`] here.
//!
//! Cancelling, no-show and rescheduling release (and re-reserve) slots in the same unit
//! as the appointment's change. `Release` with `Compensation` undid a step of the earlier,
//! stepwise bookings; it stays for the events they wrote and for the reservation sweep.
//! To fail fast before deciding, the caller may run [`validate_slot`] first; `Schedule`
//! runs it again.
//!
//! Facts from outside arrive in the command: the hospital's working hours and slot length
//! ([`BookingPolicy`]), whether the doctor is an active DOCTOR ([`DoctorFacts`]), whether
//! the patient is active, and `now`.

mod commands;
mod errors;
mod events;

pub use commands::*;
pub use errors::*;
pub use events::*;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, Role};
use crate::permissions::ensure_allowed;
use crate::schedule::check_minutes;

pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_NOTES_CHARS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppointmentStatus {
    Scheduled,
    CheckedIn,
    InProgress,
    Completed,
    Cancelled,
    NoShow,
}

impl AppointmentStatus {
    pub const ALL: [AppointmentStatus; 6] = [
        AppointmentStatus::Scheduled,
        AppointmentStatus::CheckedIn,
        AppointmentStatus::InProgress,
        AppointmentStatus::Completed,
        AppointmentStatus::Cancelled,
        AppointmentStatus::NoShow,
    ];

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AppointmentStatus::Completed | AppointmentStatus::Cancelled | AppointmentStatus::NoShow
        )
    }

    /// Does the appointment still hold its slots?
    pub fn holds_slot(self) -> bool {
        matches!(
            self,
            AppointmentStatus::Scheduled
                | AppointmentStatus::CheckedIn
                | AppointmentStatus::InProgress
        )
    }
}

/// The status-changing acts, for [`transition`] and its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppointmentAction {
    Reschedule,
    CheckIn,
    Start,
    Complete,
    Cancel,
    MarkNoShow,
}

impl AppointmentAction {
    pub const ALL: [AppointmentAction; 6] = [
        AppointmentAction::Reschedule,
        AppointmentAction::CheckIn,
        AppointmentAction::Start,
        AppointmentAction::Complete,
        AppointmentAction::Cancel,
        AppointmentAction::MarkNoShow,
    ];
}

impl fmt::Display for AppointmentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The status machine as one table: the status after `action`, or `None` if illegal.
pub fn transition(from: AppointmentStatus, action: AppointmentAction) -> Option<AppointmentStatus> {
    use AppointmentAction as A;
    use AppointmentStatus as S;
    match (from, action) {
        (S::Scheduled, A::Reschedule) => Some(S::Scheduled),
        (S::Scheduled, A::CheckIn) => Some(S::CheckedIn),
        (S::Scheduled | S::CheckedIn, A::Cancel) => Some(S::Cancelled),
        (S::Scheduled, A::MarkNoShow) => Some(S::NoShow),
        (S::CheckedIn, A::Start) => Some(S::InProgress),
        (S::InProgress, A::Complete) => Some(S::Completed),
        _ => None,
    }
}

/// A checked time slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub local_date: NaiveDate,
}

/// Not in the past, on the slot grid, inside the day's working hours.
pub fn validate_slot(
    start: DateTime<FixedOffset>,
    minutes: u32,
    policy: &BookingPolicy,
    now: DateTime<Utc>,
) -> Result<Slot, AppointmentError> {
    let length = check_minutes(minutes)?;
    if start.with_timezone(&Utc) < now {
        return Err(AppointmentError::InThePast);
    }
    let slot = policy.slot_length.get();
    let minute_of_day = start.hour() * 60 + start.minute();
    // `checked_rem` rather than `%` or `is_multiple_of`: clean under clippy whether or not
    // the crate declares the workspace MSRV (1.85, before `is_multiple_of`).
    let on_grid = |n: u32| n.checked_rem(slot) == Some(0);
    if !on_grid(minutes) || !on_grid(minute_of_day) || start.second() != 0 {
        return Err(AppointmentError::NotOnSlotGrid(slot));
    }
    let hours = policy
        .working_week
        .on(start.weekday())
        .ok_or(AppointmentError::ClosedThatDay)?;
    let end = start + length;
    if end.date_naive() != start.date_naive() || !hours.contains(start.time(), end.time()) {
        return Err(AppointmentError::OutsideWorkingHours);
    }
    Ok(Slot {
        start: start.with_timezone(&Utc),
        end: end.with_timezone(&Utc),
        local_date: start.date_naive(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    pub id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub doctor_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    pub status: Option<AppointmentStatus>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub local_date: Option<NaiveDate>,
    pub notes: Option<String>,
}

impl Appointment {
    pub fn decide(
        &self,
        command: AppointmentCommand,
    ) -> Result<Vec<AppointmentEvent>, AppointmentError> {
        use AppointmentCommand as C;
        use AppointmentEvent as E;
        let actor = command.actor().clone();
        ensure_allowed(&actor, command.operation())?;
        if let Some(action) = command.action() {
            let from = self.status.ok_or(AppointmentError::NotFound)?;
            if transition(from, action).is_none() {
                return Err(AppointmentError::IllegalTransition { from, action });
            }
        }
        let event = match command {
            C::Schedule {
                appointment_id,
                patient_id,
                doctor_id,
                department_id,
                start,
                minutes,
                reason,
                policy,
                doctor,
                patient_active,
                now,
                ..
            } => {
                if self.status.is_some() {
                    return Err(AppointmentError::AlreadyScheduled);
                }
                if doctor.role != Role::Doctor {
                    return Err(AppointmentError::NotADoctor(doctor.role));
                }
                if !doctor.active {
                    return Err(AppointmentError::DoctorInactive);
                }
                if !patient_active {
                    return Err(AppointmentError::PatientInactive);
                }
                let slot = validate_slot(start, minutes, &policy, now)?;
                E::AppointmentScheduled {
                    appointment_id,
                    patient_id,
                    doctor_id,
                    department_id,
                    start: slot.start,
                    end: slot.end,
                    local_date: slot.local_date,
                    reason: reason.to_string(),
                    status: AppointmentStatus::Scheduled,
                    at: now,
                }
            }
            C::Reschedule {
                start,
                minutes,
                policy,
                now,
                ..
            } => {
                let slot = validate_slot(start, minutes, &policy, now)?;
                let (Some(previous_start), Some(previous_end), Some(previous_local_date)) =
                    (self.start, self.end, self.local_date)
                else {
                    return Err(AppointmentError::NotFound);
                };
                E::AppointmentRescheduled {
                    previous_start,
                    previous_end,
                    previous_local_date,
                    start: slot.start,
                    end: slot.end,
                    local_date: slot.local_date,
                    at: now,
                }
            }
            C::CheckIn { now, .. } => E::AppointmentCheckedIn { at: now },
            C::Start { now, .. } => {
                self.ensure_own_doctor(&actor)?;
                E::AppointmentStarted { at: now }
            }
            C::Complete { notes, now, .. } => {
                self.ensure_own_doctor(&actor)?;
                E::AppointmentCompleted {
                    notes: notes.map(|n| n.to_string()),
                    at: now,
                }
            }
            C::Cancel { reason, now, .. } => E::AppointmentCancelled {
                reason: reason.to_string(),
                at: now,
            },
            C::MarkNoShow { now, .. } => {
                if self.start.is_some_and(|start| now < start) {
                    return Err(AppointmentError::NoShowBeforeStart);
                }
                E::AppointmentNoShow { at: now }
            }
        };
        Ok(vec![event])
    }

    /// A doctor acts clinically only on their own appointments.
    fn ensure_own_doctor(&self, actor: &Actor) -> Result<(), AppointmentError> {
        if actor.role == Role::Doctor && self.doctor_id != Some(actor.user_id) {
            Err(AppointmentError::NotTheAppointmentsDoctor)
        } else {
            Ok(())
        }
    }
}

impl Aggregate for Appointment {
    const TYPE: &'static str = "appointment";
    type Command = AppointmentCommand;
    type Event = AppointmentEvent;
    type Error = AppointmentError;
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
        use AppointmentEvent as E;
        use AppointmentStatus as S;
        match event {
            E::AppointmentScheduled {
                appointment_id,
                patient_id,
                doctor_id,
                department_id,
                start,
                end,
                local_date,
                status,
                ..
            } => {
                self.id = Some(appointment_id);
                self.patient_id = Some(patient_id);
                self.doctor_id = Some(doctor_id);
                self.department_id = department_id;
                self.start = Some(start);
                self.end = Some(end);
                self.local_date = Some(local_date);
                self.status = Some(status);
            }
            E::AppointmentRescheduled {
                start,
                end,
                local_date,
                ..
            } => {
                self.start = Some(start);
                self.end = Some(end);
                self.local_date = Some(local_date);
            }
            E::AppointmentCheckedIn { .. } => self.status = Some(S::CheckedIn),
            E::AppointmentStarted { .. } => self.status = Some(S::InProgress),
            E::AppointmentCompleted { notes, .. } => {
                self.notes = notes;
                self.status = Some(S::Completed);
            }
            E::AppointmentCancelled { .. } => self.status = Some(S::Cancelled),
            E::AppointmentNoShow { .. } => self.status = Some(S::NoShow),
        }
    }
}
