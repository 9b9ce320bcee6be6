//! The GraphQL shape of the laboratory: enums mirroring the domain's, the catalogue
//! entry, the order with its specimens and results, the inputs, and their conversions.

use async_graphql::{Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use hms_app::usecases::lab as uc;
use hms_app::usecases::stored;
use hms_domain::lab as domain;
use hms_projections::projectors::{
    LabOrderRow, LabResultRow, LabResultVersionRow, LabSpecimenRow, LabTestRow,
};
use uuid::Uuid;

use crate::graphql::billing::MinorUnits;
use crate::graphql::error::{ApiError, Result};
use crate::graphql::patients::Sex;
use crate::graphql::types::check_instant;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::lab::CodeSystem",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum CodeSystem {
    /// A LOINC code (`2823-3`).
    Loinc,
    /// The hospital's own code.
    Local,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::lab::SpecimenType",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum SpecimenType {
    WholeBlood,
    Serum,
    Plasma,
    Urine,
    Stool,
    Csf,
    Sputum,
    Swab,
    Tissue,
    Other,
}

/// How urgently an order is run: the worklist shows STAT first.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "LabPriority",
    remote = "hms_domain::lab::Priority",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum Priority {
    Routine,
    Urgent,
    Stat,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::lab::RejectionReason",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum RejectionReason {
    Haemolysed,
    Clotted,
    InsufficientVolume,
    WrongContainer,
    Unlabelled,
    Contaminated,
    DelayedTransport,
    /// Say what in `note`.
    Other,
}

