//! Audit queries for auditors and administrators (all need `ViewAuditTrail`):
//!
//! - `auditTrail`: the hospital's event log in commit order, filtered and paged;
//! - `patientAsOf`: a patient record as it stood at an instant, rebuilt from its own
//!   events through the domain's `apply` and upcasters (reading it is itself recorded in
//!   the access log, like any view of a patient record);
//! - `patientAccessLog`: who opened a patient's record, when, from where, and why.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use hms_domain::patient::Patient;
use hms_domain::permissions::Operation;
use hms_domain::record_access::{RecordAccess, RecordAccessCommand};
use hms_projections::log;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, AuditActor, AuditEntry, AuditFilter};
use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequestExt};
use super::session::{authorize, Authorized};
use super::types::{check_filter_text, check_instant};
use hms_app::commands;

/// Longest accepted text filter of `auditTrail`.
const MAX_FILTER_CHARS: usize = 200;

/// Filters of `auditTrail`; all optional, combined with AND.
#[derive(InputObject, Default)]
pub struct AuditTrailFilter {
    /// e.g. `patient`, `invoice`, `appointment`, `user`, `hospital`, `record_access`.
    pub aggregate_type: Option<String>,
    /// The record's id (a UUID, or the hospital code for `hospital`).
    pub aggregate_id: Option<String>,
    /// The user who did it.
    pub actor_id: Option<Uuid>,
    /// e.g. `PaymentRecorded`.
    pub event_type: Option<String>,
    /// Recorded at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this instant.
    pub to: Option<DateTime<Utc>>,
}

fn text_filter(field: &'static str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(s) if s.chars().count() > MAX_FILTER_CHARS => Err(ApiError::validation(
            field,
            format!("must be at most {MAX_FILTER_CHARS} characters"),
        )),
        Some(s) => {
            check_filter_text(field, &s)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

impl AuditTrailFilter {
    fn into_filter(self) -> Result<AuditFilter, ApiError> {
        Ok(AuditFilter {
            aggregate_type: text_filter("aggregateType", self.aggregate_type)?,
            aggregate_id: text_filter("aggregateId", self.aggregate_id)?,
            actor_id: self.actor_id,
            event_type: text_filter("eventType", self.event_type)?,
            from: self.from.map(|v| check_instant("from", v)).transpose()?,
            to: self.to.map(|v| check_instant("to", v)).transpose()?,
        })
    }
}

/// A patient record as it stood at an instant, rebuilt from the log.
#[derive(SimpleObject, Clone, Debug)]
pub struct PatientAsOf {
    /// The patient's id.
    pub id: Uuid,
    /// The instant asked about.
    pub at: DateTime<Utc>,
    /// The record's version then: the sequence of its last event at or before `at`.
    pub version: i64,
    /// When that last event was recorded.
    pub last_changed_at: DateTime<Utc>,
    /// The record as the domain held it, as JSON: `mrn`, `status` (`ACTIVE`, `INACTIVE`,
    /// `DECEASED` or `{"MERGED": {"survivor_id": …}}`), `demographics` (`given_name`,
    /// `middle_name`, `family_name`, `date_of_birth`, `sex`, `phone`, `email`,
    /// `address`, `emergency_contact`, `blood_type`), `allergies`, `alerts`, `died_at`
    /// and `absorbed` (ids of duplicates merged into it).
    pub record: Json<Value>,
}

/// One opening of a patient's record.
#[derive(SimpleObject, Clone, Debug)]
pub struct PatientAccessEntry {
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

/// Records that the caller read patient `patient_id`'s record, for `purpose`. Each view
/// is a one-event stream of its own; the read fails if the record cannot be written.
pub async fn record_patient_view(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    purpose: &str,
) -> Result<(), ApiError> {
    let command = RecordAccessCommand::RecordPatientView {
        actor: auth.actor(),
        patient_id,
        purpose: purpose.to_owned(),
        now: auth.now,
    };
    commands::execute::<RecordAccess>(
        auth.pool(),
        &auth.scope.state.runner,
        &Uuid::new_v4().to_string(),
        command,
        (),
        &auth.metadata(),
    )
    .await
    .map_err(ApiError::internal)
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The hospital's event log in commit order: who did what, to which record, when.
    /// Password hashes are removed from payloads.
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditTrailFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let filter = filter.unwrap_or_default().into_filter()?;
        let page = page_request(first, after)?;
        audit::trail(auth.pool(), &filter, &page).await
    }

    /// The patient as the record stood at `at`, rebuilt from its events recorded at or
    /// before then; null if the record did not exist yet. NOT_FOUND for an unknown
    /// patient. The read is recorded in the patient's access log.
    async fn patient_as_of(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<PatientAsOf>> {
        let at = check_instant("at", at)?;
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let patient_id = id;
        let events = {
            let mut conn = auth.pool().acquire().await.map_err(ApiError::internal)?;
            log::read_stream(&mut conn, Patient::TYPE, &patient_id.to_string())
                .await
                .map_err(ApiError::internal)?
        };
        if events.is_empty() {
            return Err(ApiError::NotFound);
        }
        let upcasters = hms_domain::upcasters();
        let mut patient = Patient::default();
        let mut last = None;
        for event in events.iter().take_while(|e| e.recorded_at <= at) {
            patient.apply(
                event
                    .decode::<Patient>(&upcasters)
                    .map_err(ApiError::internal)?,
            );
            last = Some((event.sequence, event.recorded_at));
        }
        let Some((version, last_changed_at)) = last else {
            return Ok(None);
        };
        let record = serde_json::to_value(&patient).map_err(ApiError::internal)?;
        record_patient_view(&auth, patient_id, "patientAsOf").await?;
        Ok(Some(PatientAsOf {
            id,
            at,
            version,
            last_changed_at,
            record: Json(record),
        }))
    }

    /// Who opened a patient's record, oldest first.
    async fn patient_access_log(
        &self,
        ctx: &Context<'_>,
        patient_id: Uuid,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<PatientAccessEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let page = page_request(first, after)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1)")
                .bind(patient_id)
                .fetch_one(auth.pool())
                .await
                .map_err(ApiError::internal)?;
        if !exists {
            return Err(ApiError::NotFound);
        }
        let (after_at, after_id) = match &page.after {
            Some(k) => {
                let invalid = || ApiError::validation("after", "is not a cursor from this API");
                let at = DateTime::parse_from_rfc3339(&k.key)
                    .map_err(|_| invalid())?
                    .with_timezone(&Utc);
                (
                    Some(at),
                    Some(Uuid::parse_str(&k.id).map_err(|_| invalid())?),
                )
            }
            None => (None, None),
        };
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
        .await
        .map_err(ApiError::internal)?;
        let entries = rows
            .into_iter()
            .map(|r| PatientAccessEntry {
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
            })
            .collect();
        Ok(page.connection(entries, |e: &PatientAccessEntry| Keyset {
            key: e.viewed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            id: e.id.to_string(),
        }))
    }
}
