//! The audit's GraphQL types and their conversions from the application's.

use async_graphql::{Enum, InputObject, Json, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use hms_app::usecases::access_report as report;
use hms_app::usecases::audit as uc;
use serde_json::Value;
use uuid::Uuid;

use crate::graphql::error::Result;
use crate::graphql::types::check_instant;

/// Who did it.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditActor {
    pub id: Option<Uuid>,
    pub username: Option<String>,
    pub role: Option<String>,
}

/// One event of the log, as an auditor reads it.
#[derive(SimpleObject, Clone, Debug)]
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
    /// The event's data (password hashes removed).
    pub payload: Json<Value>,
    /// Request id, client address and the other facts recorded with the event.
    pub metadata: Json<Value>,
    #[graphql(skip)]
    pub transaction_id: i64,
}

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

impl AuditTrailFilter {
    /// The filter as the application takes it, or VALIDATION on the first bad field.
    pub(super) fn parse(self) -> Result<uc::TrailFilter> {
        Ok(uc::TrailFilter {
            aggregate_type: uc::filter_text("aggregateType", self.aggregate_type)?,
            aggregate_id: uc::filter_text("aggregateId", self.aggregate_id)?,
            actor_id: self.actor_id,
            event_type: uc::filter_text("eventType", self.event_type)?,
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

/// What kind of access a report entry is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_app::usecases::access_report::AccessKind",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum AccessKind {
    Read,
    Write,
    /// A read of a record outside its care team, under a stated reason.
    BreakGlass,
}

/// Who accessed the record. Full name and department are the staff register's now; the
/// role is the one at the time of the access.
#[derive(SimpleObject, Clone, Debug)]
pub struct Accessor {
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub role: Option<String>,
    /// The department's name.
    pub department: Option<String>,
}

/// One access to a patient's record.
#[derive(SimpleObject, Clone, Debug)]
pub struct AccessReportEntry {
    /// When: the read's time, or when the database recorded the write.
    pub at: DateTime<Utc>,
    pub who: Accessor,
    /// For reads what was read (`patient`, `patients:summary`, `lab results`, `invoice`,
    /// `auditTrail`, …); for writes the event (`PatientRegistered`, `ResultEntered`, …).
    pub operation: String,
    pub kind: AccessKind,
    /// The reason stated for a break-glass access.
    pub break_glass_reason: Option<String>,
    /// The client address the request came from, if known.
    pub client_addr: Option<String>,
    /// The request id, to find the request in the server log.
    pub request_id: Option<String>,
}

/// The accesses of one calendar day (UTC), in time order.
#[derive(SimpleObject, Clone, Debug)]
pub struct AccessDay {
    pub date: NaiveDate,
    pub entries: Vec<AccessReportEntry>,
}

/// Every access to one patient's record in a window, for the patient.
#[derive(SimpleObject, Clone, Debug)]
pub struct PatientAccessReport {
    pub patient_id: Uuid,
    pub mrn: String,
    /// Given, middle and family names.
    pub patient_name: String,
    /// The window's start (included).
    pub from: DateTime<Utc>,
    /// The window's end (excluded).
    pub to: DateTime<Utc>,
    /// Days with at least one access, oldest first.
    pub days: Vec<AccessDay>,
}

impl From<uc::AuditActor> for AuditActor {
    fn from(a: uc::AuditActor) -> Self {
        Self {
            id: a.id,
            username: a.username,
            role: a.role,
        }
    }
}

impl From<uc::AuditEntry> for AuditEntry {
    fn from(e: uc::AuditEntry) -> Self {
        Self {
            position: e.position,
            recorded_at: e.recorded_at,
            actor: e.actor.into(),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: Json(e.payload),
            metadata: Json(e.metadata),
            transaction_id: e.transaction_id,
        }
    }
}

impl From<uc::PatientAsOf> for PatientAsOf {
    fn from(p: uc::PatientAsOf) -> Self {
        Self {
            id: p.id,
            at: p.at,
            version: p.version,
            last_changed_at: p.last_changed_at,
            record: Json(p.record),
        }
    }
}

impl From<uc::PatientAccess> for PatientAccessEntry {
    fn from(a: uc::PatientAccess) -> Self {
        Self {
            id: a.id,
            patient_id: a.patient_id,
            viewer: a.viewer.into(),
            purpose: a.purpose,
            client_addr: a.client_addr,
            request_id: a.request_id,
            viewed_at: a.viewed_at,
        }
    }
}

impl From<report::Accessor> for Accessor {
    fn from(a: report::Accessor) -> Self {
        Self {
            user_id: a.user_id,
            username: a.username,
            full_name: a.full_name,
            role: a.role,
            department: a.department,
        }
    }
}

impl From<report::AccessReportEntry> for AccessReportEntry {
    fn from(e: report::AccessReportEntry) -> Self {
        Self {
            at: e.at,
            who: e.who.into(),
            operation: e.operation,
            kind: e.kind.into(),
            break_glass_reason: e.break_glass_reason,
            client_addr: e.client_addr,
            request_id: e.request_id,
        }
    }
}

impl From<report::AccessReport> for PatientAccessReport {
    fn from(r: report::AccessReport) -> Self {
        Self {
            patient_id: r.patient_id,
            mrn: r.mrn,
            patient_name: r.patient_name,
            from: r.from,
            to: r.to,
            days: r
                .days
                .into_iter()
                .map(|d| AccessDay {
                    date: d.date,
                    entries: d.entries.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }
}
