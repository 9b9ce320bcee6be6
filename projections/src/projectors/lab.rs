//! The laboratory's read models: `lab_tests` (the catalogue), `lab_orders` (the worklist,
//! turnaround), `lab_results` (each analyte's newest result: an order's results, a
//! patient's trend, critical results), `lab_result_versions` (every version of every
//! result) and `lab_specimens`. Statuses and flags are copied from the events, never
//! re-derived here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::lab::{
    LabOrder, LabOrderEvent, LabTest, LabTestEvent, Priority, RecordedResult, ResultSpec,
    ResultValue, TestDefinition, TestKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{decode_batch, enum_name, json, StreamRow};
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct LabProjector;

/// A row of `lab_tests`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct LabTestRow {
    pub code: String,
    pub system: String,
    pub name: String,
    pub specimen_type: String,
    pub kind: String,
    pub result_kind: Option<String>,
    pub unit: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub definition: Value,
    pub catalogue_version: i32,
    pub retired: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

super::stream_row!(LabTestRow);

impl LabTestRow {
    pub const COLUMNS: &'static str = "code, system, name, specimen_type, kind, result_kind, \
        unit, price_minor, currency, definition, catalogue_version, retired, created_at, \
        updated_at, version";

    fn set_definition(&mut self, d: &TestDefinition, catalogue_version: u32, at: DateTime<Utc>) {
        let (kind, result_kind, unit) = match &d.kind {
            TestKind::Analyte { result } => (
                "ANALYTE",
                Some(result_kind(result).to_owned()),
                unit_of(result),
            ),
            TestKind::Panel { .. } => ("PANEL", None, None),
        };
        self.system = enum_name(&d.system);
        self.name = d.name.as_str().to_owned();
        self.specimen_type = enum_name(&d.specimen_type);
        self.kind = kind.to_owned();
        self.result_kind = result_kind;
        self.unit = unit;
        self.price_minor = d.price.minor();
        self.currency = d.price.currency().as_str().to_owned();
        self.definition = json(d);
        self.catalogue_version = i32::try_from(catalogue_version).unwrap_or(i32::MAX);
        self.updated_at = at;
    }

    /// The catalogue entry `code`, if the read model has it.
    pub async fn find(db: impl PgExecutor<'_>, code: &str) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM lab_tests WHERE code = $1",
            Self::COLUMNS
        ))
        .bind(code)
        .fetch_optional(db)
        .await
    }
}

fn result_kind(spec: &ResultSpec) -> &'static str {
    match spec {
        ResultSpec::Numeric { .. } => "NUMERIC",
        ResultSpec::Coded { .. } => "CODED",
        ResultSpec::Text => "TEXT",
    }
}

fn unit_of(spec: &ResultSpec) -> Option<String> {
    match spec {
        ResultSpec::Numeric { unit, .. } => Some(unit.to_string()),
        _ => None,
    }
}

/// How a result reads in one line: `5.4 mmol/L`, `Positive`, the text.
pub fn value_text(value: &ResultValue) -> String {
    match value {
        ResultValue::Numeric { value, unit } => format!("{value} {unit}"),
        ResultValue::Coded { display, .. } => display.clone(),
        ResultValue::Text { text } => text.clone(),
    }
}

/// A row of `lab_orders`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct LabOrderRow {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub ordered_by: Uuid,
    pub priority: String,
    pub priority_rank: i16,
    pub status: String,
    pub clinical_note: Option<String>,
    pub charges: Value,
    pub specimen_types: Value,
    pub has_critical: bool,
    pub invoice_id: Option<Uuid>,
    pub ordered_at: DateTime<Utc>,
    pub collected_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

super::stream_row!(LabOrderRow);

impl LabOrderRow {
    pub const COLUMNS: &'static str = "id, patient_id, appointment_id, ordered_by, priority, \
        priority_rank, status, clinical_note, charges, specimen_types, has_critical, \
        invoice_id, ordered_at, collected_at, verified_at, cancelled_at, cancel_reason, \
        updated_at, version";

    /// The order `id`, if the read model has it.
    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM lab_orders WHERE id = $1",
            Self::COLUMNS
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }
}

/// The worklist's sort rank of a priority: STAT first.
pub fn priority_rank(priority: Priority) -> i16 {
    match priority {
        Priority::Stat => 0,
        Priority::Urgent => 1,
        Priority::Routine => 2,
    }
}

