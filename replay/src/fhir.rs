//! `fhir-export`: one patient's *verified* lab results as FHIR R4 resources, following
//! FHIR's lab flow (ServiceRequest → Specimen → Observation → DiagnosticReport).
//!
//! The source is the log, not the read models: the patient's orders are found by their
//! `LabOrderPlaced` event and each stream is folded with the aggregate's own `apply`
//! ([`OrderHistory::fold`]), so a lagging or rebuilding projection cannot hide or
//! invent a result. Everything is read in one read-only snapshot, so the resources agree
//! with each other even while the hospital keeps working.
//!
//! What is exported: the orders with at least one result whose newest version is
//! verified (FINAL), with their specimens (rejected ones included, as `unavailable`),
//! those results, and one DiagnosticReport per order. A result awaiting (re-)verification
//! is left out: only what a second technician signed off leaves the hospital. A patient
//! without any yields an empty bundle.
//!
//! Repeatability: resource ids are the log's own ids (order, specimen, item) or derived
//! from them (the report's), resources come in a fixed order, and nothing depends on the
//! clock, so exporting the same log twice gives the same bytes.
//!
//! References between resources are `Type/id` and every one of them names an entry of
//! the bundle (the ordering doctor is a minimal Practitioner for that reason). Codes the
//! hospital made up (local test codes, coded answers, MRNs, specimen labels) get a
//! `urn:hms:<HOSPITAL>:…` system: they mean something only in the hospital that made
//! them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use hms_app::state::Platform;
use hms_app::usecases::audit::fold_with;
use hms_domain::lab::{
    CodeSystem, Decimal, Flag, ItemState, LabOrder, LabOrderEvent, LabTest, LabTestEvent,
    OrderStatus, PatientFacts, Priority, RecordedResult, ReferenceRange, RejectionReason,
    ResultStatus, ResultValue, Specimen, SpecimenStatus, TestCode, TestDefinition,
};
use hms_domain::patient::{Patient, Sex};
use hms_projections::log;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use sqlx::types::Uuid;
use sqlx::{PgConnection, PgPool};

use crate::cli::{FhirExportArgs, FhirFormat};
use crate::{tenant, Outcome, ReplayError, Result};

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const SPECIMEN_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0487";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const DIAGNOSTIC_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const GENDER: &str = "http://hl7.org/fhir/administrative-gender";
const RANGE_MEANING: &str = "http://terminology.hl7.org/CodeSystem/referencerange-meaning";

/// Names the DiagnosticReport's id among the order's derived ids. Test codes are upper
/// case, so no item id (`v5(order, code)`) can collide with it.
const REPORT_ID_NAME: &[u8] = b"fhir:DiagnosticReport";

// ---------------------------------------------------------------------------------------
// The command

pub async fn run(
    platform: &Platform,
    args: &FhirExportArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let tenant = tenant::open(platform, &args.hospital).await?;
    let exported = export_patient(&tenant, &args.hospital, args.patient).await;
    tenant.close().await;
    let resources = exported?;
    // A patient's export is small: rendered whole, then written in one go.
    let mut bytes = Vec::with_capacity(16 * 1024);
    write_resources(resources, args.format, &mut bytes)?;
    match &args.output {
        Some(path) => crate::output::write_file(path, &bytes)?,
        None => out.write_all(&bytes)?,
    }
    Ok(Outcome::Clean)
}

/// Writes `resources` as one Bundle (pretty-printed) or as NDJSON (one resource per
/// line, nothing for no resources). `resourceType` comes first in every resource, as
/// FHIR tools print it; the other elements follow in key order.
pub fn write_resources(
    resources: Vec<Value>,
    format: FhirFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        FhirFormat::Bundle => {
            serde_json::to_writer_pretty(&mut *out, &ResourceFirst(&bundle(resources)))?;
            out.write_all(b"\n")?;
        }
        FhirFormat::Ndjson => {
            for resource in &resources {
                serde_json::to_writer(&mut *out, &ResourceFirst(resource))?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

/// A JSON value serialized with `resourceType` first in each object that has one.
struct ResourceFirst<'a>(&'a Value);

impl Serialize for ResourceFirst<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                if let Some(kind) = map.get("resourceType") {
                    out.serialize_entry("resourceType", kind)?;
                }
                for (key, value) in map.iter().filter(|(k, _)| *k != "resourceType") {
                    out.serialize_entry(key, &ResourceFirst(value))?;
                }
                out.end()
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(ResourceFirst)),
            other => other.serialize(serializer),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the log

/// The FHIR resources of patient `patient_id`'s verified lab results in hospital
/// `hospital` (its code, used in the local code systems), read from the hospital's
/// event log in one read-only snapshot. NOT_FOUND when the patient has no record there;
/// an empty list when nothing of theirs is verified yet. Wrap it with [`bundle`].
pub async fn export_patient(pool: &PgPool, hospital: &str, patient_id: Uuid) -> Result<Vec<Value>> {
    let mut tx = pool.begin().await?;
    // One snapshot for every stream read below, so the orders, the patient and the
    // catalogue agree. Read-only, it gets no transaction id: the log's readable horizon
    // (`hms_projections::log::HORIZON`), and so the hospital's projections, never wait on it.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let read = read_patient(&mut tx, hospital, patient_id).await;
    // Read-only: nothing to keep, and a failed read has nothing to undo either.
    tx.rollback().await?;
    let (patient, orders) = read?;
    let ctx = Context {
        hospital,
        patient_id,
    };
    Ok(patient_resources(&ctx, Some(&patient), &orders))
}

async fn read_patient(
    conn: &mut PgConnection,
    hospital: &str,
    patient_id: Uuid,
) -> Result<(Patient, Vec<OrderHistory>)> {
    let upcasters = hms_domain::upcasters();
    let id = patient_id.to_string();
    let stream = log::read_stream(conn, Patient::TYPE, &id).await?;
    if stream.is_empty() {
        return Err(ReplayError::NotFound(format!(
            "patient {id} has no record in hospital {hospital}"
        )));
    }
    let patient: Patient = fold_with(&stream, &upcasters)?;
    // Candidates by the placing event's payload (stored as serde writes the event:
    // `{"LabOrderPlaced": {...}}`); the folded order confirms the patient below.
    let order_ids: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM public.events \
          WHERE aggregate_type = $1 AND event_type = $2 \
            AND payload -> $2 ->> 'patient_id' = $3 \
          ORDER BY aggregate_id",
    )
    .bind(LabOrder::TYPE)
    .bind("LabOrderPlaced")
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let mut catalogue = HashMap::new();
    let mut orders = Vec::with_capacity(order_ids.len());
    for order_id in order_ids {
        let stream = log::read_stream(conn, LabOrder::TYPE, &order_id).await?;
        let events = stream
            .iter()
            .map(|e| e.decode::<LabOrder>(&upcasters))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut order = OrderHistory::fold(events);
        if order.order.patient_id != Some(patient_id) {
            continue;
        }
        for (code, version) in order.unresolved_entries() {
            let key = (code.clone(), version);
            let system = match catalogue.get(&key) {
                Some(system) => *system,
                None => {
                    let system = catalogue_system(conn, &code, version, &upcasters).await?;
                    catalogue.insert(key, system);
                    system
                }
            };
            order.entry_systems.insert(code, system);
        }
        orders.push(order);
    }
    Ok((patient, orders))
}

