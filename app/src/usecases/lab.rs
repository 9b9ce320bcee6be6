//! The laboratory: the test catalogue, orders, specimens, results, verification, and the
//! charges a verified order posts to the patient's invoice.
//!
//! What a decision depends on is read from the write side (the catalogue entry at its
//! current version, the patient's status, sex and date of birth, the order itself);
//! lists and views come from the `lab_*` read models, which every command waits for.
//! Reading results is recorded in the patient's access log, like every other read of
//! patient information.
//!
//! Two follow-ups run after the command that causes them, outside its idempotent run
//! (each is idempotent by itself, so a retry repeats it harmlessly):
//! - a critical result raises an alert on the patient's record (one per result version);
//! - the verification that completes an order posts its charges to the patient's DRAFT
//!   invoice (opening one if none is open), each charge at the price of the catalogue
//!   version the order was placed under, and marks the order billed. If that does not
//!   complete, the order shows no invoice and `billLabOrder` finishes it.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use hms_domain::appointment::Appointment;
use hms_domain::billing::{ChargeLine, Invoice, InvoiceCommand, InvoiceNumber, InvoiceStatus};
use hms_domain::common::{BoundedText, Currency};
use hms_domain::lab::{
    self as domain, CodeSystem, CodedOption, Decimal, LabError, LabOrder, LabOrderCommand, LabTest,
    LabTestCommand, OrderStatus, OrderedEntry, PatientFacts, Priority, ReferenceRange,
    RejectionReason, ResultInput, ResultSpec, SpecimenLabel, SpecimenLabelClaim,
    SpecimenLabelCommand, SpecimenType, TestCode, TestDefinition, TestKind, Ucum,
};
use hms_domain::patient::{Patient, PatientCommand, PatientStatus, Sex};
use hms_domain::permissions::Operation;
use hms_projections::projectors::{
    LabOrderRow, LabResultRow, LabResultVersionRow, LabSpecimenRow, LabTestRow,
};
use serde::Serialize;
use uuid::Uuid;

use super::patients::record_patients_viewed;
use super::{no_nul, optional_text, stored_name, text};
use crate::error::{AppError, DomainErrorCode, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, MutationOptions};

/// The aggregate types of the laboratory, as the audit trail names them.
pub const LAB_ORDER_TYPE: &str = <LabOrder as cqrs_es::Aggregate>::TYPE;
pub const LAB_TEST_TYPE: &str = <LabTest as cqrs_es::Aggregate>::TYPE;

pub const MAX_REASON_CHARS: usize = domain::MAX_LAB_REASON_CHARS;

// ---------------------------------------------------------------------------------------
// The catalogue

/// A reference range as entered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReferenceRangeInput {
    pub sex: Option<Sex>,
    pub min_age_days: Option<i32>,
    pub max_age_days: Option<i32>,
    pub low: Option<String>,
    pub high: Option<String>,
    pub critical_low: Option<String>,
    pub critical_high: Option<String>,
}

/// A coded answer as entered.
#[derive(Debug, Clone, Serialize)]
pub struct CodedOptionInput {
    pub code: String,
    pub display: String,
    pub abnormal: bool,
}

/// What a catalogue result is, as entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultKind {
    Numeric,
    Coded,
    Text,
}

/// A catalogue entry as entered: an analyte (with `result_kind`) or a panel (with
/// `members`).
#[derive(Debug, Clone, Serialize)]
pub struct LabTestInput {
    pub code: String,
    pub system: CodeSystem,
    pub name: String,
    pub specimen_type: SpecimenType,
    /// For an analyte; none for a panel.
    pub result_kind: Option<ResultKind>,
    /// UCUM unit of a numeric analyte.
    pub unit: Option<String>,
    pub reference_ranges: Vec<ReferenceRangeInput>,
    pub options: Vec<CodedOptionInput>,
    /// The codes of a panel's tests.
    pub members: Vec<String>,
    pub price_minor: i64,
    /// ISO 4217; defaults to the hospital profile's currency.
    pub currency: Option<String>,
}

fn decimal(field: &'static str, raw: Option<&str>) -> Result<Option<Decimal>> {
    raw.filter(|s| !s.trim().is_empty())
        .map(|s| Decimal::parse(field, s))
        .transpose()
        .map_err(Into::into)
}

fn age_days(field: &'static str, raw: Option<i32>) -> Result<Option<u32>> {
    raw.map(|d| u32::try_from(d).map_err(|_| AppError::validation(field, "must not be negative")))
        .transpose()
}

