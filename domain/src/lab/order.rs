//! The lab order: one stream per order, from the doctor's request through specimens and
//! results to verification and billing.
//!
//! ```text
//! ORDERED ──collect every specimen──▶ COLLECTED ──result entered──▶ IN_PROGRESS
//!    │                                    │                           │  ▲
//!    └────────cancel (no results)─────────┴──▶ CANCELLED   verify all ▼  │ amend
//!                                                                   VERIFIED
//! ```
//!
//! An order keeps the catalogue version of each test as it was placed (definition, ranges,
//! price): later catalogue revisions change nothing here. Each result is a list of
//! versions, never overwritten: entered (preliminary), verified by a *different*
//! technician (final), amended with a reason (preliminary again until verified). Events
//! carry the order's status after them, so read models copy it instead of re-deriving it.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    applicable_range, Decimal, Flag, LabError, Priority, ReferenceRange, RejectionReason,
    ResultSpec, ResultValue, SpecimenLabel, SpecimenType, TestCode, TestDefinition, TestKind,
};
use crate::billing::Money;
use crate::common::{Actor, BoundedText};
use crate::patient::Sex;
use crate::permissions::{ensure_allowed, Operation};

/// Most catalogue entries one order may name.
pub const MAX_TESTS_PER_ORDER: usize = 50;
pub const MAX_CLINICAL_NOTE_CHARS: usize = 1_000;
pub const MAX_LAB_REASON_CHARS: usize = 500;
/// A collection time this far ahead of the server's clock is a clock error, not a plan.
pub const COLLECTION_CLOCK_SKEW: Duration = Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Ordered,
    Collected,
    InProgress,
    Verified,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpecimenStatus {
    Collected,
    Received,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultStatus {
    /// Waiting for a result.
    Pending,
    /// Entered (or amended), not yet verified.
    Preliminary,
    /// Verified by a second technician.
    Final,
    /// The order was cancelled.
    Cancelled,
}

/// A catalogue entry as the order placed it, with its version and, for a panel, its
/// members at their versions.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedEntry {
    pub definition: TestDefinition,
    pub version: u32,
    pub members: Vec<(TestDefinition, u32)>,
}

/// What the order bills: one per catalogue entry ordered, priced from its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub code: TestCode,
    pub version: u32,
    pub name: String,
    pub price: Money,
}

/// One analyte to result, with the definition it is resulted against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub item_id: Uuid,
    pub test: TestDefinition,
    pub version: u32,
    /// The panel it was ordered through.
    pub panel: Option<TestCode>,
}

impl OrderItem {
    pub fn result_spec(&self) -> Option<&ResultSpec> {
        self.test.result()
    }
}

/// The patient facts results are flagged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientFacts {
    pub sex: Sex,
    pub date_of_birth: NaiveDate,
}

impl PatientFacts {
    /// Whole days of age at `at` (0 before birth).
    pub fn age_days_at(&self, at: DateTime<Utc>) -> u32 {
        let days = (at.date_naive() - self.date_of_birth).num_days();
        u32::try_from(days.max(0)).unwrap_or(u32::MAX)
    }
}

/// A result as a technician enters it, before it is checked against its test.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultInput {
    Numeric { value: Decimal, unit: String },
    Coded { code: String },
    Text { text: BoundedText },
}

