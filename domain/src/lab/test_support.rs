//! Builders shared by the tests of this crate (actors, catalogue definitions, orders,
//! specimens and results).

use super::*;
use crate::billing::Money;
use crate::common::{Actor, BoundedText, Currency, Role};
use crate::patient::Sex;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

pub const ORDER: Uuid = Uuid::from_u128(0x0AD0);
pub const PATIENT: Uuid = Uuid::from_u128(0x9A7);
pub const DOCTOR: Uuid = Uuid::from_u128(0xD0C);
pub const NURSE: Uuid = Uuid::from_u128(0x4E5);
/// The technician who enters results.
pub const TECH_A: Uuid = Uuid::from_u128(0x7EC1);
/// The second technician, who verifies them.
pub const TECH_B: Uuid = Uuid::from_u128(0x7EC2);
pub const ADMIN: Uuid = Uuid::from_u128(0xAD);
/// The serum tube and the urine pot of [`ORDER`].
pub const SERUM: Uuid = Uuid::from_u128(0x5E1);
pub const URINE: Uuid = Uuid::from_u128(0x5E2);
pub const INVOICE: Uuid = Uuid::from_u128(0x1111);

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

/// `minutes` after [`now`].
pub fn later(minutes: i64) -> DateTime<Utc> {
    now() + Duration::minutes(minutes)
}

pub fn actor(role: Role, user_id: Uuid, username: &str) -> Actor {
    Actor {
        user_id,
        username: username.into(),
        role,
    }
}

pub fn doctor() -> Actor {
    actor(Role::Doctor, DOCTOR, "dr.otieno")
}

pub fn nurse() -> Actor {
    actor(Role::Nurse, NURSE, "nurse.achieng")
}

pub fn tech_a() -> Actor {
    actor(Role::LabTechnician, TECH_A, "lab.mwangi")
}

pub fn tech_b() -> Actor {
    actor(Role::LabTechnician, TECH_B, "lab.wafula")
}

pub fn admin() -> Actor {
    actor(Role::HospitalAdmin, ADMIN, "admin")
}

pub fn text(s: &str) -> BoundedText {
    BoundedText::parse("text", s, 500).expect("valid")
}

pub fn code(s: &str) -> TestCode {
    TestCode::parse(s).expect("valid")
}

pub fn dec(s: &str) -> Decimal {
    Decimal::parse("value", s).expect("valid")
}

pub fn ucum(s: &str) -> Ucum {
    Ucum::parse("unit", s).expect("valid")
}

pub fn label(s: &str) -> SpecimenLabel {
    SpecimenLabel::parse(s).expect("valid")
}

pub fn kes(minor: i64) -> Money {
    Money::new(minor, Currency::parse("KES").expect("valid"))
}

pub fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::parse("USD").expect("valid"))
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid")
}

/// A range for `sex` (or any) and ages `[min, max)` days, with its limits as decimals.
pub fn range(
    sex: Option<Sex>,
    ages: (Option<u32>, Option<u32>),
    normal: (&str, &str),
    critical: (&str, &str),
) -> ReferenceRange {
    ReferenceRange {
        sex,
        min_age_days: ages.0,
        max_age_days: ages.1,
        low: Some(dec(normal.0)),
        high: Some(dec(normal.1)),
        critical_low: Some(dec(critical.0)),
        critical_high: Some(dec(critical.1)),
    }
}

/// Babies under this many days get the paediatric potassium range.
pub const NEONATAL_DAYS: u32 = 30;

/// Potassium's ranges, in the order the catalogue lists them: any sex (adults) first, so
/// picking the sex-specific one is a choice, not the list order.
pub fn any_sex_adult_k() -> ReferenceRange {
    range(
        None,
        (Some(NEONATAL_DAYS), None),
        ("3.5", "5.1"),
        ("2.5", "6.5"),
    )
}

pub fn female_k() -> ReferenceRange {
    range(
        Some(Sex::Female),
        (Some(NEONATAL_DAYS), None),
        ("3.4", "4.8"),
        ("2.5", "6.5"),
    )
}

pub fn male_k() -> ReferenceRange {
    range(
        Some(Sex::Male),
        (Some(NEONATAL_DAYS), None),
        ("3.6", "5.2"),
        ("2.5", "6.5"),
    )
}

pub fn neonatal_k() -> ReferenceRange {
    range(
        None,
        (None, Some(NEONATAL_DAYS)),
        ("3.7", "5.9"),
        ("2.8", "7.0"),
    )
}

/// LOINC 2823-3, potassium in serum or plasma, mmol/L, 800.00 KES.
pub fn potassium() -> TestDefinition {
    TestDefinition {
        code: code("2823-3"),
        system: CodeSystem::Loinc,
        name: text("Potassium [Moles/volume] in Serum or Plasma"),
        specimen_type: SpecimenType::Serum,
        kind: TestKind::Analyte {
            result: ResultSpec::Numeric {
                unit: ucum("mmol/L"),
                ranges: vec![any_sex_adult_k(), female_k(), male_k(), neonatal_k()],
            },
        },
        price: kes(80_000),
    }
}

