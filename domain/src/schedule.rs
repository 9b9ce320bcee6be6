//! Per-day schedules that own slot allocation: the consistency boundary that makes "no
//! double booking" hold when requests race (ADR 0002).
//!
//! One stream per owner and local day, id `<owner uuid>/<YYYY-MM-DD>`
//! ([`Schedule::id_for`]). Every booking that could overlap another of the same owner
//! touches the same stream, so two racing bookings load the same version and only the
//! first append wins; the loser gets the event store's optimistic-lock conflict and,
//! on retry, [`ScheduleError::SlotTaken`]. Streams stay short (one day's appointments).
//!
//! The same aggregate serves doctors ([`DoctorSchedule`], type `doctor_schedule`) and
//! patients ([`PatientSchedule`], type `patient_schedule`). A booking needs both: see the
//! order of steps in [`crate::appointment`].
//!
//! An appointment never crosses local midnight (working hours end before it), so every
//! overlap is between bookings of the same local day.

use std::marker::PhantomData;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, ValidationError};
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};

/// The longest bookable appointment.
pub const MAX_APPOINTMENT_MINUTES: u32 = 8 * 60;

/// What a schedule belongs to; fixes the aggregate type.
pub trait ScheduleOwner:
    std::fmt::Debug + Clone + Default + PartialEq + Send + Sync + 'static
{
    const TYPE: &'static str;
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DoctorDay;

impl ScheduleOwner for DoctorDay {
    const TYPE: &'static str = "doctor_schedule";
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientDay;

impl ScheduleOwner for PatientDay {
    const TYPE: &'static str = "patient_schedule";
}

/// One doctor's bookings on one local day.
pub type DoctorSchedule = Schedule<DoctorDay>;
/// One patient's bookings on one local day.
pub type PatientSchedule = Schedule<PatientDay>;

/// An interval `[start, end)` held for an appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub appointment_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Booking {
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.start < end && start < self.end
    }
}

/// Why a slot is given back; decides the permission needed and tells read models why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseReason {
    Cancelled,
    NoShow,
    Rescheduled,
    /// The booking failed half-way and its first step is undone.
    Compensation,
}

