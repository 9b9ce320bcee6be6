//! The audit queries, and [`history`] for the `history` field of record types.

use async_graphql::{Context, Object};
use chrono::{DateTime, Utc};
use hms_app::usecases::access_report;
use hms_app::usecases::audit as uc;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{
    AuditEntry, AuditTrailFilter, PatientAccessEntry, PatientAccessReport, PatientAsOf,
};
use crate::graphql::error::{ApiError, Result};
use crate::graphql::pagination::{connection, page_cost, page_request, Page, RECORD_READ_COST};
use crate::graphql::session::{authorize, Authorized};
use crate::graphql::types::check_instant;
use crate::graphql::QUERY_FIELD_COST;

/// The history of one record (the `history` field of record types), oldest first. The
/// caller has authorized `ViewAuditTrail`.
pub async fn history(
    auth: &Authorized<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Page<AuditEntry>, ApiError> {
    let page = page_request(first, after)?;
    let entries = uc::history(auth, aggregate_type, aggregate_id, &page).await?;
    Ok(connection(entries.map(AuditEntry::from)))
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The hospital's event log in commit order: who did what, to which record, when.
    /// Password hashes are removed from payloads.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditTrailFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let filter = filter.unwrap_or_default().parse()?;
        let page = page_request(first, after)?;
        let entries = uc::trail(&auth, &filter, &page).await?;
        Ok(connection(entries.map(AuditEntry::from)))
    }

    /// The patient as the record stood at `at`, rebuilt from its events recorded at or
    /// before then; null if the record did not exist yet. NOT_FOUND for an unknown
    /// patient. The read is recorded in the patient's access log.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn patient_as_of(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<PatientAsOf>> {
        let at = check_instant("at", at)?;
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        Ok(uc::patient_as_of(&auth, id, at).await?.map(Into::into))
    }

    /// Who opened a patient's record, oldest first.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn patient_access_log(
        &self,
        ctx: &Context<'_>,
        patient_id: Uuid,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<PatientAccessEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let page = page_request(first, after)?;
        let entries = uc::patient_access_log(&auth, patient_id, &page).await?;
        Ok(connection(entries.map(PatientAccessEntry::from)))
    }

    /// Every access to a patient's record in `[from, to)`, for the patient: who (name,
    /// role, department), when, through which operation (for reads what was read, for
    /// writes the event), what kind (READ, WRITE, BREAK_GLASS), from where and the
    /// request, grouped per calendar day in UTC. `to` defaults to now and `from` to 366
    /// days before `to`; the window is at most 366 days and 10,000 entries (VALIDATION
    /// beyond: ask for a narrower window). NOT_FOUND for an unknown patient. Reading the
    /// report is recorded in the patient's access log.
    #[graphql(complexity = "QUERY_FIELD_COST + RECORD_READ_COST + child_complexity")]
    async fn patient_access_report(
        &self,
        ctx: &Context<'_>,
        patient_id: Uuid,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<PatientAccessReport> {
        let from = from.map(|v| check_instant("from", v)).transpose()?;
        let to = to.map(|v| check_instant("to", v)).transpose()?;
        let auth = authorize(ctx, Operation::ViewPatientAccessReport).await?;
        let report = access_report::patient_access_report(&auth, patient_id, from, to).await?;
        Ok(report.into())
    }
}
