//! Builders shared by the tests of this crate.

use super::*;
use crate::common::{BoundedText, HospitalCode, Role};

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

pub fn text(s: &str) -> BoundedText {
    BoundedText::parse("name", s, MAX_NAME_CHARS).expect("valid")
}

pub fn admin() -> Actor {
    Actor {
        user_id: Uuid::from_u128(0xAD),
        username: "dmc_admin".into(),
        role: Role::HospitalAdmin,
    }
}

pub fn platform() -> Actor {
    Actor::system()
}

pub fn register(plan: Plan, departments: &[(u128, &str)]) -> HospitalCommand {
    HospitalCommand::RegisterHospital {
        code: HospitalCode::parse("DMC001").expect("valid"),
        name: text("Downtown Medical Center"),
        plan,
        departments: departments
            .iter()
            .map(|(id, n)| (Uuid::from_u128(*id), text(n)))
            .collect(),
        now: now(),
    }
}

/// The events of registering on `plan` with two departments, then running `commands`
/// (each must succeed).
pub fn history(plan: Plan, commands: Vec<HospitalCommand>) -> Vec<HospitalEvent> {
    let mut h = Hospital::default();
    let mut events = Vec::new();
    for cmd in std::iter::once(register(plan, &[(1, "Surgery"), (2, "Cardiology")])).chain(commands)
    {
        for e in h.decide(cmd).expect("command succeeds") {
            h.apply(e.clone());
            events.push(e);
        }
    }
    events
}

pub fn hospital_after(plan: Plan, commands: Vec<HospitalCommand>) -> Hospital {
    let mut h = Hospital::default();
    for e in history(plan, commands) {
        h.apply(e);
    }
    h
}