/// The code system of catalogue entry `code` at `version`, from its own stream (an
/// order keeps the system of its analytes, not of the panels it names). LOCAL when the
/// version is not found: claiming LOINC for a code that may not be one would be worse.
async fn catalogue_system(
    conn: &mut PgConnection,
    code: &TestCode,
    version: u32,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<CodeSystem> {
    let stream = log::read_stream(conn, LabTest::TYPE, code.as_str()).await?;
    for event in &stream {
        match event.decode::<LabTest>(upcasters)? {
            LabTestEvent::LabTestDefined {
                definition,
                version: v,
                ..
            }
            | LabTestEvent::LabTestRevised {
                definition,
                version: v,
                ..
            } if v == version => return Ok(definition.system),
            _ => {}
        }
    }
    Ok(CodeSystem::Local)
}

// ---------------------------------------------------------------------------------------
// One order's stream

/// One lab order as its stream tells it: the state the aggregate's `apply` folds, plus
/// what the aggregate does not keep but a report needs (priority, note, when each
/// result was verified, amendments, specimen receipt and rejection).
#[derive(Debug, Clone, Default)]
pub struct OrderHistory {
    pub order: LabOrder,
    pub priority: Option<Priority>,
    pub clinical_note: Option<String>,
    /// When each result version was verified, by `(item, version)`.
    pub verified_at: BTreeMap<(Uuid, u32), DateTime<Utc>>,
    /// Items amended at least once, with the newest amendment's reason.
    pub amendments: BTreeMap<Uuid, String>,
    pub received_at: BTreeMap<Uuid, DateTime<Utc>>,
    pub rejections: BTreeMap<Uuid, (RejectionReason, Option<String>)>,
    /// Code systems of ordered entries that are not analytes of the order (panels), as
    /// the catalogue had them at the ordered version; see [`Self::unresolved_entries`].
    /// An entry missing here is LOCAL.
    pub entry_systems: BTreeMap<TestCode, CodeSystem>,
}

impl OrderHistory {
    /// Applies `events` (one stream, in sequence order) to a fresh order.
    pub fn fold(events: impl IntoIterator<Item = LabOrderEvent>) -> Self {
        let mut history = Self::default();
        for event in events {
            history.apply(event);
        }
        history
    }

    pub fn apply(&mut self, event: LabOrderEvent) {
        use LabOrderEvent as E;
        match &event {
            E::LabOrderPlaced {
                priority,
                clinical_note,
                ..
            } => {
                self.priority = Some(*priority);
                self.clinical_note.clone_from(clinical_note);
            }
            E::SpecimenReceived {
                specimen_id, at, ..
            } => {
                self.received_at.insert(*specimen_id, *at);
            }
            E::SpecimenRejected {
                specimen_id,
                reason,
                note,
                ..
            } => {
                self.rejections
                    .insert(*specimen_id, (*reason, note.clone()));
            }
            E::ResultAmended { result, reason, .. } => {
                self.amendments.insert(result.item_id, reason.clone());
            }
            E::ResultVerified {
                item_id,
                version,
                at,
                ..
            } => {
                self.verified_at.insert((*item_id, *version), *at);
            }
            E::SpecimenCollected { .. }
            | E::ResultEntered { .. }
            | E::LabOrderCancelled { .. }
            | E::LabOrderBilled { .. } => {}
        }
        self.order.apply(event);
    }

    /// Ordered entries (code, catalogue version) whose code system the order does not
    /// hold: panels. The caller looks them up and fills [`Self::entry_systems`].
    pub fn unresolved_entries(&self) -> Vec<(TestCode, u32)> {
        self.order
            .charges
            .iter()
            .filter(|c| {
                self.analyte(&c.code).is_none() && !self.entry_systems.contains_key(&c.code)
            })
            .map(|c| (c.code.clone(), c.version))
            .collect()
    }

    fn analyte(&self, code: &TestCode) -> Option<&TestDefinition> {
        self.order
            .items
            .iter()
            .map(|i| &i.item.test)
            .find(|t| &t.code == code)
    }

    /// Items whose newest result is verified, with that result.
    fn final_results(&self) -> impl Iterator<Item = (&ItemState, &RecordedResult)> {
        self.order
            .latest_results()
            .filter(|(item, _)| item.status == ResultStatus::Final)
    }

    /// Whether an item's final result replaces one released before it.
    fn corrected(&self, item_id: Uuid) -> bool {
        self.amendments.contains_key(&item_id)
    }

    fn specimen(&self, specimen_id: Uuid) -> Option<&Specimen> {
        self.order
            .specimens
            .iter()
            .find(|s| s.specimen_id == specimen_id)
    }
}

// ---------------------------------------------------------------------------------------
// Resources

/// Whose export it is and which hospital's local codes it uses.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The hospital's code (e.g. `DMC001`), naming its local code systems.
    pub hospital: &'a str,
    pub patient_id: Uuid,
}

impl Context<'_> {
    /// A code system of the hospital's own: `urn:hms:<HOSPITAL>:<what>`.
    pub fn local_system(&self, what: &str) -> String {
        format!("urn:hms:{}:{what}", self.hospital)
    }

    fn subject(&self) -> Value {
        reference("Patient", self.patient_id)
    }

    fn test_coding(&self, code: &TestCode, system: CodeSystem, name: &str) -> Value {
        match system {
            // LOINC owns its displays; the catalogue's name goes in the concept's text.
            CodeSystem::Loinc => json!({"system": LOINC, "code": code.as_str()}),
            CodeSystem::Local => json!({
                "system": self.local_system("lab-test"),
                "code": code.as_str(),
                "display": name
            }),
        }
    }

    /// The ordered entries as one concept: what ServiceRequest and DiagnosticReport say
    /// was asked for.
    fn ordered_tests(&self, order: &OrderHistory) -> Value {
        let codings: Vec<Value> = order
            .order
            .charges
            .iter()
            .map(|c| {
                let system = order
                    .analyte(&c.code)
                    .map(|t| t.system)
                    .or_else(|| order.entry_systems.get(&c.code).copied())
                    .unwrap_or(CodeSystem::Local);
                self.test_coding(&c.code, system, &c.name)
            })
            .collect();
        let names: Vec<&str> = order
            .order
            .charges
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        concept(codings, &names.join("; "))
    }
}

/// The id of the DiagnosticReport of order `order_id`: derived, so a re-export names it
/// alike.
pub fn diagnostic_report_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&order_id, REPORT_ID_NAME)
}

/// Every resource of the export, in a fixed order: the Patient, the ordering doctors,
/// then per order (by time placed) its ServiceRequest, Specimens, Observations and
/// DiagnosticReport. Orders without a verified result are left out; with none at all
/// the list is empty. `record` is the patient's folded record (for the MRN and name);
/// without it the Patient carries what the first order knew (sex, date of birth).
pub fn patient_resources(
    ctx: &Context,
    record: Option<&Patient>,
    orders: &[OrderHistory],
) -> Vec<Value> {
    let mut exported: Vec<&OrderHistory> = orders
        .iter()
        .filter(|o| {
            o.order.patient_id == Some(ctx.patient_id) && o.final_results().next().is_some()
        })
        .collect();
    if exported.is_empty() {
        return Vec::new();
    }
    exported.sort_by_key(|o| (o.order.ordered_at, o.order.id));
    let facts = exported.iter().find_map(|o| o.order.patient.as_ref());
    let mut out = vec![patient(ctx, record, facts)];
    let doctors: BTreeSet<Uuid> = exported.iter().filter_map(|o| o.order.ordered_by).collect();
    out.extend(doctors.into_iter().map(|id| practitioner(ctx, id)));
    for order in exported {
        out.extend(order_resources(ctx, order));
    }
    out
}

/// One order's resources: ServiceRequest, Specimens, Observations of its verified
/// results, DiagnosticReport; nothing when it has no verified result.
pub fn order_resources(ctx: &Context, order: &OrderHistory) -> Vec<Value> {
    let (Some(request), Some(report)) =
        (service_request(ctx, order), diagnostic_report(ctx, order))
    else {
        return Vec::new();
    };
    let mut out = vec![request];
    out.extend(
        order
            .order
            .specimens
            .iter()
            .filter_map(|s| specimen(ctx, order, s)),
    );
    out.extend(
        order
            .final_results()
            .filter_map(|(item, _)| observation(ctx, order, item)),
    );
    out.push(report);
    out
}