/// LOINC 2951-2, sodium in serum or plasma, mmol/L, one range for everyone.
pub fn sodium() -> TestDefinition {
    TestDefinition {
        code: code("2951-2"),
        system: CodeSystem::Loinc,
        name: text("Sodium [Moles/volume] in Serum or Plasma"),
        specimen_type: SpecimenType::Serum,
        kind: TestKind::Analyte {
            result: ResultSpec::Numeric {
                unit: ucum("mmol/L"),
                ranges: vec![range(None, (None, None), ("135", "145"), ("120", "160"))],
            },
        },
        price: kes(70_000),
    }
}

/// A coded test: HIV 1+2 antibodies, NEG / POS (abnormal) / IND (abnormal).
pub fn hiv() -> TestDefinition {
    let option = |code: &str, display: &str, abnormal| CodedOption {
        code: code.into(),
        display: display.into(),
        abnormal,
    };
    TestDefinition {
        code: code("HIV-RDT"),
        system: CodeSystem::Local,
        name: text("HIV 1+2 antibody rapid test"),
        specimen_type: SpecimenType::Serum,
        kind: TestKind::Analyte {
            result: ResultSpec::Coded {
                options: vec![
                    option("NEG", "Negative", false),
                    option("POS", "Positive", true),
                    option("IND", "Indeterminate", true),
                ],
            },
        },
        price: kes(50_000),
    }
}

/// A text test on urine: microscopy, reported in words.
pub fn urine_microscopy() -> TestDefinition {
    TestDefinition {
        code: code("UMICRO"),
        system: CodeSystem::Local,
        name: text("Urine microscopy"),
        specimen_type: SpecimenType::Urine,
        kind: TestKind::Analyte {
            result: ResultSpec::Text,
        },
        price: kes(40_000),
    }
}

/// A panel: urea and electrolytes, here potassium and sodium, billed as one.
pub fn electrolytes() -> TestDefinition {
    TestDefinition {
        code: code("UE"),
        system: CodeSystem::Local,
        name: text("Electrolytes panel"),
        specimen_type: SpecimenType::Serum,
        kind: TestKind::Panel {
            members: vec![code("2823-3"), code("2951-2")],
        },
        price: kes(120_000),
    }
}

/// A catalogue test as an order names it, at `version`.
pub fn entry(definition: TestDefinition, version: u32) -> OrderedEntry {
    OrderedEntry {
        definition,
        version,
        members: vec![],
    }
}

/// The electrolytes panel at version 2, with potassium at 3 and sodium at 1.
pub fn electrolytes_entry() -> OrderedEntry {
    OrderedEntry {
        definition: electrolytes(),
        version: 2,
        members: vec![(potassium(), 3), (sodium(), 1)],
    }
}

/// A man born on 15 June 1980.
pub fn adult_male() -> PatientFacts {
    PatientFacts {
        sex: Sex::Male,
        date_of_birth: date(1980, 6, 15),
    }
}

pub fn adult_female() -> PatientFacts {
    PatientFacts {
        sex: Sex::Female,
        date_of_birth: date(1984, 2, 29),
    }
}

/// A baby 29 days old at [`now`] (30 days old tomorrow).
pub fn infant() -> PatientFacts {
    PatientFacts {
        sex: Sex::Female,
        date_of_birth: date(2025, 12, 7),
    }
}

/// The doctor orders `tests` for `patient` as [`ORDER`] at [`now`].
pub fn place_for(patient: PatientFacts, tests: Vec<OrderedEntry>) -> LabOrderCommand {
    LabOrderCommand::Place {
        actor: doctor(),
        order_id: ORDER,
        patient_id: PATIENT,
        patient,
        appointment_id: None,
        priority: Priority::Routine,
        clinical_note: Some(text("Weakness; on furosemide")),
        tests,
        now: now(),
    }
}

/// The doctor orders `tests` for [`adult_male`].
pub fn place(tests: Vec<OrderedEntry>) -> LabOrderCommand {
    place_for(adult_male(), tests)
}

/// The item id of `test` in [`ORDER`].
pub fn item(test: &TestDefinition) -> Uuid {
    item_id(ORDER, &test.code)
}

/// The nurse collects a specimen ten minutes after the order.
pub fn collect(specimen_id: Uuid, tube: &str, specimen_type: SpecimenType) -> LabOrderCommand {
    collect_at(specimen_id, tube, specimen_type, later(10))
}

pub fn collect_at(
    specimen_id: Uuid,
    tube: &str,
    specimen_type: SpecimenType,
    collected_at: DateTime<Utc>,
) -> LabOrderCommand {
    LabOrderCommand::CollectSpecimen {
        actor: nurse(),
        specimen_id,
        label: label(tube),
        specimen_type,
        collected_at,
        now: collected_at,
    }
}

pub fn receive(specimen_id: Uuid) -> LabOrderCommand {
    LabOrderCommand::ReceiveSpecimen {
        actor: tech_a(),
        specimen_id,
        now: later(30),
    }
}

