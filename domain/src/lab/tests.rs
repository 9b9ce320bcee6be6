//! Unit tests of the laboratory: the catalogue, lab orders (specimens, results, flags,
//! four-eyes verification, amendments, cancellation, billing), specimen labels, the
//! charges and alert the lab sends to billing and the patient's record, the permission
//! walk of every lab command, and properties of flags and decimals.

use super::test_support::*;
use super::*;
use crate::billing::{
    self, ChargeLine, Invoice, InvoiceCommand, InvoiceError, InvoiceEvent, InvoiceLine,
    InvoiceStatus, InvoiceTotals,
};
use crate::common::{Actor, Currency, Role, ValidationError};
use crate::patient::{self, Alert, Patient, PatientCommand, PatientError, PatientEvent, Sex};
use crate::permissions::{allows, Operation, PermissionDenied};
use chrono::Duration;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use proptest::prelude::*;
use uuid::Uuid;

fn expect_error(given: Vec<LabOrderEvent>, cmd: LabOrderCommand, err: LabError) {
    TestFramework::<LabOrder>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn run(given: Vec<LabOrderEvent>, cmd: LabOrderCommand) -> Vec<LabOrderEvent> {
    TestFramework::<LabOrder>::with(())
        .given(given)
        .when(cmd)
        .inspect_result()
        .expect("command succeeds")
}

fn expect_catalogue_error(given: Vec<LabTestEvent>, cmd: LabTestCommand, err: LabError) {
    TestFramework::<LabTest>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn invalid(field: &'static str, message: &str) -> LabError {
    ValidationError::new(field, message).into()
}

/// The one result a command recorded.
fn recorded(events: &[LabOrderEvent]) -> RecordedResult {
    match events {
        [LabOrderEvent::ResultEntered { result, .. }]
        | [LabOrderEvent::ResultAmended { result, .. }] => result.clone(),
        other => panic!("expected one recorded result: {other:?}"),
    }
}

/// The status the last of `events` carries.
fn status_after(events: &[LabOrderEvent]) -> OrderStatus {
    use LabOrderEvent as E;
    match events.last() {
        Some(
            E::LabOrderPlaced { status, .. }
            | E::SpecimenCollected { status, .. }
            | E::SpecimenReceived { status, .. }
            | E::SpecimenRejected { status, .. }
            | E::ResultEntered { status, .. }
            | E::ResultAmended { status, .. }
            | E::ResultVerified { status, .. }
            | E::LabOrderCancelled { status, .. },
        ) => *status,
        other => panic!("no status in {other:?}"),
    }
}

fn with_ranges(test: TestDefinition, ranges: Vec<ReferenceRange>) -> TestDefinition {
    TestDefinition {
        kind: TestKind::Analyte {
            result: ResultSpec::Numeric {
                unit: ucum("mmol/L"),
                ranges,
            },
        },
        ..test
    }
}

// ---------------------------------------------------------------- values

#[test]
fn decimals_are_exact_and_keep_their_written_precision() {
    let d = dec("5.40");
    assert_eq!(d.micros(), 5_400_000);
    assert_eq!(d.as_str(), "5.40");
    assert_eq!(d, dec("5.4"), "equal by value");
    assert_eq!(dec("-0.3").micros(), -300_000);
    assert_eq!(dec(" 120 ").as_str(), "120");
    assert_eq!(dec("-0").as_str(), "0", "one spelling of zero");
    assert_eq!(dec("-0.000").as_str(), "0.000");
    assert_eq!(dec("999999999999.999999").micros(), 999_999_999_999_999_999);
    assert!(dec("3.599999") < dec("3.6"));
    assert_eq!(Decimal::from_micros(-1_250_000).as_str(), "-1.25");
    assert_eq!(Decimal::from_micros(7_000_000).as_str(), "7");
    assert_eq!(Decimal::from_micros(1).as_str(), "0.000001");
    for bad in [
        "",
        ".5",
        "5.",
        "+5",
        "--1",
        "1e3",
        "1,5",
        "0.1234567",
        "1234567890123",
        "NaN",
    ] {
        assert!(Decimal::parse("value", bad).is_err(), "{bad:?}");
    }
    let json = serde_json::to_value(dec("5.40")).expect("json");
    assert_eq!(json, serde_json::json!("5.40"));
}

#[test]
fn codes_units_and_labels_are_checked() {
    assert_eq!(code(" glu-f ").as_str(), "GLU-F");
    assert!(code("2823-3").looks_like_loinc());
    assert!(code("12345-6").looks_like_loinc());
    for not_loinc in [
        "GLU-F",
        "2823",
        "2823-33",
        "12345678-9",
        "2823-X",
        "2823-3-1",
    ] {
        let c = TestCode::parse(not_loinc).expect("a valid local code");
        assert!(!c.looks_like_loinc(), "{not_loinc}");
    }
    for bad in ["", "-CBC", "CB C", "K+", &"X".repeat(33)] {
        assert!(TestCode::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(ucum("10*9/L").as_str(), "10*9/L");
    assert_eq!(ucum("[IU]/L").as_str(), "[IU]/L");
    for bad in ["", "mmol L", "µmol/L", &"m".repeat(31)] {
        assert!(Ucum::parse("unit", bad).is_err(), "{bad:?}");
    }
    assert_eq!(label("lab-0001"), label("LAB-0001"));
    assert!(SpecimenLabel::parse("LAB 1").is_err());
    assert!(SpecimenLabel::parse(&"1".repeat(41)).is_err());
    assert_eq!(SpecimenType::Serum.hl7(), ("SER", "Serum"));
    assert_eq!(Flag::CriticalHigh.hl7().0, "HH");
    assert!(Flag::CriticalLow.is_critical() && !Flag::Low.is_critical());
}

#[test]
fn age_is_counted_in_whole_days() {
    assert_eq!(infant().age_days_at(now()), 29);
    assert_eq!(infant().age_days_at(now() + Duration::days(1)), 30);
    assert_eq!(
        infant().age_days_at(now() - Duration::days(60)),
        0,
        "unborn"
    );
}

// ---------------------------------------------------------------- catalogue

#[test]
fn a_test_is_defined_at_version_one_and_each_revision_is_the_next() {
    TestFramework::<LabTest>::with(())
        .given_no_previous_events()
        .when(define(potassium()))
        .then_expect_events(vec![LabTestEvent::LabTestDefined {
            definition: potassium(),
            version: 1,
            at: now(),
        }]);
    let defined = catalogue_history(vec![define(potassium())]);
    let dearer = TestDefinition {
        price: kes(95_000),
        ..potassium()
    };
    TestFramework::<LabTest>::with(())
        .given(defined.clone())
        .when(revise(dearer.clone()))
        .then_expect_events(vec![LabTestEvent::LabTestRevised {
            definition: dearer.clone(),
            version: 2,
            at: later(1),
        }]);
    let revised = catalogue_history(vec![
        define(potassium()),
        revise(dearer.clone()),
        revise(with_ranges(potassium(), vec![male_k()])),
    ]);
    let mut state = LabTest::default();
    for e in &revised {
        state.apply(e.clone());
    }
    assert_eq!(state.version, 3);
    assert_eq!(
        state.definition,
        Some(with_ranges(potassium(), vec![male_k()]))
    );
    expect_catalogue_error(
        defined.clone(),
        define(potassium()),
        LabError::TestExists("2823-3".into()),
    );
    expect_catalogue_error(vec![], revise(potassium()), LabError::TestNotFound);
    expect_catalogue_error(vec![], retire(), LabError::TestNotFound);
    expect_catalogue_error(vec![], reinstate(), LabError::TestNotFound);
}

#[test]
fn a_revision_keeps_the_code_and_changes_something() {
    let defined = catalogue_history(vec![define(potassium())]);
    expect_catalogue_error(
        defined.clone(),
        revise(TestDefinition {
            code: code("2824-1"),
            ..potassium()
        }),
        LabError::CodeChanged,
    );
    expect_catalogue_error(
        defined.clone(),
        revise(potassium()),
        LabError::NothingChanged,
    );
    expect_catalogue_error(
        defined,
        revise(TestDefinition {
            price: kes(-1),
            ..potassium()
        }),
        invalid("priceMinor", "must not be negative"),
    );
}

#[test]
fn invalid_definitions_are_refused() {
    let not_loinc = "is not a LOINC code (digits, '-', a check digit); use system LOCAL";
    for raw in ["GLU-F", "2823", "2823-33"] {
        expect_catalogue_error(
            vec![],
            define(TestDefinition {
                code: code(raw),
                ..potassium()
            }),
            invalid("code", not_loinc),
        );
    }
    assert_eq!(
        TestDefinition {
            code: code("GLU-F"),
            system: CodeSystem::Local,
            ..potassium()
        }
        .validate(),
        Ok(()),
        "the same code is fine as a local one"
    );
    let unordered = "limits must be ordered: criticalLow ≤ low ≤ high ≤ criticalHigh";
    for bad in [
        range(None, (None, None), ("5.0", "3.5"), ("2.5", "6.5")),
        range(None, (None, None), ("3.5", "5.0"), ("3.6", "6.5")),
        range(None, (None, None), ("3.5", "5.0"), ("2.5", "4.9")),
        range(None, (None, None), ("3.5", "5.0"), ("6.5", "2.5")),
    ] {
        expect_catalogue_error(
            vec![],
            define(with_ranges(potassium(), vec![male_k(), bad])),
            invalid("referenceRanges", unordered),
        );
    }
    let mut only_critical = male_k();
    only_critical.low = None;
    only_critical.high = None;
    expect_catalogue_error(
        vec![],
        define(with_ranges(potassium(), vec![only_critical])),
        invalid(
            "referenceRanges",
            "a reference range needs a low or a high limit",
        ),
    );
    expect_catalogue_error(
        vec![],
        define(with_ranges(
            potassium(),
            vec![range(None, (None, None), ("4", "4.0"), ("2", "6"))],
        )),
        invalid("referenceRanges", "low and high must differ"),
    );
    expect_catalogue_error(
        vec![],
        define(with_ranges(
            potassium(),
            vec![range(None, (Some(30), Some(30)), ("3.5", "5"), ("2", "6"))],
        )),
        invalid("referenceRanges", "minAgeDays must be below maxAgeDays"),
    );
    let coded_with = |options: Vec<CodedOption>| TestDefinition {
        kind: TestKind::Analyte {
            result: ResultSpec::Coded { options },
        },
        ..hiv()
    };
    expect_catalogue_error(
        vec![],
        define(coded_with(vec![])),
        invalid("options", "a coded test needs 1 to 50 answers"),
    );
    let option = |code: &str| CodedOption {
        code: code.into(),
        display: code.into(),
        abnormal: false,
    };
    expect_catalogue_error(
        vec![],
        define(coded_with(vec![
            option("NEG"),
            option("POS"),
            option("pos"),
        ])),
        invalid("options", "answer code pos is listed twice"),
    );
    expect_catalogue_error(
        vec![],
        define(coded_with(vec![option("NEG"), option(" ")])),
        invalid(
            "options",
            "each answer needs a code (up to 32 characters) and a display",
        ),
    );
    let panel_with = |members: &[&str]| TestDefinition {
        kind: TestKind::Panel {
            members: members.iter().map(|m| code(m)).collect(),
        },
        ..electrolytes()
    };
    expect_catalogue_error(
        vec![],
        define(panel_with(&["2823-3", "UE"])),
        invalid("members", "a panel cannot hold itself"),
    );
    expect_catalogue_error(
        vec![],
        define(panel_with(&["2823-3", "2823-3"])),
        invalid("members", "lists a test twice"),
    );
    expect_catalogue_error(
        vec![],
        define(panel_with(&[])),
        invalid("members", "a panel needs 1 to 50 tests"),
    );
    expect_catalogue_error(
        vec![],
        define(TestDefinition {
            price: kes(-1),
            ..urine_microscopy()
        }),
        invalid("priceMinor", "must not be negative"),
    );
    for good in [
        potassium(),
        sodium(),
        hiv(),
        urine_microscopy(),
        electrolytes(),
    ] {
        assert_eq!(good.validate(), Ok(()), "{}", good.code);
    }
    assert_eq!(
        TestDefinition {
            price: kes(0),
            ..urine_microscopy()
        }
        .validate(),
        Ok(()),
        "a free test is fine"
    );
}

#[test]
fn a_test_is_retired_and_reinstated() {
    let defined = catalogue_history(vec![define(potassium())]);
    TestFramework::<LabTest>::with(())
        .given(defined.clone())
        .when(retire())
        .then_expect_events(vec![LabTestEvent::LabTestRetired {
            reason: "Replaced by the analyser's panel".into(),
            at: later(2),
        }]);
    let retired = catalogue_history(vec![define(potassium()), retire()]);
    expect_catalogue_error(retired.clone(), retire(), LabError::TestRetired);
    TestFramework::<LabTest>::with(())
        .given(retired.clone())
        .when(reinstate())
        .then_expect_events(vec![LabTestEvent::LabTestReinstated { at: later(3) }]);
    expect_catalogue_error(defined, reinstate(), LabError::NothingChanged);
    let mut state = LabTest::default();
    for e in catalogue_history(vec![define(potassium()), retire()]) {
        state.apply(e);
    }
    assert!(state.retired);
    state.apply(LabTestEvent::LabTestReinstated { at: later(3) });
    assert!(!state.retired);
    assert_eq!(state.version, 1, "retiring is not a new version");
}

#[test]
fn only_the_hospital_administrator_manages_the_catalogue() {
    for role in Role::ALL {
        let result = LabTest::default().decide(LabTestCommand::Define {
            actor: actor(role, ADMIN, "someone"),
            definition: potassium(),
            now: now(),
        });
        if role == Role::HospitalAdmin {
            assert!(result.is_ok(), "{role}: {result:?}");
        } else {
            assert_eq!(
                result,
                Err(LabError::Forbidden(PermissionDenied {
                    role,
                    operation: Operation::ManageLabCatalogue,
                })),
                "{role}"
            );
        }
    }
}

// ---------------------------------------------------------------- placing an order

fn placed_event(
    patient: PatientFacts,
    charges: Vec<Charge>,
    items: Vec<OrderItem>,
) -> LabOrderEvent {
    LabOrderEvent::LabOrderPlaced {
        order_id: ORDER,
        patient_id: PATIENT,
        patient,
        appointment_id: None,
        ordered_by: DOCTOR,
        priority: Priority::Routine,
        clinical_note: Some("Weakness; on furosemide".into()),
        charges,
        items,
        status: OrderStatus::Ordered,
        at: now(),
    }
}

fn charge(test: &TestDefinition, version: u32) -> Charge {
    Charge {
        code: test.code.clone(),
        version,
        name: test.name.to_string(),
        price: test.price,
    }
}

fn order_item(test: TestDefinition, version: u32, panel: Option<&str>) -> OrderItem {
    OrderItem {
        item_id: item(&test),
        test,
        version,
        panel: panel.map(code),
    }
}

#[test]
fn an_order_keeps_the_catalogue_version_and_price_it_was_placed_under() {
    let v3 = TestDefinition {
        price: kes(95_000),
        ..potassium()
    };
    TestFramework::<LabOrder>::with(())
        .given_no_previous_events()
        .when(place(vec![entry(v3.clone(), 3), entry(hiv(), 1)]))
        .then_expect_events(vec![placed_event(
            adult_male(),
            vec![charge(&v3, 3), charge(&hiv(), 1)],
            vec![order_item(v3.clone(), 3, None), order_item(hiv(), 1, None)],
        )]);
    assert_eq!(charge(&v3, 3).price, kes(95_000));
    let state = replay(&history(vec![place(vec![entry(v3, 3)])]));
    assert_eq!(state.status, Some(OrderStatus::Ordered));
    assert_eq!(state.ordered_by, Some(DOCTOR));
    assert_eq!(state.ordered_at, Some(now()));
    assert_eq!(state.items[0].status, ResultStatus::Pending);
    assert_eq!(state.items[0].item.version, 3);
    assert_eq!(state.charges[0].version, 3);
}

#[test]
fn results_are_flagged_against_the_ranges_of_the_ordered_version() {
    // Version 2 narrowed the male range to 3.6–4.4; an order placed under version 1
    // still flags 4.5 as normal, one placed under version 2 flags it high.
    let narrowed = range(
        Some(Sex::Male),
        (Some(NEONATAL_DAYS), None),
        ("3.6", "4.4"),
        ("2.5", "6.5"),
    );
    let v2 = with_ranges(potassium(), vec![narrowed.clone()]);
    for (definition, version, flag, applied) in [
        (potassium(), 1, Flag::Normal, male_k()),
        (v2.clone(), 2, Flag::High, narrowed),
    ] {
        let given = history(vec![
            place(vec![entry(definition, version)]),
            collect(SERUM, "LAB-0001", SpecimenType::Serum),
            receive(SERUM),
        ]);
        let result = recorded(&run(given, enter(tech_a(), &v2, mmol("4.5"))));
        assert_eq!(result.flag, Some(flag), "version {version}");
        assert_eq!(result.range, Some(applied));
    }
}

#[test]
fn a_panel_expands_into_its_members_and_is_charged_once() {
    TestFramework::<LabOrder>::with(())
        .given_no_previous_events()
        .when(place(vec![electrolytes_entry(), entry(hiv(), 1)]))
        .then_expect_events(vec![placed_event(
            adult_male(),
            vec![charge(&electrolytes(), 2), charge(&hiv(), 1)],
            vec![
                order_item(potassium(), 3, Some("UE")),
                order_item(sodium(), 1, Some("UE")),
                order_item(hiv(), 1, None),
            ],
        )]);
    assert_eq!(item(&potassium()), item_id(ORDER, &code("2823-3")));
    assert_ne!(
        item_id(ORDER, &code("2823-3")),
        item_id(Uuid::from_u128(1), &code("2823-3")),
        "item ids are per order"
    );
}

#[test]
fn a_panel_must_list_its_members_as_the_catalogue_has_them() {
    let incomplete = LabError::PanelIncomplete("UE".into());
    let panel = |members: Vec<(TestDefinition, u32)>| OrderedEntry {
        members,
        ..electrolytes_entry()
    };
    expect_error(
        vec![],
        place(vec![panel(vec![(potassium(), 3)])]),
        incomplete.clone(),
    );
    expect_error(
        vec![],
        place(vec![panel(vec![(potassium(), 3), (hiv(), 1)])]),
        incomplete.clone(),
    );
    expect_error(
        vec![],
        place(vec![panel(vec![
            (potassium(), 3),
            (sodium(), 1),
            (hiv(), 1),
        ])]),
        incomplete.clone(),
    );
    expect_error(vec![], place(vec![panel(vec![])]), incomplete);
    // A panel whose member is itself a panel has no analyte to result.
    let super_panel = TestDefinition {
        code: code("SUPER"),
        kind: TestKind::Panel {
            members: vec![code("UE"), code("HIV-RDT")],
        },
        ..electrolytes()
    };
    expect_error(
        vec![],
        place(vec![OrderedEntry {
            definition: super_panel,
            version: 1,
            members: vec![(electrolytes(), 2), (hiv(), 1)],
        }]),
        LabError::PanelIncomplete("SUPER".into()),
    );
}

#[test]
fn an_order_names_each_test_once_in_one_currency() {
    expect_error(vec![], place(vec![]), LabError::NoTests);
    expect_error(
        vec![],
        place(vec![entry(potassium(), 1), entry(potassium(), 2)]),
        LabError::DuplicateTest("2823-3".into()),
    );
    expect_error(
        vec![],
        place(vec![electrolytes_entry(), entry(potassium(), 3)]),
        LabError::DuplicateTest("2823-3".into()),
    );
    expect_error(
        vec![],
        place(vec![electrolytes_entry(), electrolytes_entry()]),
        LabError::DuplicateTest("UE".into()),
    );
    expect_error(
        vec![],
        place(vec![
            entry(potassium(), 1),
            entry(
                TestDefinition {
                    price: usd(500),
                    ..hiv()
                },
                1,
            ),
        ]),
        LabError::MixedCurrencies,
    );
    let many: Vec<OrderedEntry> = (1..=MAX_TESTS_PER_ORDER + 1)
        .map(|n| {
            entry(
                TestDefinition {
                    code: code(&format!("T{n}")),
                    ..urine_microscopy()
                },
                1,
            )
        })
        .collect();
    expect_error(
        vec![],
        place(many.clone()),
        LabError::TooManyTests(MAX_TESTS_PER_ORDER),
    );
    assert!(LabOrder::default()
        .decide(place(many[..MAX_TESTS_PER_ORDER].to_vec()))
        .is_ok());
    expect_error(
        history(vec![place(vec![entry(potassium(), 1)])]),
        place(vec![entry(potassium(), 1)]),
        LabError::OrderExists,
    );
}

// ---------------------------------------------------------------- specimens

/// Potassium (serum) and urine microscopy (urine), for the adult man.
fn two_specimen_order() -> Vec<LabOrderEvent> {
    history(vec![place(vec![
        entry(potassium(), 1),
        entry(urine_microscopy(), 1),
    ])])
}

#[test]
fn the_order_is_collected_once_every_specimen_type_it_needs_is() {
    let placed = two_specimen_order();
    TestFramework::<LabOrder>::with(())
        .given(placed.clone())
        .when(collect(SERUM, "lab-0001", SpecimenType::Serum))
        .then_expect_events(vec![LabOrderEvent::SpecimenCollected {
            specimen_id: SERUM,
            label: label("LAB-0001"),
            specimen_type: SpecimenType::Serum,
            collected_at: later(10),
            collected_by: NURSE,
            status: OrderStatus::Ordered,
            at: later(10),
        }]);
    let serum = history_after(
        &placed,
        vec![collect(SERUM, "LAB-0001", SpecimenType::Serum)],
    );
    let given = [placed, serum].concat();
    let urine = run(
        given.clone(),
        collect(URINE, "LAB-0002", SpecimenType::Urine),
    );
    assert_eq!(status_after(&urine), OrderStatus::Collected);
    expect_error(
        given.clone(),
        collect(URINE, "LAB-0002", SpecimenType::Stool),
        LabError::NoTestsForSpecimen(SpecimenType::Stool),
    );
    expect_error(
        given.clone(),
        collect(SERUM, "LAB-0002", SpecimenType::Urine),
        LabError::SpecimenExists(SERUM),
    );
    expect_error(
        given.clone(),
        collect(URINE, "LAB-0001", SpecimenType::Urine),
        LabError::LabelTaken("LAB-0001".into()),
    );
    expect_error(
        given.clone(),
        collect(Uuid::from_u128(0x5E3), "LAB-0003", SpecimenType::Serum),
        LabError::SpecimenAlreadyCollected(SpecimenType::Serum),
    );
    let received = [given.clone(), history_after(&given, vec![receive(SERUM)])].concat();
    expect_error(
        received,
        collect(Uuid::from_u128(0x5E3), "LAB-0003", SpecimenType::Serum),
        LabError::SpecimenAlreadyCollected(SpecimenType::Serum),
    );
    let state = replay(&given);
    assert_eq!(
        state
            .current_specimen(SpecimenType::Serum)
            .map(|s| s.status),
        Some(SpecimenStatus::Collected)
    );
    assert!(state.current_specimen(SpecimenType::Urine).is_none());
}

#[test]
fn a_collection_time_is_neither_in_the_future_nor_before_the_order() {
    let placed = history(vec![place(vec![entry(potassium(), 1)])]);
    let collect_when = |collected_at| LabOrderCommand::CollectSpecimen {
        actor: nurse(),
        specimen_id: SERUM,
        label: label("LAB-0001"),
        specimen_type: SpecimenType::Serum,
        collected_at,
        now: later(60),
    };
    let skew = later(60) + COLLECTION_CLOCK_SKEW;
    let events = run(placed.clone(), collect_when(skew));
    assert_eq!(status_after(&events), OrderStatus::Collected);
    expect_error(
        placed.clone(),
        collect_when(skew + Duration::seconds(1)),
        invalid("collectedAt", "must not be in the future"),
    );
    assert_eq!(
        run(placed.clone(), collect_when(now())).len(),
        1,
        "at the order"
    );
    expect_error(
        placed,
        collect_when(now() - Duration::seconds(1)),
        invalid("collectedAt", "must not be before the order was placed"),
    );
}

#[test]
fn a_specimen_is_received_once() {
    let collected = history(vec![
        place(vec![entry(potassium(), 1)]),
        collect(SERUM, "LAB-0001", SpecimenType::Serum),
    ]);
    TestFramework::<LabOrder>::with(())
        .given(collected.clone())
        .when(receive(SERUM))
        .then_expect_events(vec![LabOrderEvent::SpecimenReceived {
            specimen_id: SERUM,
            received_by: TECH_A,
            status: OrderStatus::Collected,
            at: later(30),
        }]);
    expect_error(
        potassium_received(),
        receive(SERUM),
        LabError::SpecimenNotAwaited(SpecimenStatus::Received),
    );
    expect_error(collected, receive(URINE), LabError::SpecimenNotFound(URINE));
    expect_error(vec![], receive(SERUM), LabError::OrderNotFound);
}

#[test]
fn a_rejected_specimen_is_recollected() {
    let placed = two_specimen_order();
    let collected = [
        placed.clone(),
        history_after(
            &placed,
            vec![
                collect(SERUM, "LAB-0001", SpecimenType::Serum),
                collect(URINE, "LAB-0002", SpecimenType::Urine),
            ],
        ),
    ]
    .concat();
    assert_eq!(status_after(&collected), OrderStatus::Collected);
    expect_error(
        collected.clone(),
        reject(SERUM, RejectionReason::Other, None),
        invalid("note", "is required when the reason is OTHER"),
    );
    TestFramework::<LabOrder>::with(())
        .given(collected.clone())
        .when(reject(SERUM, RejectionReason::Other, Some("Tube cracked")))
        .then_expect_events(vec![LabOrderEvent::SpecimenRejected {
            specimen_id: SERUM,
            reason: RejectionReason::Other,
            note: Some("Tube cracked".into()),
            rejected_by: TECH_A,
            status: OrderStatus::Ordered,
            at: later(30),
        }]);
    let rejected = [
        collected.clone(),
        history_after(
            &collected,
            vec![reject(SERUM, RejectionReason::Haemolysed, None)],
        ),
    ]
    .concat();
    assert_eq!(status_after(&rejected), OrderStatus::Ordered);
    expect_error(
        rejected.clone(),
        reject(SERUM, RejectionReason::Clotted, None),
        LabError::SpecimenNotAwaited(SpecimenStatus::Rejected),
    );
    expect_error(
        rejected.clone(),
        receive(SERUM),
        LabError::SpecimenNotAwaited(SpecimenStatus::Rejected),
    );
    expect_error(
        rejected.clone(),
        enter(tech_a(), &potassium(), mmol("4.2")),
        LabError::SpecimenNotReceived(SpecimenType::Serum),
    );
    expect_error(
        rejected.clone(),
        collect(Uuid::from_u128(0x5E3), "LAB-0001", SpecimenType::Serum),
        LabError::LabelTaken("LAB-0001".into()),
    );
    let serum2 = Uuid::from_u128(0x5E3);
    let recollected = history_after(
        &rejected,
        vec![collect(serum2, "LAB-0003", SpecimenType::Serum)],
    );
    assert_eq!(status_after(&recollected), OrderStatus::Collected);
    let given = [rejected, recollected].concat();
    let received = [given.clone(), history_after(&given, vec![receive(serum2)])].concat();
    let result = recorded(&run(received, enter(tech_a(), &potassium(), mmol("4.2"))));
    assert_eq!(
        result.specimen_id, serum2,
        "the result is from the new tube"
    );
}

#[test]
fn a_specimen_results_were_entered_from_cannot_be_rejected() {
    let received = potassium_received();
    // Before any result a received specimen may still be found unusable.
    let rejected = run(
        received.clone(),
        reject(SERUM, RejectionReason::Contaminated, None),
    );
    assert_eq!(status_after(&rejected), OrderStatus::Ordered);
    expect_error(
        potassium_entered(),
        reject(SERUM, RejectionReason::Haemolysed, None),
        LabError::SpecimenInUse,
    );
    expect_error(
        received,
        reject(URINE, RejectionReason::Haemolysed, None),
        LabError::SpecimenNotFound(URINE),
    );
}

// ---------------------------------------------------------------- results

#[test]
fn a_result_is_recorded_with_its_flag_range_specimen_and_technician() {
    TestFramework::<LabOrder>::with(())
        .given(potassium_received())
        .when(enter(tech_a(), &potassium(), mmol("4.2")))
        .then_expect_events(vec![LabOrderEvent::ResultEntered {
            result: RecordedResult {
                item_id: item(&potassium()),
                version: 1,
                value: ResultValue::Numeric {
                    value: dec("4.2"),
                    unit: ucum("mmol/L"),
                },
                flag: Some(Flag::Normal),
                range: Some(male_k()),
                specimen_id: SERUM,
                entered_by: TECH_A,
            },
            status: OrderStatus::InProgress,
            at: later(60),
        }]);
    let state = replay(&potassium_entered());
    assert_eq!(state.status, Some(OrderStatus::InProgress));
    assert_eq!(state.items[0].status, ResultStatus::Preliminary);
    let latest: Vec<_> = state.latest_results().map(|(_, r)| r.version).collect();
    assert_eq!(latest, vec![1]);
}

#[test]
fn no_result_before_the_specimen_is_received() {
    let placed = history(vec![place(vec![entry(potassium(), 1)])]);
    expect_error(
        placed.clone(),
        enter(tech_a(), &potassium(), mmol("4.2")),
        LabError::SpecimenNotReceived(SpecimenType::Serum),
    );
    let collected = [
        placed.clone(),
        history_after(
            &placed,
            vec![collect(SERUM, "LAB-0001", SpecimenType::Serum)],
        ),
    ]
    .concat();
    expect_error(
        collected,
        enter(tech_a(), &potassium(), mmol("4.2")),
        LabError::SpecimenNotReceived(SpecimenType::Serum),
    );
    expect_error(
        potassium_received(),
        enter(tech_a(), &hiv(), coded("NEG")),
        LabError::ItemNotFound(item(&hiv())),
    );
}

#[test]
fn a_result_must_fit_its_test() {
    let k = potassium_received();
    expect_error(
        k.clone(),
        enter(
            tech_a(),
            &potassium(),
            ResultInput::Numeric {
                value: dec("16"),
                unit: "mg/dL".into(),
            },
        ),
        LabError::WrongUnit {
            expected: "mmol/L".into(),
            given: "mg/dL".into(),
        },
    );
    expect_error(
        k.clone(),
        enter(
            tech_a(),
            &potassium(),
            ResultInput::Numeric {
                value: dec("4.2"),
                unit: " mmol/l ".into(),
            },
        ),
        LabError::WrongUnit {
            expected: "mmol/L".into(),
            given: "mmol/l".into(),
        },
    );
    let trimmed = run(
        k.clone(),
        enter(
            tech_a(),
            &potassium(),
            ResultInput::Numeric {
                value: dec("4.2"),
                unit: " mmol/L ".into(),
            },
        ),
    );
    assert_eq!(recorded(&trimmed).flag, Some(Flag::Normal));
    expect_error(
        k.clone(),
        enter(tech_a(), &potassium(), coded("NEG")),
        LabError::WrongKind {
            expected: "a numeric value with its unit",
        },
    );
    expect_error(
        k,
        enter(
            tech_a(),
            &potassium(),
            ResultInput::Text {
                text: text("normal"),
            },
        ),
        LabError::WrongKind {
            expected: "a numeric value with its unit",
        },
    );
    let h = received_for(adult_male(), hiv());
    expect_error(
        h.clone(),
        enter(tech_a(), &hiv(), mmol("1")),
        LabError::WrongKind {
            expected: "one of the test's coded answers",
        },
    );
    expect_error(
        h.clone(),
        enter(tech_a(), &hiv(), coded("MAYBE")),
        LabError::UnknownAnswer {
            given: "MAYBE".into(),
            allowed: "NEG, POS, IND".into(),
        },
    );
    let u = received_for(adult_male(), urine_microscopy());
    expect_error(
        u,
        enter(tech_a(), &urine_microscopy(), coded("NEG")),
        LabError::WrongKind { expected: "text" },
    );
}

#[test]
fn coded_and_text_results() {
    let h = received_for(adult_male(), hiv());
    let positive = recorded(&run(h.clone(), enter(tech_a(), &hiv(), coded(" pos "))));
    assert_eq!(
        positive.value,
        ResultValue::Coded {
            code: "POS".into(),
            display: "Positive".into()
        },
        "the catalogue's spelling"
    );
    assert_eq!(positive.flag, Some(Flag::Abnormal));
    assert_eq!(positive.range, None);
    let negative = recorded(&run(h, enter(tech_a(), &hiv(), coded("NEG"))));
    assert_eq!(negative.flag, Some(Flag::Normal));
    let u = received_for(adult_male(), urine_microscopy());
    let words = recorded(&run(
        u,
        enter(
            tech_a(),
            &urine_microscopy(),
            ResultInput::Text {
                text: text("Occasional epithelial cells; no casts"),
            },
        ),
    ));
    assert_eq!(
        words.value,
        ResultValue::Text {
            text: "Occasional epithelial cells; no casts".into()
        }
    );
    assert_eq!(words.flag, None);
}

/// The flag and range of a potassium `value` for `patient`, collected at `collected_at`.
fn potassium_flag_at(
    patient: PatientFacts,
    collected_at: chrono::DateTime<chrono::Utc>,
    test: TestDefinition,
    value: &str,
) -> (Option<Flag>, Option<ReferenceRange>) {
    let given = history(vec![
        place_for(patient, vec![entry(test.clone(), 1)]),
        collect_at(SERUM, "LAB-0001", SpecimenType::Serum, collected_at),
        LabOrderCommand::ReceiveSpecimen {
            actor: tech_a(),
            specimen_id: SERUM,
            now: collected_at + Duration::minutes(20),
        },
    ]);
    let result = recorded(&run(given, enter(tech_a(), &test, mmol(value))));
    (result.flag, result.range)
}

fn potassium_flag(patient: PatientFacts, value: &str) -> (Option<Flag>, Option<ReferenceRange>) {
    potassium_flag_at(patient, later(10), potassium(), value)
}

#[test]
fn flags_at_the_boundaries_of_the_male_range() {
    // Male adult: normal 3.6–5.2, critical below 2.5 and above 6.5.
    for (value, flag) in [
        ("4.2", Flag::Normal),
        ("3.6", Flag::Normal),
        ("3.600000", Flag::Normal),
        ("3.599999", Flag::Low),
        ("5.2", Flag::Normal),
        ("5.200001", Flag::High),
        ("2.5", Flag::Low),
        ("2.499999", Flag::CriticalLow),
        ("0", Flag::CriticalLow),
        ("-1", Flag::CriticalLow),
        ("6.5", Flag::High),
        ("6.500001", Flag::CriticalHigh),
        ("999999999999.999999", Flag::CriticalHigh),
    ] {
        assert_eq!(
            potassium_flag(adult_male(), value),
            (Some(flag), Some(male_k())),
            "{value}"
        );
    }
}

#[test]
fn the_range_follows_the_patients_sex() {
    // Female adult: normal 3.4–4.8.
    for (value, flag) in [
        ("3.4", Flag::Normal),
        ("3.399999", Flag::Low),
        ("4.8", Flag::Normal),
        ("4.800001", Flag::High),
        ("5.0", Flag::High),
    ] {
        assert_eq!(
            potassium_flag(adult_female(), value),
            (Some(flag), Some(female_k())),
            "{value}"
        );
    }
    assert_eq!(potassium_flag(adult_male(), "5.0").0, Some(Flag::Normal));
    assert_eq!(potassium_flag(adult_male(), "3.4").0, Some(Flag::Low));
}

#[test]
fn a_sex_specific_range_is_preferred_to_one_for_any_sex() {
    // The any-sex range (3.5–5.1) is listed first; the male one (3.6–5.2) still wins.
    assert_eq!(
        potassium_flag(adult_male(), "3.55"),
        (Some(Flag::Low), Some(male_k()))
    );
    for sex in [Sex::Intersex, Sex::Unknown] {
        let patient = PatientFacts {
            sex,
            ..adult_male()
        };
        assert_eq!(
            potassium_flag(patient, "3.55"),
            (Some(Flag::Normal), Some(any_sex_adult_k())),
            "{sex:?}"
        );
        assert_eq!(potassium_flag(patient, "5.15").0, Some(Flag::High));
    }
    let ranges = [any_sex_adult_k(), female_k(), male_k(), neonatal_k()];
    assert_eq!(
        applicable_range(&ranges, Sex::Female, 10_000),
        Some(&female_k())
    );
    assert_eq!(
        applicable_range(&ranges, Sex::Unknown, 10_000),
        Some(&any_sex_adult_k())
    );
    assert_eq!(
        applicable_range(&ranges, Sex::Male, 29),
        Some(&neonatal_k())
    );
}

#[test]
fn an_infant_is_flagged_by_its_age_at_collection() {
    // Neonatal range (under 30 days): normal 3.7–5.9, critical below 2.8, above 7.0.
    for (value, flag) in [
        ("3.7", Flag::Normal),
        ("3.65", Flag::Low),
        ("5.9", Flag::Normal),
        ("6.0", Flag::High),
        ("7.0", Flag::High),
        ("7.000001", Flag::CriticalHigh),
        ("2.8", Flag::Low),
        ("2.799999", Flag::CriticalLow),
    ] {
        assert_eq!(
            potassium_flag(infant(), value),
            (Some(flag), Some(neonatal_k())),
            "{value}"
        );
    }
    // Ordered at 29 days old, collected the next day at 30: the adult female range.
    let next_day = now() + Duration::days(1);
    assert_eq!(infant().age_days_at(now()), 29);
    assert_eq!(
        potassium_flag_at(infant(), next_day, potassium(), "3.65"),
        (Some(Flag::Normal), Some(female_k()))
    );
    // Age is counted in calendar days: still 29 days old late on the day of the order.
    let late_that_day = now() + Duration::hours(15) + Duration::minutes(59);
    assert_eq!(
        potassium_flag_at(infant(), late_that_day, potassium(), "3.65"),
        (Some(Flag::Low), Some(neonatal_k())),
    );
}

#[test]
fn no_applicable_range_means_no_flag() {
    let women_only = with_ranges(potassium(), vec![female_k()]);
    assert_eq!(
        potassium_flag_at(adult_male(), later(10), women_only, "9.9"),
        (None, None)
    );
    let no_ranges = with_ranges(potassium(), vec![]);
    assert_eq!(
        potassium_flag_at(adult_male(), later(10), no_ranges, "4.2"),
        (None, None)
    );
    let adults_only = with_ranges(potassium(), vec![male_k(), female_k()]);
    assert_eq!(
        potassium_flag_at(infant(), later(10), adults_only, "4.2"),
        (None, None)
    );
}

#[test]
fn a_range_with_one_side_flags_only_that_side() {
    let high_only = ReferenceRange {
        sex: None,
        min_age_days: None,
        max_age_days: None,
        low: None,
        high: Some(dec("5.2")),
        critical_low: None,
        critical_high: Some(dec("6.5")),
    };
    assert_eq!(high_only.validate(), Ok(()));
    assert_eq!(high_only.flag(&dec("-100")), Flag::Normal);
    assert_eq!(high_only.flag(&dec("5.2")), Flag::Normal);
    assert_eq!(high_only.flag(&dec("5.3")), Flag::High);
    assert_eq!(high_only.flag(&dec("6.6")), Flag::CriticalHigh);
}

// ---------------------------------------------------------------- four eyes

#[test]
fn a_result_is_verified_by_a_second_technician() {
    expect_error(
        potassium_entered(),
        verify(tech_a(), &[&potassium()]),
        LabError::SameTechnician,
    );
    TestFramework::<LabOrder>::with(())
        .given(potassium_entered())
        .when(verify(tech_b(), &[&potassium()]))
        .then_expect_events(vec![LabOrderEvent::ResultVerified {
            item_id: item(&potassium()),
            version: 1,
            verified_by: TECH_B,
            status: OrderStatus::Verified,
            at: later(90),
        }]);
    let state = replay(&potassium_verified());
    assert_eq!(state.status, Some(OrderStatus::Verified));
    assert_eq!(state.items[0].status, ResultStatus::Final);
    assert!(state.ever_verified);
}

#[test]
fn the_order_is_verified_when_every_item_is_final() {
    let given = history(vec![
        place(vec![entry(potassium(), 1), entry(hiv(), 1)]),
        collect(SERUM, "LAB-0001", SpecimenType::Serum),
        receive(SERUM),
        enter(tech_a(), &potassium(), mmol("4.2")),
        enter(tech_a(), &hiv(), coded("NEG")),
    ]);
    TestFramework::<LabOrder>::with(())
        .given(given.clone())
        .when(verify(tech_b(), &[&potassium(), &hiv(), &potassium()]))
        .then_expect_events(vec![
            LabOrderEvent::ResultVerified {
                item_id: item(&potassium()),
                version: 1,
                verified_by: TECH_B,
                status: OrderStatus::InProgress,
                at: later(90),
            },
            LabOrderEvent::ResultVerified {
                item_id: item(&hiv()),
                version: 1,
                verified_by: TECH_B,
                status: OrderStatus::Verified,
                at: later(90),
            },
        ]);
    let one = run(given.clone(), verify(tech_b(), &[&potassium()]));
    assert_eq!(status_after(&one), OrderStatus::InProgress);
    let partly = [given.clone(), one].concat();
    expect_error(
        partly.clone(),
        verify(tech_b(), &[&potassium()]),
        LabError::NothingToVerify(item(&potassium())),
    );
    // A verified result is final: it is amended, not re-entered.
    expect_error(
        partly.clone(),
        enter(tech_a(), &potassium(), mmol("4.3")),
        LabError::ResultFinal,
    );
    let rest = run(partly, verify(tech_b(), &[&hiv()]));
    assert_eq!(status_after(&rest), OrderStatus::Verified);
    expect_error(
        given.clone(),
        verify(tech_b(), &[]),
        invalid("itemIds", "name at least one result to verify"),
    );
    let unknown = Uuid::from_u128(0xBAD);
    expect_error(
        given,
        LabOrderCommand::VerifyResults {
            actor: tech_b(),
            item_ids: vec![unknown],
            now: later(90),
        },
        LabError::ItemNotFound(unknown),
    );
}

#[test]
fn only_an_entered_result_is_verified() {
    let given = history(vec![
        place(vec![entry(potassium(), 1), entry(hiv(), 1)]),
        collect(SERUM, "LAB-0001", SpecimenType::Serum),
        receive(SERUM),
        enter(tech_a(), &potassium(), mmol("4.2")),
    ]);
    expect_error(
        given,
        verify(tech_b(), &[&potassium(), &hiv()]),
        LabError::NothingToVerify(item(&hiv())),
    );
    // A fully verified order is closed to further entries and verifications.
    expect_error(
        potassium_verified(),
        enter(tech_a(), &potassium(), mmol("4.3")),
        LabError::OrderClosed(OrderStatus::Verified),
    );
    expect_error(
        potassium_verified(),
        verify(tech_b(), &[&potassium()]),
        LabError::OrderClosed(OrderStatus::Verified),
    );
}

#[test]
fn a_result_re_entered_before_verification_is_the_next_version() {
    let entered = potassium_entered();
    let again = run(entered.clone(), enter(tech_b(), &potassium(), mmol("4.3")));
    let result = recorded(&again);
    assert_eq!(result.version, 2);
    assert_eq!(result.entered_by, TECH_B);
    assert_eq!(status_after(&again), OrderStatus::InProgress);
    let given = [entered, again].concat();
    // The newest version was entered by B, so B may not verify it; A may.
    expect_error(
        given.clone(),
        verify(tech_b(), &[&potassium()]),
        LabError::SameTechnician,
    );
    TestFramework::<LabOrder>::with(())
        .given(given.clone())
        .when(verify(tech_a(), &[&potassium()]))
        .then_expect_events(vec![LabOrderEvent::ResultVerified {
            item_id: item(&potassium()),
            version: 2,
            verified_by: TECH_A,
            status: OrderStatus::Verified,
            at: later(90),
        }]);
    let state = replay(&given);
    let versions: Vec<u32> = state.items[0].results.iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![1, 2], "nothing is overwritten");
}

// ---------------------------------------------------------------- amendments

#[test]
fn only_a_final_result_is_amended() {
    expect_error(
        potassium_entered(),
        amend(tech_b(), &potassium(), mmol("4.8"), "Transcription error"),
        LabError::NotFinal,
    );
    expect_error(
        potassium_received(),
        amend(tech_b(), &potassium(), mmol("4.8"), "Transcription error"),
        LabError::NotFinal,
    );
    expect_error(
        vec![],
        amend(tech_b(), &potassium(), mmol("4.8"), "Transcription error"),
        LabError::OrderNotFound,
    );
    expect_error(
        potassium_verified(),
        amend(tech_b(), &potassium(), mmol("4.20"), "Same value"),
        LabError::NothingChanged,
    );
    expect_error(
        potassium_verified(),
        amend(
            tech_b(),
            &potassium(),
            ResultInput::Numeric {
                value: dec("16"),
                unit: "mg/dL".into(),
            },
            "Wrong unit",
        ),
        LabError::WrongUnit {
            expected: "mmol/L".into(),
            given: "mg/dL".into(),
        },
    );
}

#[test]
fn an_amendment_is_a_new_version_with_its_reason_verified_again() {
    let verified = potassium_verified();
    let reason = "Transcription error: 4.2 belonged to the previous sample";
    TestFramework::<LabOrder>::with(())
        .given(verified.clone())
        .when(amend(tech_b(), &potassium(), mmol("6.9"), reason))
        .then_expect_events(vec![LabOrderEvent::ResultAmended {
            result: RecordedResult {
                item_id: item(&potassium()),
                version: 2,
                value: ResultValue::Numeric {
                    value: dec("6.9"),
                    unit: ucum("mmol/L"),
                },
                flag: Some(Flag::CriticalHigh),
                range: Some(male_k()),
                specimen_id: SERUM,
                entered_by: TECH_B,
            },
            reason: reason.into(),
            status: OrderStatus::InProgress,
            at: later(120),
        }]);
    let amended = [
        verified.clone(),
        history_after(
            &verified,
            vec![amend(tech_b(), &potassium(), mmol("6.9"), reason)],
        ),
    ]
    .concat();
    let state = replay(&amended);
    assert_eq!(state.status, Some(OrderStatus::InProgress));
    assert!(state.ever_verified, "it was verified once");
    let item_state = &state.items[0];
    assert_eq!(item_state.status, ResultStatus::Preliminary);
    let history: Vec<(u32, Option<Flag>)> = item_state
        .results
        .iter()
        .map(|r| (r.version, r.flag))
        .collect();
    assert_eq!(
        history,
        vec![(1, Some(Flag::Normal)), (2, Some(Flag::CriticalHigh))],
        "the first version is kept"
    );
    // The amender may not verify the amendment; someone else may.
    expect_error(
        amended.clone(),
        verify(tech_b(), &[&potassium()]),
        LabError::SameTechnician,
    );
    TestFramework::<LabOrder>::with(())
        .given(amended.clone())
        .when(verify(tech_a(), &[&potassium()]))
        .then_expect_events(vec![LabOrderEvent::ResultVerified {
            item_id: item(&potassium()),
            version: 2,
            verified_by: TECH_A,
            status: OrderStatus::Verified,
            at: later(90),
        }]);
    let reverified = [
        amended.clone(),
        history_after(&amended, vec![verify(tech_a(), &[&potassium()])]),
    ]
    .concat();
    let again = run(
        reverified,
        amend(tech_a(), &potassium(), mmol("6.8"), "Recalibrated"),
    );
    assert_eq!(recorded(&again).version, 3);
}

// ---------------------------------------------------------------- cancellation

#[test]
fn an_order_is_cancelled_with_a_reason_before_any_result() {
    let placed = history(vec![place(vec![entry(potassium(), 1)])]);
    TestFramework::<LabOrder>::with(())
        .given(placed.clone())
        .when(cancel(doctor()))
        .then_expect_events(vec![LabOrderEvent::LabOrderCancelled {
            reason: "Ordered on the wrong patient".into(),
            cancelled_by: DOCTOR,
            status: OrderStatus::Cancelled,
            at: later(5),
        }]);
    let received = potassium_received();
    let by_lab = run(received, cancel(tech_a()));
    assert_eq!(status_after(&by_lab), OrderStatus::Cancelled);
    expect_error(potassium_entered(), cancel(doctor()), LabError::HasResults);
    expect_error(
        potassium_verified(),
        cancel(doctor()),
        LabError::OrderClosed(OrderStatus::Verified),
    );
    expect_error(vec![], cancel(doctor()), LabError::OrderNotFound);
}

#[test]
fn a_cancelled_order_refuses_every_change() {
    let given = potassium_received();
    let cancelled = [given.clone(), history_after(&given, vec![cancel(doctor())])].concat();
    let state = replay(&cancelled);
    assert_eq!(state.status, Some(OrderStatus::Cancelled));
    assert!(state
        .items
        .iter()
        .all(|i| i.status == ResultStatus::Cancelled));
    let closed = LabError::OrderClosed(OrderStatus::Cancelled);
    for cmd in [
        collect(Uuid::from_u128(0x5E3), "LAB-0003", SpecimenType::Serum),
        receive(SERUM),
        reject(SERUM, RejectionReason::Haemolysed, None),
        enter(tech_a(), &potassium(), mmol("4.2")),
        verify(tech_b(), &[&potassium()]),
        amend(tech_b(), &potassium(), mmol("4.8"), "Late correction"),
        cancel(doctor()),
        mark_billed(tech_b()),
    ] {
        expect_error(cancelled.clone(), cmd, closed.clone());
    }
    expect_error(
        cancelled,
        place(vec![entry(potassium(), 1)]),
        LabError::OrderExists,
    );
}

// ---------------------------------------------------------------- billing

#[test]
fn an_order_is_marked_billed_once_after_verification() {
    expect_error(
        history(vec![place(vec![entry(potassium(), 1)])]),
        mark_billed(tech_b()),
        LabError::NotVerified,
    );
    expect_error(
        potassium_entered(),
        mark_billed(tech_b()),
        LabError::NotVerified,
    );
    expect_error(vec![], mark_billed(tech_b()), LabError::OrderNotFound);
    TestFramework::<LabOrder>::with(())
        .given(potassium_verified())
        .when(mark_billed(tech_b()))
        .then_expect_events(vec![LabOrderEvent::LabOrderBilled {
            invoice_id: INVOICE,
            at: later(95),
        }]);
    let verified = potassium_verified();
    let billed = [
        verified.clone(),
        history_after(&verified, vec![mark_billed(tech_b())]),
    ]
    .concat();
    assert_eq!(replay(&billed).invoice_id, Some(INVOICE));
    expect_error(
        billed.clone(),
        mark_billed(tech_b()),
        LabError::AlreadyBilled,
    );
    // An amendment reopens the results, not the bill.
    let amended = [
        billed.clone(),
        history_after(
            &billed,
            vec![amend(tech_b(), &potassium(), mmol("4.8"), "Typo")],
        ),
    ]
    .concat();
    expect_error(amended, mark_billed(tech_b()), LabError::AlreadyBilled);
    let amended_unbilled = [
        verified.clone(),
        history_after(
            &verified,
            vec![amend(tech_b(), &potassium(), mmol("4.8"), "Typo")],
        ),
    ]
    .concat();
    assert!(
        replay(&amended_unbilled)
            .decide(mark_billed(tech_b()))
            .is_ok(),
        "verified once: billable while an amendment awaits verification"
    );
}

/// The invoice lines of the order's charges, as the lab posts them.
fn charge_lines(order: &LabOrder) -> Vec<ChargeLine> {
    order
        .charges
        .iter()
        .map(|c| ChargeLine {
            line_id: Uuid::new_v5(&ORDER, c.code.as_str().as_bytes()),
            code: text(c.code.as_str()),
            description: text(&c.name),
            unit_price: c.price,
        })
        .collect()
}

fn post(by: Actor, charges: Vec<ChargeLine>) -> InvoiceCommand {
    InvoiceCommand::PostCharges {
        actor: by,
        charges,
        now: later(95),
    }
}

fn open_for_charges() -> InvoiceCommand {
    InvoiceCommand::OpenForCharges {
        actor: tech_b(),
        invoice_id: INVOICE,
        number: billing::test_support::number(),
        patient_id: PATIENT,
        currency: Currency::parse("KES").expect("valid"),
        now: later(95),
    }
}

fn line_added(charge: &ChargeLine, running_total: i64) -> InvoiceEvent {
    let total = kes(running_total);
    InvoiceEvent::InvoiceLineAdded {
        line: InvoiceLine {
            line_id: charge.line_id,
            code: charge.code.clone(),
            description: charge.description.clone(),
            quantity: 1,
            unit_price: charge.unit_price,
            amount: charge.unit_price,
        },
        totals: InvoiceTotals {
            subtotal: total,
            discount: kes(0),
            tax: kes(0),
            total,
        },
        at: later(95),
    }
}

fn invoice_history(commands: Vec<InvoiceCommand>) -> Vec<InvoiceEvent> {
    let mut invoice = Invoice::default();
    let mut events = Vec::new();
    for cmd in commands {
        for e in invoice.decide(cmd).expect("command succeeds") {
            invoice.apply(e.clone());
            events.push(e);
        }
    }
    events
}

#[test]
fn charges_are_posted_once_to_a_draft_invoice() {
    let order = replay(&history(vec![place(vec![
        electrolytes_entry(),
        entry(hiv(), 1),
    ])]));
    let charges = charge_lines(&order);
    assert_eq!(charges.len(), 2, "the panel is one charge");
    TestFramework::<Invoice>::with(())
        .given_no_previous_events()
        .when(open_for_charges())
        .then_expect_events(vec![InvoiceEvent::InvoiceDrafted {
            invoice_id: INVOICE,
            number: billing::test_support::number(),
            patient_id: PATIENT,
            appointment_id: None,
            currency: Currency::parse("KES").expect("valid"),
            at: later(95),
        }]);
    let opened = invoice_history(vec![open_for_charges()]);
    TestFramework::<Invoice>::with(())
        .given(opened.clone())
        .when(open_for_charges())
        .then_expect_error(InvoiceError::AlreadyDrafted);
    TestFramework::<Invoice>::with(())
        .given(opened.clone())
        .when(post(tech_b(), charges.clone()))
        .then_expect_events(vec![
            line_added(&charges[0], 120_000),
            line_added(&charges[1], 170_000),
        ]);
    let posted = invoice_history(vec![open_for_charges(), post(tech_b(), charges.clone())]);
    TestFramework::<Invoice>::with(())
        .given(posted.clone())
        .when(post(billing::test_support::accountant(), charges.clone()))
        .then_expect_events(vec![]);
    // A later order's charge next to one posted already: only the new one is added.
    let extra = ChargeLine {
        line_id: Uuid::from_u128(0xE7),
        code: text("UMICRO"),
        description: text("Urine microscopy"),
        unit_price: kes(40_000),
    };
    TestFramework::<Invoice>::with(())
        .given(posted)
        .when(post(tech_b(), vec![charges[1].clone(), extra.clone()]))
        .then_expect_events(vec![line_added(&extra, 210_000)]);
    // The same charge twice in one posting is added once.
    TestFramework::<Invoice>::with(())
        .given(opened)
        .when(post(tech_b(), vec![extra.clone(), extra.clone()]))
        .then_expect_events(vec![line_added(&extra, 40_000)]);
}

#[test]
fn charges_are_not_posted_to_an_issued_invoice() {
    use billing::test_support::{add_line, draft, issue};
    let issued = invoice_history(vec![draft(), add_line(1, 1, 100), issue()]);
    let order = replay(&history(vec![place(vec![entry(potassium(), 1)])]));
    TestFramework::<Invoice>::with(())
        .given(issued)
        .when(post(tech_b(), charge_lines(&order)))
        .then_expect_error(InvoiceError::NotDraft(InvoiceStatus::Issued));
    TestFramework::<Invoice>::with(())
        .given_no_previous_events()
        .when(post(tech_b(), charge_lines(&order)))
        .then_expect_error(InvoiceError::NotFound);
    let negative = ChargeLine {
        unit_price: kes(-1),
        ..charge_lines(&order)[0].clone()
    };
    TestFramework::<Invoice>::with(())
        .given(invoice_history(vec![open_for_charges()]))
        .when(post(tech_b(), vec![negative]))
        .then_expect_error(ValidationError::new("unit_price", "must not be negative").into());
}

// ---------------------------------------------------------------- critical alert

fn raise_alert(by: Actor) -> PatientCommand {
    PatientCommand::RaiseCriticalResultAlert {
        actor: by,
        alert_id: Uuid::from_u128(0xA1E),
        text: text("Critical potassium 6.9 mmol/L (HH)"),
        now: later(61),
    }
}

#[test]
fn a_critical_result_raises_one_patient_alert() {
    let registered = patient::test_support::registered(0x9A7);
    let added = PatientEvent::AlertAdded {
        alert: Alert {
            alert_id: Uuid::from_u128(0xA1E),
            text: text("Critical potassium 6.9 mmol/L (HH)"),
        },
        at: later(61),
    };
    TestFramework::<Patient>::with(())
        .given(vec![registered.clone()])
        .when(raise_alert(tech_a()))
        .then_expect_events(vec![added.clone()]);
    TestFramework::<Patient>::with(())
        .given(vec![registered.clone(), added.clone()])
        .when(raise_alert(tech_b()))
        .then_expect_events(vec![]);
    // Resolved by the care team: a retried entry does not bring it back.
    let resolved = PatientEvent::AlertResolved {
        alert_id: Uuid::from_u128(0xA1E),
        at: later(90),
    };
    TestFramework::<Patient>::with(())
        .given(vec![registered.clone(), added, resolved])
        .when(raise_alert(tech_b()))
        .then_expect_events(vec![]);
    TestFramework::<Patient>::with(())
        .given_no_previous_events()
        .when(raise_alert(tech_a()))
        .then_expect_error(PatientError::NotFound);
    for role in Role::ALL {
        let result = TestFramework::<Patient>::with(())
            .given(vec![registered.clone()])
            .when(raise_alert(actor(role, TECH_A, "someone")))
            .inspect_result();
        let forbidden = matches!(&result, Err(PatientError::Forbidden(_)));
        assert_eq!(
            forbidden,
            !allows(role, Operation::EnterLabResults),
            "{role}: {result:?}"
        );
        assert_eq!(!forbidden, role == Role::LabTechnician, "{role}");
    }
}

// ---------------------------------------------------------------- specimen labels

#[test]
fn a_specimen_label_is_claimed_once() {
    TestFramework::<SpecimenLabelClaim>::with(())
        .given_no_previous_events()
        .when(claim(SERUM))
        .then_expect_events(vec![SpecimenLabelEvent::SpecimenLabelClaimed {
            label: label("LAB-0001"),
            order_id: ORDER,
            specimen_id: SERUM,
            at: now(),
        }]);
    let claimed = vec![SpecimenLabelEvent::SpecimenLabelClaimed {
        label: label("LAB-0001"),
        order_id: ORDER,
        specimen_id: SERUM,
        at: now(),
    }];
    TestFramework::<SpecimenLabelClaim>::with(())
        .given(claimed.clone())
        .when(claim(SERUM))
        .then_expect_events(vec![]);
    TestFramework::<SpecimenLabelClaim>::with(())
        .given(claimed)
        .when(claim(URINE))
        .then_expect_error(LabError::LabelTaken("LAB-0001".into()));
}

// ---------------------------------------------------------------- the role walk

/// Not the id of any actor in the builders, so a technician walking a verification is
/// never the one who entered the result.
fn walker(role: Role) -> Actor {
    actor(role, Uuid::from_u128(0x3A1C), "walker")
}

const ORDER_COMMANDS: [&str; 9] = [
    "Place",
    "CollectSpecimen",
    "ReceiveSpecimen",
    "RejectSpecimen",
    "EnterResult",
    "VerifyResults",
    "AmendResult",
    "Cancel",
    "MarkBilled",
];

/// The variant's name: an exhaustive match, so a new command fails to compile here until
/// the walk knows it.
fn order_command_name(command: &LabOrderCommand) -> &'static str {
    use LabOrderCommand as C;
    match command {
        C::Place { .. } => "Place",
        C::CollectSpecimen { .. } => "CollectSpecimen",
        C::ReceiveSpecimen { .. } => "ReceiveSpecimen",
        C::RejectSpecimen { .. } => "RejectSpecimen",
        C::EnterResult { .. } => "EnterResult",
        C::VerifyResults { .. } => "VerifyResults",
        C::AmendResult { .. } => "AmendResult",
        C::Cancel { .. } => "Cancel",
        C::MarkBilled { .. } => "MarkBilled",
    }
}

/// The command `name` by `actor`, and the events after which it succeeds.
fn order_case(name: &str, actor: Actor) -> (LabOrderCommand, Vec<LabOrderEvent>) {
    let placed = || history(vec![place(vec![entry(potassium(), 1)])]);
    let collected = || {
        history(vec![
            place(vec![entry(potassium(), 1)]),
            collect(SERUM, "LAB-0001", SpecimenType::Serum),
        ])
    };
    let k = potassium();
    match name {
        "Place" => (
            LabOrderCommand::Place {
                actor,
                order_id: ORDER,
                patient_id: PATIENT,
                patient: adult_male(),
                appointment_id: None,
                priority: Priority::Stat,
                clinical_note: None,
                tests: vec![entry(k, 1)],
                now: now(),
            },
            vec![],
        ),
        "CollectSpecimen" => (
            LabOrderCommand::CollectSpecimen {
                actor,
                specimen_id: SERUM,
                label: label("LAB-0001"),
                specimen_type: SpecimenType::Serum,
                collected_at: later(10),
                now: later(10),
            },
            placed(),
        ),
        "ReceiveSpecimen" => (
            LabOrderCommand::ReceiveSpecimen {
                actor,
                specimen_id: SERUM,
                now: later(30),
            },
            collected(),
        ),
        "RejectSpecimen" => (
            LabOrderCommand::RejectSpecimen {
                actor,
                specimen_id: SERUM,
                reason: RejectionReason::Clotted,
                note: None,
                now: later(30),
            },
            collected(),
        ),
        "EnterResult" => (enter(actor, &k, mmol("4.2")), potassium_received()),
        "VerifyResults" => (verify(actor, &[&k]), potassium_entered()),
        "AmendResult" => (
            amend(actor, &k, mmol("4.9"), "Transcription error"),
            potassium_verified(),
        ),
        "Cancel" => (cancel(actor), placed()),
        "MarkBilled" => (
            LabOrderCommand::MarkBilled {
                actor,
                invoice_id: INVOICE,
                now: later(95),
            },
            potassium_verified(),
        ),
        other => panic!("unknown command {other}"),
    }
}

/// For every role: `Forbidden` (naming the role and the operation) exactly when the
/// matrix denies the command; otherwise, when `must_succeed`, events.
fn walk_role<C, E: std::fmt::Debug, Ev: std::fmt::Debug>(
    name: &str,
    make: impl Fn(Actor) -> C,
    operation: impl Fn(&C) -> Operation,
    decide: impl Fn(C) -> Result<Vec<Ev>, E>,
    forbidden_by: impl Fn(&E) -> Option<&PermissionDenied>,
    must_succeed: bool,
) -> usize {
    let mut checked = 0;
    for role in Role::ALL {
        let command = make(walker(role));
        let op = operation(&command);
        let result = decide(command);
        let denied = result.as_ref().err().and_then(&forbidden_by).cloned();
        if allows(role, op) {
            assert_eq!(denied, None, "{name} as {role}: {result:?}");
            if must_succeed {
                assert!(
                    matches!(&result, Ok(events) if !events.is_empty()),
                    "{name} as {role} should succeed: {result:?}"
                );
            }
        } else {
            assert_eq!(
                denied,
                Some(PermissionDenied {
                    role,
                    operation: op
                }),
                "{name} as {role}: {result:?}"
            );
        }
        checked += 1;
    }
    checked
}

fn lab_forbidden(e: &LabError) -> Option<&PermissionDenied> {
    match e {
        LabError::Forbidden(denied) => Some(denied),
        _ => None,
    }
}

#[test]
fn lab_order_commands_enforce_the_matrix() {
    let mut checked = 0;
    let mut names = std::collections::BTreeSet::new();
    let cancelled = history(vec![place(vec![entry(potassium(), 1)]), cancel(doctor())]);
    for name in ORDER_COMMANDS {
        let (command, given) = order_case(name, walker(Role::Doctor));
        names.insert(order_command_name(&command));
        // Where the command succeeds for an allowed role…
        let state = replay(&given);
        checked += walk_role(
            name,
            |a| order_case(name, a).0,
            LabOrderCommand::operation,
            |c| state.decide(c),
            lab_forbidden,
            true,
        );
        // …and where it fails for every role, forbidden is still what the matrix says.
        for refusing in [vec![], cancelled.clone()] {
            let state = replay(&refusing);
            if name == "Place" && refusing.is_empty() {
                continue;
            }
            checked += walk_role(
                name,
                |a| order_case(name, a).0,
                LabOrderCommand::operation,
                |c| state.decide(c),
                lab_forbidden,
                false,
            );
            for role in Role::ALL {
                let result = state.decide(order_case(name, walker(role)).0);
                assert!(result.is_err(), "{name} as {role} on {refusing:?}");
            }
        }
    }
    assert_eq!(names.len(), ORDER_COMMANDS.len(), "every variant is walked");
    assert_eq!(checked, ORDER_COMMANDS.len() * Role::ALL.len() * 3 - 10);
}

#[test]
fn lab_catalogue_commands_enforce_the_matrix() {
    let defined = catalogue_history(vec![define(potassium())]);
    let retired = catalogue_history(vec![define(potassium()), retire()]);
    let state = |events: &[LabTestEvent]| {
        let mut t = LabTest::default();
        for e in events {
            t.apply(e.clone());
        }
        t
    };
    let dearer = TestDefinition {
        price: kes(90_000),
        ..potassium()
    };
    let command_name = |c: &LabTestCommand| match c {
        LabTestCommand::Define { .. } => "Define",
        LabTestCommand::Revise { .. } => "Revise",
        LabTestCommand::Retire { .. } => "Retire",
        LabTestCommand::Reinstate { .. } => "Reinstate",
    };
    type Make = Box<dyn Fn(Actor) -> LabTestCommand>;
    // (command, where it succeeds, where it fails for other reasons)
    let cases: Vec<(Make, Vec<LabTestEvent>, Vec<LabTestEvent>)> = vec![
        (
            Box::new(|actor| LabTestCommand::Define {
                actor,
                definition: potassium(),
                now: now(),
            }),
            vec![],
            defined.clone(),
        ),
        (
            Box::new(move |actor| LabTestCommand::Revise {
                actor,
                definition: dearer.clone(),
                now: now(),
            }),
            defined.clone(),
            vec![],
        ),
        (
            Box::new(|actor| LabTestCommand::Retire {
                actor,
                reason: text("Obsolete"),
                now: now(),
            }),
            defined.clone(),
            retired.clone(),
        ),
        (
            Box::new(|actor| LabTestCommand::Reinstate { actor, now: now() }),
            retired,
            defined,
        ),
    ];
    let mut names = std::collections::BTreeSet::new();
    for (make, succeeds, fails) in &cases {
        let name = command_name(&make(walker(Role::HospitalAdmin)));
        names.insert(name);
        for (given, must_succeed) in [(succeeds, true), (fails, false)] {
            let s = state(given);
            walk_role(
                name,
                make,
                LabTestCommand::operation,
                |c| s.decide(c),
                lab_forbidden,
                must_succeed,
            );
            if !must_succeed {
                assert!(s.decide(make(walker(Role::HospitalAdmin))).is_err());
            }
        }
    }
    assert_eq!(names.len(), 4);
}

#[test]
fn specimen_label_commands_enforce_the_matrix() {
    let claim_by = |actor: Actor, specimen_id| SpecimenLabelCommand::Claim {
        actor,
        label: label("LAB-0001"),
        order_id: ORDER,
        specimen_id,
        now: now(),
    };
    let operation = |_: &SpecimenLabelCommand| Operation::CollectSpecimen;
    walk_role(
        "Claim",
        |a| claim_by(a, SERUM),
        operation,
        |c| SpecimenLabelClaim::default().decide(c),
        lab_forbidden,
        true,
    );
    let mut taken = SpecimenLabelClaim::default();
    for e in SpecimenLabelClaim::default()
        .decide(claim(SERUM))
        .expect("claims")
    {
        taken.apply(e);
    }
    walk_role(
        "Claim a taken label",
        |a| claim_by(a, URINE),
        operation,
        |c| taken.decide(c),
        lab_forbidden,
        false,
    );
    assert_eq!(
        taken.decide(claim_by(nurse(), URINE)),
        Err(LabError::LabelTaken("LAB-0001".into()))
    );
}

// ---------------------------------------------------------------- serialisation

#[test]
fn lab_events_survive_a_round_trip_through_json() {
    let mut events = potassium_verified();
    events.extend(history_after(
        &events.clone(),
        vec![amend(tech_b(), &potassium(), mmol("6.90"), "Typo")],
    ));
    for e in &events {
        let json = serde_json::to_string(e).expect("json");
        let back: LabOrderEvent = serde_json::from_str(&json).expect("parses");
        assert_eq!(&back, e);
    }
    let placed =
        serde_json::to_value(&history(vec![place(vec![electrolytes_entry()])])[0]).expect("json");
    let test = &placed["LabOrderPlaced"]["items"][0]["test"];
    assert_eq!(test["code"], "2823-3");
    assert_eq!(test["system"], "LOINC");
    assert_eq!(test["kind"]["type"], "ANALYTE");
    assert_eq!(test["kind"]["result"]["kind"], "NUMERIC");
    assert_eq!(test["kind"]["result"]["ranges"][2]["low"], "3.6");
    for e in catalogue_history(vec![define(hiv()), revise(hiv_as_text())]) {
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(
            serde_json::from_str::<LabTestEvent>(&json).expect("parses"),
            e
        );
    }
}

/// HIV-RDT revised into a text test (a code stays; what it reports may change).
fn hiv_as_text() -> TestDefinition {
    TestDefinition {
        kind: TestKind::Analyte {
            result: ResultSpec::Text,
        },
        ..hiv()
    }
}

// ---------------------------------------------------------------- properties

/// Micros of ±10^15 (a billion whole units), far past any lab value.
const SPAN: i64 = 1_000_000_000_000_000;

/// Limits in the order `[critical low, low, high, critical high]`, each maybe absent,
/// ordered where present, with a low or a high and distinct low and high.
fn ordered_limits() -> impl Strategy<Value = [Option<i64>; 4]> {
    let values = prop_oneof![
        prop::array::uniform4(-SPAN..=SPAN),
        // Close together, so equal neighbours (critical low = low) come up.
        prop::array::uniform4(-3i64..=3),
    ];
    (values, prop::array::uniform4(any::<bool>()))
        .prop_map(|(mut v, present)| {
            v.sort_unstable();
            [0, 1, 2, 3].map(|i| present[i].then_some(v[i]))
        })
        .prop_filter("a low or a high, and low ≠ high", |[_, low, high, _]| {
            (low.is_some() || high.is_some()) && (low.is_none() || low != high)
        })
}

fn reference_range(limits: [Option<i64>; 4]) -> ReferenceRange {
    let [critical_low, low, high, critical_high] = limits.map(|l| l.map(Decimal::from_micros));
    ReferenceRange {
        sex: None,
        min_age_days: None,
        max_age_days: None,
        low,
        high,
        critical_low,
        critical_high,
    }
}

/// The flag of `v` written from the limits' micros alone: the critical limits are the
/// last values that are not critical, the normal limits the last that are normal.
fn oracle_flag(v: i64, [critical_low, low, high, critical_high]: [Option<i64>; 4]) -> Flag {
    let beyond_low = |limit: Option<i64>| matches!(limit, Some(x) if v < x);
    let beyond_high = |limit: Option<i64>| matches!(limit, Some(x) if v > x);
    match (
        beyond_low(critical_low),
        beyond_high(critical_high),
        beyond_low(low),
        beyond_high(high),
    ) {
        (true, _, _, _) => Flag::CriticalLow,
        (_, true, _, _) => Flag::CriticalHigh,
        (_, _, true, _) => Flag::Low,
        (_, _, _, true) => Flag::High,
        _ => Flag::Normal,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_flag_agrees_with_an_oracle_on_the_micros(
        limits in ordered_limits(),
        pick in 0usize..6,
        delta in -2i64..=2,
        free in -SPAN..=SPAN,
    ) {
        // Most values sit on or next to a limit, where the boundaries are.
        let v = match limits.get(pick).copied().flatten() {
            Some(limit) => (limit + delta).clamp(-SPAN, SPAN),
            None => free,
        };
        let range = reference_range(limits);
        prop_assert_eq!(range.validate(), Ok(()));
        let flag = range.flag(&Decimal::from_micros(v));
        prop_assert_eq!(flag, oracle_flag(v, limits), "value {} limits {:?}", v, limits);
        let [critical_low, low, high, critical_high] = limits;
        let inside = [critical_low, low].iter().flatten().all(|&l| v >= l)
            && [high, critical_high].iter().flatten().all(|&h| v <= h);
        prop_assert_eq!(flag == Flag::Normal, inside, "normal exactly within every limit");
        let critical = critical_low.is_some_and(|c| v < c) || critical_high.is_some_and(|c| v > c);
        prop_assert_eq!(flag.is_critical(), critical, "critical exactly beyond a critical limit");
    }

    #[test]
    fn a_range_is_valid_exactly_when_its_limits_are_ordered(
        raw in prop::array::uniform4(prop::option::of(-3i64..=3)),
    ) {
        let range = reference_range(raw);
        let given: Vec<i64> = raw.iter().flatten().copied().collect();
        let [_, low, high, _] = raw;
        let valid = (low.is_some() || high.is_some())
            && given.windows(2).all(|w| w[0] <= w[1])
            && !(low.is_some() && low == high);
        prop_assert_eq!(range.validate().is_ok(), valid, "{:?}", raw);
    }

    #[test]
    fn a_decimal_round_trips_through_its_text(v in -SPAN..=SPAN) {
        let d = Decimal::from_micros(v);
        let parsed = Decimal::parse("value", d.as_str());
        prop_assert!(parsed.is_ok(), "{} does not parse", d);
        let parsed = parsed.unwrap_or_else(|_| Decimal::from_micros(0));
        prop_assert_eq!(parsed.micros(), v);
        prop_assert_eq!(parsed.as_str(), d.as_str(), "one spelling");
        let padded = format!(
            "{}{}.{:06}",
            if v < 0 { "-" } else { "" },
            v.unsigned_abs() / 1_000_000,
            v.unsigned_abs() % 1_000_000
        );
        prop_assert_eq!(Decimal::parse("value", &padded).map(|d| d.micros()), Ok(v));
    }
}