/// A minimal Patient: id, MRN, name, gender, date of birth.
pub fn patient(ctx: &Context, record: Option<&Patient>, facts: Option<&PatientFacts>) -> Value {
    let mut resource = json!({"resourceType": "Patient", "id": ctx.patient_id});
    if let Some(mrn) = record.and_then(|r| r.mrn.as_ref()) {
        resource["identifier"] = json!([{
            "type": {"coding": [{
                "system": IDENTIFIER_TYPE, "code": "MR", "display": "Medical record number"
            }]},
            "system": ctx.local_system("mrn"),
            "value": mrn.as_str()
        }]);
    }
    let demographics = record.and_then(|r| r.demographics.as_ref());
    let (sex, born) = match (demographics, facts) {
        (Some(d), _) => (Some(d.sex), Some(d.date_of_birth)),
        (None, Some(f)) => (Some(f.sex), Some(f.date_of_birth)),
        (None, None) => (None, None),
    };
    if let Some(d) = demographics {
        let given: Vec<&str> = [&d.given_name, &d.middle_name]
            .into_iter()
            .flatten()
            .map(|n| n.as_str())
            .collect();
        let mut name = json!({"use": "official", "family": d.family_name.as_str()});
        if !given.is_empty() {
            name["given"] = json!(given);
        }
        resource["name"] = json!([name]);
    }
    if let Some(sex) = sex {
        resource["gender"] = json!(gender(sex));
    }
    if let Some(born) = born {
        resource["birthDate"] = json!(born.format("%Y-%m-%d").to_string());
    }
    resource
}

/// FHIR's administrative gender has no intersex: `other` is its nearest.
fn gender(sex: Sex) -> &'static str {
    match sex {
        Sex::Male => "male",
        Sex::Female => "female",
        Sex::Intersex => "other",
        Sex::Unknown => "unknown",
    }
}

/// A staff member named by a reference, only so that the reference resolves: the user
/// id as identifier, nothing about the person.
pub fn practitioner(ctx: &Context, user_id: Uuid) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": user_id,
        "identifier": [{"system": ctx.local_system("user"), "value": user_id.to_string()}]
    })
}

/// The order as a ServiceRequest; `None` for an order never placed.
pub fn service_request(ctx: &Context, order: &OrderHistory) -> Option<Value> {
    let o = &order.order;
    let id = o.id?;
    let status = match o.status? {
        OrderStatus::Ordered | OrderStatus::Collected | OrderStatus::InProgress => "active",
        OrderStatus::Verified => "completed",
        OrderStatus::Cancelled => "revoked",
    };
    let mut resource = json!({
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "code": ctx.ordered_tests(order),
        "subject": ctx.subject()
    });
    if let Some(priority) = order.priority {
        resource["priority"] = json!(match priority {
            Priority::Routine => "routine",
            Priority::Urgent => "urgent",
            Priority::Stat => "stat",
        });
    }
    if let Some(at) = o.ordered_at {
        resource["authoredOn"] = json!(instant(at));
    }
    if let Some(doctor) = o.ordered_by {
        resource["requester"] = reference("Practitioner", doctor);
    }
    if let Some(note) = &order.clinical_note {
        resource["note"] = json!([{"text": note}]);
    }
    Some(resource)
}

/// A specimen of the order; a rejected one is `unavailable`, with the reason as a note.
pub fn specimen(ctx: &Context, order: &OrderHistory, s: &Specimen) -> Option<Value> {
    let order_id = order.order.id?;
    let (code, display) = s.specimen_type.hl7();
    let status = match s.status {
        SpecimenStatus::Collected | SpecimenStatus::Received => "available",
        SpecimenStatus::Rejected => "unavailable",
    };
    let mut resource = json!({
        "resourceType": "Specimen",
        "id": s.specimen_id,
        "identifier": [{"system": ctx.local_system("specimen-label"), "value": s.label.as_str()}],
        "status": status,
        "type": concept(vec![json!({"system": SPECIMEN_TYPE, "code": code, "display": display})], display),
        "subject": ctx.subject(),
        "request": [reference("ServiceRequest", order_id)],
        "collection": {"collectedDateTime": instant(s.collected_at)}
    });
    if let Some(at) = order.received_at.get(&s.specimen_id) {
        resource["receivedTime"] = json!(instant(*at));
    }
    if let (SpecimenStatus::Rejected, Some((reason, note))) =
        (s.status, order.rejections.get(&s.specimen_id))
    {
        let mut text = format!("Rejected: {}", rejection(*reason));
        if let Some(note) = note {
            text.push_str(": ");
            text.push_str(note);
        }
        resource["note"] = json!([{"text": text}]);
    }
    Some(resource)
}

fn rejection(reason: RejectionReason) -> &'static str {
    match reason {
        RejectionReason::Haemolysed => "haemolysed",
        RejectionReason::Clotted => "clotted",
        RejectionReason::InsufficientVolume => "insufficient volume",
        RejectionReason::WrongContainer => "wrong container",
        RejectionReason::Unlabelled => "unlabelled",
        RejectionReason::Contaminated => "contaminated",
        RejectionReason::DelayedTransport => "delayed transport",
        RejectionReason::Other => "other",
    }
}

/// An item's newest result as an Observation, if it is verified: `corrected` when it
/// replaces a result released before (an amendment), `final` otherwise.
pub fn observation(ctx: &Context, order: &OrderHistory, item: &ItemState) -> Option<Value> {
    let order_id = order.order.id?;
    let result = item.results.last()?;
    if item.status != ResultStatus::Final {
        return None;
    }
    let test = &item.item.test;
    let corrected = order.corrected(item.item.item_id);
    let mut resource = json!({
        "resourceType": "Observation",
        "id": item.item.item_id,
        "status": if corrected { "corrected" } else { "final" },
        "category": [{"coding": [{
            "system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"
        }]}],
        "code": concept(vec![ctx.test_coding(&test.code, test.system, test.name.as_str())], test.name.as_str()),
        "subject": ctx.subject(),
        "basedOn": [reference("ServiceRequest", order_id)],
        "specimen": reference("Specimen", result.specimen_id)
    });
    if let Some(s) = order.specimen(result.specimen_id) {
        resource["effectiveDateTime"] = json!(instant(s.collected_at));
    }
    if let Some(at) = order.verified_at.get(&(item.item.item_id, result.version)) {
        resource["issued"] = json!(instant(*at));
    }
    match &result.value {
        ResultValue::Numeric { value, unit } => {
            resource["valueQuantity"] = quantity(value, unit.as_str());
        }
        ResultValue::Coded { code, display } => {
            let system = ctx.local_system(&format!("lab-answer:{}", test.code));
            resource["valueCodeableConcept"] = concept(
                vec![json!({"system": system, "code": code, "display": display})],
                display,
            );
        }
        ResultValue::Text { text } => resource["valueString"] = json!(text),
    }
    if let Some(flag) = result.flag {
        resource["interpretation"] = json!([interpretation(flag)]);
    }
    if let (Some(range), ResultValue::Numeric { unit, .. }) = (&result.range, &result.value) {
        resource["referenceRange"] = json!([reference_range(range, unit.as_str())]);
    }
    if let (true, Some(reason)) = (corrected, order.amendments.get(&item.item.item_id)) {
        resource["note"] = json!([{"text": format!("Corrected: {reason}")}]);
    }
    Some(resource)
}

fn interpretation(flag: Flag) -> Value {
    let (code, display) = flag.hl7();
    concept(
        vec![json!({"system": INTERPRETATION, "code": code, "display": display})],
        display,
    )
}

