//! Audit for auditors and administrators (all need `ViewAuditTrail`), read from the
//! event log itself:
//!
//! - [`trail`]: the hospital's event log in commit order, filtered and paged; the audit
//!   index (a read model) finds the entries, the payload comes from `events`; [`history`]
//!   is one record's part of it (the `history` field of record types);
//! - [`patient_as_of`]: a patient record as it stood at an instant, rebuilt from its own
//!   events through the domain's `apply` and upcasters ([`state_as_of`], which
//!   `hms-replay state` uses too); reading it is itself recorded in the access log, like
//!   any view of a patient record;
//! - [`patient_access_log`]: who opened a patient's record, when, from where, and why.
//!
//! Secrets (password hashes) never leave the server: they are removed from every payload
//! with the one rule `hms-replay` also uses ([`crate::redact`]).

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use hms_domain::patient::Patient;
use hms_projections::log::{self, LogCursor, TrailEvent};
use hms_projections::{ProjectionError, StoredEvent};
use serde_json::Value;
use uuid::Uuid;

pub use hms_projections::log::TrailFilter;
/// The hospital's database, as [`history`] takes it.
pub use sqlx::PgPool;

use crate::error::{AppError, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::Authorized;

/// Longest accepted text filter of the audit trail.
pub const MAX_FILTER_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------
// The trail

/// Who did it.
#[derive(Clone, Debug)]
pub struct AuditActor {
    pub id: Option<Uuid>,
    pub username: Option<String>,
    pub role: Option<String>,
}

/// One event of the log, as an auditor reads it.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// Global position in the hospital's log.
    pub position: i64,
    /// When the database recorded the event.
    pub recorded_at: DateTime<Utc>,
    pub actor: AuditActor,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The record's version after this event.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event's data, secrets redacted.
    pub payload: Value,
    /// Request id, client address and the other facts recorded with the event.
    pub metadata: Value,
    /// With `position`, the entry's place in commit order.
    pub transaction_id: i64,
}

impl From<TrailEvent> for AuditEntry {
    fn from(r: TrailEvent) -> Self {
        let mut payload = r.payload;
        crate::redact::redact(&mut payload);
        Self {
            position: r.position,
            recorded_at: r.recorded_at,
            actor: AuditActor {
                id: r.actor_id,
                username: r.actor_username,
                role: r.actor_role,
            },
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload,
            metadata: r.metadata,
            transaction_id: r.transaction_id,
        }
    }
}

/// A text filter of the trail as entered: at most [`MAX_FILTER_CHARS`] characters and
/// no NUL (PostgreSQL text cannot hold it), or VALIDATION on `field`.
pub fn filter_text(field: &str, raw: Option<String>) -> Result<Option<String>> {
    if let Some(s) = &raw {
        if s.chars().count() > MAX_FILTER_CHARS {
            return Err(AppError::validation(
                field,
                format!("must be at most {MAX_FILTER_CHARS} characters"),
            ));
        }
        super::no_nul(field, s)?;
    }
    Ok(raw)
}

/// The trail's keyset is (transaction id, position), the commit order.
fn trail_cursor(page: &PageRequest) -> Result<Option<LogCursor>> {
    page.after
        .as_ref()
        .map(|k| {
            let invalid = || AppError::validation("after", "is not a cursor from this API");
            Ok(LogCursor {
                transaction_id: k.key.parse().map_err(|_| invalid())?,
                position: k.id.parse().map_err(|_| invalid())?,
            })
        })
        .transpose()
}

/// A page of the log matching `filter`, in commit order, payloads redacted.
async fn read_trail(
    pool: &PgPool,
    filter: &TrailFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>> {
    let after = trail_cursor(page)?;
    let mut conn = pool.acquire().await?;
    let rows = log::read_audit_trail(&mut conn, filter, after, page.fetch_limit()).await?;
    drop(conn);
    let entries = rows.into_iter().map(AuditEntry::from).collect();
    Ok(page.page(entries, |e: &AuditEntry| Keyset {
        key: e.transaction_id.to_string(),
        id: e.position.to_string(),
    }))
}

/// The hospital's event log in commit order: who did what, to which record, when.
/// Secrets are removed from payloads. The patients whose data the page carries are
/// recorded in the access log (one event for the page) before it is returned.
pub async fn trail(
    auth: &Authorized<'_>,
    filter: &TrailFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>> {
    auth.derived_views_current().await;
    let entries = read_trail(auth.pool(), filter, page).await?;
    let mut patients: Vec<Uuid> = entries
        .items
        .iter()
        .filter_map(|(_, e)| patient_of(e))
        .collect();
    patients.extend(patients_of_records(auth.pool(), &entries).await?);
    super::patients::record_patients_viewed(auth, patients, "auditTrail").await?;
    Ok(entries)
}

/// The patients of entries whose event does not name its patient (a result entered on a
/// lab order, a line added to an invoice, a step of an appointment): the record's patient,
/// from its read model.
async fn patients_of_records(pool: &PgPool, entries: &Page<AuditEntry>) -> Result<Vec<Uuid>> {
    let ids = |kind: &str| -> Vec<Uuid> {
        entries
            .items
            .iter()
            .filter(|(_, e)| e.aggregate_type == kind && patient_of(e).is_none())
            .filter_map(|(_, e)| e.aggregate_id.parse().ok())
            .collect()
    };
    let (orders, invoices, appointments) = (ids("lab_order"), ids("invoice"), ids("appointment"));
    if orders.is_empty() && invoices.is_empty() && appointments.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT patient_id FROM lab_orders WHERE id = ANY($1) \
         UNION SELECT patient_id FROM invoices WHERE id = ANY($2) \
         UNION SELECT patient_id FROM appointments WHERE id = ANY($3)",
    )
    .bind(orders)
    .bind(invoices)
    .bind(appointments)
    .fetch_all(pool)
    .await?)
}

