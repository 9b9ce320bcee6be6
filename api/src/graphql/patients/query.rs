//! Reading patients: search, the record view and a record's history. Every view of a
//! record is recorded first.

use async_graphql::{ComplexObject, Context, Object};
use hms_app::usecases::patients as uc;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::Patient;
use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_request, Page};
use crate::graphql::session::authorize;

#[derive(Default)]
pub struct PatientQuery;

#[Object]
impl PatientQuery {
    /// Patients in name order. `search` is read by its shape: an MRN (`DMC001-000123`), a
    /// date of birth (`YYYY-MM-DD`), a phone number (matched on its last digits), or
    /// otherwise name prefixes ignoring case and accents (`kam wan` finds Wanjiku Kamau).
    /// Merged duplicates appear only when searched by MRN.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Patient>> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        let page = page_request(first, after)?;
        let patients = uc::patients(&auth, search.as_deref(), &page).await?;
        Ok(connection(patients.map(Patient::from)))
    }

    /// One patient's record. The view is recorded (who, when, from where) before the
    /// record is returned.
    async fn patient(&self, ctx: &Context<'_>, id: Uuid) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        Ok(uc::patient(&auth, id).await?.into())
    }
}

#[ComplexObject]
impl Patient {
    /// Every change to the record, from the event log (HOSPITAL_ADMIN). Reading it is
    /// recorded in the access log.
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        // A bad page request is refused before a view is recorded.
        page_request(first, after.clone())?;
        uc::record_patient_view(&auth, self.id, "history").await?;
        audit::history(auth.pool(), "patient", &self.id.to_string(), first, after).await
    }
}
