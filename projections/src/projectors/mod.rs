//! The read models. Each projector owns its tables and nothing else. Where the API reads
//! a table row for row, it uses the projector's row type, so the two cannot drift apart.

pub(crate) mod appointments;
mod audit;
mod break_glass;
mod hospital;
mod invoices;
mod lab;
pub(crate) mod patients;
pub mod seal;
mod slot_holds;
mod staff;

pub use appointments::{AppointmentProjector, AppointmentRow};
pub use audit::{AccessLogProjector, AuditIndexProjector};
pub use break_glass::{BreakGlassProjector, BreakGlassRow};
pub use hospital::{DepartmentRow, HospitalProfileRow, HospitalProjector};
pub use invoices::{InvoiceLineRow, InvoicePaymentRow, InvoiceProjector, InvoiceRow};
pub use lab::{
    priority_rank, value_text, LabOrderRow, LabProjector, LabResultRow, LabResultVersionRow,
    LabSpecimenRow, LabTestRow,
};
pub use patients::{PatientProjector, PatientRecordStatus, PatientRow};
pub use seal::LogSealer;
pub use slot_holds::SlotHoldProjector;
pub use staff::{StaffFilter, StaffProjector, StaffRow, STAFF_COLUMNS};

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::rows::RowSet;
use crate::{ProjectionError, Projector, Result, StoredEvent};

/// The search form of a name: decomposed, without combining marks, lower case
/// (`Ñúñez` → `nunez`). The read side normalizes queries with the same function.
pub fn search_key(text: &str) -> String {
    text.nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A domain value as the JSON the events carry.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The aggregate id of an event whose streams are named by uuid.
pub(crate) fn uuid_id(projector: &'static str, event: &StoredEvent) -> Result<Uuid> {
    Uuid::parse_str(&event.aggregate_id).map_err(|e| ProjectionError::ProjectorFailed {
        projector,
        position: event.position,
        message: format!("aggregate id {:?} is not a uuid: {e}", event.aggregate_id),
    })
}

/// The events of aggregate `A` in a batch, decoded (after upcasting), with their stream
/// ids, in log order; the other aggregates' events are skipped.
pub(crate) fn decode_batch<'e, A: cqrs_es::Aggregate>(
    projector: &'static str,
    events: &'e [StoredEvent],
) -> Result<Vec<(Uuid, &'e StoredEvent, A::Event)>> {
    let upcasters = hms_domain::upcasters();
    events
        .iter()
        .filter(|e| e.aggregate_type == A::TYPE)
        .map(|e| Ok((uuid_id(projector, e)?, e, e.decode::<A>(&upcasters)?)))
        .collect()
}

/// The common shape of a projector that keeps one row per aggregate in `table` (keyed by
/// `id`): decode the batch's events of `A`, load the rows of the streams not created in
/// this batch (`creates`), fold the events onto them in log order, write the outcome.
///
/// An event at or below its row's version is in the row already: its append wrote the
/// row inline (docs/adr/0011), so it is passed over; a row with every event of the batch
/// in it already is not even read ([`RowSet::load_behind`]). A projector whose creating
/// events may be written inline must not count them as `creates`, or their rows are not
/// looked up.
pub(crate) async fn fold_rows<A, R>(
    tx: &mut PgConnection,
    projector: &'static str,
    table: &'static str,
    events: &[StoredEvent],
    creates: fn(&A::Event) -> bool,
    fold: fn(&mut RowSet<Uuid, R>, Uuid, &StoredEvent, A::Event),
) -> Result<()>
where
    A: cqrs_es::Aggregate,
    R: StreamRow + Serialize + DeserializeOwned + Send + Sync,
{
    let events = decode_batch::<A>(projector, events)?;
    if events.is_empty() {
        return Ok(());
    }
    let mut rows: RowSet<Uuid, R> = RowSet::new(table, "id");
    // Each stream's newest event in the batch, for the streams that may have a row.
    let mut newest: HashMap<Uuid, i64> = HashMap::new();
    for (id, stored, _) in &events {
        let n = newest.entry(*id).or_insert(stored.sequence);
        *n = (*n).max(stored.sequence);
    }
    let existing: HashSet<Uuid> = events
        .iter()
        .filter(|(_, _, e)| !creates(e))
        .map(|(id, _, _)| *id)
        .collect();
    let (keys, through) = existing.into_iter().map(|id| (id, newest[&id])).unzip();
    let current = rows.load_behind(tx, keys, through).await?;
    for (id, stored, event) in events {
        if current.contains(&id)
            || rows
                .get(&id)
                .is_some_and(|row| row.version() >= stored.sequence)
        {
            continue;
        }
        fold(&mut rows, id, stored, event);
        if let Some(row) = rows.get_mut(&id) {
            row.set_version(stored.sequence);
        }
    }
    store_handing_over(tx, rows).await
}