/// A row of `lab_results`: an analyte of an order with its newest result.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct LabResultRow {
    pub item_id: Uuid,
    pub order_id: Uuid,
    pub patient_id: Uuid,
    pub code: String,
    pub name: String,
    pub panel: Option<String>,
    pub catalogue_version: i32,
    pub specimen_type: String,
    pub result_kind: String,
    pub unit: Option<String>,
    pub status: String,
    pub result_version: i32,
    pub value: Option<Value>,
    pub value_text: Option<String>,
    pub flag: Option<String>,
    pub critical: bool,
    pub reference_range: Option<Value>,
    pub specimen_id: Option<Uuid>,
    pub collected_at: Option<DateTime<Utc>>,
    pub entered_by: Option<Uuid>,
    pub entered_at: Option<DateTime<Utc>>,
    pub verified_by: Option<Uuid>,
    pub verified_at: Option<DateTime<Utc>>,
    pub amended: bool,
    pub ordered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LabResultRow {
    pub const COLUMNS: &'static str = "item_id, order_id, patient_id, code, name, panel, \
        catalogue_version, specimen_type, result_kind, unit, status, result_version, value, \
        value_text, flag, critical, reference_range, specimen_id, collected_at, entered_by, \
        entered_at, verified_by, verified_at, amended, ordered_at, updated_at";

    /// The analytes of an order, in the order they were placed (panel members together).
    pub async fn of_order(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM lab_results WHERE order_id = $1 ORDER BY code, item_id",
            Self::COLUMNS
        ))
        .bind(order_id)
        .fetch_all(db)
        .await
    }
}

/// A row of `lab_result_versions`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct LabResultVersionRow {
    pub id: Uuid,
    pub item_id: Uuid,
    pub order_id: Uuid,
    pub result_version: i32,
    pub value: Value,
    pub value_text: String,
    pub flag: Option<String>,
    pub entered_by: Uuid,
    pub entered_at: DateTime<Utc>,
    pub amend_reason: Option<String>,
    pub verified_by: Option<Uuid>,
    pub verified_at: Option<DateTime<Utc>>,
}

impl LabResultVersionRow {
    pub const COLUMNS: &'static str = "id, item_id, order_id, result_version, value, \
        value_text, flag, entered_by, entered_at, amend_reason, verified_by, verified_at";

    /// The key of version `version` of result `item_id`.
    pub fn key(item_id: Uuid, version: u32) -> Uuid {
        Uuid::new_v5(&item_id, &version.to_be_bytes())
    }

    /// Every version of every result of an order, oldest first per result.
    pub async fn of_order(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM lab_result_versions WHERE order_id = $1 \
              ORDER BY item_id, result_version",
            Self::COLUMNS
        ))
        .bind(order_id)
        .fetch_all(db)
        .await
    }
}

/// A row of `lab_specimens`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct LabSpecimenRow {
    pub specimen_id: Uuid,
    pub order_id: Uuid,
    pub label: String,
    pub specimen_type: String,
    pub status: String,
    pub collected_at: DateTime<Utc>,
    pub collected_by: Uuid,
    pub received_at: Option<DateTime<Utc>>,
    pub received_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<String>,
    pub rejection_note: Option<String>,
}

impl LabSpecimenRow {
    pub const COLUMNS: &'static str = "specimen_id, order_id, label, specimen_type, status, \
        collected_at, collected_by, received_at, received_by, rejected_at, rejection_reason, \
        rejection_note";

    /// The specimens of an order, in the order they were collected.
    pub async fn of_order(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM lab_specimens WHERE order_id = $1 ORDER BY collected_at, specimen_id",
            Self::COLUMNS
        ))
        .bind(order_id)
        .fetch_all(db)
        .await
    }
}

/// What one batch does to the tables.
struct Changes {
    tests: RowSet<String, LabTestRow>,
    orders: RowSet<Uuid, LabOrderRow>,
    results: RowSet<Uuid, LabResultRow>,
    versions: RowSet<Uuid, LabResultVersionRow>,
    specimens: RowSet<Uuid, LabSpecimenRow>,
}

impl Changes {
    fn new() -> Self {
        Self {
            tests: RowSet::new("lab_tests", "code"),
            orders: RowSet::new("lab_orders", "id"),
            results: RowSet::new("lab_results", "item_id"),
            versions: RowSet::new("lab_result_versions", "id"),
            specimens: RowSet::new("lab_specimens", "specimen_id"),
        }
    }
}