/// The patient whose data an entry carries: a patient record's own event, or an event
/// of another record that names its patient (appointments, schedules, invoices). The
/// access log's own events name patients but carry none of their data, and reading
/// them is not recorded again (which would add an entry for every read of the log).
fn patient_of(entry: &AuditEntry) -> Option<Uuid> {
    match entry.aggregate_type.as_str() {
        "patient" => entry.aggregate_id.parse().ok(),
        "record_access" => None,
        // Events are stored as `{ "Variant": { fields } }`.
        _ => entry
            .payload
            .as_object()?
            .values()
            .next()?
            .get("patient_id")?
            .as_str()?
            .parse()
            .ok(),
    }
}

/// The history of one record (the `history` field of record types), oldest first. The
/// caller has checked that it may read the trail.
pub async fn history(
    auth: &Authorized<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    page: &PageRequest,
) -> Result<Page<AuditEntry>> {
    auth.derived_views_current().await;
    let filter = TrailFilter {
        aggregate_type: Some(aggregate_type.to_owned()),
        aggregate_id: Some(aggregate_id.to_owned()),
        ..TrailFilter::default()
    };
    read_trail(auth.pool(), &filter, page).await
}

// ---------------------------------------------------------------------------------------
// State as of

/// Where a rebuilt record stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event recorded at or before this instant (by the database's `recorded_at`).
    Instant(DateTime<Utc>),
    /// Right after the record's event number N.
    Sequence(i64),
    /// Every event.
    Latest,
}

/// A record rebuilt from its stream, with the place of the last event applied.
#[derive(Debug, Clone)]
pub struct RecordAsOf<S> {
    pub state: S,
    /// The record's version then: the sequence of the last event applied.
    pub sequence: i64,
    /// That event's position in the log.
    pub position: i64,
    /// When that event was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// What [`state_as_of`] found.
#[derive(Debug, Clone)]
pub enum StateAsOf<S> {
    /// The stream has no events: no such record.
    Unknown,
    /// The record exists, but not yet at the point asked for.
    NotYet,
    Found(RecordAsOf<S>),
}

/// A record as it stood at `point`: its stream read whole (streams are short by design)
/// through the log reader, cut at `point` and folded by `fold` (the domain's `apply`,
/// see [`fold`]), so the answer is what the system itself believed then. The one
/// "state as of" of HMS: the API's `patientAsOf` and `hms-replay state` both use it.
pub async fn state_as_of<S, E: From<ProjectionError>>(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    point: AsOf,
    fold: impl FnOnce(&[StoredEvent]) -> std::result::Result<S, E>,
) -> std::result::Result<StateAsOf<S>, E> {
    let mut stream = {
        let mut conn = pool.acquire().await.map_err(ProjectionError::from)?;
        log::read_stream(&mut conn, aggregate_type, aggregate_id).await?
    };
    if stream.is_empty() {
        return Ok(StateAsOf::Unknown);
    }
    let keep = stream
        .iter()
        .take_while(|e| match point {
            AsOf::Instant(at) => e.recorded_at <= at,
            AsOf::Sequence(n) => e.sequence <= n,
            AsOf::Latest => true,
        })
        .count();
    stream.truncate(keep);
    let Some(last) = stream.last() else {
        return Ok(StateAsOf::NotYet);
    };
    let (sequence, position, recorded_at) = (last.sequence, last.position, last.recorded_at);
    Ok(StateAsOf::Found(RecordAsOf {
        state: fold(&stream)?,
        sequence,
        position,
        recorded_at,
    }))
}

/// Applies `events` (one stream, in sequence order) to a fresh aggregate, decoding each
/// through the domain's upcasters.
pub fn fold<A: Aggregate>(events: &[StoredEvent]) -> std::result::Result<A, ProjectionError> {
    fold_with(events, &hms_domain::upcasters())
}

/// [`fold`] with upcasters the caller made once (a tool folding many streams).
pub fn fold_with<A: Aggregate>(
    events: &[StoredEvent],
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> std::result::Result<A, ProjectionError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A>(upcasters)?);
    }
    Ok(aggregate)
}

