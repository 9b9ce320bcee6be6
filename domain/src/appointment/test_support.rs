//! Builders shared by the tests of this crate (ids, a fixed `now`, booking policy, commands).

use super::*;
use crate::common::BoundedText;
use crate::hospital::{SlotLength, WorkingWeek};
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