/// The definition an input describes, checked as far as it can be without the catalogue.
fn definition(auth: &Authorized<'_>, input: &LabTestInput) -> Result<TestDefinition> {
    let code = TestCode::parse(&input.code)?;
    let name = text("name", &input.name, domain::MAX_TEST_NAME_CHARS)?;
    let currency = match (&input.currency, &auth.hospital.profile) {
        (Some(raw), _) => Currency::parse(raw)?,
        (None, Some(profile)) => profile.currency,
        (None, None) => {
            return Err(AppError::validation(
                "currency",
                "the hospital profile names no currency; give one",
            ))
        }
    };
    if !(0..=super::billing::MAX_MINOR_UNITS).contains(&input.price_minor) {
        return Err(AppError::validation(
            "priceMinor",
            format!(
                "must be 0 to {} minor units",
                super::billing::MAX_MINOR_UNITS
            ),
        ));
    }
    let kind = match (input.result_kind, input.members.is_empty()) {
        (Some(_), false) => {
            return Err(AppError::validation(
                "members",
                "an analyte has no members; a panel has no resultKind",
            ))
        }
        (None, true) => {
            return Err(AppError::validation(
                "resultKind",
                "give a resultKind for a test, or members for a panel",
            ))
        }
        (None, false) => TestKind::Panel {
            members: input
                .members
                .iter()
                .map(|m| TestCode::parse(m).map_err(|e| AppError::validation("members", e.message)))
                .collect::<Result<_>>()?,
        },
        (Some(kind), true) => {
            let result = match kind {
                ResultKind::Numeric => {
                    let unit = input.unit.as_deref().ok_or_else(|| {
                        AppError::validation("unit", "a numeric test needs its UCUM unit")
                    })?;
                    let ranges = input
                        .reference_ranges
                        .iter()
                        .map(|r| {
                            Ok(ReferenceRange {
                                sex: r.sex,
                                min_age_days: age_days("minAgeDays", r.min_age_days)?,
                                max_age_days: age_days("maxAgeDays", r.max_age_days)?,
                                low: decimal("low", r.low.as_deref())?,
                                high: decimal("high", r.high.as_deref())?,
                                critical_low: decimal("criticalLow", r.critical_low.as_deref())?,
                                critical_high: decimal("criticalHigh", r.critical_high.as_deref())?,
                            })
                        })
                        .collect::<Result<_>>()?;
                    ResultSpec::Numeric {
                        unit: Ucum::parse("unit", unit)?,
                        ranges,
                    }
                }
                ResultKind::Coded => ResultSpec::Coded {
                    options: input
                        .options
                        .iter()
                        .map(|o| {
                            no_nul("options", &o.code)?;
                            no_nul("options", &o.display)?;
                            Ok(CodedOption {
                                code: o.code.trim().to_owned(),
                                display: o.display.trim().to_owned(),
                                abnormal: o.abnormal,
                            })
                        })
                        .collect::<Result<_>>()?,
                },
                ResultKind::Text => ResultSpec::Text,
            };
            if !matches!(result, ResultSpec::Numeric { .. })
                && (input.unit.is_some() || !input.reference_ranges.is_empty())
            {
                return Err(AppError::validation(
                    "unit",
                    "only a numeric test has a unit and reference ranges",
                ));
            }
            if !matches!(result, ResultSpec::Coded { .. }) && !input.options.is_empty() {
                return Err(AppError::validation(
                    "options",
                    "only a coded test has answers",
                ));
            }
            TestKind::Analyte { result }
        }
    };
    let definition = TestDefinition {
        code,
        system: input.system,
        name,
        specimen_type: input.specimen_type,
        kind,
        price: hms_domain::billing::Money::new(input.price_minor, currency),
    };
    definition.validate()?;
    Ok(definition)
}

/// A panel's members must be analytes of the catalogue, in service, of the panel's
/// specimen type (one specimen serves the panel).
async fn check_members(auth: &Authorized<'_>, definition: &TestDefinition) -> Result<()> {
    let TestKind::Panel { members } = &definition.kind else {
        return Ok(());
    };
    for code in members {
        let (test, _) = auth.load::<LabTest>(code.as_str()).await?;
        let Some(member) = test.definition else {
            return Err(AppError::validation(
                "members",
                format!("{code} is not in the catalogue"),
            ));
        };
        if test.retired {
            return Err(AppError::validation(
                "members",
                format!("{code} is retired"),
            ));
        }
        if member.result().is_none() {
            return Err(AppError::validation(
                "members",
                format!("{code} is a panel; a panel holds tests"),
            ));
        }
        if member.specimen_type != definition.specimen_type {
            return Err(AppError::validation(
                "members",
                format!("{code} is run on another specimen type than the panel"),
            ));
        }
    }
    Ok(())
}

/// A catalogue entry to define, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct DefineLabTest {
    pub test: LabTestInput,
    pub idempotency_key: Option<String>,
}

/// Adds a test or panel to the catalogue at version 1.
pub async fn define_lab_test(auth: &Authorized<'_>, input: DefineLabTest) -> Result<LabTestRow> {
    auth.require(Operation::ManageLabCatalogue)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let definition = definition(auth, &input.test)?;
    check_members(auth, &definition).await?;
    let code = definition.code.to_string();
    let command = LabTestCommand::Define {
        actor: auth.actor(),
        definition,
        now: auth.now,
    };
    run_catalogue(auth, &code, &options, &input, command).await
}