/// A result against its reference range (HL7 interpretation N, L, H, LL, HH, A).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "LabFlag",
    remote = "hms_domain::lab::Flag",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum Flag {
    Normal,
    Low,
    High,
    CriticalLow,
    CriticalHigh,
    /// A coded answer the catalogue marks abnormal.
    Abnormal,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "LabOrderStatus",
    remote = "hms_domain::lab::OrderStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum OrderStatus {
    Ordered,
    Collected,
    InProgress,
    Verified,
    Cancelled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "LabResultStatus",
    remote = "hms_domain::lab::ResultStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum ResultStatus {
    Pending,
    Preliminary,
    Final,
    Cancelled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::lab::SpecimenStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum SpecimenStatus {
    Collected,
    Received,
    Rejected,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "LabResultKind",
    remote = "hms_app::usecases::lab::ResultKind",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum ResultKind {
    Numeric,
    Coded,
    Text,
}

/// A reference interval for one sex (or any) and an age band. `low ≤ value ≤ high` is
/// normal; below `criticalLow` or above `criticalHigh` is critical. Decimals as text.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "LabReferenceRange")]
pub struct ReferenceRange {
    pub sex: Option<Sex>,
    /// Inclusive.
    pub min_age_days: Option<i64>,
    /// Exclusive.
    pub max_age_days: Option<i64>,
    pub low: Option<String>,
    pub high: Option<String>,
    pub critical_low: Option<String>,
    pub critical_high: Option<String>,
}

impl From<&domain::ReferenceRange> for ReferenceRange {
    fn from(r: &domain::ReferenceRange) -> Self {
        Self {
            sex: r.sex.map(Into::into),
            min_age_days: r.min_age_days.map(i64::from),
            max_age_days: r.max_age_days.map(i64::from),
            low: r.low.as_ref().map(ToString::to_string),
            high: r.high.as_ref().map(ToString::to_string),
            critical_low: r.critical_low.as_ref().map(ToString::to_string),
            critical_high: r.critical_high.as_ref().map(ToString::to_string),
        }
    }
}

/// An answer of a coded test.
#[derive(SimpleObject, Clone, Debug)]
pub struct CodedAnswer {
    pub code: String,
    pub display: String,
    pub abnormal: bool,
}

/// A test or panel of the hospital's catalogue, at its current version.
#[derive(SimpleObject, Clone, Debug)]
pub struct LabTest {
    pub code: String,
    pub system: CodeSystem,
    pub name: String,
    pub specimen_type: SpecimenType,
    /// Whether this is a panel of tests.
    pub panel: bool,
    /// For a test: what its result is.
    pub result_kind: Option<ResultKind>,
    /// UCUM unit of a numeric test.
    pub unit: Option<String>,
    pub reference_ranges: Vec<ReferenceRange>,
    pub answers: Vec<CodedAnswer>,
    /// A panel's tests.
    pub members: Vec<String>,
    pub price_minor: MinorUnits,
    pub currency: String,
    /// The catalogue version: orders keep the version they were placed under.
    pub catalogue_version: i32,
    pub retired: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The entry's stream version, for `expectedVersion`.
    pub version: i64,
}

impl TryFrom<LabTestRow> for LabTest {
    type Error = ApiError;

    fn try_from(r: LabTestRow) -> Result<Self> {
        let definition: domain::TestDefinition = serde_json::from_value(r.definition)
            .map_err(|e| ApiError::internal(format!("stored lab test: {e}")))?;
        let (result_kind, ranges, answers, members) = match &definition.kind {
            domain::TestKind::Analyte { result } => match result {
                domain::ResultSpec::Numeric { ranges, .. } => (
                    Some(ResultKind::Numeric),
                    ranges.iter().map(Into::into).collect(),
                    Vec::new(),
                    Vec::new(),
                ),
                domain::ResultSpec::Coded { options } => (
                    Some(ResultKind::Coded),
                    Vec::new(),
                    options
                        .iter()
                        .map(|o| CodedAnswer {
                            code: o.code.clone(),
                            display: o.display.clone(),
                            abnormal: o.abnormal,
                        })
                        .collect(),
                    Vec::new(),
                ),
                domain::ResultSpec::Text => {
                    (Some(ResultKind::Text), Vec::new(), Vec::new(), Vec::new())
                }
            },
            domain::TestKind::Panel { members } => (
                None,
                Vec::new(),
                Vec::new(),
                members.iter().map(ToString::to_string).collect(),
            ),
        };
        Ok(Self {
            code: r.code,
            system: definition.system.into(),
            name: r.name,
            specimen_type: definition.specimen_type.into(),
            panel: result_kind.is_none(),
            result_kind,
            unit: r.unit,
            reference_ranges: ranges,
            answers,
            members,
            price_minor: MinorUnits(r.price_minor),
            currency: r.currency,
            catalogue_version: r.catalogue_version,
            retired: r.retired,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

/// A catalogue entry as the order placed it: the version and price it is billed at.
#[derive(SimpleObject, Clone, Debug)]
pub struct LabOrderedTest {
    pub code: String,
    pub name: String,
    pub catalogue_version: i32,
    pub price_minor: MinorUnits,
    pub currency: String,
}

/// A lab order: what was asked, its status, and (on demand) its specimens, results and
/// history.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct LabOrder {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    /// The ordering doctor's user id.
    pub ordered_by: Uuid,
    pub priority: Priority,
    pub status: OrderStatus,
    #[graphql(skip)]
    pub clinical_note: Option<String>,
    #[graphql(skip)]
    pub tests: Vec<LabOrderedTest>,
    pub specimen_types: Vec<SpecimenType>,
    #[graphql(skip)]
    pub has_critical: bool,
    /// The invoice the order's tests were charged to, once verified.
    pub invoice_id: Option<Uuid>,
    pub ordered_at: DateTime<Utc>,
    pub collected_at: Option<DateTime<Utc>>,
    /// The first verification of the whole order.
    pub verified_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The order's version, for `expectedVersion`.
    pub version: i64,
}

impl TryFrom<LabOrderRow> for LabOrder {
    type Error = ApiError;

    fn try_from(r: LabOrderRow) -> Result<Self> {
        let charges: Vec<domain::Charge> = serde_json::from_value(r.charges)
            .map_err(|e| ApiError::internal(format!("stored lab charges: {e}")))?;
        let types: Vec<domain::SpecimenType> = serde_json::from_value(r.specimen_types)
            .map_err(|e| ApiError::internal(format!("stored specimen types: {e}")))?;
        Ok(Self {
            id: r.id,
            patient_id: r.patient_id,
            appointment_id: r.appointment_id,
            ordered_by: r.ordered_by,
            priority: stored::<domain::Priority>(&r.priority)?.into(),
            status: stored::<domain::OrderStatus>(&r.status)?.into(),
            clinical_note: r.clinical_note,
            tests: charges
                .into_iter()
                .map(|c| LabOrderedTest {
                    code: c.code.to_string(),
                    name: c.name,
                    catalogue_version: i32::try_from(c.version).unwrap_or(i32::MAX),
                    price_minor: MinorUnits(c.price.minor()),
                    currency: c.price.currency().as_str().to_owned(),
                })
                .collect(),
            specimen_types: types.into_iter().map(Into::into).collect(),
            has_critical: r.has_critical,
            invoice_id: r.invoice_id,
            ordered_at: r.ordered_at,
            collected_at: r.collected_at,
            verified_at: r.verified_at,
            cancelled_at: r.cancelled_at,
            cancel_reason: r.cancel_reason,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

/// One analyte of an order with its newest result.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct LabResult {
    /// Pass to `enterLabResult`, `verifyLabResults`, `amendLabResult`.
    pub item_id: Uuid,
    pub order_id: Uuid,
    pub patient_id: Uuid,
    pub code: String,
    pub name: String,
    /// The panel it was ordered through.
    pub panel: Option<String>,
    pub catalogue_version: i32,
    pub specimen_type: SpecimenType,
    pub result_kind: ResultKind,
    pub unit: Option<String>,
    pub status: ResultStatus,
    /// 0 before any value; one more per entry or amendment.
    pub result_version: i32,
    /// How the value reads: `5.4 mmol/L`, `Positive`, the text.
    pub value_text: Option<String>,
    /// A numeric result's decimal, as entered.
    pub numeric_value: Option<String>,
    /// A coded result's answer code.
    pub coded_value: Option<String>,
    pub flag: Option<Flag>,
    pub critical: bool,
    /// The range the flag was computed against (the patient's sex and age at collection).
    pub reference_range: Option<ReferenceRange>,
    pub specimen_id: Option<Uuid>,
    pub collected_at: Option<DateTime<Utc>>,
    pub entered_by: Option<Uuid>,
    pub entered_at: Option<DateTime<Utc>>,
    pub verified_by: Option<Uuid>,
    pub verified_at: Option<DateTime<Utc>>,
    /// Whether a verified value was corrected.
    pub amended: bool,
    pub ordered_at: DateTime<Utc>,
}

impl TryFrom<LabResultRow> for LabResult {
    type Error = ApiError;

    fn try_from(r: LabResultRow) -> Result<Self> {
        let value: Option<domain::ResultValue> = r
            .value
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ApiError::internal(format!("stored lab value: {e}")))?;
        let range: Option<domain::ReferenceRange> = r
            .reference_range
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ApiError::internal(format!("stored range: {e}")))?;
        let (numeric_value, coded_value) = match &value {
            Some(domain::ResultValue::Numeric { value, .. }) => (Some(value.to_string()), None),
            Some(domain::ResultValue::Coded { code, .. }) => (None, Some(code.clone())),
            _ => (None, None),
        };
        Ok(Self {
            item_id: r.item_id,
            order_id: r.order_id,
            patient_id: r.patient_id,
            code: r.code,
            name: r.name,
            panel: r.panel,
            catalogue_version: r.catalogue_version,
            specimen_type: stored::<domain::SpecimenType>(&r.specimen_type)?.into(),
            result_kind: stored::<uc::ResultKind>(&r.result_kind)?.into(),
            unit: r.unit,
            status: stored::<domain::ResultStatus>(&r.status)?.into(),
            result_version: r.result_version,
            value_text: r.value_text,
            numeric_value,
            coded_value,
            flag: r
                .flag
                .as_deref()
                .map(stored::<domain::Flag>)
                .transpose()?
                .map(Into::into),
            critical: r.critical,
            reference_range: range.as_ref().map(Into::into),
            specimen_id: r.specimen_id,
            collected_at: r.collected_at,
            entered_by: r.entered_by,
            entered_at: r.entered_at,
            verified_by: r.verified_by,
            verified_at: r.verified_at,
            amended: r.amended,
            ordered_at: r.ordered_at,
        })
    }
}

/// One version of a result: entered, re-entered before verification, or amended.
#[derive(SimpleObject, Clone, Debug)]
pub struct LabResultVersion {
    pub result_version: i32,
    pub value_text: String,
    pub flag: Option<Flag>,
    pub entered_by: Uuid,
    pub entered_at: DateTime<Utc>,
    /// Why a verified value was corrected (amendments only).
    pub amend_reason: Option<String>,
    pub verified_by: Option<Uuid>,
    pub verified_at: Option<DateTime<Utc>>,
}

impl TryFrom<&LabResultVersionRow> for LabResultVersion {
    type Error = ApiError;

    fn try_from(r: &LabResultVersionRow) -> Result<Self> {
        Ok(Self {
            result_version: r.result_version,
            value_text: r.value_text.clone(),
            flag: r
                .flag
                .as_deref()
                .map(stored::<domain::Flag>)
                .transpose()?
                .map(Into::into),
            entered_by: r.entered_by,
            entered_at: r.entered_at,
            amend_reason: r.amend_reason.clone(),
            verified_by: r.verified_by,
            verified_at: r.verified_at,
        })
    }
}

/// A specimen of an order.
#[derive(SimpleObject, Clone, Debug)]
pub struct LabSpecimen {
    /// Pass to `receiveSpecimen` or `rejectSpecimen`.
    pub id: Uuid,
    pub order_id: Uuid,
    /// The barcode on the container.
    pub label: String,
    pub specimen_type: SpecimenType,
    pub status: SpecimenStatus,
    pub collected_at: DateTime<Utc>,
    pub collected_by: Uuid,
    pub received_at: Option<DateTime<Utc>>,
    pub received_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<RejectionReason>,
    pub rejection_note: Option<String>,
}

impl TryFrom<LabSpecimenRow> for LabSpecimen {
    type Error = ApiError;

    fn try_from(r: LabSpecimenRow) -> Result<Self> {
        Ok(Self {
            id: r.specimen_id,
            order_id: r.order_id,
            label: r.label,
            specimen_type: stored::<domain::SpecimenType>(&r.specimen_type)?.into(),
            status: stored::<domain::SpecimenStatus>(&r.status)?.into(),
            collected_at: r.collected_at,
            collected_by: r.collected_by,
            received_at: r.received_at,
            received_by: r.received_by,
            rejected_at: r.rejected_at,
            rejection_reason: r
                .rejection_reason
                .as_deref()
                .map(stored::<domain::RejectionReason>)
                .transpose()?
                .map(Into::into),
            rejection_note: r.rejection_note,
        })
    }
}

/// Turnaround (order placed → verified) of one priority, in minutes.
#[derive(SimpleObject, Clone, Debug)]
pub struct LabTurnaround {
    pub priority: Priority,
    pub orders: i64,
    pub mean_minutes: f64,
    pub median_minutes: f64,
    pub p90_minutes: f64,
    pub max_minutes: f64,
}

impl TryFrom<uc::Turnaround> for LabTurnaround {
    type Error = ApiError;

    fn try_from(t: uc::Turnaround) -> Result<Self> {
        Ok(Self {
            priority: stored::<domain::Priority>(&t.priority)?.into(),
            orders: t.orders,
            mean_minutes: t.mean_minutes,
            median_minutes: t.median_minutes,
            p90_minutes: t.p90_minutes,
            max_minutes: t.max_minutes,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

#[derive(InputObject)]
#[graphql(name = "LabReferenceRangeInput")]
pub struct ReferenceRangeInput {
    /// Any sex when null.
    pub sex: Option<Sex>,
    pub min_age_days: Option<i32>,
    pub max_age_days: Option<i32>,
    /// Decimals as text (`3.5`).
    pub low: Option<String>,
    pub high: Option<String>,
    pub critical_low: Option<String>,
    pub critical_high: Option<String>,
}

#[derive(InputObject)]
pub struct CodedAnswerInput {
    pub code: String,
    pub display: String,
    #[graphql(default)]
    pub abnormal: bool,
}

/// A test (with `resultKind`) or a panel (with `members`).
#[derive(InputObject)]
pub struct LabTestInput {
    /// LOINC code, or the hospital's own (letters, digits, `-`, `.`, `_`).
    pub code: String,
    pub system: CodeSystem,
    pub name: String,
    pub specimen_type: SpecimenType,
    pub result_kind: Option<ResultKind>,
    /// UCUM unit of a numeric test (`mmol/L`).
    pub unit: Option<String>,
    #[graphql(default)]
    pub reference_ranges: Vec<ReferenceRangeInput>,
    #[graphql(default)]
    pub answers: Vec<CodedAnswerInput>,
    /// A panel's test codes.
    #[graphql(default)]
    pub members: Vec<String>,
    pub price_minor: MinorUnits,
    /// ISO 4217; the hospital's currency when null.
    pub currency: Option<String>,
}

impl From<LabTestInput> for uc::LabTestInput {
    fn from(i: LabTestInput) -> Self {
        Self {
            code: i.code,
            system: i.system.into(),
            name: i.name,
            specimen_type: i.specimen_type.into(),
            result_kind: i.result_kind.map(Into::into),
            unit: i.unit,
            reference_ranges: i
                .reference_ranges
                .into_iter()
                .map(|r| uc::ReferenceRangeInput {
                    sex: r.sex.map(Into::into),
                    min_age_days: r.min_age_days,
                    max_age_days: r.max_age_days,
                    low: r.low,
                    high: r.high,
                    critical_low: r.critical_low,
                    critical_high: r.critical_high,
                })
                .collect(),
            options: i
                .answers
                .into_iter()
                .map(|a| uc::CodedOptionInput {
                    code: a.code,
                    display: a.display,
                    abnormal: a.abnormal,
                })
                .collect(),
            members: i.members,
            price_minor: i.price_minor.0,
            currency: i.currency,
        }
    }
}

#[derive(InputObject)]
pub struct DefineLabTestInput {
    pub test: LabTestInput,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ReviseLabTestInput {
    /// The whole new definition; its code names the entry.
    pub test: LabTestInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct SetLabTestInServiceInput {
    pub code: String,
    /// False retires the entry (it can no longer be ordered); true reinstates it.
    pub in_service: bool,
    /// Required to retire.
    pub reason: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct OrderLabTestsInput {
    pub patient_id: Uuid,
    /// The visit the tests are ordered in, if any (must be the patient's).
    pub appointment_id: Option<Uuid>,
    /// Catalogue codes of tests or panels.
    pub tests: Vec<String>,
    #[graphql(default_with = "Priority::Routine")]
    pub priority: Priority,
    pub clinical_note: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct CollectSpecimenInput {
    pub order_id: Uuid,
    pub specimen_type: SpecimenType,
    /// The barcode on the container: unique in the hospital.
    pub label: String,
    /// When it was taken; now when null.
    pub collected_at: Option<DateTime<Utc>>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ReceiveSpecimenInput {
    pub order_id: Uuid,
    pub specimen_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct RejectSpecimenInput {
    pub order_id: Uuid,
    pub specimen_id: Uuid,
    pub reason: RejectionReason,
    /// Required with OTHER.
    pub note: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Exactly one of `numeric` (with `unit`), `code` or `text`.
#[derive(InputObject)]
pub struct LabResultValueInput {
    /// A decimal as text (`5.4`), in the test's unit.
    pub numeric: Option<String>,
    /// Must be the test's UCUM unit.
    pub unit: Option<String>,
    /// One of a coded test's answer codes.
    pub code: Option<String>,
    pub text: Option<String>,
}

impl From<LabResultValueInput> for uc::ResultValueInput {
    fn from(v: LabResultValueInput) -> Self {
        Self {
            numeric: v.numeric,
            unit: v.unit,
            code: v.code,
            text: v.text,
        }
    }
}

#[derive(InputObject)]
pub struct EnterLabResultInput {
    pub order_id: Uuid,
    pub item_id: Uuid,
    pub value: LabResultValueInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct AmendLabResultInput {
    pub order_id: Uuid,
    pub item_id: Uuid,
    pub value: LabResultValueInput,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct VerifyLabResultsInput {
    pub order_id: Uuid,
    /// The results to verify; every unverified one of the order when empty.
    #[graphql(default)]
    pub item_ids: Vec<Uuid>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct CancelLabOrderInput {
    pub order_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct BillLabOrderInput {
    pub order_id: Uuid,
}

/// Worklist filters, combined with AND.
#[derive(InputObject, Default)]
pub struct LabOrderFilter {
    pub status: Option<OrderStatus>,
    pub priority: Option<Priority>,
    pub specimen_type: Option<SpecimenType>,
    pub patient_id: Option<Uuid>,
    /// Only orders placed before this instant (how old the work is).
    pub ordered_before: Option<DateTime<Utc>>,
}

impl LabOrderFilter {
    pub fn parse(self) -> Result<uc::LabOrderFilter> {
        Ok(uc::LabOrderFilter {
            status: self.status.map(Into::into),
            priority: self.priority.map(Into::into),
            specimen_type: self.specimen_type.map(Into::into),
            patient_id: self.patient_id,
            ordered_before: self
                .ordered_before
                .map(|t| check_instant("orderedBefore", t))
                .transpose()?,
        })
    }
}

/// Filters of a patient's results, combined with AND.
#[derive(InputObject, Default)]
pub struct LabResultFilter {
    /// One test's results: its trend.
    pub code: Option<String>,
    /// Collected at or after.
    pub from: Option<DateTime<Utc>>,
    /// Collected before.
    pub to: Option<DateTime<Utc>>,
    /// Only verified results.
    #[graphql(default)]
    pub final_only: bool,
}

impl LabResultFilter {
    pub fn parse(self) -> Result<uc::ResultTrendFilter> {
        Ok(uc::ResultTrendFilter {
            code: self.code,
            from: self.from.map(|t| check_instant("from", t)).transpose()?,
            to: self.to.map(|t| check_instant("to", t)).transpose()?,
            final_only: self.final_only,
        })
    }
}
