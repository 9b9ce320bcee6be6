//! Builders shared by the tests of this crate (patients, demographics, MRNs).

use super::*;
use crate::common::{Actor, Role};

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

pub fn actor(role: Role) -> Actor {
    Actor {
        user_id: Uuid::from_u128(0x5EC),
        username: "someone".into(),
        role,
    }
}

pub fn name(s: &str) -> BoundedText {
    BoundedText::parse("name", s, MAX_PERSON_NAME_CHARS).expect("valid")
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid")
}

pub fn demographics() -> Demographics {
    Demographics {
        given_name: Some(name("Wanjiku")),
        middle_name: None,
        family_name: name("Kamau"),
        date_of_birth: date(1990, 4, 1),
        sex: Sex::Female,
        phone: Some(Phone::parse("phone", "+254712345678").expect("valid")),
        email: None,
        address: None,
        emergency_contact: Some(EmergencyContact {
            name: name("Njeri Kamau"),
            relationship: name("Sister"),
            phone: Phone::parse("phone", "+254712000000").expect("valid"),
        }),
        blood_type: Some(BloodType::OPositive),
    }
}

pub fn mrn(seq: u64) -> Mrn {
    Mrn::new(&HospitalCode::parse("DMC001").expect("valid"), seq).expect("valid")
}

pub fn registered(id: u128) -> PatientEvent {
    PatientEvent::PatientRegistered {
        patient_id: Uuid::from_u128(id),
        mrn: mrn(u64::try_from(id).unwrap_or(1)),
        demographics: demographics(),
        allergies: vec![],
        alerts: vec![],
        registered_at: now(),
    }
}