pub fn reject(specimen_id: Uuid, reason: RejectionReason, note: Option<&str>) -> LabOrderCommand {
    LabOrderCommand::RejectSpecimen {
        actor: tech_a(),
        specimen_id,
        reason,
        note: note.map(text),
        now: later(30),
    }
}

/// A potassium (or any mmol/L) value.
pub fn mmol(value: &str) -> ResultInput {
    ResultInput::Numeric {
        value: dec(value),
        unit: "mmol/L".into(),
    }
}

pub fn coded(answer: &str) -> ResultInput {
    ResultInput::Coded {
        code: answer.into(),
    }
}

pub fn enter(by: Actor, test: &TestDefinition, value: ResultInput) -> LabOrderCommand {
    LabOrderCommand::EnterResult {
        actor: by,
        item_id: item(test),
        value,
        now: later(60),
    }
}

pub fn verify(by: Actor, tests: &[&TestDefinition]) -> LabOrderCommand {
    LabOrderCommand::VerifyResults {
        actor: by,
        item_ids: tests.iter().map(|t| item(t)).collect(),
        now: later(90),
    }
}

pub fn amend(
    by: Actor,
    test: &TestDefinition,
    value: ResultInput,
    reason: &str,
) -> LabOrderCommand {
    LabOrderCommand::AmendResult {
        actor: by,
        item_id: item(test),
        value,
        reason: text(reason),
        now: later(120),
    }
}

pub fn cancel(by: Actor) -> LabOrderCommand {
    LabOrderCommand::Cancel {
        actor: by,
        reason: text("Ordered on the wrong patient"),
        now: later(5),
    }
}

pub fn mark_billed(by: Actor) -> LabOrderCommand {
    LabOrderCommand::MarkBilled {
        actor: by,
        invoice_id: INVOICE,
        now: later(95),
    }
}

/// Run order commands that must all succeed; return the events.
pub fn history(commands: Vec<LabOrderCommand>) -> Vec<LabOrderEvent> {
    history_after(&[], commands)
}

/// The events of running `commands` (which must all succeed) after `given`.
pub fn history_after(
    given: &[LabOrderEvent],
    commands: Vec<LabOrderCommand>,
) -> Vec<LabOrderEvent> {
    let mut order = replay(given);
    let mut events = Vec::new();
    for cmd in commands {
        for e in order.decide(cmd).expect("command succeeds") {
            order.apply(e.clone());
            events.push(e);
        }
    }
    events
}

/// The order `events` build.
pub fn replay(events: &[LabOrderEvent]) -> LabOrder {
    let mut order = LabOrder::default();
    for e in events {
        order.apply(e.clone());
    }
    order
}

/// Potassium alone, for the adult man, its serum collected and received.
pub fn potassium_received() -> Vec<LabOrderEvent> {
    received_for(adult_male(), potassium())
}

/// `test` alone for `patient`, its specimen collected and received.
pub fn received_for(patient: PatientFacts, test: TestDefinition) -> Vec<LabOrderEvent> {
    let specimen_type = test.specimen_type;
    history(vec![
        place_for(patient, vec![entry(test, 1)]),
        collect(SERUM, "LAB-0001", specimen_type),
        receive(SERUM),
    ])
}

/// [`potassium_received`] with 4.2 mmol/L entered by technician A.
pub fn potassium_entered() -> Vec<LabOrderEvent> {
    let given = potassium_received();
    let entered = history_after(&given, vec![enter(tech_a(), &potassium(), mmol("4.2"))]);
    [given, entered].concat()
}

/// [`potassium_entered`], verified by technician B: the order is VERIFIED.
pub fn potassium_verified() -> Vec<LabOrderEvent> {
    let given = potassium_entered();
    let verified = history_after(&given, vec![verify(tech_b(), &[&potassium()])]);
    [given, verified].concat()
}

/// Run catalogue commands that must all succeed; return the events.
pub fn catalogue_history(commands: Vec<LabTestCommand>) -> Vec<LabTestEvent> {
    let mut test = LabTest::default();
    let mut events = Vec::new();
    for cmd in commands {
        for e in test.decide(cmd).expect("command succeeds") {
            test.apply(e.clone());
            events.push(e);
        }
    }
    events
}

pub fn define(definition: TestDefinition) -> LabTestCommand {
    LabTestCommand::Define {
        actor: admin(),
        definition,
        now: now(),
    }
}

pub fn revise(definition: TestDefinition) -> LabTestCommand {
    LabTestCommand::Revise {
        actor: admin(),
        definition,
        now: later(1),
    }
}

pub fn retire() -> LabTestCommand {
    LabTestCommand::Retire {
        actor: admin(),
        reason: text("Replaced by the analyser's panel"),
        now: later(2),
    }
}

pub fn reinstate() -> LabTestCommand {
    LabTestCommand::Reinstate {
        actor: admin(),
        now: later(3),
    }
}

pub fn claim(specimen_id: Uuid) -> SpecimenLabelCommand {
    SpecimenLabelCommand::Claim {
        actor: nurse(),
        label: label("LAB-0001"),
        order_id: ORDER,
        specimen_id,
        now: now(),
    }
}