/// The applied range: normal limits as quantities, the sex it is for, its age band, and
/// the critical limits in words (R4 has no coded "critical" range meaning).
fn reference_range(range: &ReferenceRange, unit: &str) -> Value {
    let mut out = Map::new();
    if let Some(low) = &range.low {
        out.insert("low".into(), quantity(low, unit));
    }
    if let Some(high) = &range.high {
        out.insert("high".into(), quantity(high, unit));
    }
    out.insert(
        "type".into(),
        concept(
            vec![json!({"system": RANGE_MEANING, "code": "normal", "display": "Normal Range"})],
            "Normal Range",
        ),
    );
    if let Some(sex) = range.sex {
        let code = gender(sex);
        out.insert(
            "appliesTo".into(),
            json!([concept(vec![json!({"system": GENDER, "code": code})], code)]),
        );
    }
    if range.min_age_days.is_some() || range.max_age_days.is_some() {
        let mut age = Map::new();
        if let Some(min) = range.min_age_days {
            age.insert("low".into(), days(min));
        }
        // The domain's band is [min, max) in whole days; a FHIR Range is inclusive.
        if let Some(max) = range.max_age_days {
            age.insert("high".into(), days(max.saturating_sub(1)));
        }
        out.insert("age".into(), Value::Object(age));
    }
    out.insert("text".into(), json!(range_text(range, unit)));
    Value::Object(out)
}

