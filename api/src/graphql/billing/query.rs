//! Billing queries: the hospital's invoices, one invoice, and the parts of an invoice
//! read on demand (lines, payments, history).

use async_graphql::{ComplexObject, Context, Object};
use hms_app::usecases::billing as uc;
use hms_app::usecases::patients::record_patient_view;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{InvoiceFilter, InvoiceLine, InvoicePayment, InvoiceView};
use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_cost, page_request, Page, RECORD_READ_COST};
use crate::graphql::session::{authorize, hospital_scope};
use crate::graphql::QUERY_FIELD_COST;

#[derive(Default)]
pub struct BillingQuery;

#[Object]
impl BillingQuery {
    /// Invoices of this hospital, oldest first.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        filter: Option<InvoiceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<InvoiceView>> {
        let auth = authorize(ctx, Operation::ViewInvoices).await?;
        let page = page_request(first, after)?;
        let filter = filter.unwrap_or_default().parse()?;
        let invoices = uc::invoices(&auth, &filter, &page).await?;
        Ok(connection(invoices.map(InvoiceView::from)))
    }

    /// One invoice with its lines and payments.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn invoice(&self, ctx: &Context<'_>, id: Uuid) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::ViewInvoices).await?;
        Ok(uc::invoice(&auth, id).await?.into())
    }
}

#[ComplexObject]
impl InvoiceView {
    /// The billed items, in the order they were added.
    async fn lines(&self, ctx: &Context<'_>) -> Result<Vec<InvoiceLine>> {
        let scope = hospital_scope(ctx).await?;
        let lines = uc::invoice_lines(&scope, self.id).await?;
        Ok(lines.into_iter().map(Into::into).collect())
    }

    /// Payments and refunds, oldest first.
    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<InvoicePayment>> {
        let scope = hospital_scope(ctx).await?;
        let payments = uc::invoice_payments(&scope, self.id).await?;
        Ok(payments.into_iter().map(Into::into).collect())
    }

    /// Every change to this invoice, oldest first (needs the audit permission). Reading
    /// it is recorded in the patient's access log.
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
        record_patient_view(&auth, self.patient_id, "invoice history").await?;
        let id = self.id.to_string();
        audit::history(&auth, uc::INVOICE_TYPE, &id, first, after).await
    }
}