/// A patient record as it stood at an instant, rebuilt from the log.
#[derive(Clone, Debug)]
pub struct PatientAsOf {
    /// The patient's id.
    pub id: Uuid,
    /// The instant asked about.
    pub at: DateTime<Utc>,
    /// The record's version then: the sequence of its last event at or before `at`.
    pub version: i64,
    /// When that last event was recorded.
    pub last_changed_at: DateTime<Utc>,
    /// The record as the domain serializes it.
    pub record: Value,
}

/// The patient as the record stood at `at`, rebuilt from its events recorded at or
/// before then; `None` if the record did not exist yet. NOT_FOUND for an unknown
/// patient. The read is recorded in the patient's access log (an unrecorded read is
/// never served).
pub async fn patient_as_of(
    auth: &Authorized<'_>,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<PatientAsOf>> {
    let outcome = state_as_of(
        auth.pool(),
        Patient::TYPE,
        &id.to_string(),
        AsOf::Instant(at),
        |events| Ok::<_, AppError>(fold::<Patient>(events)?),
    )
    .await?;
    let found = match outcome {
        StateAsOf::Unknown => return Err(AppError::NotFound),
        StateAsOf::NotYet => return Ok(None),
        StateAsOf::Found(found) => found,
    };
    let record = serde_json::to_value(&found.state).map_err(AppError::internal)?;
    super::patients::record_patient_view(auth, id, "patientAsOf").await?;
    Ok(Some(PatientAsOf {
        id,
        at,
        version: found.sequence,
        last_changed_at: found.recorded_at,
        record,
    }))
}

// ---------------------------------------------------------------------------------------
// The access log

/// One opening of a patient's record.
#[derive(Clone, Debug)]
pub struct PatientAccess {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// Who opened it (their role at the time).
    pub viewer: AuditActor,
    /// What was read, e.g. `patient`, `patientAsOf`.
    pub purpose: String,
    /// The client address the request came from, if known.
    pub client_addr: Option<String>,
    /// The request id, to find the request in the server log.
    pub request_id: Option<String>,
    pub viewed_at: DateTime<Utc>,
}

/// A row of `patient_access_log` (written by the projections' access-log projector from
/// typed arrays; it has no row type of its own there).
#[derive(sqlx::FromRow)]
struct AccessRow {
    id: Uuid,
    patient_id: Uuid,
    viewer_id: Uuid,
    viewer_username: String,
    viewer_role: String,
    purpose: String,
    client_addr: Option<String>,
    request_id: Option<String>,
    viewed_at: DateTime<Utc>,
}

impl From<AccessRow> for PatientAccess {
    fn from(r: AccessRow) -> Self {
        Self {
            id: r.id,
            patient_id: r.patient_id,
            viewer: AuditActor {
                id: Some(r.viewer_id),
                username: Some(r.viewer_username),
                role: Some(r.viewer_role),
            },
            purpose: r.purpose,
            client_addr: r.client_addr,
            request_id: r.request_id,
            viewed_at: r.viewed_at,
        }
    }
}

/// Who opened a patient's record, oldest first. NOT_FOUND for an unknown patient.
pub async fn patient_access_log(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    page: &PageRequest,
) -> Result<Page<PatientAccess>> {
    auth.derived_views_current().await;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1)")
        .bind(patient_id)
        .fetch_one(auth.pool())
        .await?;
    if !exists {
        return Err(AppError::NotFound);
    }
    let (after_at, after_id) = page.after_instant_and_id()?;
    let rows: Vec<AccessRow> = sqlx::query_as(
        "SELECT id, patient_id, viewer_id, viewer_username, viewer_role, purpose, client_addr, \
                request_id, viewed_at \
           FROM patient_access_log \
          WHERE patient_id = $1 \
            AND ($2::timestamptz IS NULL OR (viewed_at, id) > ($2, $3::uuid)) \
          ORDER BY viewed_at, id \
          LIMIT $4",
    )
    .bind(patient_id)
    .bind(after_at)
    .bind(after_id)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let entries = rows.into_iter().map(PatientAccess::from).collect();
    Ok(page.page(entries, |e: &PatientAccess| Keyset {
        key: e.viewed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        id: e.id.to_string(),
    }))
}