/// Stores what a batch did to rows keyed by their stream's id (`id`, with a `version`);
/// the rows a command of this process waits for come back as stored, to be handed over
/// once the round commits (docs/adr/0017).
pub(crate) async fn store_handing_over<R>(
    tx: &mut PgConnection,
    rows: RowSet<Uuid, R>,
) -> Result<()>
where
    R: Serialize + DeserializeOwned + Send + Sync,
{
    let table = rows.table();
    let wanted = crate::fresh::wanted_among(table, rows.keys_where(|_| true).into_iter());
    for row in rows.store_returning(tx, wanted).await? {
        let id = row
            .get("id")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let version = row.get("version").and_then(serde_json::Value::as_i64);
        if let (Some(id), Some(version)) = (id, version) {
            crate::fresh::written(table, id, version, row);
        }
    }
    Ok(())
}

/// A read-model row that mirrors one aggregate stream. It carries the stream's version
/// (the sequence of the last event folded into it), which clients send back as the
/// expected version of their next command: it always matches the state the row shows.
pub(crate) trait StreamRow {
    fn version(&self) -> i64;
    fn set_version(&mut self, version: i64);
}

/// The rows that the creating events (`event_type`, a stream's first) among `events`
/// make, built by `build` (the projector's own code) and at the stream's version: what an
/// append writes inline (docs/adr/0011). `what` names the write in an error.
pub(crate) fn rows_created_by<E, R>(
    events: &[cqrs_es::persist::SerializedEvent],
    aggregate_type: &str,
    event_type: &str,
    what: &str,
    build: fn(E) -> Option<R>,
) -> Result<Vec<R>>
where
    E: DeserializeOwned,
    R: StreamRow,
{
    events
        .iter()
        .filter(|e| {
            e.aggregate_type == aggregate_type && e.sequence == 1 && e.event_type == event_type
        })
        .map(|e| {
            let event = E::deserialize(&e.payload).map_err(|err| {
                ProjectionError::Row(format!("{what} to write inline does not decode: {err}"))
            })?;
            Ok(build(event).map(|mut row| {
                row.set_version(e.sequence as i64);
                row
            }))
        })
        .filter_map(Result::transpose)
        .collect()
}

/// Implements [`StreamRow`] for row structs with a `version: i64` field.
macro_rules! stream_row {
    ($($row:ty),+) => {$(
        impl $crate::projectors::StreamRow for $row {
            fn version(&self) -> i64 {
                self.version
            }

            fn set_version(&mut self, version: i64) {
                self.version = version;
            }
        }
    )+};
}
pub(crate) use stream_row;

/// The patients erased by events of this batch: projectors that copy a patient's sealed
/// personal data into their rows erase it there as the log now reads it.
pub(crate) fn erased_patients(events: &[StoredEvent]) -> Vec<Uuid> {
    let mut erased = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.aggregate_type == "patient" && e.event_type == "PatientErased")
    {
        erased.extend(e.aggregate_id.parse::<Uuid>().ok());
        erased.extend(erased_duplicates(e));
    }
    erased
}

/// The duplicates merged into a record, erased with it (a `PatientErased` event's).
pub(crate) fn erased_duplicates(event: &StoredEvent) -> Vec<Uuid> {
    event
        .payload_value()
        .ok()
        .and_then(|p| {
            serde_json::from_value::<Vec<Uuid>>(p["PatientErased"]["duplicates"].clone()).ok()
        })
        .unwrap_or_default()
}

/// The persisted name of a unit-variant enum (its serde form), e.g. `Module::Billing` →
/// `BILLING`: read models store the same spelling the events carry.
pub(crate) fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Every projector of a tenant database, in the order they are run.
pub fn all() -> Vec<Box<dyn Projector>> {
    vec![
        Box::new(HospitalProjector),
        Box::new(StaffProjector),
        Box::new(PatientProjector),
        Box::new(AppointmentProjector),
        Box::new(SlotHoldProjector),
        Box::new(InvoiceProjector),
        Box::new(LabProjector),
        Box::new(BreakGlassProjector),
        Box::new(AuditIndexProjector),
        Box::new(AccessLogProjector),
        Box::new(LogSealer),
    ]
}
