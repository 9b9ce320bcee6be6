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
//! [`crate::schedule`] (ADR 0002). Booking is three appends, in this order, by the caller:
//! 1. `Reserve` on the doctor's [`crate::schedule::DoctorSchedule`] of that local day;
//! 2. `Reserve` on the patient's [`crate::schedule::PatientSchedule`] (on failure,
//!    `Release` step 1 with `Compensation`);
//! 3. [`AppointmentCommand::Schedule`] here (on failure, release both).
//!
//! Steps 1–2 are idempotent for the same appointment id, so a crashed booking is finished by
//! running it again. Cancelling, no-show and rescheduling release (and re-reserve) slots in
//! the same way. To fail fast before reserving, the caller may run [`validate_slot`] first;
//! `Schedule` runs it again.
//!
//! Facts from outside arrive in the command: the hospital's working hours and slot length
//! ([`BookingPolicy`]), whether the doctor is an active DOCTOR ([`DoctorFacts`]), whether
//! the patient is active, and `now`.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, BoundedText, Role, ValidationError};
use crate::hospital::{HospitalSettings, SlotLength, WorkingWeek};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};
use crate::schedule::check_minutes;

pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_NOTES_CHARS: usize = 10_000;

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

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use chrono::NaiveTime;

    pub const DOCTOR: Uuid = Uuid::from_u128(0xD0C);
    pub const PATIENT: Uuid = Uuid::from_u128(0x9A7);
    pub const APPT: Uuid = Uuid::from_u128(0xA99);

    /// Monday 5 January 2026, 07:00 in Nairobi (UTC+3).
    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T04:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    pub fn local(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("valid")
    }

    pub fn actor(role: Role) -> Actor {
        let user_id = if role == Role::Doctor {
            DOCTOR
        } else {
            Uuid::from_u128(0x5EC)
        };
        Actor {
            user_id,
            username: "someone".into(),
            role,
        }
    }

    pub fn policy() -> BookingPolicy {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("valid");
        let hours = crate::hospital::WorkingHours::new(t(8), t(17)).expect("valid");
        BookingPolicy {
            working_week: WorkingWeek::new([
                Some(hours),
                Some(hours),
                Some(hours),
                Some(hours),
                Some(hours),
                None,
                None,
            ]),
            slot_length: SlotLength::minutes(15).expect("valid"),
        }
    }

    pub fn text(s: &str) -> BoundedText {
        BoundedText::parse("reason", s, MAX_REASON_CHARS).expect("valid")
    }

    pub fn schedule_at(start: &str, minutes: u32) -> AppointmentCommand {
        AppointmentCommand::Schedule {
            actor: actor(Role::Receptionist),
            appointment_id: APPT,
            patient_id: PATIENT,
            doctor_id: DOCTOR,
            department_id: None,
            start: local(start),
            minutes,
            reason: text("Follow-up"),
            policy: policy(),
            doctor: DoctorFacts {
                active: true,
                role: Role::Doctor,
            },
            patient_active: true,
            now: now(),
        }
    }

    pub fn scheduled() -> AppointmentEvent {
        let start = local("2026-01-05T09:00:00+03:00");
        AppointmentEvent::AppointmentScheduled {
            appointment_id: APPT,
            patient_id: PATIENT,
            doctor_id: DOCTOR,
            department_id: None,
            start: start.with_timezone(&Utc),
            end: (start + chrono::Duration::minutes(30)).with_timezone(&Utc),
            local_date: start.date_naive(),
            reason: "Follow-up".into(),
            status: AppointmentStatus::Scheduled,
            at: now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    fn expect_error(given: Vec<AppointmentEvent>, cmd: AppointmentCommand, err: AppointmentError) {
        TestFramework::<Appointment>::with(())
            .given(given)
            .when(cmd)
            .then_expect_error(err);
    }

    fn expect_events(
        given: Vec<AppointmentEvent>,
        cmd: AppointmentCommand,
        events: Vec<AppointmentEvent>,
    ) {
        TestFramework::<Appointment>::with(())
            .given(given)
            .when(cmd)
            .then_expect_events(events);
    }

    fn checked_in() -> AppointmentEvent {
        AppointmentEvent::AppointmentCheckedIn { at: now() }
    }
    fn started() -> AppointmentEvent {
        AppointmentEvent::AppointmentStarted { at: now() }
    }

    #[test]
    fn an_appointment_is_scheduled() {
        expect_events(
            vec![],
            schedule_at("2026-01-05T09:00:00+03:00", 30),
            vec![scheduled()],
        );
    }

    #[test]
    fn scheduling_refusals() {
        let cases: Vec<(&str, u32, AppointmentError)> = vec![
            ("2026-01-05T06:45:00+03:00", 15, AppointmentError::InThePast),
            (
                "2026-01-10T09:00:00+03:00",
                30,
                AppointmentError::ClosedThatDay,
            ),
            (
                "2026-01-05T16:45:00+03:00",
                30,
                AppointmentError::OutsideWorkingHours,
            ),
            (
                "2026-01-06T07:45:00+03:00",
                30,
                AppointmentError::OutsideWorkingHours,
            ),
            (
                "2026-01-05T09:10:00+03:00",
                30,
                AppointmentError::NotOnSlotGrid(15),
            ),
            (
                "2026-01-05T09:00:00+03:00",
                20,
                AppointmentError::NotOnSlotGrid(15),
            ),
        ];
        for (start, minutes, err) in cases {
            expect_error(vec![], schedule_at(start, minutes), err);
        }
        expect_error(
            vec![scheduled()],
            schedule_at("2026-01-05T09:00:00+03:00", 30),
            AppointmentError::AlreadyScheduled,
        );
        let with = |f: &dyn Fn(&mut AppointmentCommand)| {
            let mut cmd = schedule_at("2026-01-05T09:00:00+03:00", 30);
            f(&mut cmd);
            cmd
        };
        expect_error(
            vec![],
            with(&|c| {
                if let AppointmentCommand::Schedule { doctor, .. } = c {
                    doctor.active = false;
                }
            }),
            AppointmentError::DoctorInactive,
        );
        expect_error(
            vec![],
            with(&|c| {
                if let AppointmentCommand::Schedule { doctor, .. } = c {
                    doctor.role = Role::Nurse;
                }
            }),
            AppointmentError::NotADoctor(Role::Nurse),
        );
        expect_error(
            vec![],
            with(&|c| {
                if let AppointmentCommand::Schedule { patient_active, .. } = c {
                    *patient_active = false;
                }
            }),
            AppointmentError::PatientInactive,
        );
        expect_error(
            vec![],
            with(&|c| {
                if let AppointmentCommand::Schedule { actor: a, .. } = c {
                    *a = actor(Role::Nurse);
                }
            }),
            PermissionDenied {
                role: Role::Nurse,
                operation: Operation::ScheduleAppointment,
            }
            .into(),
        );
    }

    #[test]
    fn the_happy_path_runs_to_completion() {
        expect_events(
            vec![scheduled()],
            AppointmentCommand::CheckIn {
                actor: actor(Role::Nurse),
                now: now(),
            },
            vec![checked_in()],
        );
        expect_events(
            vec![scheduled(), checked_in()],
            AppointmentCommand::Start {
                actor: actor(Role::Doctor),
                now: now(),
            },
            vec![started()],
        );
        expect_events(
            vec![scheduled(), checked_in(), started()],
            AppointmentCommand::Complete {
                actor: actor(Role::Doctor),
                notes: Some(text("BP normal")),
                now: now(),
            },
            vec![AppointmentEvent::AppointmentCompleted {
                notes: Some("BP normal".into()),
                at: now(),
            }],
        );
    }

    #[test]
    fn only_the_appointments_doctor_starts_and_completes_it() {
        let other = Actor {
            user_id: Uuid::from_u128(0xBAD),
            ..actor(Role::Doctor)
        };
        expect_error(
            vec![scheduled(), checked_in()],
            AppointmentCommand::Start {
                actor: other.clone(),
                now: now(),
            },
            AppointmentError::NotTheAppointmentsDoctor,
        );
        expect_error(
            vec![scheduled(), checked_in(), started()],
            AppointmentCommand::Complete {
                actor: other,
                notes: None,
                now: now(),
            },
            AppointmentError::NotTheAppointmentsDoctor,
        );
    }

    #[test]
    fn rescheduling_moves_the_slot_and_remembers_the_old_one() {
        let new_start = local("2026-01-06T10:00:00+03:00");
        let old = scheduled();
        let AppointmentEvent::AppointmentScheduled {
            start,
            end,
            local_date,
            ..
        } = old.clone()
        else {
            panic!("scheduled() is AppointmentScheduled");
        };
        expect_events(
            vec![old],
            AppointmentCommand::Reschedule {
                actor: actor(Role::Receptionist),
                start: new_start,
                minutes: 45,
                policy: policy(),
                now: now(),
            },
            vec![AppointmentEvent::AppointmentRescheduled {
                previous_start: start,
                previous_end: end,
                previous_local_date: local_date,
                start: new_start.with_timezone(&Utc),
                end: (new_start + Duration::minutes(45)).with_timezone(&Utc),
                local_date: new_start.date_naive(),
                at: now(),
            }],
        );
        expect_error(
            vec![scheduled()],
            AppointmentCommand::Reschedule {
                actor: actor(Role::Receptionist),
                start: local("2026-01-04T10:00:00+03:00"),
                minutes: 45,
                policy: policy(),
                now: now(),
            },
            AppointmentError::InThePast,
        );
    }

    #[test]
    fn cancel_and_no_show() {
        let cancelled = AppointmentEvent::AppointmentCancelled {
            reason: "Patient unwell".into(),
            at: now(),
        };
        let cancel = || AppointmentCommand::Cancel {
            actor: actor(Role::Receptionist),
            reason: text("Patient unwell"),
            now: now(),
        };
        expect_events(vec![scheduled()], cancel(), vec![cancelled.clone()]);
        expect_events(vec![scheduled(), checked_in()], cancel(), vec![cancelled]);
        let after_start = now() + Duration::hours(3);
        expect_events(
            vec![scheduled()],
            AppointmentCommand::MarkNoShow {
                actor: actor(Role::Receptionist),
                now: after_start,
            },
            vec![AppointmentEvent::AppointmentNoShow { at: after_start }],
        );
        expect_error(
            vec![scheduled()],
            AppointmentCommand::MarkNoShow {
                actor: actor(Role::Receptionist),
                now: now(),
            },
            AppointmentError::NoShowBeforeStart,
        );
    }

    /// Every (status, action) pair that the table forbids is refused by the aggregate.
    #[test]
    fn every_illegal_transition_is_refused() {
        use AppointmentStatus as S;
        let reach = |status: S| -> Vec<AppointmentEvent> {
            let mut events = vec![scheduled()];
            let more: &[AppointmentEvent] = match status {
                S::Scheduled => &[],
                S::CheckedIn => &[AppointmentEvent::AppointmentCheckedIn { at: now() }],
                S::InProgress => &[
                    AppointmentEvent::AppointmentCheckedIn { at: now() },
                    AppointmentEvent::AppointmentStarted { at: now() },
                ],
                S::Completed => &[
                    AppointmentEvent::AppointmentCheckedIn { at: now() },
                    AppointmentEvent::AppointmentStarted { at: now() },
                    AppointmentEvent::AppointmentCompleted {
                        notes: None,
                        at: now(),
                    },
                ],
                S::Cancelled => &[AppointmentEvent::AppointmentCancelled {
                    reason: "x".into(),
                    at: now(),
                }],
                S::NoShow => &[AppointmentEvent::AppointmentNoShow { at: now() }],
            };
            events.extend_from_slice(more);
            events
        };
        let later = now() + Duration::hours(3);
        let command = |action: AppointmentAction| -> AppointmentCommand {
            match action {
                AppointmentAction::Reschedule => AppointmentCommand::Reschedule {
                    actor: actor(Role::Receptionist),
                    start: local("2026-01-06T10:00:00+03:00"),
                    minutes: 15,
                    policy: policy(),
                    now: later,
                },
                AppointmentAction::CheckIn => AppointmentCommand::CheckIn {
                    actor: actor(Role::Receptionist),
                    now: later,
                },
                AppointmentAction::Start => AppointmentCommand::Start {
                    actor: actor(Role::Doctor),
                    now: later,
                },
                AppointmentAction::Complete => AppointmentCommand::Complete {
                    actor: actor(Role::Doctor),
                    notes: None,
                    now: later,
                },
                AppointmentAction::Cancel => AppointmentCommand::Cancel {
                    actor: actor(Role::Receptionist),
                    reason: text("x"),
                    now: later,
                },
                AppointmentAction::MarkNoShow => AppointmentCommand::MarkNoShow {
                    actor: actor(Role::Receptionist),
                    now: later,
                },
            }
        };
        let mut illegal = 0;
        for from in AppointmentStatus::ALL {
            for action in AppointmentAction::ALL {
                let result = TestFramework::<Appointment>::with(())
                    .given(reach(from))
                    .when(command(action))
                    .inspect_result();
                match transition(from, action) {
                    None => {
                        illegal += 1;
                        assert_eq!(
                            result,
                            Err(AppointmentError::IllegalTransition { from, action }),
                            "{from:?} × {action:?}"
                        );
                    }
                    Some(_) => assert!(result.is_ok(), "{from:?} × {action:?}: {result:?}"),
                }
            }
        }
        assert_eq!(illegal, 36 - 7, "seven legal transitions, the rest refused");
        expect_error(
            vec![],
            command(AppointmentAction::CheckIn),
            AppointmentError::NotFound,
        );
    }
}