#[async_trait]
impl Projector for LabProjector {
    fn name(&self) -> &'static str {
        "lab"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "lab_tests",
            "lab_orders",
            "lab_results",
            "lab_result_versions",
            "lab_specimens",
        ]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One read per table of the rows the batch changes; one write per table.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let upcasters = hms_domain::upcasters();
        let tests = events
            .iter()
            .filter(|e| e.aggregate_type == <LabTest as cqrs_es::Aggregate>::TYPE)
            .map(|e| Ok((e, e.decode::<LabTest>(&upcasters)?)))
            .collect::<Result<Vec<_>>>()?;
        let orders = decode_batch::<LabOrder>(self.name(), events)?;
        let erased = super::erased_patients(events);
        if tests.is_empty() && orders.is_empty() && erased.is_empty() {
            return Ok(());
        }
        let mut changes = Changes::new();
        let codes = tests
            .iter()
            .filter(|(_, e)| !matches!(e, LabTestEvent::LabTestDefined { .. }))
            .map(|(s, _)| s.aggregate_id.clone())
            .collect();
        changes.tests.load(tx, codes).await?;
        for (stored, event) in tests {
            fold_test(&mut changes.tests, &stored.aggregate_id, event);
            if let Some(row) = changes.tests.get_mut(&stored.aggregate_id) {
                row.set_version(stored.sequence);
            }
        }

        let placed = |e: &LabOrderEvent| matches!(e, LabOrderEvent::LabOrderPlaced { .. });
        let existing: Vec<Uuid> = orders
            .iter()
            .filter(|(_, _, e)| !placed(e))
            .map(|(id, _, _)| *id)
            .collect();
        let mut items = Vec::new();
        let mut specimens = Vec::new();
        for (_, _, e) in &orders {
            match e {
                LabOrderEvent::ResultEntered { result, .. }
                | LabOrderEvent::ResultAmended { result, .. } => {
                    items.push(result.item_id);
                    specimens.push(result.specimen_id);
                }
                LabOrderEvent::ResultVerified { item_id, .. } => items.push(*item_id),
                LabOrderEvent::SpecimenReceived { specimen_id, .. }
                | LabOrderEvent::SpecimenRejected { specimen_id, .. } => {
                    specimens.push(*specimen_id)
                }
                _ => {}
            }
        }
        changes.orders.load(tx, existing.clone()).await?;
        changes.results.load(tx, items.clone()).await?;
        changes.specimens.load(tx, specimens).await?;
        // Cancelling an order cancels all its results: load them by order.
        let cancelled: Vec<Uuid> = orders
            .iter()
            .filter(|(_, _, e)| matches!(e, LabOrderEvent::LabOrderCancelled { .. }))
            .map(|(id, _, _)| *id)
            .collect();
        if !cancelled.is_empty() {
            let of_cancelled: Vec<Uuid> =
                sqlx::query_scalar("SELECT item_id FROM lab_results WHERE order_id = ANY($1)")
                    .bind(&cancelled)
                    .fetch_all(&mut *tx)
                    .await?;
            changes.results.load(tx, of_cancelled).await?;
        }
        // A verification names the result's version: load that version's row.
        let verified_versions: Vec<Uuid> = orders
            .iter()
            .filter_map(|(_, _, e)| match e {
                LabOrderEvent::ResultVerified {
                    item_id, version, ..
                } => Some(LabResultVersionRow::key(*item_id, *version)),
                _ => None,
            })
            .collect();
        changes.versions.load(tx, verified_versions).await?;
        for (id, stored, event) in orders {
            fold_order(&mut changes, id, event);
            if let Some(row) = changes.orders.get_mut(&id) {
                row.set_version(stored.sequence);
            }
        }
        let Changes {
            tests,
            orders,
            results,
            versions,
            specimens,
        } = changes;
        tests.store(tx).await?;
        orders.store(tx).await?;
        results.store(tx).await?;
        versions.store(tx).await?;
        specimens.store(tx).await?;
        // The clinical note is the patient's sealed text.
        if !erased.is_empty() {
            sqlx::query(
                "UPDATE lab_orders SET clinical_note = $2 \
                  WHERE patient_id = ANY($1) AND clinical_note IS NOT NULL",
            )
            .bind(&erased)
            .bind(crate::personal::ERASED)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

fn fold_test(tests: &mut RowSet<String, LabTestRow>, code: &str, event: LabTestEvent) {
    match event {
        LabTestEvent::LabTestDefined {
            definition,
            version,
            at,
        } => {
            let mut row = LabTestRow {
                code: code.to_owned(),
                system: String::new(),
                name: String::new(),
                specimen_type: String::new(),
                kind: String::new(),
                result_kind: None,
                unit: None,
                price_minor: 0,
                currency: String::new(),
                definition: Value::Null,
                catalogue_version: 0,
                retired: false,
                created_at: at,
                updated_at: at,
                version: 0,
            };
            row.set_definition(&definition, version, at);
            tests.insert(code.to_owned(), row);
        }
        LabTestEvent::LabTestRevised {
            definition,
            version,
            at,
        } => {
            if let Some(row) = tests.get_mut(&code.to_owned()) {
                row.set_definition(&definition, version, at);
            }
        }
        LabTestEvent::LabTestRetired { at, .. } => {
            if let Some(row) = tests.get_mut(&code.to_owned()) {
                row.retired = true;
                row.updated_at = at;
            }
        }
        LabTestEvent::LabTestReinstated { at } => {
            if let Some(row) = tests.get_mut(&code.to_owned()) {
                row.retired = false;
                row.updated_at = at;
            }
        }
    }
}

fn fold_order(changes: &mut Changes, id: Uuid, event: LabOrderEvent) {
    use LabOrderEvent as E;
    match event {
        E::LabOrderPlaced {
            order_id,
            patient_id,
            appointment_id,
            ordered_by,
            priority,
            clinical_note,
            charges,
            items,
            status,
            at,
            ..
        } => {
            let mut types: Vec<String> = items
                .iter()
                .map(|i| enum_name(&i.test.specimen_type))
                .collect();
            types.sort();
            types.dedup();
            for item in &items {
                let spec = item.result_spec();
                changes.results.insert(
                    item.item_id,
                    LabResultRow {
                        item_id: item.item_id,
                        order_id,
                        patient_id,
                        code: item.test.code.to_string(),
                        name: item.test.name.to_string(),
                        panel: item.panel.as_ref().map(|p| p.to_string()),
                        catalogue_version: i32::try_from(item.version).unwrap_or(i32::MAX),
                        specimen_type: enum_name(&item.test.specimen_type),
                        result_kind: spec.map(result_kind).unwrap_or("TEXT").to_owned(),
                        unit: spec.and_then(unit_of),
                        status: "PENDING".into(),
                        result_version: 0,
                        value: None,
                        value_text: None,
                        flag: None,
                        critical: false,
                        reference_range: None,
                        specimen_id: None,
                        collected_at: None,
                        entered_by: None,
                        entered_at: None,
                        verified_by: None,
                        verified_at: None,
                        amended: false,
                        ordered_at: at,
                        updated_at: at,
                    },
                );
            }
            changes.orders.insert(
                order_id,
                LabOrderRow {
                    id: order_id,
                    patient_id,
                    appointment_id,
                    ordered_by,
                    priority: enum_name(&priority),
                    priority_rank: priority_rank(priority),
                    status: enum_name(&status),
                    clinical_note,
                    charges: json(&charges),
                    specimen_types: json(&types),
                    has_critical: false,
                    invoice_id: None,
                    ordered_at: at,
                    collected_at: None,
                    verified_at: None,
                    cancelled_at: None,
                    cancel_reason: None,
                    updated_at: at,
                    version: 0,
                },
            );
        }
        E::SpecimenCollected {
            specimen_id,
            label,
            specimen_type,
            collected_at,
            collected_by,
            status,
            at,
        } => {
            changes.specimens.insert(
                specimen_id,
                LabSpecimenRow {
                    specimen_id,
                    order_id: id,
                    label: label.to_string(),
                    specimen_type: enum_name(&specimen_type),
                    status: "COLLECTED".into(),
                    collected_at,
                    collected_by,
                    received_at: None,
                    received_by: None,
                    rejected_at: None,
                    rejection_reason: None,
                    rejection_note: None,
                },
            );
            if let Some(order) = changes.orders.get_mut(&id) {
                order.collected_at.get_or_insert(collected_at);
                order.status = enum_name(&status);
                order.updated_at = at;
            }
        }
        E::SpecimenReceived {
            specimen_id,
            received_by,
            status,
            at,
        } => {
            if let Some(s) = changes.specimens.get_mut(&specimen_id) {
                s.status = "RECEIVED".into();
                s.received_at = Some(at);
                s.received_by = Some(received_by);
            }
            set_status(changes, id, &status, at);
        }
        E::SpecimenRejected {
            specimen_id,
            reason,
            note,
            status,
            at,
            ..
        } => {
            if let Some(s) = changes.specimens.get_mut(&specimen_id) {
                s.status = "REJECTED".into();
                s.rejected_at = Some(at);
                s.rejection_reason = Some(enum_name(&reason));
                s.rejection_note = note;
            }
            set_status(changes, id, &status, at);
        }
        E::ResultEntered { result, status, at } => {
            record_result(changes, id, &result, None, at);
            set_status(changes, id, &status, at);
        }
        E::ResultAmended {
            result,
            reason,
            status,
            at,
        } => {
            record_result(changes, id, &result, Some(reason), at);
            set_status(changes, id, &status, at);
        }
        E::ResultVerified {
            item_id,
            version,
            verified_by,
            status,
            at,
        } => {
            if let Some(r) = changes.results.get_mut(&item_id) {
                r.status = "FINAL".into();
                r.verified_by = Some(verified_by);
                r.verified_at = Some(at);
                r.updated_at = at;
            }
            if let Some(v) = changes
                .versions
                .get_mut(&LabResultVersionRow::key(item_id, version))
            {
                v.verified_by = Some(verified_by);
                v.verified_at = Some(at);
            }
            set_status(changes, id, &status, at);
        }
        E::LabOrderCancelled {
            reason, status, at, ..
        } => {
            if let Some(order) = changes.orders.get_mut(&id) {
                order.cancelled_at = Some(at);
                order.cancel_reason = Some(reason);
            }
            // Every loaded or new result of this order.
            for item in item_ids_of(changes, id) {
                if let Some(r) = changes.results.get_mut(&item) {
                    r.status = "CANCELLED".into();
                    r.updated_at = at;
                }
            }
            set_status(changes, id, &status, at);
        }
        E::LabOrderBilled { invoice_id, at } => {
            if let Some(order) = changes.orders.get_mut(&id) {
                order.invoice_id = Some(invoice_id);
                order.updated_at = at;
            }
        }
    }
}

/// The results of order `order_id` the batch holds (loaded or new).
fn item_ids_of(changes: &mut Changes, order_id: Uuid) -> Vec<Uuid> {
    changes.results.keys_where(|r| r.order_id == order_id)
}

fn set_status(
    changes: &mut Changes,
    id: Uuid,
    status: &hms_domain::lab::OrderStatus,
    at: DateTime<Utc>,
) {
    if let Some(order) = changes.orders.get_mut(&id) {
        order.status = enum_name(status);
        if *status == hms_domain::lab::OrderStatus::Verified && order.verified_at.is_none() {
            order.verified_at = Some(at);
        }
        order.updated_at = at;
    }
}

fn record_result(
    changes: &mut Changes,
    order_id: Uuid,
    result: &RecordedResult,
    amend_reason: Option<String>,
    at: DateTime<Utc>,
) {
    let collected_at = changes
        .specimens
        .get_mut(&result.specimen_id)
        .map(|s| s.collected_at);
    let critical = result.flag.is_some_and(|f| f.is_critical());
    let text = value_text(&result.value);
    if let Some(r) = changes.results.get_mut(&result.item_id) {
        r.status = "PRELIMINARY".into();
        r.result_version = i32::try_from(result.version).unwrap_or(i32::MAX);
        r.value = Some(json(&result.value));
        r.value_text = Some(text.clone());
        r.flag = result.flag.as_ref().map(enum_name);
        r.critical = critical;
        r.reference_range = result.range.as_ref().map(json);
        r.specimen_id = Some(result.specimen_id);
        if collected_at.is_some() {
            r.collected_at = collected_at;
        }
        r.entered_by = Some(result.entered_by);
        r.entered_at = Some(at);
        r.verified_by = None;
        r.verified_at = None;
        r.amended |= amend_reason.is_some();
        r.updated_at = at;
    }
    changes.versions.insert(
        LabResultVersionRow::key(result.item_id, result.version),
        LabResultVersionRow {
            id: LabResultVersionRow::key(result.item_id, result.version),
            item_id: result.item_id,
            order_id,
            result_version: i32::try_from(result.version).unwrap_or(i32::MAX),
            value: json(&result.value),
            value_text: text,
            flag: result.flag.as_ref().map(enum_name),
            entered_by: result.entered_by,
            entered_at: at,
            amend_reason,
            verified_by: None,
            verified_at: None,
        },
    );
    if critical {
        if let Some(order) = changes.orders.get_mut(&order_id) {
            order.has_critical = true;
        }
    }
}
