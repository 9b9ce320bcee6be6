//! Billing mutations: each authorizes its operation, hands the input to one use case
//! and returns the invoice as the read model shows it afterwards.

use async_graphql::{Context, Object};
use hms_app::usecases::billing as uc;
use hms_domain::permissions::Operation;

use super::types::{
    AddInvoiceLineInput, CreateInvoiceInput, InvoiceView, IssueInvoiceInput, RecordPaymentInput,
    RefundPaymentInput, RemoveInvoiceLineInput, SetInvoiceDiscountInput, SetInvoiceTaxInput,
    VoidInvoiceInput,
};
use crate::graphql::error::Result;
use crate::graphql::session::authorize;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct BillingMutation;

#[Object]
impl BillingMutation {
    /// Opens a DRAFT invoice for a patient, numbered from the hospital's invoice prefix
    /// and sequence.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn create_invoice(
        &self,
        ctx: &Context<'_>,
        input: CreateInvoiceInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::DraftInvoice).await?;
        Ok(uc::create_invoice(&auth, input.into()).await?.into())
    }

    /// Adds a line to a DRAFT invoice.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn add_invoice_line(
        &self,
        ctx: &Context<'_>,
        input: AddInvoiceLineInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::EditInvoice).await?;
        Ok(uc::add_invoice_line(&auth, input.into()).await?.into())
    }

    /// Removes a line from a DRAFT invoice.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn remove_invoice_line(
        &self,
        ctx: &Context<'_>,
        input: RemoveInvoiceLineInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::EditInvoice).await?;
        Ok(uc::remove_invoice_line(&auth, input.into()).await?.into())
    }

    /// Sets or removes the discount of a DRAFT invoice.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn set_invoice_discount(
        &self,
        ctx: &Context<'_>,
        input: SetInvoiceDiscountInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::EditInvoice).await?;
        Ok(uc::set_invoice_discount(&auth, input.into()).await?.into())
    }

    /// Sets the tax rate of a DRAFT invoice.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn set_invoice_tax(
        &self,
        ctx: &Context<'_>,
        input: SetInvoiceTaxInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::EditInvoice).await?;
        Ok(uc::set_invoice_tax(&auth, input.into()).await?.into())
    }

    /// Issues a DRAFT invoice: its totals are frozen and it takes payments.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn issue_invoice(
        &self,
        ctx: &Context<'_>,
        input: IssueInvoiceInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::IssueInvoice).await?;
        Ok(uc::issue_invoice(&auth, input.into()).await?.into())
    }

    /// Records a payment on an issued invoice: partial payments are fine, more than the
    /// balance is refused.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn record_payment(
        &self,
        ctx: &Context<'_>,
        input: RecordPaymentInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::RecordPayment).await?;
        Ok(uc::record_payment(&auth, input.into()).await?.into())
    }

    /// Gives back part or all of a payment; never more than was paid.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn refund_payment(
        &self,
        ctx: &Context<'_>,
        input: RefundPaymentInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::RefundPayment).await?;
        Ok(uc::refund_payment(&auth, input.into()).await?.into())
    }

    /// Voids an invoice that has taken no payments.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn void_invoice(
        &self,
        ctx: &Context<'_>,
        input: VoidInvoiceInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::VoidInvoice).await?;
        Ok(uc::void_invoice(&auth, input.into()).await?.into())
    }
}