#[derive(Debug, Clone, PartialEq)]
pub enum LabOrderCommand {
    Place {
        actor: Actor,
        order_id: Uuid,
        patient_id: Uuid,
        patient: PatientFacts,
        appointment_id: Option<Uuid>,
        priority: Priority,
        clinical_note: Option<BoundedText>,
        tests: Vec<OrderedEntry>,
        now: DateTime<Utc>,
    },
    CollectSpecimen {
        actor: Actor,
        specimen_id: Uuid,
        label: SpecimenLabel,
        specimen_type: SpecimenType,
        collected_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    ReceiveSpecimen {
        actor: Actor,
        specimen_id: Uuid,
        now: DateTime<Utc>,
    },
    RejectSpecimen {
        actor: Actor,
        specimen_id: Uuid,
        reason: RejectionReason,
        note: Option<BoundedText>,
        now: DateTime<Utc>,
    },
    EnterResult {
        actor: Actor,
        item_id: Uuid,
        value: ResultInput,
        now: DateTime<Utc>,
    },
    VerifyResults {
        actor: Actor,
        item_ids: Vec<Uuid>,
        now: DateTime<Utc>,
    },
    AmendResult {
        actor: Actor,
        item_id: Uuid,
        value: ResultInput,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    Cancel {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    MarkBilled {
        actor: Actor,
        invoice_id: Uuid,
        now: DateTime<Utc>,
    },
}

impl LabOrderCommand {
    pub fn actor(&self) -> &Actor {
        use LabOrderCommand as C;
        match self {
            C::Place { actor, .. }
            | C::CollectSpecimen { actor, .. }
            | C::ReceiveSpecimen { actor, .. }
            | C::RejectSpecimen { actor, .. }
            | C::EnterResult { actor, .. }
            | C::VerifyResults { actor, .. }
            | C::AmendResult { actor, .. }
            | C::Cancel { actor, .. }
            | C::MarkBilled { actor, .. } => actor,
        }
    }

    pub fn operation(&self) -> Operation {
        use LabOrderCommand as C;
        match self {
            C::Place { .. } => Operation::OrderLabTests,
            C::CollectSpecimen { .. } => Operation::CollectSpecimen,
            C::ReceiveSpecimen { .. } | C::RejectSpecimen { .. } => Operation::ProcessSpecimen,
            C::EnterResult { .. } => Operation::EnterLabResults,
            C::VerifyResults { .. } => Operation::VerifyLabResults,
            C::AmendResult { .. } => Operation::AmendLabResult,
            C::Cancel { .. } => Operation::CancelLabOrder,
            C::MarkBilled { .. } => Operation::PostLabCharges,
        }
    }
}

/// A result as recorded: one version of one item's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedResult {
    pub item_id: Uuid,
    /// 1 for the first entry, one more per re-entry or amendment.
    pub version: u32,
    pub value: ResultValue,
    /// Against the range for the patient's sex and age at collection; none for text
    /// results and numeric tests without a range for this patient.
    pub flag: Option<Flag>,
    /// The reference range applied.
    pub range: Option<ReferenceRange>,
    pub specimen_id: Uuid,
    pub entered_by: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabOrderEvent {
    LabOrderPlaced {
        order_id: Uuid,
        patient_id: Uuid,
        patient: PatientFacts,
        appointment_id: Option<Uuid>,
        ordered_by: Uuid,
        priority: Priority,
        clinical_note: Option<String>,
        charges: Vec<Charge>,
        items: Vec<OrderItem>,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    SpecimenCollected {
        specimen_id: Uuid,
        label: SpecimenLabel,
        specimen_type: SpecimenType,
        collected_at: DateTime<Utc>,
        collected_by: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    SpecimenReceived {
        specimen_id: Uuid,
        received_by: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    SpecimenRejected {
        specimen_id: Uuid,
        reason: RejectionReason,
        note: Option<String>,
        rejected_by: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    ResultEntered {
        result: RecordedResult,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    ResultAmended {
        result: RecordedResult,
        reason: String,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    ResultVerified {
        item_id: Uuid,
        version: u32,
        verified_by: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    LabOrderCancelled {
        reason: String,
        cancelled_by: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
    },
    LabOrderBilled {
        invoice_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for LabOrderEvent {
    fn event_type(&self) -> String {
        use LabOrderEvent as E;
        match self {
            E::LabOrderPlaced { .. } => "LabOrderPlaced",
            E::SpecimenCollected { .. } => "SpecimenCollected",
            E::SpecimenReceived { .. } => "SpecimenReceived",
            E::SpecimenRejected { .. } => "SpecimenRejected",
            E::ResultEntered { .. } => "ResultEntered",
            E::ResultAmended { .. } => "ResultAmended",
            E::ResultVerified { .. } => "ResultVerified",
            E::LabOrderCancelled { .. } => "LabOrderCancelled",
            E::LabOrderBilled { .. } => "LabOrderBilled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A specimen of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specimen {
    pub specimen_id: Uuid,
    pub label: SpecimenLabel,
    pub specimen_type: SpecimenType,
    pub status: SpecimenStatus,
    pub collected_at: DateTime<Utc>,
}

/// An item with its result versions, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub item: OrderItem,
    pub status: ResultStatus,
    pub results: Vec<RecordedResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabOrder {
    pub id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub patient: Option<PatientFacts>,
    pub ordered_by: Option<Uuid>,
    pub ordered_at: Option<DateTime<Utc>>,
    pub status: Option<OrderStatus>,
    pub charges: Vec<Charge>,
    pub items: Vec<ItemState>,
    pub specimens: Vec<Specimen>,
    pub invoice_id: Option<Uuid>,
    /// Whether the order was verified at least once (amendments reopen it).
    pub ever_verified: bool,
}

/// The id of the item for analyte `code` in order `order_id`: derived, so the same
/// order always names its items alike.
pub fn item_id(order_id: Uuid, code: &TestCode) -> Uuid {
    Uuid::new_v5(&order_id, code.as_str().as_bytes())
}

impl LabOrder {
    fn status(&self) -> Result<OrderStatus, LabError> {
        self.status.ok_or(LabError::OrderNotFound)
    }

    fn ensure_open(&self) -> Result<OrderStatus, LabError> {
        match self.status()? {
            s @ (OrderStatus::Cancelled | OrderStatus::Verified) => Err(LabError::OrderClosed(s)),
            s => Ok(s),
        }
    }

    fn item(&self, item_id: Uuid) -> Result<&ItemState, LabError> {
        self.items
            .iter()
            .find(|i| i.item.item_id == item_id)
            .ok_or(LabError::ItemNotFound(item_id))
    }

    fn specimen(&self, specimen_id: Uuid) -> Result<&Specimen, LabError> {
        self.specimens
            .iter()
            .find(|s| s.specimen_id == specimen_id)
            .ok_or(LabError::SpecimenNotFound(specimen_id))
    }

    /// The newest specimen of a type: the one in use (or rejected, awaiting recollection).
    pub fn current_specimen(&self, specimen_type: SpecimenType) -> Option<&Specimen> {
        self.specimens
            .iter()
            .rev()
            .find(|s| s.specimen_type == specimen_type)
    }

    /// The order's status once `next` is applied to a copy of it: every status rule lives
    /// in [`Self::derived_status`].
    fn status_after(&self, next: &LabOrderEvent) -> OrderStatus {
        let mut copy = self.clone();
        copy.apply_state(next);
        copy.derived_status()
    }

    /// What the order's state says its status is.
    fn derived_status(&self) -> OrderStatus {
        if self.status == Some(OrderStatus::Cancelled) {
            return OrderStatus::Cancelled;
        }
        let live = || {
            self.items
                .iter()
                .filter(|i| i.status != ResultStatus::Cancelled)
        };
        if live().all(|i| i.status == ResultStatus::Final) {
            return OrderStatus::Verified;
        }
        if live().any(|i| !i.results.is_empty()) {
            return OrderStatus::InProgress;
        }
        let every_specimen = live().all(|i| {
            self.current_specimen(i.item.test.specimen_type)
                .is_some_and(|s| s.status != SpecimenStatus::Rejected)
        });
        if every_specimen {
            OrderStatus::Collected
        } else {
            OrderStatus::Ordered
        }
    }

    /// Checks a result against its item's test and flags it for this patient at the
    /// specimen's collection time.
    fn record(
        &self,
        item: &ItemState,
        value: ResultInput,
        actor: &Actor,
    ) -> Result<RecordedResult, LabError> {
        let specimen = self
            .current_specimen(item.item.test.specimen_type)
            .filter(|s| s.status == SpecimenStatus::Received)
            .ok_or(LabError::SpecimenNotReceived(item.item.test.specimen_type))?;
        let spec = item
            .item
            .result_spec()
            .ok_or(LabError::ItemNotFound(item.item.item_id))?;
        let patient = self.patient.ok_or(LabError::OrderNotFound)?;
        let (value, flag, range) = match (spec, value) {
            (ResultSpec::Numeric { unit, ranges }, ResultInput::Numeric { value, unit: given }) => {
                if given.trim() != unit.as_str() {
                    return Err(LabError::WrongUnit {
                        expected: unit.to_string(),
                        given: given.trim().to_owned(),
                    });
                }
                let range = applicable_range(
                    ranges,
                    patient.sex,
                    patient.age_days_at(specimen.collected_at),
                )
                .cloned();
                let flag = range.as_ref().map(|r| r.flag(&value));
                (
                    ResultValue::Numeric {
                        value,
                        unit: unit.clone(),
                    },
                    flag,
                    range,
                )
            }
            (ResultSpec::Coded { options }, ResultInput::Coded { code }) => {
                let option = options
                    .iter()
                    .find(|o| o.code.eq_ignore_ascii_case(code.trim()))
                    .ok_or_else(|| LabError::UnknownAnswer {
                        given: code.trim().to_owned(),
                        allowed: options
                            .iter()
                            .map(|o| o.code.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                let flag = if option.abnormal {
                    Flag::Abnormal
                } else {
                    Flag::Normal
                };
                (
                    ResultValue::Coded {
                        code: option.code.clone(),
                        display: option.display.clone(),
                    },
                    Some(flag),
                    None,
                )
            }
            (ResultSpec::Text, ResultInput::Text { text }) => (
                ResultValue::Text {
                    text: text.to_string(),
                },
                None,
                None,
            ),
            (spec, _) => {
                return Err(LabError::WrongKind {
                    expected: match spec {
                        ResultSpec::Numeric { .. } => "a numeric value with its unit",
                        ResultSpec::Coded { .. } => "one of the test's coded answers",
                        ResultSpec::Text => "text",
                    },
                })
            }
        };
        Ok(RecordedResult {
            item_id: item.item.item_id,
            version: item.results.last().map_or(1, |r| r.version + 1),
            value,
            flag,
            range,
            specimen_id: specimen.specimen_id,
            entered_by: actor.user_id,
        })
    }

    pub fn decide(&self, command: LabOrderCommand) -> Result<Vec<LabOrderEvent>, LabError> {
        use LabOrderCommand as C;
        use LabOrderEvent as E;
        ensure_allowed(command.actor(), command.operation())?;
        let mut events = Vec::new();
        // Each event gets the status the order has once it (and those before it) apply.
        let mut state = self.clone();
        let mut push = |mut event: LabOrderEvent| {
            let status = state.status_after(&event);
            match &mut event {
                E::LabOrderPlaced { status: s, .. }
                | E::SpecimenCollected { status: s, .. }
                | E::SpecimenReceived { status: s, .. }
                | E::SpecimenRejected { status: s, .. }
                | E::ResultEntered { status: s, .. }
                | E::ResultAmended { status: s, .. }
                | E::ResultVerified { status: s, .. }
                | E::LabOrderCancelled { status: s, .. } => *s = status,
                E::LabOrderBilled { .. } => {}
            }
            state.apply(event.clone());
            events.push(event);
        };
        match command {
            C::Place {
                actor,
                order_id,
                patient_id,
                patient,
                appointment_id,
                priority,
                clinical_note,
                tests,
                now,
            } => {
                if self.status.is_some() {
                    return Err(LabError::OrderExists);
                }
                if tests.is_empty() {
                    return Err(LabError::NoTests);
                }
                if tests.len() > MAX_TESTS_PER_ORDER {
                    return Err(LabError::TooManyTests(MAX_TESTS_PER_ORDER));
                }
                if clinical_note
                    .as_ref()
                    .is_some_and(|n| n.as_str().chars().count() > MAX_CLINICAL_NOTE_CHARS)
                {
                    return Err(crate::common::ValidationError::new(
                        "clinicalNote",
                        format!("must be at most {MAX_CLINICAL_NOTE_CHARS} characters"),
                    )
                    .into());
                }
                let mut charges = Vec::new();
                let mut items: Vec<OrderItem> = Vec::new();
                for entry in tests {
                    let code = entry.definition.code.clone();
                    if charges.iter().any(|c: &Charge| c.code == code) {
                        return Err(LabError::DuplicateTest(code.to_string()));
                    }
                    charges.push(Charge {
                        code: code.clone(),
                        version: entry.version,
                        name: entry.definition.name.to_string(),
                        price: entry.definition.price,
                    });
                    let analytes = match &entry.definition.kind {
                        TestKind::Analyte { .. } => vec![(entry.definition.clone(), entry.version)],
                        TestKind::Panel { members } => {
                            if entry.members.len() != members.len()
                                || !entry.members.iter().all(|(d, _)| members.contains(&d.code))
                            {
                                return Err(LabError::PanelIncomplete(code.to_string()));
                            }
                            entry.members.clone()
                        }
                    };
                    let panel = matches!(entry.definition.kind, TestKind::Panel { .. })
                        .then(|| code.clone());
                    for (test, version) in analytes {
                        if test.result().is_none() {
                            return Err(LabError::PanelIncomplete(code.to_string()));
                        }
                        if items.iter().any(|i| i.test.code == test.code) {
                            return Err(LabError::DuplicateTest(test.code.to_string()));
                        }
                        items.push(OrderItem {
                            item_id: item_id(order_id, &test.code),
                            test,
                            version,
                            panel: panel.clone(),
                        });
                    }
                }
                if let Some(first) = charges.first() {
                    let currency = first.price.currency();
                    if charges.iter().any(|c| c.price.currency() != currency) {
                        return Err(LabError::MixedCurrencies);
                    }
                }
                push(E::LabOrderPlaced {
                    order_id,
                    patient_id,
                    patient,
                    appointment_id,
                    ordered_by: actor.user_id,
                    priority,
                    clinical_note: clinical_note.map(|n| n.to_string()),
                    charges,
                    items,
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::CollectSpecimen {
                actor,
                specimen_id,
                label,
                specimen_type,
                collected_at,
                now,
            } => {
                self.ensure_open()?;
                if !self
                    .items
                    .iter()
                    .any(|i| i.item.test.specimen_type == specimen_type)
                {
                    return Err(LabError::NoTestsForSpecimen(specimen_type));
                }
                if self.specimens.iter().any(|s| s.specimen_id == specimen_id) {
                    return Err(LabError::SpecimenExists(specimen_id));
                }
                if self.specimens.iter().any(|s| s.label == label) {
                    return Err(LabError::LabelTaken(label.to_string()));
                }
                if self
                    .current_specimen(specimen_type)
                    .is_some_and(|s| s.status != SpecimenStatus::Rejected)
                {
                    return Err(LabError::SpecimenAlreadyCollected(specimen_type));
                }
                if collected_at > now + COLLECTION_CLOCK_SKEW {
                    return Err(crate::common::ValidationError::new(
                        "collectedAt",
                        "must not be in the future",
                    )
                    .into());
                }
                if self.ordered_at.is_some_and(|o| collected_at < o) {
                    return Err(crate::common::ValidationError::new(
                        "collectedAt",
                        "must not be before the order was placed",
                    )
                    .into());
                }
                push(E::SpecimenCollected {
                    specimen_id,
                    label,
                    specimen_type,
                    collected_at,
                    collected_by: actor.user_id,
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::ReceiveSpecimen {
                actor,
                specimen_id,
                now,
            } => {
                self.ensure_open()?;
                let specimen = self.specimen(specimen_id)?;
                if specimen.status != SpecimenStatus::Collected {
                    return Err(LabError::SpecimenNotAwaited(specimen.status));
                }
                push(E::SpecimenReceived {
                    specimen_id,
                    received_by: actor.user_id,
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::RejectSpecimen {
                actor,
                specimen_id,
                reason,
                note,
                now,
            } => {
                self.ensure_open()?;
                let specimen = self.specimen(specimen_id)?;
                if specimen.status == SpecimenStatus::Rejected {
                    return Err(LabError::SpecimenNotAwaited(specimen.status));
                }
                if self.items.iter().any(|i| {
                    i.results
                        .last()
                        .is_some_and(|r| r.specimen_id == specimen_id)
                }) {
                    return Err(LabError::SpecimenInUse);
                }
                if reason == RejectionReason::Other && note.is_none() {
                    return Err(crate::common::ValidationError::new(
                        "note",
                        "is required when the reason is OTHER",
                    )
                    .into());
                }
                push(E::SpecimenRejected {
                    specimen_id,
                    reason,
                    note: note.map(|n| n.to_string()),
                    rejected_by: actor.user_id,
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::EnterResult {
                actor,
                item_id,
                value,
                now,
            } => {
                self.ensure_open()?;
                let item = self.item(item_id)?;
                match item.status {
                    ResultStatus::Pending | ResultStatus::Preliminary => {}
                    ResultStatus::Final => return Err(LabError::ResultFinal),
                    ResultStatus::Cancelled => {
                        return Err(LabError::OrderClosed(OrderStatus::Cancelled))
                    }
                }
                let result = self.record(item, value, &actor)?;
                push(E::ResultEntered {
                    result,
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::VerifyResults {
                actor,
                item_ids,
                now,
            } => {
                self.ensure_open()?;
                if item_ids.is_empty() {
                    return Err(crate::common::ValidationError::new(
                        "itemIds",
                        "name at least one result to verify",
                    )
                    .into());
                }
                let mut seen = std::collections::HashSet::new();
                for item_id in item_ids {
                    if !seen.insert(item_id) {
                        continue;
                    }
                    let item = self.item(item_id)?;
                    let latest = match (item.status, item.results.last()) {
                        (ResultStatus::Preliminary, Some(latest)) => latest,
                        _ => return Err(LabError::NothingToVerify(item_id)),
                    };
                    if latest.entered_by == actor.user_id {
                        return Err(LabError::SameTechnician);
                    }
                    push(E::ResultVerified {
                        item_id,
                        version: latest.version,
                        verified_by: actor.user_id,
                        status: OrderStatus::Ordered,
                        at: now,
                    });
                }
            }
            C::AmendResult {
                actor,
                item_id,
                value,
                reason,
                now,
            } => {
                // A verified order is amended and billed; a cancelled one is closed.
                if self.status()? == OrderStatus::Cancelled {
                    return Err(LabError::OrderClosed(OrderStatus::Cancelled));
                }
                let item = self.item(item_id)?;
                if item.status != ResultStatus::Final {
                    return Err(LabError::NotFinal);
                }
                let result = self.record(item, value, &actor)?;
                let previous = item.results.last().map(|r| &r.value);
                if previous == Some(&result.value) {
                    return Err(LabError::NothingChanged);
                }
                push(E::ResultAmended {
                    result,
                    reason: reason.to_string(),
                    status: OrderStatus::Ordered,
                    at: now,
                });
            }
            C::Cancel { actor, reason, now } => {
                self.ensure_open()?;
                if self.items.iter().any(|i| !i.results.is_empty()) {
                    return Err(LabError::HasResults);
                }
                push(E::LabOrderCancelled {
                    reason: reason.to_string(),
                    cancelled_by: actor.user_id,
                    status: OrderStatus::Cancelled,
                    at: now,
                });
            }
            C::MarkBilled {
                invoice_id, now, ..
            } => {
                // A verified order is amended and billed; a cancelled one is closed.
                if self.status()? == OrderStatus::Cancelled {
                    return Err(LabError::OrderClosed(OrderStatus::Cancelled));
                }
                if !self.ever_verified {
                    return Err(LabError::NotVerified);
                }
                if self.invoice_id.is_some() {
                    return Err(LabError::AlreadyBilled);
                }
                push(E::LabOrderBilled {
                    invoice_id,
                    at: now,
                });
            }
        }
        Ok(events)
    }

    /// The state change of one event, without the status the event carries.
    fn apply_state(&mut self, event: &LabOrderEvent) {
        use LabOrderEvent as E;
        match event {
            E::LabOrderPlaced {
                order_id,
                patient_id,
                patient,
                ordered_by,
                charges,
                items,
                at,
                ..
            } => {
                self.id = Some(*order_id);
                self.patient_id = Some(*patient_id);
                self.patient = Some(*patient);
                self.ordered_by = Some(*ordered_by);
                self.ordered_at = Some(*at);
                self.status = Some(OrderStatus::Ordered);
                self.charges = charges.clone();
                self.items = items
                    .iter()
                    .map(|item| ItemState {
                        item: item.clone(),
                        status: ResultStatus::Pending,
                        results: Vec::new(),
                    })
                    .collect();
            }
            E::SpecimenCollected {
                specimen_id,
                label,
                specimen_type,
                collected_at,
                ..
            } => self.specimens.push(Specimen {
                specimen_id: *specimen_id,
                label: label.clone(),
                specimen_type: *specimen_type,
                status: SpecimenStatus::Collected,
                collected_at: *collected_at,
            }),
            E::SpecimenReceived { specimen_id, .. } => {
                self.set_specimen_status(*specimen_id, SpecimenStatus::Received)
            }
            E::SpecimenRejected { specimen_id, .. } => {
                self.set_specimen_status(*specimen_id, SpecimenStatus::Rejected)
            }
            E::ResultEntered { result, .. } | E::ResultAmended { result, .. } => {
                if let Some(item) = self.item_mut(result.item_id) {
                    item.results.push(result.clone());
                    item.status = ResultStatus::Preliminary;
                }
            }
            E::ResultVerified { item_id, .. } => {
                if let Some(item) = self.item_mut(*item_id) {
                    item.status = ResultStatus::Final;
                }
            }
            E::LabOrderCancelled { .. } => {
                self.status = Some(OrderStatus::Cancelled);
                for item in &mut self.items {
                    item.status = ResultStatus::Cancelled;
                }
            }
            E::LabOrderBilled { invoice_id, .. } => self.invoice_id = Some(*invoice_id),
        }
    }

    fn item_mut(&mut self, item_id: Uuid) -> Option<&mut ItemState> {
        self.items.iter_mut().find(|i| i.item.item_id == item_id)
    }

    fn set_specimen_status(&mut self, specimen_id: Uuid, status: SpecimenStatus) {
        if let Some(s) = self
            .specimens
            .iter_mut()
            .find(|s| s.specimen_id == specimen_id)
        {
            s.status = status;
        }
    }

    /// The newest result of every item that has one, with its item.
    pub fn latest_results(&self) -> impl Iterator<Item = (&ItemState, &RecordedResult)> {
        self.items
            .iter()
            .filter_map(|i| i.results.last().map(|r| (i, r)))
    }
}

impl Aggregate for LabOrder {
    const TYPE: &'static str = "lab_order";
    type Command = LabOrderCommand;
    type Event = LabOrderEvent;
    type Error = LabError;
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
        self.apply_state(&event);
        use LabOrderEvent as E;
        match event {
            E::LabOrderPlaced { status, .. }
            | E::SpecimenCollected { status, .. }
            | E::SpecimenReceived { status, .. }
            | E::SpecimenRejected { status, .. }
            | E::ResultEntered { status, .. }
            | E::ResultAmended { status, .. }
            | E::ResultVerified { status, .. }
            | E::LabOrderCancelled { status, .. } => {
                self.status = Some(status);
                if status == OrderStatus::Verified {
                    self.ever_verified = true;
                }
            }
            E::LabOrderBilled { .. } => {}
        }
    }
}