impl ReleaseReason {
    fn operation(self) -> Operation {
        match self {
            ReleaseReason::Cancelled => Operation::CancelAppointment,
            ReleaseReason::NoShow => Operation::MarkNoShow,
            ReleaseReason::Rescheduled => Operation::RescheduleAppointment,
            ReleaseReason::Compensation => Operation::ScheduleAppointment,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleCommand {
    /// Hold `[start, start + minutes)` for an appointment. `start` carries the hospital's
    /// UTC offset at that instant, so the local day is known without a time-zone database.
    /// Retrying the same reservation is a no-op, so a booking saga can be re-run.
    Reserve {
        actor: Actor,
        owner_id: Uuid,
        appointment_id: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
        now: DateTime<Utc>,
    },
    Release {
        actor: Actor,
        appointment_id: Uuid,
        reason: ReleaseReason,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScheduleEvent {
    SlotReserved {
        owner_id: Uuid,
        date: NaiveDate,
        appointment_id: Uuid,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    SlotReleased {
        appointment_id: Uuid,
        reason: ReleaseReason,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ScheduleEvent {
    fn event_type(&self) -> String {
        match self {
            ScheduleEvent::SlotReserved { .. } => "SlotReserved",
            ScheduleEvent::SlotReleased { .. } => "SlotReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the slot overlaps appointment {appointment_id}")]
    SlotTaken { appointment_id: Uuid },
    #[error("appointment {0} already holds a different slot here")]
    AlreadyReservedDifferently(Uuid),
    #[error("appointment {0} holds no slot here")]
    NotReserved(Uuid),
    #[error(
        "this schedule belongs to {owner_id} on {date}; the command was sent to the wrong stream"
    )]
    WrongStream { owner_id: Uuid, date: NaiveDate },
    #[error("an appointment cannot cross midnight")]
    CrossesMidnight,
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Schedule<O: ScheduleOwner> {
    pub owner_id: Option<Uuid>,
    pub date: Option<NaiveDate>,
    /// Active bookings, in the order they were made.
    pub bookings: Vec<Booking>,
    #[serde(skip)]
    owner: PhantomData<O>,
}

/// Check an appointment length: positive, at most [`MAX_APPOINTMENT_MINUTES`].
pub fn check_minutes(minutes: u32) -> Result<Duration, ValidationError> {
    if (1..=MAX_APPOINTMENT_MINUTES).contains(&minutes) {
        Ok(Duration::minutes(i64::from(minutes)))
    } else {
        Err(ValidationError::new(
            "duration",
            format!("must be 1 to {MAX_APPOINTMENT_MINUTES} minutes"),
        ))
    }
}

impl<O: ScheduleOwner> Schedule<O> {
    /// The aggregate id of `owner_id`'s schedule on local day `date`.
    pub fn id_for(owner_id: Uuid, date: NaiveDate) -> String {
        format!("{owner_id}/{}", date.format("%Y-%m-%d"))
    }

    pub fn decide(&self, command: ScheduleCommand) -> Result<Vec<ScheduleEvent>, ScheduleError> {
        match command {
            ScheduleCommand::Reserve {
                actor,
                owner_id,
                appointment_id,
                start,
                minutes,
                now,
            } => {
                ensure_allowed(&actor, Operation::ScheduleAppointment)?;
                let length = check_minutes(minutes)?;
                let date = start.date_naive();
                let local_end = start + length;
                let ends_at_midnight = local_end.date_naive() == date + Duration::days(1)
                    && local_end.time() == chrono::NaiveTime::MIN;
                if local_end.date_naive() != date && !ends_at_midnight {
                    return Err(ScheduleError::CrossesMidnight);
                }
                if let (Some(o), Some(d)) = (self.owner_id, self.date) {
                    if (o, d) != (owner_id, date) {
                        return Err(ScheduleError::WrongStream {
                            owner_id: o,
                            date: d,
                        });
                    }
                }
                let (start, end) = (start.with_timezone(&Utc), local_end.with_timezone(&Utc));
                if let Some(mine) = self
                    .bookings
                    .iter()
                    .find(|b| b.appointment_id == appointment_id)
                {
                    return if (mine.start, mine.end) == (start, end) {
                        Ok(vec![])
                    } else {
                        Err(ScheduleError::AlreadyReservedDifferently(appointment_id))
                    };
                }
                if let Some(taken) = self.bookings.iter().find(|b| b.overlaps(start, end)) {
                    return Err(ScheduleError::SlotTaken {
                        appointment_id: taken.appointment_id,
                    });
                }
                Ok(vec![ScheduleEvent::SlotReserved {
                    owner_id,
                    date,
                    appointment_id,
                    start,
                    end,
                    at: now,
                }])
            }
            ScheduleCommand::Release {
                actor,
                appointment_id,
                reason,
                now,
            } => {
                ensure_allowed(&actor, reason.operation())?;
                if !self
                    .bookings
                    .iter()
                    .any(|b| b.appointment_id == appointment_id)
                {
                    return Err(ScheduleError::NotReserved(appointment_id));
                }
                Ok(vec![ScheduleEvent::SlotReleased {
                    appointment_id,
                    reason,
                    at: now,
                }])
            }
        }
    }
}

impl<O: ScheduleOwner> Aggregate for Schedule<O> {
    const TYPE: &'static str = O::TYPE;
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = ScheduleError;
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
        match event {
            ScheduleEvent::SlotReserved {
                owner_id,
                date,
                appointment_id,
                start,
                end,
                ..
            } => {
                self.owner_id = Some(owner_id);
                self.date = Some(date);
                self.bookings.push(Booking {
                    appointment_id,
                    start,
                    end,
                });
            }
            ScheduleEvent::SlotReleased { appointment_id, .. } => {
                self.bookings.retain(|b| b.appointment_id != appointment_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Role;
    use cqrs_es::test::TestFramework;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T06:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn at(local: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(local).expect("valid")
    }

    fn clerk() -> Actor {
        Actor {
            user_id: Uuid::from_u128(0xC1),
            username: "clerk".into(),
            role: Role::Receptionist,
        }
    }

    const DOC: Uuid = Uuid::from_u128(0xD0C);

    fn reserve(appt: u128, start: &str, minutes: u32) -> ScheduleCommand {
        ScheduleCommand::Reserve {
            actor: clerk(),
            owner_id: DOC,
            appointment_id: Uuid::from_u128(appt),
            start: at(start),
            minutes,
            now: now(),
        }
    }

    fn reserved(appt: u128, start: &str, minutes: u32) -> ScheduleEvent {
        let s = at(start);
        ScheduleEvent::SlotReserved {
            owner_id: DOC,
            date: s.date_naive(),
            appointment_id: Uuid::from_u128(appt),
            start: s.with_timezone(&Utc),
            end: (s + Duration::minutes(i64::from(minutes))).with_timezone(&Utc),
            at: now(),
        }
    }

    fn expect_error(given: Vec<ScheduleEvent>, cmd: ScheduleCommand, err: ScheduleError) {
        TestFramework::<DoctorSchedule>::with(())
            .given(given)
            .when(cmd)
            .then_expect_error(err);
    }

    #[test]
    fn schedule_ids_name_the_owner_and_the_local_day() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 5).expect("valid");
        assert_eq!(
            DoctorSchedule::id_for(DOC, date),
            "00000000-0000-0000-0000-000000000d0c/2026-01-05"
        );
        assert_eq!(DoctorSchedule::TYPE, "doctor_schedule");
        assert_eq!(PatientSchedule::TYPE, "patient_schedule");
    }

    #[test]
    fn a_free_slot_is_reserved() {
        TestFramework::<DoctorSchedule>::with(())
            .given_no_previous_events()
            .when(reserve(1, "2026-01-05T09:00:00+03:00", 30))
            .then_expect_events(vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)]);
    }

    #[test]
    fn booking_an_occupied_slot_is_rejected() {
        let given = vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)];
        for start in [
            "2026-01-05T09:00:00+03:00",
            "2026-01-05T09:15:00+03:00",
            "2026-01-05T08:45:00+03:00",
        ] {
            expect_error(
                given.clone(),
                reserve(2, start, 30),
                ScheduleError::SlotTaken {
                    appointment_id: Uuid::from_u128(1),
                },
            );
        }
    }

    #[test]
    fn adjacent_slots_do_not_overlap() {
        TestFramework::<DoctorSchedule>::with(())
            .given(vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)])
            .when(reserve(2, "2026-01-05T09:30:00+03:00", 30))
            .then_expect_events(vec![reserved(2, "2026-01-05T09:30:00+03:00", 30)]);
    }

    #[test]
    fn reserving_again_for_the_same_appointment_is_idempotent() {
        TestFramework::<DoctorSchedule>::with(())
            .given(vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)])
            .when(reserve(1, "2026-01-05T09:00:00+03:00", 30))
            .then_expect_events(vec![]);
        expect_error(
            vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)],
            reserve(1, "2026-01-05T10:00:00+03:00", 30),
            ScheduleError::AlreadyReservedDifferently(Uuid::from_u128(1)),
        );
    }

    #[test]
    fn a_released_slot_can_be_booked_again() {
        let released = ScheduleEvent::SlotReleased {
            appointment_id: Uuid::from_u128(1),
            reason: ReleaseReason::Cancelled,
            at: now(),
        };
        TestFramework::<DoctorSchedule>::with(())
            .given(vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)])
            .when(ScheduleCommand::Release {
                actor: clerk(),
                appointment_id: Uuid::from_u128(1),
                reason: ReleaseReason::Cancelled,
                now: now(),
            })
            .then_expect_events(vec![released.clone()]);
        TestFramework::<DoctorSchedule>::with(())
            .given(vec![reserved(1, "2026-01-05T09:00:00+03:00", 30), released])
            .when(reserve(2, "2026-01-05T09:00:00+03:00", 30))
            .then_expect_events(vec![reserved(2, "2026-01-05T09:00:00+03:00", 30)]);
    }

    #[test]
    fn reservation_refusals() {
        expect_error(
            vec![],
            ScheduleCommand::Release {
                actor: clerk(),
                appointment_id: Uuid::from_u128(9),
                reason: ReleaseReason::NoShow,
                now: now(),
            },
            ScheduleError::NotReserved(Uuid::from_u128(9)),
        );
        expect_error(
            vec![reserved(1, "2026-01-05T09:00:00+03:00", 30)],
            reserve(2, "2026-01-06T09:00:00+03:00", 30),
            ScheduleError::WrongStream {
                owner_id: DOC,
                date: NaiveDate::from_ymd_opt(2026, 1, 5).expect("valid"),
            },
        );
        expect_error(
            vec![],
            reserve(2, "2026-01-05T23:30:00+03:00", 60),
            ScheduleError::CrossesMidnight,
        );
        TestFramework::<DoctorSchedule>::with(())
            .given_no_previous_events()
            .when(reserve(2, "2026-01-05T23:30:00+03:00", 30))
            .inspect_result()
            .expect("ending exactly at midnight is fine");
        expect_error(
            vec![],
            reserve(2, "2026-01-05T09:00:00+03:00", 0),
            ValidationError::new("duration", "must be 1 to 480 minutes").into(),
        );
        let nurse = Actor {
            role: Role::Nurse,
            ..clerk()
        };
        expect_error(
            vec![],
            ScheduleCommand::Reserve {
                actor: nurse,
                owner_id: DOC,
                appointment_id: Uuid::from_u128(1),
                start: at("2026-01-05T09:00:00+03:00"),
                minutes: 30,
                now: now(),
            },
            PermissionDenied {
                role: Role::Nurse,
                operation: Operation::ScheduleAppointment,
            }
            .into(),
        );
    }
}
