//! Reading patients: search, the record view and a record's history. Every view of a
//! record is recorded first.

use async_graphql::{ComplexObject, Context, Object};
use hms_app::usecases::patients as uc;
use hms_domain::disclosure::Disclosure;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{Allergy, BloodType, EmergencyContact, Patient, PatientAlert};
use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{
    connection, nodes_select, page_cost, page_request, Page, RECORD_READ_COST,
};
use crate::graphql::session::{authorize, disclose};
use crate::graphql::types::AddressOut;
use crate::graphql::QUERY_FIELD_COST;

/// The fields of a patient beyond the summary (names, MRN, date of birth, sex, status).
const RECORD_FIELDS: &[&str] = &[
    "phone",
    "email",
    "address",
    "emergencyContact",
    "bloodType",
    "allergies",
    "alerts",
    "history",
];

#[derive(Default)]
pub struct PatientQuery;

#[Object]
impl PatientQuery {
    /// Patients in name order. `search` is read by its shape: an MRN (`DMC001-000123`), a
    /// date of birth (`YYYY-MM-DD`), a phone number (matched on its last digits), or
    /// otherwise name prefixes ignoring case and accents (`kam wan` finds Wanjiku Kamau).
    /// Merged duplicates appear only when searched by MRN. The patients of the page are
    /// recorded in the access log (one entry per page), with whether more than the
    /// summary was asked for.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn patients(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Patient>> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        let page = page_request(first, after)?;
        let listing = if nodes_select(ctx, RECORD_FIELDS) {
            uc::Listing::Records
        } else {
            uc::Listing::Summary
        };
        let patients = uc::patients(&auth, search.as_deref(), &page, listing).await?;
        Ok(connection(patients.map(Patient::from)))
    }

    /// One patient's record. The view is recorded (who, when, from where) before the
    /// record is returned.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn patient(&self, ctx: &Context<'_>, id: Uuid) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        Ok(uc::patient(&auth, id).await?.into())
    }
}

impl Patient {
    /// A part of the record: withheld whole on a restricted record the caller may not
    /// read in full, else by the disclosure rules of the caller's role.
    fn disclose<T>(
        &self,
        ctx: &Context<'_>,
        what: Disclosure,
        value: Option<T>,
    ) -> Result<Option<T>> {
        if self.withheld {
            let error = async_graphql::Error::from(crate::graphql::error::ApiError::Restricted);
            ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
            return Ok(None);
        }
        disclose(ctx, what, value)
    }
}

#[ComplexObject]
impl Patient {
    async fn phone(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        self.disclose(ctx, Disclosure::Contact, self.phone.as_deref())
    }

    async fn email(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        self.disclose(ctx, Disclosure::Contact, self.email.as_deref())
    }

    async fn address(&self, ctx: &Context<'_>) -> Result<Option<&AddressOut>> {
        self.disclose(ctx, Disclosure::Contact, self.address.as_ref())
    }

    async fn emergency_contact(&self, ctx: &Context<'_>) -> Result<Option<&EmergencyContact>> {
        self.disclose(ctx, Disclosure::Contact, self.emergency_contact.as_ref())
    }

    async fn blood_type(&self, ctx: &Context<'_>) -> Result<Option<BloodType>> {
        self.disclose(ctx, Disclosure::Clinical, self.blood_type)
    }

    async fn allergies(&self, ctx: &Context<'_>) -> Result<Option<&[Allergy]>> {
        self.disclose(ctx, Disclosure::Clinical, Some(self.allergies.as_slice()))
    }

    /// Open alerts.
    async fn alerts(&self, ctx: &Context<'_>) -> Result<Option<&[PatientAlert]>> {
        self.disclose(ctx, Disclosure::Clinical, Some(self.alerts.as_slice()))
    }

    /// Every change to the record, from the event log (HOSPITAL_ADMIN). Reading it is
    /// recorded in the access log.
    #[graphql(complexity = "RECORD_READ_COST + page_cost(first, child_complexity)")]
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
        audit::history(&auth, "patient", &self.id.to_string(), first, after).await
    }
}