/// A new version of a catalogue entry, as entered (the code names the entry).
#[derive(Debug, Clone, Serialize)]
pub struct ReviseLabTest {
    pub test: LabTestInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Revises a catalogue entry: a new version; orders placed before keep theirs.
pub async fn revise_lab_test(auth: &Authorized<'_>, input: ReviseLabTest) -> Result<LabTestRow> {
    auth.require(Operation::ManageLabCatalogue)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let definition = definition(auth, &input.test)?;
    check_members(auth, &definition).await?;
    let code = definition.code.to_string();
    let command = LabTestCommand::Revise {
        actor: auth.actor(),
        definition,
        now: auth.now,
    };
    run_catalogue(auth, &code, &options, &input, command).await
}

/// A catalogue entry to retire or reinstate.
#[derive(Debug, Clone, Serialize)]
pub struct SetLabTestInService {
    pub code: String,
    pub in_service: bool,
    /// Why it is retired (required to retire).
    pub reason: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Retires a catalogue entry (it can no longer be ordered) or puts it back in service.
pub async fn set_lab_test_in_service(
    auth: &Authorized<'_>,
    input: SetLabTestInService,
) -> Result<LabTestRow> {
    auth.require(Operation::ManageLabCatalogue)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let code = TestCode::parse(&input.code)?;
    let command = if input.in_service {
        LabTestCommand::Reinstate {
            actor: auth.actor(),
            now: auth.now,
        }
    } else {
        LabTestCommand::Retire {
            actor: auth.actor(),
            reason: text(
                "reason",
                input.reason.as_deref().unwrap_or_default(),
                MAX_REASON_CHARS,
            )?,
            now: auth.now,
        }
    };
    run_catalogue(auth, code.as_str(), &options, &input, command).await
}

async fn run_catalogue(
    auth: &Authorized<'_>,
    code: &str,
    options: &MutationOptions,
    input: &impl Serialize,
    command: LabTestCommand,
) -> Result<LabTestRow> {
    auth.idempotent(options, input, || async {
        auth.execute::<LabTest>(code, command, options.expected_version)
            .await?;
        Ok::<_, AppError>(code.to_owned())
    })
    .await?;
    LabTestRow::find(auth.pool(), code)
        .await?
        .ok_or_else(|| AppError::internal("the catalogue entry is missing after its command"))
}

/// The catalogue, by code; retired entries only when asked for.
pub async fn lab_tests(
    auth: &Authorized<'_>,
    include_retired: bool,
    page: &PageRequest,
) -> Result<Page<LabTestRow>> {
    auth.require(Operation::ViewLabCatalogue)?;
    let (after, _) = page.after_or("");
    let rows: Vec<LabTestRow> = sqlx::query_as(&format!(
        "SELECT {} FROM lab_tests WHERE code > $1 AND ($2 OR NOT retired) ORDER BY code LIMIT $3",
        LabTestRow::COLUMNS
    ))
    .bind(after)
    .bind(include_retired)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    Ok(page.page(rows, |r| Keyset {
        key: r.code.clone(),
        id: r.code.clone(),
    }))
}

/// One catalogue entry, or NOT_FOUND.
pub async fn lab_test(auth: &Authorized<'_>, code: &str) -> Result<LabTestRow> {
    auth.require(Operation::ViewLabCatalogue)?;
    let code = TestCode::parse(code).map_err(|_| AppError::NotFound)?;
    LabTestRow::find(auth.pool(), code.as_str())
        .await?
        .ok_or(AppError::NotFound)
}

// ---------------------------------------------------------------------------------------
// Orders

/// Tests to order, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct OrderLabTests {
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    /// Catalogue codes of tests or panels.
    pub tests: Vec<String>,
    pub priority: Priority,
    pub clinical_note: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A DOCTOR orders tests for a registered, active patient (optionally for one of the
/// patient's appointments). Each test is taken at its current catalogue version.
pub async fn order_lab_tests(auth: &Authorized<'_>, input: OrderLabTests) -> Result<LabOrderRow> {
    auth.require(Operation::OrderLabTests)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    if input.tests.is_empty() {
        return Err(AppError::validation("tests", "name at least one test"));
    }
    if input.tests.len() > domain::MAX_TESTS_PER_ORDER {
        return Err(AppError::validation(
            "tests",
            format!("at most {} tests per order", domain::MAX_TESTS_PER_ORDER),
        ));
    }
    let clinical_note = optional_text(
        "clinicalNote",
        input.clinical_note.as_deref(),
        domain::MAX_CLINICAL_NOTE_CHARS,
    )?;
    let (patient, _) = auth.load::<Patient>(&input.patient_id.to_string()).await?;
    let (Some(status), Some(demographics)) = (patient.status, &patient.demographics) else {
        return Err(AppError::NotFound);
    };
    if patient.erased {
        return Err(AppError::Conflict(
            "the patient's record was erased; nothing can be ordered for it".into(),
        ));
    }
    // Ordering puts the doctor on a restricted record's care team: only one who may read
    // it already (or broke the glass) may do that.
    super::restriction::require_full_access(auth, input.patient_id).await?;
    match status {
        PatientStatus::Active => {}
        PatientStatus::Merged { survivor_id } => {
            return Err(AppError::Conflict(format!(
                "the patient was merged into {survivor_id}; order for that record"
            )))
        }
        other => {
            return Err(AppError::Conflict(format!(
                "the patient is {}; tests are ordered for active patients",
                stored_name(&other).unwrap_or_default()
            )))
        }
    }
    if let Some(appointment_id) = input.appointment_id {
        let (appointment, _) = auth
            .load::<Appointment>(&appointment_id.to_string())
            .await?;
        match appointment.patient_id {
            None => return Err(AppError::NotFound),
            Some(owner) if owner != input.patient_id => {
                return Err(AppError::validation(
                    "appointmentId",
                    "is an appointment of another patient",
                ))
            }
            Some(_) => {}
        }
    }
    let mut tests = Vec::new();
    for raw in &input.tests {
        let code = TestCode::parse(raw).map_err(|e| AppError::validation("tests", e.message))?;
        tests.push(orderable(auth, &code).await?);
    }
    let patient = PatientFacts {
        sex: demographics.sex,
        date_of_birth: demographics.date_of_birth,
    };
    let id = auth
        .idempotent_id(&options, &input, || async {
            let order_id = auth.new_id(&options);
            let command = LabOrderCommand::Place {
                actor: auth.actor(),
                order_id,
                patient_id: input.patient_id,
                patient,
                appointment_id: input.appointment_id,
                priority: input.priority,
                clinical_note,
                tests,
                now: auth.now,
            };
            auth.execute::<LabOrder>(&order_id.to_string(), command, Some(0))
                .await?;
            Ok::<_, AppError>(order_id)
        })
        .await?;
    order_row(auth, id).await
}

/// A catalogue entry at its current version, with a panel's members: VALIDATION for an
/// unknown or retired code.
async fn orderable(auth: &Authorized<'_>, code: &TestCode) -> Result<OrderedEntry> {
    let current = |test: LabTest, code: &TestCode| -> Result<(TestDefinition, u32)> {
        let version = test.version;
        match test.definition {
            None => Err(AppError::validation(
                "tests",
                format!("{code} is not in the laboratory catalogue"),
            )),
            Some(_) if test.retired => Err(AppError::validation(
                "tests",
                format!("{code} is retired and cannot be ordered"),
            )),
            Some(d) => Ok((d, version)),
        }
    };
    let (test, _) = auth.load::<LabTest>(code.as_str()).await?;
    let (definition, version) = current(test, code)?;
    let mut members = Vec::new();
    if let TestKind::Panel { members: codes } = &definition.kind {
        for member in codes {
            let (test, _) = auth.load::<LabTest>(member.as_str()).await?;
            members.push(current(test, member)?);
        }
    }
    Ok(OrderedEntry {
        definition,
        version,
        members,
    })
}

/// The order as the read model shows it after this request's command.
async fn order_row(auth: &Authorized<'_>, id: Uuid) -> Result<LabOrderRow> {
    LabOrderRow::find(auth.pool(), id)
        .await?
        .ok_or_else(|| AppError::internal("the lab order is missing after its command"))
}

/// The order a command names, from the write side: NOT_FOUND when this hospital has no
/// such order.
async fn load_order(auth: &Authorized<'_>, id: Uuid) -> Result<LabOrder> {
    let (order, _) = auth.load::<LabOrder>(&id.to_string()).await?;
    if order.status.is_none() {
        return Err(AppError::NotFound);
    }
    Ok(order)
}

/// Runs one command on an existing order, once per idempotency key. (Every order
/// mutation loads the order before it reads its other input: another hospital's order is
/// NOT_FOUND whatever else the request says.)
async fn on_order(
    auth: &Authorized<'_>,
    order_id: Uuid,
    options: &MutationOptions,
    input: &impl Serialize,
    command: LabOrderCommand,
) -> Result<()> {
    auth.require(command.operation())?;
    auth.idempotent(options, input, || async {
        auth.execute::<LabOrder>(&order_id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, AppError>(order_id.to_string())
    })
    .await?;
    Ok(())
}

/// A specimen collected, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct CollectSpecimen {
    pub order_id: Uuid,
    pub specimen_type: SpecimenType,
    /// The barcode on the container, unique in the hospital.
    pub label: String,
    /// When it was taken; now if not given.
    pub collected_at: Option<DateTime<Utc>>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Records a specimen taken for an order (or taken again after a rejection). The label
/// is claimed first, so two specimens never share one.
pub async fn collect_specimen(
    auth: &Authorized<'_>,
    input: CollectSpecimen,
) -> Result<LabOrderRow> {
    auth.require(Operation::CollectSpecimen)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let order = load_order(auth, input.order_id).await?;
    // Collecting puts a nurse on a restricted record's care team: as for ordering.
    if let Some(patient) = order.patient_id {
        super::restriction::require_full_access(auth, patient).await?;
    }
    let label = SpecimenLabel::parse(&input.label)?;
    let specimen_id = auth.new_id(&options);
    let command = LabOrderCommand::CollectSpecimen {
        actor: auth.actor(),
        specimen_id,
        label: label.clone(),
        specimen_type: input.specimen_type,
        collected_at: input.collected_at.unwrap_or(auth.now),
        now: auth.now,
    };
    // Decided on the order as it stands before the label is claimed: a refusal (wrong
    // type, already collected, a time in the future) claims nothing.
    order
        .decide(command.clone())
        .map_err(|e| e.to_app_error())?;
    let claim = SpecimenLabelCommand::Claim {
        actor: auth.actor(),
        label: label.clone(),
        order_id: input.order_id,
        specimen_id,
        now: auth.now,
    };
    auth.execute::<SpecimenLabelClaim>(label.as_str(), claim, None)
        .await?;
    on_order(auth, input.order_id, &options, &input, command).await?;
    order_row(auth, input.order_id).await
}

/// A specimen received in the lab, or rejected.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSpecimen {
    pub order_id: Uuid,
    pub specimen_id: Uuid,
    /// None receives it; a reason rejects it.
    pub rejection: Option<RejectionReason>,
    pub note: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Receives a collected specimen in the lab, or rejects it with a reason (it must then
/// be collected again).
pub async fn process_specimen(
    auth: &Authorized<'_>,
    input: ProcessSpecimen,
) -> Result<LabOrderRow> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    load_order(auth, input.order_id).await?;
    let command = match input.rejection {
        None => LabOrderCommand::ReceiveSpecimen {
            actor: auth.actor(),
            specimen_id: input.specimen_id,
            now: auth.now,
        },
        Some(reason) => LabOrderCommand::RejectSpecimen {
            actor: auth.actor(),
            specimen_id: input.specimen_id,
            reason,
            note: optional_text("note", input.note.as_deref(), MAX_REASON_CHARS)?,
            now: auth.now,
        },
    };
    on_order(auth, input.order_id, &options, &input, command).await?;
    order_row(auth, input.order_id).await
}

/// A result value as entered: a number with its unit, an answer code, or text.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultValueInput {
    pub numeric: Option<String>,
    pub unit: Option<String>,
    pub code: Option<String>,
    pub text: Option<String>,
}

fn result_input(raw: &ResultValueInput) -> Result<ResultInput> {
    match (&raw.numeric, &raw.code, &raw.text) {
        (Some(n), None, None) => Ok(ResultInput::Numeric {
            value: Decimal::parse("value", n)?,
            unit: {
                let unit = raw.unit.as_deref().unwrap_or_default();
                no_nul("unit", unit)?;
                if unit.trim().is_empty() {
                    return Err(AppError::validation(
                        "unit",
                        "a numeric result needs its unit",
                    ));
                }
                unit.to_owned()
            },
        }),
        (None, Some(code), None) => {
            no_nul("value", code)?;
            Ok(ResultInput::Coded { code: code.clone() })
        }
        (None, None, Some(t)) => Ok(ResultInput::Text {
            text: text("value", t, domain::MAX_TEXT_RESULT_CHARS)?,
        }),
        _ => Err(AppError::validation(
            "value",
            "give exactly one of numeric (with unit), code or text",
        )),
    }
}

/// A result entered, as typed.
#[derive(Debug, Clone, Serialize)]
pub struct EnterLabResult {
    pub order_id: Uuid,
    pub item_id: Uuid,
    pub value: ResultValueInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Enters (or, before verification, re-enters) a result: checked against its test and
/// flagged for the patient; a critical one raises an alert on the patient's record.
pub async fn enter_lab_result(auth: &Authorized<'_>, input: EnterLabResult) -> Result<LabOrderRow> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    load_order(auth, input.order_id).await?;
    let value = result_input(&input.value)?;
    let command = LabOrderCommand::EnterResult {
        actor: auth.actor(),
        item_id: input.item_id,
        value,
        now: auth.now,
    };
    on_order(auth, input.order_id, &options, &input, command).await?;
    raise_critical_alert(auth, input.order_id, input.item_id).await?;
    order_row(auth, input.order_id).await
}

/// A result amended, as typed.
#[derive(Debug, Clone, Serialize)]
pub struct AmendLabResult {
    pub order_id: Uuid,
    pub item_id: Uuid,
    pub value: ResultValueInput,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Corrects a verified result: a new version with the reason, verified again by another
/// technician. The earlier versions stay.
pub async fn amend_lab_result(auth: &Authorized<'_>, input: AmendLabResult) -> Result<LabOrderRow> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    load_order(auth, input.order_id).await?;
    let value = result_input(&input.value)?;
    let reason = text("reason", &input.reason, MAX_REASON_CHARS)?;
    let command = LabOrderCommand::AmendResult {
        actor: auth.actor(),
        item_id: input.item_id,
        value,
        reason,
        now: auth.now,
    };
    on_order(auth, input.order_id, &options, &input, command).await?;
    raise_critical_alert(auth, input.order_id, input.item_id).await?;
    order_row(auth, input.order_id).await
}

/// Raises the patient alert of the newest result of `item_id` if it is critical: once per
/// result version (the alert id is derived from it).
async fn raise_critical_alert(auth: &Authorized<'_>, order_id: Uuid, item_id: Uuid) -> Result<()> {
    let order = load_order(auth, order_id).await?;
    let Some((item, result)) = order
        .latest_results()
        .find(|(i, _)| i.item.item_id == item_id)
    else {
        return Ok(());
    };
    let Some(flag) = result.flag.filter(|f| f.is_critical()) else {
        return Ok(());
    };
    let Some(patient_id) = order.patient_id else {
        return Ok(());
    };
    let value = hms_projections::projectors::value_text(&result.value);
    let message = format!(
        "Critical lab result: {} {} ({}), order {order_id}",
        item.item.test.name.as_str(),
        value,
        flag.hl7().1,
    );
    let command = PatientCommand::RaiseCriticalResultAlert {
        actor: auth.actor(),
        alert_id: Uuid::new_v5(&item_id, format!("critical:{}", result.version).as_bytes()),
        text: BoundedText::parse(
            "alert",
            &message,
            hms_domain::patient::MAX_CLINICAL_TEXT_CHARS,
        )
        .map_err(AppError::from)?,
        now: auth.now,
    };
    match auth
        .execute::<Patient>(&patient_id.to_string(), command, None)
        .await
    {
        Ok(_) => Ok(()),
        // The result stands; the record can no longer take alerts (merged since the
        // order). The critical flag still shows on the result and the order.
        Err(AppError::Conflict(reason)) => {
            tracing::warn!(%patient_id, %order_id, reason, "critical result alert not raised");
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// Results to verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyLabResults {
    pub order_id: Uuid,
    /// The results to verify; all unverified results of the order when empty.
    pub item_ids: Vec<Uuid>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Verifies results entered by another technician; they become final. The verification
/// that makes the whole order final posts its charges to the patient's invoice.
pub async fn verify_lab_results(
    auth: &Authorized<'_>,
    input: VerifyLabResults,
) -> Result<LabOrderRow> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let order = load_order(auth, input.order_id).await?;
    let item_ids = if input.item_ids.is_empty() {
        order
            .items
            .iter()
            .filter(|i| i.status == domain::ResultStatus::Preliminary)
            .map(|i| i.item.item_id)
            .collect()
    } else {
        input.item_ids.clone()
    };
    let command = LabOrderCommand::VerifyResults {
        actor: auth.actor(),
        item_ids,
        now: auth.now,
    };
    on_order(auth, input.order_id, &options, &input, command).await?;
    let order = load_order(auth, input.order_id).await?;
    if order.ever_verified && order.invoice_id.is_none() {
        if let Err(error) = post_charges(auth, &order).await {
            // The verification stands; the order shows no invoice until `billLabOrder`.
            tracing::warn!(%error, order = %input.order_id, "lab charges not posted");
        }
    }
    order_row(auth, input.order_id).await
}

/// An order whose charges to post (after a verification that could not post them).
#[derive(Debug, Clone, Serialize)]
pub struct BillLabOrder {
    pub order_id: Uuid,
}

/// Posts a verified order's charges to the patient's invoice, if not done yet.
pub async fn bill_lab_order(auth: &Authorized<'_>, input: BillLabOrder) -> Result<LabOrderRow> {
    auth.require(Operation::PostLabCharges)?;
    let order = load_order(auth, input.order_id).await?;
    if !order.ever_verified {
        return Err(LabError::NotVerified.to_app_error());
    }
    if order.invoice_id.is_none() {
        post_charges(auth, &order).await?;
    }
    order_row(auth, input.order_id).await
}

/// Posts the order's charges to the patient's oldest DRAFT invoice, or to one opened for
/// them, then marks the order billed. Every step is idempotent: charge lines are named
/// by the order and the code; the invoice opened for an order is named by the order.
async fn post_charges(auth: &Authorized<'_>, order: &LabOrder) -> Result<()> {
    let (Some(order_id), Some(patient_id)) = (order.id, order.patient_id) else {
        return Err(AppError::NotFound);
    };
    let Some(currency) = order.charges.first().map(|c| c.price.currency()) else {
        return Ok(());
    };
    let charges: Vec<ChargeLine> = order
        .charges
        .iter()
        .map(|c| {
            Ok(ChargeLine {
                line_id: Uuid::new_v5(&order_id, format!("charge:{}", c.code).as_bytes()),
                code: BoundedText::parse(
                    "code",
                    c.code.as_str(),
                    hms_domain::billing::MAX_LINE_CODE_CHARS,
                )?,
                description: BoundedText::parse(
                    "description",
                    // The code, not the test's name: invoices are read at the front desk.
                    &format!("Laboratory test {} (catalogue v{})", c.code, c.version),
                    hms_domain::billing::MAX_LINE_DESCRIPTION_CHARS,
                )?,
                unit_price: c.price,
            })
        })
        .collect::<std::result::Result<_, hms_domain::common::ValidationError>>()?;
    // Posted before (to whichever invoice) but not marked: that invoice is the order's.
    let line_ids: Vec<Uuid> = charges.iter().map(|c| c.line_id).collect();
    let posted: Option<Uuid> =
        sqlx::query_scalar("SELECT invoice_id FROM invoice_lines WHERE line_id = ANY($1) LIMIT 1")
            .bind(&line_ids)
            .fetch_optional(auth.pool())
            .await?;
    let mut tried = HashSet::new();
    let invoice_id = if let Some(invoice_id) = posted {
        invoice_id
    } else {
        loop {
            let invoice_id = match open_draft(auth, patient_id, currency, &tried).await? {
                Some(id) => id,
                None => open_invoice_for(auth, order_id, patient_id, currency).await?,
            };
            let command = InvoiceCommand::PostCharges {
                actor: auth.actor(),
                charges: charges.clone(),
                now: auth.now,
            };
            match auth
                .execute::<Invoice>(&invoice_id.to_string(), command, None)
                .await
            {
                Ok(_) => break invoice_id,
                // Issued (or voided) since it was found: use another draft, or open one.
                Err(AppError::Conflict(_)) if tried.insert(invoice_id) && tried.len() < 4 => {
                    continue
                }
                Err(other) => return Err(other),
            }
        }
    };
    let command = LabOrderCommand::MarkBilled {
        actor: auth.actor(),
        invoice_id,
        now: auth.now,
    };
    match auth
        .execute::<LabOrder>(&order_id.to_string(), command, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(AppError::Conflict(_)) => Ok(()), // billed by a concurrent attempt
        Err(other) => Err(other),
    }
}

/// The patient's oldest DRAFT invoice in `currency` not tried yet.
async fn open_draft(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    currency: Currency,
    tried: &HashSet<Uuid>,
) -> Result<Option<Uuid>> {
    let tried: Vec<Uuid> = tried.iter().copied().collect();
    Ok(sqlx::query_scalar(
        "SELECT id FROM invoices WHERE patient_id = $1 AND status = $2 AND currency = $3 \
            AND NOT (id = ANY($4)) ORDER BY created_at, id LIMIT 1",
    )
    .bind(patient_id)
    .bind(stored_name(&InvoiceStatus::Draft)?)
    .bind(currency.as_str())
    .bind(tried)
    .fetch_optional(auth.pool())
    .await?)
}

/// The invoice opened for the order's charges: named by the order, so a repeat finds
/// the one the first attempt opened.
async fn open_invoice_for(
    auth: &Authorized<'_>,
    order_id: Uuid,
    patient_id: Uuid,
    currency: Currency,
) -> Result<Uuid> {
    let invoice_id = Uuid::new_v5(&order_id, b"invoice");
    let (existing, _) = auth.load::<Invoice>(&invoice_id.to_string()).await?;
    if existing.status.is_some() {
        return Ok(invoice_id);
    }
    let sequence: i64 = sqlx::query_scalar("SELECT nextval('invoice_number_seq')")
        .fetch_one(auth.pool())
        .await?;
    let sequence = u64::try_from(sequence).map_err(AppError::internal)?;
    let number = InvoiceNumber::new(&auth.hospital.settings.invoice_prefix, sequence)?;
    let command = InvoiceCommand::OpenForCharges {
        actor: auth.actor(),
        invoice_id,
        number,
        patient_id,
        currency,
        now: auth.now,
    };
    match auth
        .execute::<Invoice>(&invoice_id.to_string(), command, Some(0))
        .await
    {
        Ok(_) | Err(AppError::Conflict(_)) => Ok(invoice_id),
        Err(other) => Err(other),
    }
}

/// An order to cancel, and why.
#[derive(Debug, Clone, Serialize)]
pub struct CancelLabOrder {
    pub order_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Cancels an order before any result is entered.
pub async fn cancel_lab_order(auth: &Authorized<'_>, input: CancelLabOrder) -> Result<LabOrderRow> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    load_order(auth, input.order_id).await?;
    let reason = text("reason", &input.reason, MAX_REASON_CHARS)?;
    let command = LabOrderCommand::Cancel {
        actor: auth.actor(),
        reason,
        now: auth.now,
    };
    on_order(auth, input.order_id, &options, &input, command).await?;
    order_row(auth, input.order_id).await
}

// ---------------------------------------------------------------------------------------
// Reading orders and results

/// Filters of the worklist; combined with AND.
#[derive(Debug, Clone, Default)]
pub struct LabOrderFilter {
    pub status: Option<OrderStatus>,
    pub priority: Option<Priority>,
    pub specimen_type: Option<SpecimenType>,
    pub patient_id: Option<Uuid>,
    /// Only orders placed before this instant (the oldest work first).
    pub ordered_before: Option<DateTime<Utc>>,
}

/// The lab worklist: STAT first, then URGENT, then ROUTINE, oldest first within each.
pub async fn lab_orders(
    auth: &Authorized<'_>,
    filter: &LabOrderFilter,
    page: &PageRequest,
) -> Result<Page<LabOrderRow>> {
    auth.require(Operation::ViewLabResults)?;
    let (after_rank, after_at, after_id) = match &page.after {
        Some(k) => {
            let not_ours = || AppError::validation("after", "is not a cursor from this API");
            let (rank, at) = k.key.split_once('|').ok_or_else(not_ours)?;
            let rank: i16 = rank.parse().map_err(|_| not_ours())?;
            let at = DateTime::parse_from_rfc3339(at)
                .map_err(|_| not_ours())?
                .with_timezone(&Utc);
            let id = Uuid::parse_str(&k.id).map_err(|_| not_ours())?;
            (Some(rank), Some(at), Some(id))
        }
        None => (None, None, None),
    };
    let rows: Vec<LabOrderRow> = sqlx::query_as(&format!(
        "SELECT {} FROM lab_orders \
          WHERE ($1::smallint IS NULL OR (priority_rank, ordered_at, id) > ($1, $2, $3::uuid)) \
            AND ($4::text IS NULL OR status = $4) \
            AND ($5::text IS NULL OR priority = $5) \
            AND ($6::text IS NULL OR specimen_types ? $6) \
            AND ($7::uuid IS NULL OR patient_id = $7) \
            AND ($8::timestamptz IS NULL OR ordered_at < $8) \
          ORDER BY priority_rank, ordered_at, id \
          LIMIT $9",
        LabOrderRow::COLUMNS
    ))
    .bind(after_rank)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.status.as_ref().map(stored_name).transpose()?)
    .bind(filter.priority.as_ref().map(stored_name).transpose()?)
    .bind(filter.specimen_type.as_ref().map(stored_name).transpose()?)
    .bind(filter.patient_id)
    .bind(filter.ordered_before)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let found = page.page(rows, |r| Keyset {
        key: format!(
            "{}|{}",
            r.priority_rank,
            r.ordered_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
        id: r.id.to_string(),
    });
    super::restriction::record_list_viewed(
        auth,
        found.items.iter().map(|(_, r)| r.patient_id),
        "lab worklist",
    )
    .await?;
    Ok(found)
}

/// One order with its specimens and results, or NOT_FOUND; the read is recorded.
pub async fn lab_order(auth: &Authorized<'_>, id: Uuid) -> Result<LabOrderRow> {
    auth.require(Operation::ViewLabResults)?;
    let order = LabOrderRow::find(auth.pool(), id)
        .await?
        .ok_or(AppError::NotFound)?;
    let access = super::restriction::require_full_access(auth, order.patient_id).await?;
    record_patients_viewed(auth, [order.patient_id], &access.purpose("lab order")).await?;
    Ok(order)
}

/// The results of an order, its specimens, and every version of its results. Read under
/// the order's permission (the order was read under one).
///
/// A restricted patient's results are FORBIDDEN (restricted) to whoever may not read the
/// record in full, wherever the order is shown (the worklist included).
pub async fn order_results(
    scope: &crate::scope::HospitalScope<'_>,
    order_id: Uuid,
    patient_id: Uuid,
) -> Result<Vec<LabResultRow>> {
    order_details_readable(scope, patient_id).await?;
    Ok(LabResultRow::of_order(scope.pool(), order_id).await?)
}

/// Whether the caller may read what an order says of the patient (its results, tests,
/// clinical note): a role that reads lab results (an order returned to accounts by
/// `billLabOrder` is not theirs to read), and the whole record when it is restricted.
pub async fn order_details_readable(
    scope: &crate::scope::HospitalScope<'_>,
    patient_id: Uuid,
) -> Result<()> {
    if !hms_domain::permissions::allows(scope.actor().role, Operation::ViewLabResults) {
        return Err(AppError::Forbidden);
    }
    for (_, access) in
        super::restriction::restricted_accesses(scope, &[patient_id], Utc::now()).await?
    {
        access.require_full()?;
    }
    Ok(())
}

pub async fn order_specimens(
    scope: &crate::scope::HospitalScope<'_>,
    order_id: Uuid,
) -> Result<Vec<LabSpecimenRow>> {
    Ok(LabSpecimenRow::of_order(scope.pool(), order_id).await?)
}

pub async fn order_result_versions(
    scope: &crate::scope::HospitalScope<'_>,
    order_id: Uuid,
    patient_id: Uuid,
) -> Result<Vec<LabResultVersionRow>> {
    order_details_readable(scope, patient_id).await?;
    Ok(LabResultVersionRow::of_order(scope.pool(), order_id).await?)
}

/// Filters of a patient's results.
#[derive(Debug, Clone, Default)]
pub struct ResultTrendFilter {
    /// One test's results (a trend); every test when none.
    pub code: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only verified (final) results.
    pub final_only: bool,
}

/// A patient's results over time, oldest collection first: each test's trend with its
/// flags. Pending results (nothing entered yet) are left out; the read is recorded.
pub async fn patient_lab_results(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    filter: &ResultTrendFilter,
    page: &PageRequest,
) -> Result<Page<LabResultRow>> {
    auth.require(Operation::ViewLabResults)?;
    let access = super::restriction::require_full_access(auth, patient_id).await?;
    let code = filter
        .code
        .as_deref()
        .map(|c| TestCode::parse(c).map_err(|e| AppError::validation("code", e.message)))
        .transpose()?;
    let (after_at, after_id) = page.after_instant_and_id()?;
    let rows: Vec<LabResultRow> = sqlx::query_as(&format!(
        "SELECT {} FROM lab_results \
          WHERE patient_id = $1 AND status IN ('PRELIMINARY', 'FINAL') \
            AND ($2::timestamptz IS NULL OR (collected_at, item_id) > ($2, $3::uuid)) \
            AND ($4::text IS NULL OR code = $4) \
            AND ($5::timestamptz IS NULL OR collected_at >= $5) \
            AND ($6::timestamptz IS NULL OR collected_at < $6) \
            AND (NOT $7 OR status = 'FINAL') \
          ORDER BY collected_at, item_id \
          LIMIT $8",
        LabResultRow::COLUMNS
    ))
    .bind(patient_id)
    .bind(after_at)
    .bind(after_id)
    .bind(code.as_ref().map(TestCode::as_str))
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.final_only)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let found = page.page(rows, |r| Keyset {
        key: r
            .collected_at
            .unwrap_or(r.ordered_at)
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        id: r.item_id.to_string(),
    });
    // Asked about this patient: recorded even when nothing was found.
    record_patients_viewed(auth, [patient_id], &access.purpose("lab results")).await?;
    Ok(found)
}

/// Critical results, newest first: a DOCTOR sees those of the orders they placed; the
/// nurses and the lab see the hospital's. The read is recorded.
pub async fn critical_lab_results(
    auth: &Authorized<'_>,
    since: Option<DateTime<Utc>>,
    page: &PageRequest,
) -> Result<Page<LabResultRow>> {
    auth.require(Operation::ViewLabResults)?;
    let (after_at, after_id) = page.after_instant_and_id()?;
    let mine = (auth.actor().role == hms_domain::Role::Doctor).then(|| auth.actor().user_id);
    let rows: Vec<LabResultRow> = sqlx::query_as(&format!(
        "SELECT {} FROM lab_results r \
          WHERE r.critical \
            AND ($1::timestamptz IS NULL OR (r.entered_at, r.item_id) < ($1, $2::uuid)) \
            AND ($3::uuid IS NULL OR EXISTS \
                 (SELECT 1 FROM lab_orders o WHERE o.id = r.order_id AND o.ordered_by = $3)) \
            AND ($4::timestamptz IS NULL OR r.entered_at >= $4) \
          ORDER BY r.entered_at DESC, r.item_id DESC \
          LIMIT $5",
        LabResultRow::COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(after_at)
    .bind(after_id)
    .bind(mine)
    .bind(since)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let mut found = page.page(rows, |r| Keyset {
        key: r
            .entered_at
            .unwrap_or(r.ordered_at)
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        id: r.item_id.to_string(),
    });
    // A restricted patient's results only for those who may read the record in full.
    let patients: Vec<Uuid> = found.items.iter().map(|(_, r)| r.patient_id).collect();
    let denied = super::restriction::denied_among(auth, &patients).await?;
    found.items.retain(|(_, r)| !denied.contains(&r.patient_id));
    super::restriction::record_list_viewed(
        auth,
        found.items.iter().map(|(_, r)| r.patient_id),
        "critical lab results",
    )
    .await?;
    Ok(found)
}

/// Turnaround (order placed → first verification) of the orders verified in a window,
/// per priority.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Turnaround {
    pub priority: String,
    pub orders: i64,
    pub mean_minutes: f64,
    pub median_minutes: f64,
    pub p90_minutes: f64,
    pub max_minutes: f64,
}

/// Turnaround statistics of the orders verified in `[from, to)`, per priority (STAT
/// first). No patient information: not recorded in the access log.
pub async fn lab_turnaround(
    auth: &Authorized<'_>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<Turnaround>> {
    auth.require(Operation::ViewLabTurnaround)?;
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(AppError::validation("to", "must be after from"));
        }
    }
    Ok(sqlx::query_as(
        "WITH t AS ( \
           SELECT priority, priority_rank, \
                  EXTRACT(EPOCH FROM (verified_at - ordered_at)) / 60.0 AS minutes \
             FROM lab_orders \
            WHERE verified_at IS NOT NULL \
              AND ($1::timestamptz IS NULL OR verified_at >= $1) \
              AND ($2::timestamptz IS NULL OR verified_at < $2)) \
         SELECT priority, count(*) AS orders, \
                avg(minutes)::float8 AS mean_minutes, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY minutes)::float8 AS median_minutes, \
                percentile_cont(0.9) WITHIN GROUP (ORDER BY minutes)::float8 AS p90_minutes, \
                max(minutes)::float8 AS max_minutes \
           FROM t GROUP BY priority, priority_rank ORDER BY priority_rank",
    )
    .bind(from)
    .bind(to)
    .fetch_all(auth.pool())
    .await?)
}
