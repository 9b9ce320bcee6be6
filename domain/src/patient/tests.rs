//! Unit tests of the patient aggregate and its upcasters.

use super::test_support::*;
use super::*;
use crate::common::{Actor, Role};
use crate::permissions::{Operation, PermissionDenied};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use serde_json::json;

fn clerk() -> Actor {
    actor(Role::Receptionist)
}
fn nurse() -> Actor {
    actor(Role::Nurse)
}
fn doctor() -> Actor {
    actor(Role::Doctor)
}
fn admin() -> Actor {
    actor(Role::HospitalAdmin)
}

fn register(demographics: Demographics) -> PatientCommand {
    PatientCommand::RegisterPatient {
        actor: clerk(),
        patient_id: Uuid::from_u128(1),
        mrn: mrn(1),
        hospital: HospitalCode::parse("DMC001").expect("valid"),
        demographics,
        allergies: vec![],
        now: now(),
    }
}

fn expect_error(given: Vec<PatientEvent>, cmd: PatientCommand, err: PatientError) {
    TestFramework::<Patient>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn expect_events(given: Vec<PatientEvent>, cmd: PatientCommand, events: Vec<PatientEvent>) {
    TestFramework::<Patient>::with(())
        .given(given)
        .when(cmd)
        .then_expect_events(events);
}

fn allergy(substance: &str) -> Allergy {
    Allergy {
        substance: name(substance),
        reaction: Some(name("Hives")),
        severity: AllergySeverity::Moderate,
    }
}

#[test]
fn mrns_are_hospital_code_dash_six_or_more_digits() {
    assert_eq!(mrn(123).as_str(), "DMC001-000123");
    assert_eq!(mrn(1_234_567).as_str(), "DMC001-1234567");
    assert_eq!(mrn(5).hospital_code(), "DMC001");
    assert_eq!(Mrn::parse("DMC001-000123"), Ok(mrn(123)));
    let code = HospitalCode::parse("DMC001").expect("valid");
    assert!(Mrn::new(&code, 0).is_err());
    assert!(Mrn::new(&code, 1_000_000_000_000).is_err());
    for bad in [
        "",
        "DMC001",
        "DMC001-12345",
        "dmc001-000123",
        "DMC001-00012a",
        "DMC001-000000",
        "DMC001_000123",
        "-000123",
        "DMC001-1234567890123",
    ] {
        assert!(Mrn::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(serde_json::from_str::<Mrn>("\"nonsense\"").is_err());
}

#[test]
fn registering_a_patient_records_demographics() {
    expect_events(vec![], register(demographics()), vec![registered(1)]);
}

#[test]
fn registration_refusals() {
    expect_error(
        vec![registered(1)],
        register(demographics()),
        PatientError::AlreadyRegistered,
    );
    let mut future = demographics();
    future.date_of_birth = date(2026, 1, 6);
    expect_error(vec![], register(future), PatientError::DateOfBirthInFuture);
    let mut ancient = demographics();
    ancient.date_of_birth = date(1850, 1, 1);
    expect_error(vec![], register(ancient), PatientError::DateOfBirthTooOld);
    let mut other = register(demographics());
    if let PatientCommand::RegisterPatient { hospital, .. } = &mut other {
        *hospital = HospitalCode::parse("XYZ9").expect("valid");
    }
    expect_error(
        vec![],
        other,
        PatientError::MrnFromAnotherHospital {
            mrn: "DMC001-000001".into(),
            hospital: "XYZ9".into(),
        },
    );
    let mut dup = register(demographics());
    if let PatientCommand::RegisterPatient { allergies, .. } = &mut dup {
        *allergies = vec![allergy("Penicillin"), allergy("PENICILLIN")];
    }
    expect_error(
        vec![],
        dup,
        PatientError::AllergyAlreadyRecorded("PENICILLIN".into()),
    );
    let mut by_doctor = register(demographics());
    if let PatientCommand::RegisterPatient { actor, .. } = &mut by_doctor {
        *actor = doctor();
    }
    expect_error(
        vec![],
        by_doctor,
        PermissionDenied {
            role: Role::Doctor,
            operation: Operation::RegisterPatient,
        }
        .into(),
    );
}

#[test]
fn a_born_today_patient_is_accepted() {
    let mut d = demographics();
    d.date_of_birth = now().date_naive();
    TestFramework::<Patient>::with(())
        .given_no_previous_events()
        .when(register(d))
        .inspect_result()
        .expect("born today is not the future");
}

#[test]
fn demographics_are_updated() {
    let mut d = demographics();
    d.email = Some(Email::parse("wanjiku@example.com").expect("valid"));
    expect_events(
        vec![registered(1)],
        PatientCommand::UpdateDemographics {
            actor: nurse(),
            demographics: d.clone(),
            now: now(),
        },
        vec![PatientEvent::PatientDemographicsUpdated {
            demographics: d.clone(),
            at: now(),
        }],
    );
    expect_error(
        vec![],
        PatientCommand::UpdateDemographics {
            actor: nurse(),
            demographics: d.clone(),
            now: now(),
        },
        PatientError::NotFound,
    );
    d.date_of_birth = date(2027, 1, 1);
    expect_error(
        vec![registered(1)],
        PatientCommand::UpdateDemographics {
            actor: nurse(),
            demographics: d,
            now: now(),
        },
        PatientError::DateOfBirthInFuture,
    );
}

#[test]
fn allergies_are_recorded_once_and_removed() {
    expect_events(
        vec![registered(1)],
        PatientCommand::RecordAllergy {
            actor: doctor(),
            allergy: allergy("Penicillin"),
            now: now(),
        },
        vec![PatientEvent::AllergyRecorded {
            allergy: allergy("Penicillin"),
            at: now(),
        }],
    );
    let with_allergy = vec![
        registered(1),
        PatientEvent::AllergyRecorded {
            allergy: allergy("Penicillin"),
            at: now(),
        },
    ];
    expect_error(
        with_allergy.clone(),
        PatientCommand::RecordAllergy {
            actor: doctor(),
            allergy: allergy("penicillin"),
            now: now(),
        },
        PatientError::AllergyAlreadyRecorded("penicillin".into()),
    );
    expect_events(
        with_allergy,
        PatientCommand::RemoveAllergy {
            actor: actor(Role::Pharmacist),
            substance: name("PENICILLIN"),
            now: now(),
        },
        vec![PatientEvent::AllergyRemoved {
            substance: "Penicillin".into(),
            at: now(),
        }],
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::RemoveAllergy {
            actor: doctor(),
            substance: name("Latex"),
            now: now(),
        },
        PatientError::AllergyNotFound("Latex".into()),
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::RecordAllergy {
            actor: clerk(),
            allergy: allergy("Latex"),
            now: now(),
        },
        PermissionDenied {
            role: Role::Receptionist,
            operation: Operation::ManageAllergies,
        }
        .into(),
    );
}

#[test]
fn alerts_are_added_and_resolved() {
    let alert = Alert {
        alert_id: Uuid::from_u128(77),
        text: name("Fall risk"),
    };
    expect_events(
        vec![registered(1)],
        PatientCommand::AddAlert {
            actor: nurse(),
            alert_id: alert.alert_id,
            text: alert.text.clone(),
            now: now(),
        },
        vec![PatientEvent::AlertAdded {
            alert: alert.clone(),
            at: now(),
        }],
    );
    let with_alert = vec![
        registered(1),
        PatientEvent::AlertAdded {
            alert: alert.clone(),
            at: now(),
        },
    ];
    expect_error(
        with_alert.clone(),
        PatientCommand::AddAlert {
            actor: nurse(),
            alert_id: alert.alert_id,
            text: name("Again"),
            now: now(),
        },
        PatientError::AlertAlreadyExists(alert.alert_id),
    );
    expect_events(
        with_alert,
        PatientCommand::ResolveAlert {
            actor: nurse(),
            alert_id: alert.alert_id,
            now: now(),
        },
        vec![PatientEvent::AlertResolved {
            alert_id: alert.alert_id,
            at: now(),
        }],
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::ResolveAlert {
            actor: nurse(),
            alert_id: alert.alert_id,
            now: now(),
        },
        PatientError::AlertNotFound(alert.alert_id),
    );
}

#[test]
fn death_is_recorded_once_and_never_in_the_future_or_before_birth() {
    let died_at = now() - chrono::Duration::hours(2);
    let deceased = PatientEvent::PatientDeceased { died_at, at: now() };
    expect_events(
        vec![registered(1)],
        PatientCommand::MarkDeceased {
            actor: doctor(),
            died_at,
            now: now(),
        },
        vec![deceased.clone()],
    );
    expect_error(
        vec![registered(1), deceased],
        PatientCommand::MarkDeceased {
            actor: doctor(),
            died_at,
            now: now(),
        },
        PatientError::AlreadyDeceased,
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::MarkDeceased {
            actor: doctor(),
            died_at: now() + chrono::Duration::minutes(1),
            now: now(),
        },
        PatientError::DeathInFuture,
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::MarkDeceased {
            actor: doctor(),
            died_at: DateTime::parse_from_rfc3339("1980-01-01T00:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
            now: now(),
        },
        PatientError::DeathBeforeBirth,
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::MarkDeceased {
            actor: nurse(),
            died_at,
            now: now(),
        },
        PermissionDenied {
            role: Role::Nurse,
            operation: Operation::MarkPatientDeceased,
        }
        .into(),
    );
}

#[test]
fn patients_are_deactivated_and_reactivated() {
    let deactivated = PatientEvent::PatientDeactivated {
        reason: "Moved abroad".into(),
        at: now(),
    };
    expect_events(
        vec![registered(1)],
        PatientCommand::DeactivatePatient {
            actor: admin(),
            reason: name("Moved abroad"),
            now: now(),
        },
        vec![deactivated.clone()],
    );
    expect_error(
        vec![registered(1), deactivated.clone()],
        PatientCommand::DeactivatePatient {
            actor: admin(),
            reason: name("again"),
            now: now(),
        },
        PatientError::NotActive(PatientStatus::Inactive),
    );
    expect_events(
        vec![registered(1), deactivated],
        PatientCommand::ReactivatePatient {
            actor: admin(),
            now: now(),
        },
        vec![PatientEvent::PatientReactivated { at: now() }],
    );
    expect_error(
        vec![registered(1)],
        PatientCommand::ReactivatePatient {
            actor: admin(),
            now: now(),
        },
        PatientError::NotInactive,
    );
}

fn merge(survivor: u128, survivor_active: bool) -> PatientCommand {
    PatientCommand::MergeInto {
        actor: admin(),
        survivor_id: Uuid::from_u128(survivor),
        survivor_mrn: mrn(u64::try_from(survivor).unwrap_or(1)),
        survivor_active,
        now: now(),
    }
}

#[test]
fn a_duplicate_is_merged_into_its_survivor_and_becomes_read_only() {
    let merged = PatientEvent::PatientMergedInto {
        survivor_id: Uuid::from_u128(2),
        survivor_mrn: mrn(2),
        at: now(),
    };
    expect_events(vec![registered(1)], merge(2, true), vec![merged.clone()]);
    let survivor_error = PatientError::Merged {
        survivor_id: Uuid::from_u128(2),
    };
    expect_error(
        vec![registered(1), merged.clone()],
        PatientCommand::UpdateDemographics {
            actor: nurse(),
            demographics: demographics(),
            now: now(),
        },
        survivor_error.clone(),
    );
    expect_error(
        vec![registered(1), merged.clone()],
        merge(3, true),
        survivor_error.clone(),
    );
    expect_error(
        vec![registered(1), merged],
        PatientCommand::RecordAllergy {
            actor: nurse(),
            allergy: allergy("Latex"),
            now: now(),
        },
        survivor_error,
    );
    expect_error(
        vec![registered(1)],
        merge(1, true),
        PatientError::CannotMergeIntoSelf,
    );
    expect_error(
        vec![registered(1)],
        merge(2, false),
        PatientError::SurvivorNotActive,
    );
    expect_events(
        vec![registered(2)],
        PatientCommand::AbsorbDuplicate {
            actor: admin(),
            duplicate_id: Uuid::from_u128(1),
            duplicate_mrn: mrn(1),
            now: now(),
        },
        vec![PatientEvent::DuplicateAbsorbed {
            duplicate_id: Uuid::from_u128(1),
            duplicate_mrn: mrn(1),
            at: now(),
        }],
    );
    expect_error(
        vec![registered(2)],
        PatientCommand::AbsorbDuplicate {
            actor: admin(),
            duplicate_id: Uuid::from_u128(2),
            duplicate_mrn: mrn(2),
            now: now(),
        },
        PatientError::CannotMergeIntoSelf,
    );
    expect_error(
        vec![
            registered(2),
            PatientEvent::PatientDeactivated {
                reason: "x".into(),
                at: now(),
            },
        ],
        PatientCommand::AbsorbDuplicate {
            actor: admin(),
            duplicate_id: Uuid::from_u128(1),
            duplicate_mrn: mrn(1),
            now: now(),
        },
        PatientError::NotActive(PatientStatus::Inactive),
    );
}

/// A `PatientRegistered` exactly as version 1.0 stored it.
fn v1_row() -> SerializedEvent {
    SerializedEvent::new(
        Uuid::from_u128(1).to_string(),
        1,
        Patient::TYPE.to_owned(),
        PATIENT_REGISTERED.to_owned(),
        "1.0".to_owned(),
        json!({
            "PatientRegistered": {
                "patient_id": Uuid::from_u128(1),
                "mrn": "DMC001-000001",
                "full_name": "Mary Anne Otieno",
                "date_of_birth": "1984-02-29",
                "sex": "F",
                "phone": "+254700000001",
                "registered_at": "2025-03-01T09:30:00Z"
            }
        }),
        json!({}),
    )
}

fn upcast(mut row: SerializedEvent) -> SerializedEvent {
    for u in crate::upcasters() {
        if u.can_upcast(&row.event_type, &row.event_version) {
            row = u.upcast(row);
        }
    }
    row
}

#[test]
fn a_version_1_patient_registered_decodes_after_upcasting() {
    assert!(
        serde_json::from_value::<PatientEvent>(v1_row().payload).is_err(),
        "1.0 does not decode as 2.0 without the upcaster"
    );
    let row = upcast(v1_row());
    assert_eq!(row.event_version, "2.0.0");
    let event: PatientEvent = serde_json::from_value(row.payload).expect("decodes");
    let PatientEvent::PatientRegistered {
        demographics,
        allergies,
        alerts,
        mrn: got_mrn,
        ..
    } = event
    else {
        panic!("wrong variant: {event:?}");
    };
    assert_eq!(got_mrn, mrn(1));
    assert_eq!(demographics.given_name, Some(name("Mary Anne")));
    assert_eq!(demographics.family_name, name("Otieno"));
    assert_eq!(demographics.sex, Sex::Female);
    assert_eq!(demographics.date_of_birth, date(1984, 2, 29));
    assert_eq!(
        demographics.phone,
        Some(Phone::parse("phone", "+254700000001").expect("valid"))
    );
    assert!(allergies.is_empty() && alerts.is_empty());
}

#[test]
fn the_upcaster_leaves_current_and_other_events_alone() {
    let current = registered(1);
    let row = SerializedEvent::new(
        "x".into(),
        1,
        Patient::TYPE.into(),
        current.event_type(),
        current.event_version(),
        serde_json::to_value(&current).expect("json"),
        json!({}),
    );
    let after = upcast(row.clone());
    assert_eq!(after, row);
    let other = SerializedEvent {
        event_type: "PatientDeactivated".into(),
        ..v1_row()
    };
    assert_eq!(upcast(other.clone()), other);
    // A mononym becomes a family name alone.
    let mut mono = v1_row();
    mono.payload["PatientRegistered"]["full_name"] = json!("Suharto");
    mono.payload["PatientRegistered"]["sex"] = json!("X");
    let event: PatientEvent = serde_json::from_value(upcast(mono).payload).expect("decodes");
    let PatientEvent::PatientRegistered { demographics, .. } = event else {
        panic!("wrong variant");
    };
    assert_eq!(demographics.given_name, None);
    assert_eq!(demographics.family_name, name("Suharto"));
    assert_eq!(demographics.sex, Sex::Unknown);
}

#[test]
fn events_round_trip_through_json() {
    let event = registered(1);
    let json = serde_json::to_value(&event).expect("json");
    assert_eq!(json["PatientRegistered"]["mrn"], "DMC001-000001");
    assert_eq!(
        json["PatientRegistered"]["demographics"]["blood_type"],
        "O+"
    );
    assert_eq!(
        serde_json::from_value::<PatientEvent>(json).expect("decodes"),
        event
    );
}

#[test]
fn an_administrator_restricts_a_record_names_its_readers_and_lifts_the_restriction() {
    let restrict = |named: Vec<u128>| PatientCommand::Restrict {
        actor: actor(Role::HospitalAdmin),
        reason: name("a member of staff"),
        named_users: named.into_iter().map(Uuid::from_u128).collect(),
        now: now(),
    };
    let restricted = PatientEvent::RecordRestricted {
        reason: "a member of staff".into(),
        named_users: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
        at: now(),
    };
    // Named staff are kept once each, in order.
    expect_events(
        vec![registered(1)],
        restrict(vec![2, 1, 2]),
        vec![restricted.clone()],
    );
    // The same restriction again changes nothing.
    expect_events(
        vec![registered(1), restricted.clone()],
        restrict(vec![1, 2]),
        vec![],
    );
    expect_error(
        vec![registered(1)],
        restrict((0..=MAX_NAMED_ON_RESTRICTED as u128).collect()),
        PatientError::TooManyNamed(MAX_NAMED_ON_RESTRICTED),
    );
    let unrestrict = PatientCommand::Unrestrict {
        actor: actor(Role::HospitalAdmin),
        reason: name("left the hospital"),
        now: now(),
    };
    expect_error(
        vec![registered(1)],
        unrestrict.clone(),
        PatientError::NotRestricted,
    );
    expect_events(
        vec![registered(1), restricted],
        unrestrict,
        vec![PatientEvent::RecordUnrestricted {
            reason: "left the hospital".into(),
            at: now(),
        }],
    );
    for role in Role::ALL {
        let result = TestFramework::<Patient>::with(())
            .given(vec![registered(1)])
            .when(PatientCommand::Restrict {
                actor: actor(role),
                reason: name("x"),
                named_users: vec![],
                now: now(),
            })
            .inspect_result();
        assert_eq!(
            matches!(result, Err(PatientError::Forbidden(_))),
            role != Role::HospitalAdmin,
            "{role}"
        );
    }
}