fn range_text(range: &ReferenceRange, unit: &str) -> String {
    let mut text = match (&range.low, &range.high) {
        (Some(low), Some(high)) => format!("{low}-{high} {unit}"),
        (Some(low), None) => format!(">= {low} {unit}"),
        (None, Some(high)) => format!("<= {high} {unit}"),
        (None, None) => String::new(),
    };
    let critical: Vec<String> = [
        range.critical_low.as_ref().map(|c| format!("below {c}")),
        range.critical_high.as_ref().map(|c| format!("above {c}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !critical.is_empty() {
        text.push_str(&format!("; critical {}", critical.join(" or ")));
    }
    text
}

fn days(n: u32) -> Value {
    json!({"value": n, "unit": "d", "system": UCUM, "code": "d"})
}

/// A UCUM quantity; the value is the JSON number of the decimal as entered.
fn quantity(value: &Decimal, unit: &str) -> Value {
    json!({"value": decimal_number(value), "unit": unit, "system": UCUM, "code": unit})
}

/// The decimal's text as a JSON number: an integer stays exact; a fraction becomes the
/// double any JSON reader would make of the text (serde_json keeps no decimal text, and
/// FHIR JSON carries decimals as numbers). Text JSON refuses (leading zeros, `007`) is
/// read in the canonical spelling of the same value.
fn decimal_number(value: &Decimal) -> Value {
    value
        .as_str()
        .parse::<Number>()
        .or_else(|_| {
            Decimal::from_micros(value.micros())
                .as_str()
                .parse::<Number>()
        })
        .map_or(Value::Null, Value::Number)
}

/// The order's report, once it has a verified result: `final` when every result is
/// verified, `corrected` when one of them replaces a released result, `partial` while
/// some are still awaited (a receiver must not take it for the complete report).
pub fn diagnostic_report(ctx: &Context, order: &OrderHistory) -> Option<Value> {
    let order_id = order.order.id?;
    let finals: Vec<(&ItemState, &RecordedResult)> = order.final_results().collect();
    if finals.is_empty() {
        return None;
    }
    let complete = order
        .order
        .items
        .iter()
        .filter(|i| i.status != ResultStatus::Cancelled)
        .all(|i| i.status == ResultStatus::Final);
    let corrected = finals.iter().any(|(i, _)| order.corrected(i.item.item_id));
    let status = match (complete, corrected) {
        (false, _) => "partial",
        (true, true) => "corrected",
        (true, false) => "final",
    };
    let specimen_ids: BTreeSet<Uuid> = finals.iter().map(|(_, r)| r.specimen_id).collect();
    // In collection order, as the order lists them.
    let specimens: Vec<&Specimen> = order
        .order
        .specimens
        .iter()
        .filter(|s| specimen_ids.contains(&s.specimen_id))
        .collect();
    let mut resource = json!({
        "resourceType": "DiagnosticReport",
        "id": diagnostic_report_id(order_id),
        "basedOn": [reference("ServiceRequest", order_id)],
        "status": status,
        "category": [concept(
            vec![json!({"system": DIAGNOSTIC_SERVICE, "code": "LAB", "display": "Laboratory"})],
            "Laboratory",
        )],
        "code": ctx.ordered_tests(order),
        "subject": ctx.subject(),
        "specimen": specimens.iter().map(|s| reference("Specimen", s.specimen_id)).collect::<Vec<_>>(),
        "result": finals.iter().map(|(i, _)| reference("Observation", i.item.item_id)).collect::<Vec<_>>()
    });
    if let Some(first) = specimens.iter().map(|s| s.collected_at).min() {
        resource["effectiveDateTime"] = json!(instant(first));
    }
    // Issued when its newest result was released.
    let issued = finals
        .iter()
        .filter_map(|(i, r)| order.verified_at.get(&(i.item.item_id, r.version)))
        .max();
    if let Some(at) = issued {
        resource["issued"] = json!(instant(*at));
    }
    Some(resource)
}

/// A `collection` Bundle of `resources`, each under its `urn:uuid:` full URL. FHIR JSON
/// has no empty arrays, so an empty bundle has no `entry`.
pub fn bundle(resources: Vec<Value>) -> Value {
    let mut bundle = json!({"resourceType": "Bundle", "type": "collection"});
    if !resources.is_empty() {
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|resource| {
                let id = resource["id"].as_str().unwrap_or_default().to_owned();
                json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource})
            })
            .collect();
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

fn reference(kind: &str, id: Uuid) -> Value {
    json!({"reference": format!("{kind}/{id}")})
}

fn concept(codings: Vec<Value>, text: &str) -> Value {
    json!({"coding": codings, "text": text})
}

/// An instant as FHIR wants it: with seconds and a zone, fractions only when there are.
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};
    use hms_domain::billing::Money;
    use hms_domain::common::{Actor, BoundedText, Currency, Role};
    use hms_domain::lab::{
        item_id, CodedOption, LabOrderCommand, OrderedEntry, ResultInput, ResultSpec,
        SpecimenLabel, SpecimenType, TestKind, Ucum,
    };

    const HOSPITAL: &str = "DMC001";
    const PATIENT: Uuid = Uuid::from_u128(0x7a7);
    const ORDER: Uuid = Uuid::from_u128(0x0de7);
    const DOCTOR: Uuid = Uuid::from_u128(0xd0c);
    const NURSE: Uuid = Uuid::from_u128(0x4e5);
    /// Enters results.
    const TECH: Uuid = Uuid::from_u128(0x7ec1);
    /// Verifies them (four eyes).
    const CHECKER: Uuid = Uuid::from_u128(0x7ec2);
    /// The first serum tube, rejected; the second, recollected; the urine pot.
    const SERUM_1: Uuid = Uuid::from_u128(0x5e1);
    const SERUM_2: Uuid = Uuid::from_u128(0x5e2);
    const URINE: Uuid = Uuid::from_u128(0x5e3);

    fn ctx() -> Context<'static> {
        Context {
            hospital: HOSPITAL,
            patient_id: PATIENT,
        }
    }

    /// `minutes` after the order was placed.
    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T07:30:00Z")
            .expect("a time")
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
    }

    fn who(role: Role, user_id: Uuid) -> Actor {
        Actor {
            user_id,
            username: format!("user-{user_id}"),
            role,
        }
    }

    fn txt(s: &str) -> BoundedText {
        BoundedText::parse("text", s, 1_000).expect("text")
    }

    fn code(s: &str) -> TestCode {
        TestCode::parse(s).expect("a code")
    }

    fn dec(s: &str) -> Decimal {
        Decimal::parse("value", s).expect("a decimal")
    }

    fn test(
        code_: &str,
        system: CodeSystem,
        name: &str,
        on: SpecimenType,
        kind: TestKind,
    ) -> TestDefinition {
        TestDefinition {
            code: code(code_),
            system,
            name: txt(name),
            specimen_type: on,
            kind,
            price: Money::new(50_000, Currency::parse("KES").expect("currency")),
        }
    }

    fn numeric(unit: &str, ranges: Vec<ReferenceRange>) -> TestKind {
        TestKind::Analyte {
            result: ResultSpec::Numeric {
                unit: Ucum::parse("unit", unit).expect("unit"),
                ranges,
            },
        }
    }

    fn range(
        sex: Option<Sex>,
        min_age_days: Option<u32>,
        normal: (&str, &str),
        critical: (&str, &str),
    ) -> ReferenceRange {
        ReferenceRange {
            sex,
            min_age_days,
            max_age_days: None,
            low: Some(dec(normal.0)),
            high: Some(dec(normal.1)),
            critical_low: Some(dec(critical.0)),
            critical_high: Some(dec(critical.1)),
        }
    }

    fn potassium() -> TestDefinition {
        let kind = numeric(
            "mmol/L",
            vec![
                range(None, Some(30), ("3.5", "5.1"), ("2.5", "6.5")),
                range(Some(Sex::Male), Some(30), ("3.6", "5.2"), ("2.5", "6.5")),
            ],
        );
        test(
            "2823-3",
            CodeSystem::Loinc,
            "Potassium, serum",
            SpecimenType::Serum,
            kind,
        )
    }

    fn sodium() -> TestDefinition {
        let kind = numeric(
            "mmol/L",
            vec![range(None, None, ("135", "145"), ("120", "160"))],
        );
        test(
            "2951-2",
            CodeSystem::Loinc,
            "Sodium, serum",
            SpecimenType::Serum,
            kind,
        )
    }

    fn glucose() -> TestDefinition {
        let kind = numeric(
            "mmol/L",
            vec![range(None, None, ("3.9", "5.5"), ("2.2", "25"))],
        );
        test(
            "GLU-F",
            CodeSystem::Local,
            "Fasting glucose",
            SpecimenType::Serum,
            kind,
        )
    }

    fn hiv() -> TestDefinition {
        let answer = |code: &str, display: &str, abnormal| CodedOption {
            code: code.into(),
            display: display.into(),
            abnormal,
        };
        let kind = TestKind::Analyte {
            result: ResultSpec::Coded {
                options: vec![
                    answer("NEG", "Negative", false),
                    answer("POS", "Positive", true),
                ],
            },
        };
        test(
            "HIV-RDT",
            CodeSystem::Local,
            "HIV 1+2 rapid test",
            SpecimenType::Serum,
            kind,
        )
    }

    fn microscopy() -> TestDefinition {
        let kind = TestKind::Analyte {
            result: ResultSpec::Text,
        };
        test(
            "UMICRO",
            CodeSystem::Local,
            "Urine microscopy",
            SpecimenType::Urine,
            kind,
        )
    }

    /// A LOINC panel (electrolytes) of potassium and sodium.
    fn electrolytes() -> TestDefinition {
        let kind = TestKind::Panel {
            members: vec![code("2823-3"), code("2951-2")],
        };
        test(
            "24326-1",
            CodeSystem::Loinc,
            "Electrolytes panel",
            SpecimenType::Serum,
            kind,
        )
    }

    fn item(definition: &TestDefinition) -> Uuid {
        item_id(ORDER, &definition.code)
    }

    /// Runs commands through the domain's own `decide`, keeping the events they record.
    #[derive(Default)]
    struct Log {
        state: LabOrder,
        events: Vec<LabOrderEvent>,
    }

    impl Log {
        fn run(&mut self, command: LabOrderCommand) -> &mut Self {
            for event in self.state.decide(command).expect("the command is accepted") {
                self.state.apply(event.clone());
                self.events.push(event);
            }
            self
        }

        fn history(&self) -> OrderHistory {
            OrderHistory::fold(self.events.clone())
        }

        fn place(&mut self) -> &mut Self {
            let plain = |definition| OrderedEntry {
                definition,
                version: 1,
                members: vec![],
            };
            self.run(LabOrderCommand::Place {
                actor: who(Role::Doctor, DOCTOR),
                order_id: ORDER,
                patient_id: PATIENT,
                patient: PatientFacts {
                    sex: Sex::Male,
                    date_of_birth: NaiveDate::from_ymd_opt(1980, 6, 15).expect("a date"),
                },
                appointment_id: None,
                priority: Priority::Stat,
                clinical_note: Some(txt("Weakness; on furosemide")),
                tests: vec![
                    OrderedEntry {
                        definition: electrolytes(),
                        version: 2,
                        members: vec![(potassium(), 3), (sodium(), 1)],
                    },
                    plain(glucose()),
                    plain(hiv()),
                    plain(microscopy()),
                ],
                now: t(0),
            })
        }

        fn collect(&mut self, id: Uuid, label: &str, on: SpecimenType, at: i64) -> &mut Self {
            self.run(LabOrderCommand::CollectSpecimen {
                actor: who(Role::Nurse, NURSE),
                specimen_id: id,
                label: SpecimenLabel::parse(label).expect("a label"),
                specimen_type: on,
                collected_at: t(at),
                now: t(at),
            })
        }

        fn receive(&mut self, id: Uuid, at: i64) -> &mut Self {
            self.run(LabOrderCommand::ReceiveSpecimen {
                actor: who(Role::LabTechnician, TECH),
                specimen_id: id,
                now: t(at),
            })
        }

        fn number(&mut self, definition: &TestDefinition, value: &str, at: i64) -> &mut Self {
            self.enter(
                definition,
                ResultInput::Numeric {
                    value: dec(value),
                    unit: "mmol/L".into(),
                },
                at,
            )
        }

        fn enter(&mut self, definition: &TestDefinition, value: ResultInput, at: i64) -> &mut Self {
            self.run(LabOrderCommand::EnterResult {
                actor: who(Role::LabTechnician, TECH),
                item_id: item(definition),
                value,
                now: t(at),
            })
        }

        fn verify(&mut self, definitions: &[TestDefinition], at: i64) -> &mut Self {
            self.run(LabOrderCommand::VerifyResults {
                actor: who(Role::LabTechnician, CHECKER),
                item_ids: definitions.iter().map(item).collect(),
                now: t(at),
            })
        }
    }

    /// The whole flow: a STAT order for a panel and three tests; the first serum tube is
    /// haemolysed and recollected; potassium is critical, HIV positive, glucose mistyped
    /// and amended, microscopy in words; sodium is entered but not verified yet.
    fn worked_order() -> Log {
        let mut log = Log::default();
        log.place()
            .collect(SERUM_1, "dmc-0001", SpecimenType::Serum, 10)
            .collect(URINE, "DMC-0003", SpecimenType::Urine, 15)
            .run(LabOrderCommand::RejectSpecimen {
                actor: who(Role::LabTechnician, TECH),
                specimen_id: SERUM_1,
                reason: RejectionReason::Haemolysed,
                note: Some(txt("grossly haemolysed")),
                now: t(40),
            })
            .collect(SERUM_2, "DMC-0002", SpecimenType::Serum, 50)
            .receive(SERUM_2, 70)
            .receive(URINE, 70)
            .number(&potassium(), "6.9", 90)
            .enter(&hiv(), ResultInput::Coded { code: "pos".into() }, 91)
            .number(&glucose(), "7.10", 92)
            .enter(
                &microscopy(),
                ResultInput::Text {
                    text: txt("Occasional pus cells; no casts"),
                },
                93,
            )
            .number(&sodium(), "140", 94)
            .verify(&[potassium(), hiv(), glucose(), microscopy()], 120)
            .run(LabOrderCommand::AmendResult {
                actor: who(Role::LabTechnician, TECH),
                item_id: item(&glucose()),
                value: ResultInput::Numeric {
                    value: dec("5.40"),
                    unit: "mmol/L".into(),
                },
                reason: txt("transcription error"),
                now: t(150),
            })
            .verify(&[glucose()], 170);
        log
    }

    fn exported(history: &OrderHistory) -> Vec<Value> {
        patient_resources(&ctx(), None, std::slice::from_ref(history))
    }

    fn of_type<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
        resources
            .iter()
            .filter(|r| r["resourceType"] == kind)
            .collect()
    }

    fn by_id(resources: &[Value], id: Uuid) -> &Value {
        let id = id.to_string();
        resources
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no resource {id}"))
    }

    fn codes(concept: &Value) -> Vec<(String, String)> {
        concept["coding"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| {
                        (
                            c["system"].as_str().unwrap_or("?").to_owned(),
                            c["code"].as_str().unwrap_or("?").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    // -- A small structural validator of the FHIR R4 rules these resources must keep --

    /// Required elements and allowed codes per resource type, then the JSON rules of
    /// every element: no nulls or empty values, codings with system and code, references
    /// as `Type/uuid`, UCUM quantities with a code.
    fn validate(resource: &Value) -> Result<(), String> {
        let kind = resource["resourceType"]
            .as_str()
            .ok_or("resourceType is missing")?;
        let present = |field: &str| -> Result<&Value, String> {
            match resource.get(field) {
                Some(v) if !v.is_null() => Ok(v),
                _ => Err(format!("{kind}.{field} is required")),
            }
        };
        // `allowed`: the value set's codes, separated by spaces.
        let one_of = |field: &str, allowed: &str| -> Result<(), String> {
            let value = present(field)?.as_str().unwrap_or_default();
            if allowed.split(' ').any(|code| code == value) {
                Ok(())
            } else {
                Err(format!("{kind}.{field} '{value}' is not one of: {allowed}"))
            }
        };
        let optional = |field: &str, allowed: &str| match resource.get(field) {
            Some(_) => one_of(field, allowed),
            None => Ok(()),
        };
        let refers_to = |field: &str, target: &str| -> Result<(), String> {
            let r = present(field)?["reference"].as_str().unwrap_or_default();
            if r.starts_with(&format!("{target}/")) {
                Ok(())
            } else {
                Err(format!("{kind}.{field} must reference a {target}: '{r}'"))
            }
        };
        if kind != "Bundle" {
            let id = present("id")?.as_str().unwrap_or_default();
            Uuid::parse_str(id).map_err(|_| format!("{kind}.id '{id}' is not a uuid"))?;
        }
        match kind {
            "Bundle" => {
                one_of(
                    "type",
                    "document message transaction transaction-response batch batch-response \
                     history searchset collection",
                )?;
                for entry in resource["entry"].as_array().into_iter().flatten() {
                    let full_url = entry["fullUrl"].as_str().ok_or("entry without fullUrl")?;
                    let inner = &entry["resource"];
                    let id = inner["id"].as_str().unwrap_or_default();
                    if full_url != format!("urn:uuid:{id}") {
                        return Err(format!("fullUrl {full_url} does not name resource {id}"));
                    }
                    validate(inner)?;
                }
            }
            "Patient" => {
                optional("gender", "male female other unknown")?;
                if let Some(born) = resource.get("birthDate") {
                    NaiveDate::parse_from_str(born.as_str().unwrap_or_default(), "%Y-%m-%d")
                        .map_err(|_| "Patient.birthDate is not a date".to_owned())?;
                }
            }
            "Practitioner" => {}
            "ServiceRequest" => {
                one_of(
                    "status",
                    "draft active on-hold revoked completed entered-in-error unknown",
                )?;
                one_of(
                    "intent",
                    "proposal plan directive order original-order reflex-order filler-order \
                     instance-order option",
                )?;
                refers_to("subject", "Patient")?;
                optional("priority", "routine urgent asap stat")?;
            }
            "Specimen" => {
                refers_to("subject", "Patient")?;
                present("type")?;
                optional(
                    "status",
                    "available unavailable unsatisfactory entered-in-error",
                )?;
            }
            "Observation" => {
                one_of(
                    "status",
                    "registered preliminary final amended corrected cancelled \
                     entered-in-error unknown",
                )?;
                present("code")?;
                let values = resource
                    .as_object()
                    .map_or(0, |m| m.keys().filter(|k| k.starts_with("value")).count());
                if values > 1 {
                    return Err("Observation has more than one value[x]".into());
                }
            }
            "DiagnosticReport" => {
                one_of(
                    "status",
                    "registered partial preliminary final amended corrected appended \
                     cancelled entered-in-error unknown",
                )?;
                present("code")?;
            }
            other => return Err(format!("unexpected resource type {other}")),
        }
        elements(resource, kind)
    }

    fn elements(value: &Value, path: &str) -> Result<(), String> {
        match value {
            Value::Null => Err(format!("{path} is null")),
            Value::String(s) if s.is_empty() => Err(format!("{path} is an empty string")),
            Value::Array(items) if items.is_empty() => Err(format!("{path} is an empty array")),
            Value::Object(map) if map.is_empty() => Err(format!("{path} is an empty object")),
            Value::Array(items) => items.iter().try_for_each(|v| elements(v, path)),
            Value::Object(map) => {
                for coding in map
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !coding["system"].is_string() || !coding["code"].is_string() {
                        return Err(format!("{path}.coding lacks a system or code: {coding}"));
                    }
                }
                if let Some(r) = map.get("reference") {
                    let r = r.as_str().unwrap_or_default();
                    let ok = r
                        .split_once('/')
                        .is_some_and(|(t, id)| !t.is_empty() && Uuid::parse_str(id).is_ok());
                    if !ok {
                        return Err(format!("{path}.reference '{r}' is not Type/uuid"));
                    }
                }
                let ucum = map.get("system").and_then(Value::as_str) == Some(UCUM);
                let complete =
                    map.get("value").is_some_and(Value::is_number) && map.contains_key("code");
                if ucum && !complete {
                    return Err(format!(
                        "{path} is a UCUM quantity without a number or code"
                    ));
                }
                map.iter().try_for_each(|(k, v)| {
                    // A nested resource (a bundle entry) is validated on its own.
                    if k == "resource" {
                        return Ok(());
                    }
                    elements(v, &format!("{path}.{k}"))
                })
            }
            _ => Ok(()),
        }
    }

    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("reference", Value::String(r)) => out.push(r.clone()),
                        _ => references(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, out)),
            _ => {}
        }
    }

    // -- Tests --

    #[test]
    fn every_resource_is_valid_and_every_reference_resolves_in_the_bundle() {
        let resources = exported(&worked_order().history());
        for resource in &resources {
            validate(resource).unwrap_or_else(|e| panic!("{e}: {resource:#}"));
        }
        let bundle = bundle(resources);
        validate(&bundle).unwrap_or_else(|e| panic!("{e}"));
        let entries = bundle["entry"].as_array().expect("entries");
        let names: BTreeSet<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap_or("?"),
                    e["resource"]["id"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(names.len(), entries.len(), "ids are unique");
        let full_urls: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str())
            .collect();
        assert_eq!(full_urls.len(), entries.len(), "full URLs are unique");
        let mut refs = Vec::new();
        references(&bundle, &mut refs);
        assert!(refs.len() > 20, "the resources reference each other");
        for r in refs {
            assert!(names.contains(&r), "{r} names no entry of the bundle");
        }
        let kinds: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["resource"]["resourceType"].as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "Patient",
                "Practitioner",
                "ServiceRequest",
                "Specimen",
                "Specimen",
                "Specimen",
                "Observation",
                "Observation",
                "Observation",
                "Observation",
                "DiagnosticReport"
            ]
        );
    }

    #[test]
    fn only_verified_results_are_exported() {
        let resources = exported(&worked_order().history());
        let observed: BTreeSet<String> = of_type(&resources, "Observation")
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect();
        let expected: BTreeSet<String> = [potassium(), hiv(), glucose(), microscopy()]
            .iter()
            .map(|d| item(d).to_string())
            .collect();
        assert_eq!(observed, expected);
        let sodium = item(&sodium()).to_string();
        assert!(
            !observed.contains(&sodium),
            "the unverified sodium stays in"
        );
        let report = of_type(&resources, "DiagnosticReport")[0];
        let results = report["result"].as_array().expect("results");
        assert_eq!(results.len(), 4);
        assert!(!results.contains(&json!({"reference": format!("Observation/{sodium}")})));
    }

    #[test]
    fn a_critical_number_carries_its_flag_unit_and_range() {
        let resources = exported(&worked_order().history());
        let k = by_id(&resources, item(&potassium()));
        assert_eq!(k["status"], "final");
        assert_eq!(codes(&k["code"]), [(LOINC.to_owned(), "2823-3".to_owned())]);
        assert_eq!(
            codes(&k["category"][0]),
            [(OBSERVATION_CATEGORY.to_owned(), "laboratory".to_owned())]
        );
        assert_eq!(
            codes(&k["interpretation"][0]),
            [(INTERPRETATION.to_owned(), "HH".to_owned())]
        );
        let quantity = &k["valueQuantity"];
        assert!(quantity["value"].is_number(), "a JSON number, not a string");
        assert_eq!(quantity["value"].as_f64(), "6.9".parse::<f64>().ok());
        assert_eq!(quantity["system"], UCUM);
        assert_eq!(quantity["code"], "mmol/L");
        assert_eq!(quantity["unit"], "mmol/L");
        // The male range was applied (the sex-specific one), from 30 days of age.
        let range = &k["referenceRange"][0];
        assert_eq!(range["low"]["value"].as_f64(), Some(3.6));
        assert_eq!(range["high"]["value"].as_f64(), Some(5.2));
        assert_eq!(range["high"]["system"], UCUM);
        assert_eq!(range["appliesTo"][0]["coding"][0]["code"], "male");
        assert_eq!(
            range["age"],
            json!({"low": {"value": 30, "unit": "d", "system": UCUM, "code": "d"}})
        );
        assert_eq!(
            range["text"],
            "3.6-5.2 mmol/L; critical below 2.5 or above 6.5"
        );
        // Collected from the recollected tube; issued at verification.
        assert_eq!(k["specimen"]["reference"], format!("Specimen/{SERUM_2}"));
        assert_eq!(k["effectiveDateTime"], instant(t(50)));
        assert_eq!(k["issued"], instant(t(120)));
        assert_eq!(
            k["basedOn"][0]["reference"],
            format!("ServiceRequest/{ORDER}")
        );
        assert_eq!(k["subject"]["reference"], format!("Patient/{PATIENT}"));
    }

    #[test]
    fn coded_and_text_results_keep_their_kind() {
        let resources = exported(&worked_order().history());
        let hiv = by_id(&resources, item(&hiv()));
        assert_eq!(hiv["status"], "final");
        assert_eq!(
            codes(&hiv["valueCodeableConcept"]),
            [(
                "urn:hms:DMC001:lab-answer:HIV-RDT".to_owned(),
                "POS".to_owned()
            )]
        );
        assert_eq!(
            codes(&hiv["interpretation"][0]),
            [(INTERPRETATION.to_owned(), "A".to_owned())]
        );
        assert_eq!(
            codes(&hiv["code"]),
            [("urn:hms:DMC001:lab-test".to_owned(), "HIV-RDT".to_owned())]
        );
        assert!(hiv.get("referenceRange").is_none());
        let micro = by_id(&resources, item(&microscopy()));
        assert_eq!(micro["valueString"], "Occasional pus cells; no casts");
        assert!(micro.get("interpretation").is_none());
        assert_eq!(micro["specimen"]["reference"], format!("Specimen/{URINE}"));
    }

    #[test]
    fn an_amended_result_is_corrected_with_its_new_value() {
        let resources = exported(&worked_order().history());
        let glucose = by_id(&resources, item(&glucose()));
        assert_eq!(glucose["status"], "corrected");
        assert_eq!(
            glucose["valueQuantity"]["value"].as_f64(),
            "5.40".parse::<f64>().ok()
        );
        assert_eq!(
            codes(&glucose["interpretation"][0]),
            [(INTERPRETATION.to_owned(), "N".to_owned())]
        );
        assert_eq!(
            glucose["issued"],
            instant(t(170)),
            "issued when the correction was verified"
        );
        assert_eq!(glucose["note"][0]["text"], "Corrected: transcription error");
        // A version 2 by re-entry before verification is no correction.
        let mut log = worked_order();
        log.number(&sodium(), "141", 180).verify(&[sodium()], 190);
        let resources = exported(&log.history());
        let sodium = by_id(&resources, item(&sodium()));
        assert_eq!(
            log.state
                .items
                .iter()
                .find(|i| i.item.item_id == item(&self::sodium()))
                .and_then(|i| i.results.last())
                .map(|r| r.version),
            Some(2)
        );
        assert_eq!(sodium["status"], "final");
        assert_eq!(
            sodium["valueQuantity"]["value"],
            json!(141),
            "an integer stays an integer"
        );
    }

    #[test]
    fn the_rejected_tube_is_unavailable_and_the_recollected_one_is_used() {
        let resources = exported(&worked_order().history());
        let rejected = by_id(&resources, SERUM_1);
        assert_eq!(rejected["status"], "unavailable");
        assert_eq!(
            rejected["note"][0]["text"],
            "Rejected: haemolysed: grossly haemolysed"
        );
        assert_eq!(rejected["identifier"][0]["value"], "DMC-0001");
        assert_eq!(
            rejected["identifier"][0]["system"],
            "urn:hms:DMC001:specimen-label"
        );
        assert!(rejected.get("receivedTime").is_none());
        let used = by_id(&resources, SERUM_2);
        assert_eq!(used["status"], "available");
        assert_eq!(
            codes(&used["type"]),
            [(SPECIMEN_TYPE.to_owned(), "SER".to_owned())]
        );
        assert_eq!(used["collection"]["collectedDateTime"], instant(t(50)));
        assert_eq!(used["receivedTime"], instant(t(70)));
        assert_eq!(
            used["request"][0]["reference"],
            format!("ServiceRequest/{ORDER}")
        );
        assert_eq!(used["subject"]["reference"], format!("Patient/{PATIENT}"));
        let urine = by_id(&resources, URINE);
        assert_eq!(
            codes(&urine["type"]),
            [(SPECIMEN_TYPE.to_owned(), "UR".to_owned())]
        );
        // The report names the tubes its results came from, not the rejected one.
        let report = of_type(&resources, "DiagnosticReport")[0];
        assert_eq!(
            report["specimen"],
            json!([{"reference": format!("Specimen/{URINE}")}, {"reference": format!("Specimen/{SERUM_2}")}])
        );
    }

    #[test]
    fn the_request_names_every_ordered_test_and_who_asked() {
        let mut history = worked_order().history();
        let request = |history: &OrderHistory| service_request(&ctx(), history).expect("a request");
        let loinc_panel = (LOINC.to_owned(), "24326-1".to_owned());
        let local_panel = ("urn:hms:DMC001:lab-test".to_owned(), "24326-1".to_owned());
        // The order does not know the panel's system: LOCAL until the catalogue says.
        assert_eq!(history.unresolved_entries(), [(code("24326-1"), 2)]);
        assert_eq!(codes(&request(&history)["code"])[0], local_panel);
        history
            .entry_systems
            .insert(code("24326-1"), CodeSystem::Loinc);
        assert!(history.unresolved_entries().is_empty());
        let sr = request(&history);
        assert_eq!(
            codes(&sr["code"]),
            [
                loinc_panel,
                ("urn:hms:DMC001:lab-test".to_owned(), "GLU-F".to_owned()),
                ("urn:hms:DMC001:lab-test".to_owned(), "HIV-RDT".to_owned()),
                ("urn:hms:DMC001:lab-test".to_owned(), "UMICRO".to_owned()),
            ]
        );
        assert_eq!(
            sr["code"]["text"],
            "Electrolytes panel; Fasting glucose; HIV 1+2 rapid test; Urine microscopy"
        );
        assert_eq!(sr["id"], ORDER.to_string());
        assert_eq!(sr["status"], "active", "sodium is still awaited");
        assert_eq!(sr["intent"], "order");
        assert_eq!(sr["priority"], "stat");
        assert_eq!(sr["authoredOn"], "2026-03-02T07:30:00Z");
        assert_eq!(
            sr["requester"]["reference"],
            format!("Practitioner/{DOCTOR}")
        );
        assert_eq!(sr["note"][0]["text"], "Weakness; on furosemide");
        validate(&sr).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_report_is_partial_until_every_result_is_verified() {
        let mut log = worked_order();
        let resources = exported(&log.history());
        let report = of_type(&resources, "DiagnosticReport")[0];
        assert_eq!(report["id"], diagnostic_report_id(ORDER).to_string());
        assert_eq!(report["status"], "partial");
        assert_eq!(
            codes(&report["category"][0]),
            [(DIAGNOSTIC_SERVICE.to_owned(), "LAB".to_owned())]
        );
        assert_eq!(
            report["code"],
            service_request(&ctx(), &log.history()).expect("a request")["code"]
        );
        assert_eq!(
            report["basedOn"][0]["reference"],
            format!("ServiceRequest/{ORDER}")
        );
        assert_eq!(
            report["effectiveDateTime"],
            instant(t(15)),
            "the first tube used"
        );
        assert_eq!(report["issued"], instant(t(170)), "the newest verification");
        log.verify(&[sodium()], 200);
        let resources = exported(&log.history());
        let report = of_type(&resources, "DiagnosticReport")[0];
        assert_eq!(
            report["status"], "corrected",
            "complete, with a corrected result"
        );
        assert_eq!(report["issued"], instant(t(200)));
        assert_eq!(
            of_type(&resources, "ServiceRequest")[0]["status"],
            "completed"
        );
        // Without any correction, a complete report is final.
        let mut plain = Log::default();
        plain
            .place()
            .collect(SERUM_1, "DMC-0101", SpecimenType::Serum, 5)
            .collect(URINE, "DMC-0102", SpecimenType::Urine, 5)
            .receive(SERUM_1, 20)
            .receive(URINE, 20)
            .number(&potassium(), "4.1", 30)
            .number(&sodium(), "139", 30)
            .number(&glucose(), "5.0", 30)
            .enter(&hiv(), ResultInput::Coded { code: "NEG".into() }, 30)
            .enter(&microscopy(), ResultInput::Text { text: txt("Nil") }, 30)
            .verify(&[potassium(), sodium(), glucose(), hiv(), microscopy()], 40);
        let resources = exported(&plain.history());
        let report = of_type(&resources, "DiagnosticReport")[0];
        assert_eq!(report["status"], "final");
        let k = by_id(&resources, item(&potassium()));
        assert_eq!(
            codes(&k["interpretation"][0]),
            [(INTERPRETATION.to_owned(), "N".to_owned())]
        );
        for resource in &resources {
            validate(resource).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn the_patient_is_minimal() {
        let history = worked_order().history();
        let resources = exported(&history);
        // Without the patient's record: what the order knew.
        assert_eq!(
            resources[0],
            json!({"resourceType": "Patient", "id": PATIENT.to_string(), "gender": "male", "birthDate": "1980-06-15"})
        );
        assert_eq!(
            resources[1],
            json!({
                "resourceType": "Practitioner",
                "id": DOCTOR.to_string(),
                "identifier": [{"system": "urn:hms:DMC001:user", "value": DOCTOR.to_string()}]
            })
        );
        let record: Patient = serde_json::from_value(json!({
            "id": PATIENT,
            "mrn": "DMC001-000042",
            "status": "ACTIVE",
            "demographics": {
                "given_name": "Amina", "middle_name": null, "family_name": "Otieno",
                "date_of_birth": "1980-06-15", "sex": "FEMALE", "phone": null, "email": null,
                "address": null, "emergency_contact": null, "blood_type": null
            },
            "allergies": [], "alerts": [], "died_at": null, "absorbed": []
        }))
        .expect("a patient record");
        let p = patient(&ctx(), Some(&record), history.order.patient.as_ref());
        assert_eq!(p["identifier"][0]["value"], "DMC001-000042");
        assert_eq!(p["identifier"][0]["system"], "urn:hms:DMC001:mrn");
        assert_eq!(
            p["name"],
            json!([{"use": "official", "family": "Otieno", "given": ["Amina"]}])
        );
        assert_eq!(p["gender"], "female", "the record, as it stands now, wins");
        validate(&p).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn no_verified_result_means_an_empty_bundle() {
        let mut log = Log::default();
        log.place()
            .collect(SERUM_1, "DMC-0201", SpecimenType::Serum, 5)
            .receive(SERUM_1, 10)
            .number(&potassium(), "4.0", 20);
        let resources = exported(&log.history());
        assert!(resources.is_empty());
        let empty = bundle(resources);
        assert_eq!(
            empty,
            json!({"resourceType": "Bundle", "type": "collection"})
        );
        validate(&empty).unwrap_or_else(|e| panic!("{e}"));
        let mut ndjson = Vec::new();
        write_resources(Vec::new(), FhirFormat::Ndjson, &mut ndjson).expect("written");
        assert!(ndjson.is_empty());
        // Another patient's order is never exported under this one.
        let other = Context {
            hospital: HOSPITAL,
            patient_id: Uuid::from_u128(0xbad),
        };
        assert!(patient_resources(&other, None, &[worked_order().history()]).is_empty());
    }

    #[test]
    fn exports_repeat_byte_for_byte_with_the_resource_type_first() {
        let render = |format| {
            let mut out = Vec::new();
            write_resources(exported(&worked_order().history()), format, &mut out)
                .expect("written");
            String::from_utf8(out).expect("utf-8")
        };
        let first = render(FhirFormat::Bundle);
        assert_eq!(first, render(FhirFormat::Bundle));
        assert!(first.starts_with("{\n  \"resourceType\": \"Bundle\",\n"));
        let parsed: Value = serde_json::from_str(&first).expect("JSON");
        validate(&parsed).unwrap_or_else(|e| panic!("{e}"));
        let lines = render(FhirFormat::Ndjson);
        assert_eq!(lines, render(FhirFormat::Ndjson));
        assert_eq!(lines.lines().count(), 11);
        for line in lines.lines() {
            assert!(line.starts_with("{\"resourceType\":\""), "{line}");
            validate(&serde_json::from_str(line).expect("JSON")).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn the_validator_catches_what_it_is_for() {
        let good = exported(&worked_order().history());
        let broken = |path: &[&str], change: Value| {
            let mut resource = good
                .iter()
                .find(|r| r["resourceType"] == "Observation")
                .cloned()
                .expect("an observation");
            let mut at = &mut resource;
            for key in path {
                at = match key.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*key],
                };
            }
            *at = change;
            validate(&resource)
        };
        assert!(broken(&["status"], json!("done")).is_err());
        assert!(broken(&["code"], Value::Null).is_err());
        assert!(broken(&["code", "coding", "0", "system"], Value::Null).is_err());
        assert!(broken(&["interpretation"], json!([])).is_err());
        assert!(broken(&["subject", "reference"], json!("Patient/7")).is_err());
        assert!(broken(&["valueQuantity", "value"], json!("6.9")).is_err());
        assert!(broken(&["valueString"], json!("also text")).is_err());
        assert!(broken(&["status"], json!("final")).is_ok());
    }

    #[test]
    fn decimals_become_the_json_numbers_of_their_text() {
        assert_eq!(decimal_number(&dec("120")), json!(120));
        assert_eq!(decimal_number(&dec("-3")), json!(-3));
        assert_eq!(decimal_number(&dec("5.40")).as_f64(), Some(5.4));
        assert_eq!(decimal_number(&dec("-0.3")).as_f64(), Some(-0.3));
        // JSON has no leading zeros: the same value, spelled canonically.
        assert_eq!(decimal_number(&dec("007.50")).as_f64(), Some(7.5));
        assert_eq!(decimal_number(&dec("0.000001")).as_f64(), Some(0.000001));
    }
}
