//! Laboratory queries. Every read of results is recorded in the patient's access log by
//! the use case.

use async_graphql::{ComplexObject, Context, Object};
use chrono::{DateTime, Utc};
use hms_app::usecases::lab as uc;
use hms_app::usecases::patients::record_patient_view;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{
    LabOrder, LabOrderFilter, LabOrderedTest, LabResult, LabResultFilter, LabResultVersion,
    LabSpecimen, LabTest, LabTurnaround,
};
use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_cost, page_request, Page, RECORD_READ_COST};
use crate::graphql::session::{authorize, hospital_scope};
use crate::graphql::types::check_instant;
use crate::graphql::QUERY_FIELD_COST;

#[derive(Default)]
pub struct LabQuery;

fn try_page<R, T: async_graphql::OutputType>(
    page: hms_app::page::Page<R>,
    f: impl Fn(R) -> Result<T>,
) -> Result<Page<T>> {
    let items = page
        .items
        .into_iter()
        .map(|(k, r)| Ok((k, f(r)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(connection(hms_app::page::Page {
        items,
        has_previous: page.has_previous,
        has_next: page.has_next,
    }))
}

#[Object]
impl LabQuery {
    /// The hospital's test catalogue, by code.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn lab_tests(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] include_retired: bool,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<LabTest>> {
        let auth = authorize(ctx, Operation::ViewLabCatalogue).await?;
        let page = page_request(first, after)?;
        try_page(
            uc::lab_tests(&auth, include_retired, &page).await?,
            LabTest::try_from,
        )
    }

    /// One catalogue entry.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn lab_test(&self, ctx: &Context<'_>, code: String) -> Result<LabTest> {
        let auth = authorize(ctx, Operation::ViewLabCatalogue).await?;
        LabTest::try_from(uc::lab_test(&auth, &code).await?)
    }

    /// The lab worklist: STAT first, then URGENT, then ROUTINE; oldest first in each.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn lab_orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<LabOrderFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<LabOrder>> {
        let auth = authorize(ctx, Operation::ViewLabResults).await?;
        let page = page_request(first, after)?;
        let filter = filter.unwrap_or_default().parse()?;
        try_page(
            uc::lab_orders(&auth, &filter, &page).await?,
            LabOrder::try_from,
        )
    }

    /// One lab order with its specimens and results.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn lab_order(&self, ctx: &Context<'_>, id: Uuid) -> Result<LabOrder> {
        let auth = authorize(ctx, Operation::ViewLabResults).await?;
        LabOrder::try_from(uc::lab_order(&auth, id).await?)
    }

    /// A patient's results over time, oldest collection first (a trend per test, with
    /// flags).
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn patient_lab_results(
        &self,
        ctx: &Context<'_>,
        patient_id: Uuid,
        filter: Option<LabResultFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<LabResult>> {
        let auth = authorize(ctx, Operation::ViewLabResults).await?;
        let page = page_request(first, after)?;
        let filter = filter.unwrap_or_default().parse()?;
        try_page(
            uc::patient_lab_results(&auth, patient_id, &filter, &page).await?,
            LabResult::try_from,
        )
    }

    /// Critical results, newest first: a doctor's own orders' for a DOCTOR, the
    /// hospital's for nurses and the lab.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn critical_lab_results(
        &self,
        ctx: &Context<'_>,
        since: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<LabResult>> {
        let auth = authorize(ctx, Operation::ViewLabResults).await?;
        let page = page_request(first, after)?;
        let since = since.map(|t| check_instant("since", t)).transpose()?;
        try_page(
            uc::critical_lab_results(&auth, since, &page).await?,
            LabResult::try_from,
        )
    }

    /// Turnaround (order placed → verified) of the orders verified in `[from, to)`, per
    /// priority.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn lab_turnaround(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<LabTurnaround>> {
        let auth = authorize(ctx, Operation::ViewLabTurnaround).await?;
        let from = from.map(|t| check_instant("from", t)).transpose()?;
        let to = to.map(|t| check_instant("to", t)).transpose()?;
        uc::lab_turnaround(&auth, from, to)
            .await?
            .into_iter()
            .map(LabTurnaround::try_from)
            .collect()
    }
}

impl LabOrder {
    /// A part of the order that says something of the patient: for the roles that read
    /// lab results, and for a restricted record only to those who may read it in full.
    async fn detail<T>(&self, ctx: &Context<'_>, value: T) -> Result<Option<T>> {
        let scope = hospital_scope(ctx).await?;
        match uc::order_details_readable(&scope, self.patient_id).await {
            Ok(()) => Ok(Some(value)),
            Err(e) => {
                let error = async_graphql::Error::from(crate::graphql::error::ApiError::from(e));
                ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
                Ok(None)
            }
        }
    }
}

#[ComplexObject]
impl LabOrder {
    /// Why the doctor ordered the tests.
    async fn clinical_note(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(self
            .detail(ctx, self.clinical_note.clone())
            .await?
            .flatten())
    }

    /// The catalogue entries ordered, each with the version and price it is billed at.
    async fn tests(&self, ctx: &Context<'_>) -> Result<Option<Vec<LabOrderedTest>>> {
        self.detail(ctx, self.tests.clone()).await
    }

    /// Whether any result of the order is critical.
    async fn has_critical(&self, ctx: &Context<'_>) -> Result<Option<bool>> {
        self.detail(ctx, self.has_critical).await
    }

    async fn cancel_reason(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(self
            .detail(ctx, self.cancel_reason.clone())
            .await?
            .flatten())
    }

    /// The order's results (one per test), with flags.
    async fn results(&self, ctx: &Context<'_>) -> Result<Vec<LabResult>> {
        let scope = hospital_scope(ctx).await?;
        uc::order_results(&scope, self.id, self.patient_id)
            .await?
            .into_iter()
            .map(LabResult::try_from)
            .collect()
    }

    /// The specimens taken, in the order they were collected (rejected ones included).
    async fn specimens(&self, ctx: &Context<'_>) -> Result<Vec<LabSpecimen>> {
        let scope = hospital_scope(ctx).await?;
        uc::order_specimens(&scope, self.id)
            .await?
            .into_iter()
            .map(LabSpecimen::try_from)
            .collect()
    }

    /// Every change to this order, oldest first (needs the audit permission). Reading it
    /// is recorded in the patient's access log.
    #[graphql(complexity = "RECORD_READ_COST + page_cost(first, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        page_request(first, after.clone())?;
        record_patient_view(&auth, self.patient_id, "lab order history").await?;
        let id = self.id.to_string();
        audit::history(&auth, uc::LAB_ORDER_TYPE, &id, first, after).await
    }
}

#[ComplexObject]
impl LabResult {
    /// Every version of this result, oldest first: entries, re-entries and amendments
    /// with their reasons, and who verified each.
    async fn versions(&self, ctx: &Context<'_>) -> Result<Vec<LabResultVersion>> {
        let scope = hospital_scope(ctx).await?;
        uc::order_result_versions(&scope, self.order_id, self.patient_id)
            .await?
            .iter()
            .filter(|v| v.item_id == self.item_id)
            .map(LabResultVersion::try_from)
            .collect()
    }
}
