//! The GraphQL shape of billing: the `MinorUnits` scalar, enums mirroring the domain's,
//! the invoice and its parts, the inputs, and conversions to and from the application
//! layer's types.

use async_graphql::{
    Enum, InputObject, InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, NaiveDate, Utc};
use hms_app::usecases::billing as uc;
use hms_domain::billing::Discount;
use hms_projections::projectors::InvoiceLineRow;
use uuid::Uuid;

use crate::graphql::error::Result;
use crate::graphql::types::check_instant;

/// An amount in minor units (see the scalar's description below, which is the SDL's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinorUnits(pub i64);

/// An amount of money as a whole number of the currency's minor unit (cents: `1050` is
/// 10.50), read together with the invoice's `currency`. A JSON integer (a string of
/// digits is accepted too); amounts beyond ±9007199254740991 (2^53 − 1, exact in
/// JavaScript) are refused with VALIDATION.
#[Scalar(name = "MinorUnits")]
impl ScalarType for MinorUnits {
    fn parse(value: Value) -> InputValueResult<Self> {
        let minor = match &value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        // The range is checked by the use cases, which name the field in the error.
        minor
            .map(MinorUnits)
            .ok_or_else(|| InputValueError::custom("an amount is a whole number of minor units"))
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::billing::InvoiceStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum InvoiceStatus {
    Draft,
    Issued,
    PartiallyPaid,
    Paid,
    Void,
    Refunded,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::billing::PaymentMethod",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum PaymentMethod {
    Cash,
    Card,
    Insurance,
    BankTransfer,
}

/// A payment taken, or money given back.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_app::usecases::billing::PaymentKind",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum PaymentKind {
    Payment,
    Refund,
}

/// The discount rule of an invoice (the amount it comes to is `discountMinor`).
#[derive(SimpleObject, Clone, Debug)]
pub struct DiscountRule {
    /// A share of the subtotal in basis points (1000 = 10 %), or null.
    pub percent_basis_points: Option<i32>,
    /// A fixed amount, capped at the subtotal, or null.
    pub fixed_amount_minor: Option<MinorUnits>,
}

/// An invoice and what it comes to. Amounts are in minor units of `currency`;
/// `balance = total − paid + refunded` once issued.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "Invoice", complex)]
pub struct InvoiceView {
    pub id: Uuid,
    /// The hospital's invoice number, e.g. `INV-000042`.
    pub number: String,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub status: InvoiceStatus,
    /// ISO 4217 code of every amount on the invoice.
    pub currency: String,
    /// The sum of the lines.
    pub subtotal_minor: MinorUnits,
    /// What the discount comes to.
    pub discount_minor: MinorUnits,
    /// Tax, charged on the discounted subtotal.
    pub tax_minor: MinorUnits,
    /// `subtotal − discount + tax`.
    pub total_minor: MinorUnits,
    /// All payments taken.
    pub paid_minor: MinorUnits,
    /// All money given back.
    pub refunded_minor: MinorUnits,
    /// What is still owed (the total while drafting; 0 once void).
    pub balance_minor: MinorUnits,
    /// The discount rule; null without a discount.
    pub discount_rule: Option<DiscountRule>,
    /// Tax rate in basis points (1600 = 16 %).
    pub tax_basis_points: i32,
    pub due_date: Option<NaiveDate>,
    pub issued_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The invoice's version (its number of events), for `expectedVersion`.
    pub version: i64,
}

/// One billed item.
#[derive(SimpleObject, Clone, Debug)]
pub struct InvoiceLine {
    /// Pass to `removeInvoiceLine`.
    pub id: Uuid,
    pub code: String,
    pub description: String,
    pub quantity: i32,
    pub unit_price_minor: MinorUnits,
    /// `quantity × unitPrice`.
    pub amount_minor: MinorUnits,
    pub added_at: DateTime<Utc>,
}

/// A payment or a refund, in the order they happened.
#[derive(SimpleObject, Clone, Debug)]
pub struct InvoicePayment {
    pub id: Uuid,
    pub kind: PaymentKind,
    /// The payment: this entry's own id for a payment, the refunded payment's for a refund.
    pub payment_id: Uuid,
    /// How it was paid (payments only).
    pub method: Option<PaymentMethod>,
    pub amount_minor: MinorUnits,
    /// For a payment: how much of it was refunded so far.
    pub refunded_minor: Option<MinorUnits>,
    /// The payer's reference (payments only).
    pub reference: Option<String>,
    /// Why the money was given back (refunds only).
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<uc::InvoiceView> for InvoiceView {
    fn from(i: uc::InvoiceView) -> Self {
        let discount_rule = match i.discount {
            Discount::None => None,
            Discount::Percent { basis_points } => Some(DiscountRule {
                percent_basis_points: Some(i32::try_from(basis_points).unwrap_or(i32::MAX)),
                fixed_amount_minor: None,
            }),
            Discount::Amount(m) => Some(DiscountRule {
                percent_basis_points: None,
                fixed_amount_minor: Some(MinorUnits(m.minor())),
            }),
        };
        Self {
            id: i.id,
            number: i.number,
            patient_id: i.patient_id,
            appointment_id: i.appointment_id,
            status: i.status.into(),
            currency: i.currency,
            subtotal_minor: MinorUnits(i.subtotal_minor),
            discount_minor: MinorUnits(i.discount_minor),
            tax_minor: MinorUnits(i.tax_minor),
            total_minor: MinorUnits(i.total_minor),
            paid_minor: MinorUnits(i.paid_minor),
            refunded_minor: MinorUnits(i.refunded_minor),
            balance_minor: MinorUnits(i.balance_minor),
            discount_rule,
            tax_basis_points: i.tax_basis_points,
            due_date: i.due_date,
            issued_at: i.issued_at,
            voided_at: i.voided_at,
            void_reason: i.void_reason,
            created_at: i.created_at,
            updated_at: i.updated_at,
            version: i.version,
        }
    }
}

impl From<InvoiceLineRow> for InvoiceLine {
    fn from(r: InvoiceLineRow) -> Self {
        Self {
            id: r.line_id,
            code: r.code,
            description: r.description,
            quantity: r.quantity,
            unit_price_minor: MinorUnits(r.unit_price_minor),
            amount_minor: MinorUnits(r.amount_minor),
            added_at: r.added_at,
        }
    }
}

impl From<uc::InvoicePayment> for InvoicePayment {
    fn from(p: uc::InvoicePayment) -> Self {
        Self {
            id: p.id,
            kind: p.kind.into(),
            payment_id: p.payment_id,
            method: p.method.map(Into::into),
            amount_minor: MinorUnits(p.amount_minor),
            refunded_minor: p.refunded_minor.map(MinorUnits),
            reference: p.reference,
            reason: p.reason,
            at: p.at,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

#[derive(InputObject)]
pub struct CreateInvoiceInput {
    /// The patient billed (must be registered in this hospital).
    pub patient_id: Uuid,
    /// The visit billed, if any; it must be this patient's.
    pub appointment_id: Option<Uuid>,
    /// ISO 4217 code; defaults to the currency of the hospital profile.
    pub currency: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct AddInvoiceLineInput {
    pub invoice_id: Uuid,
    /// A tariff or service code (up to 32 characters).
    pub code: String,
    pub description: String,
    /// 1 to 100000.
    pub quantity: i32,
    /// The price of one unit, in minor units.
    pub unit_price_minor: MinorUnits,
    /// Must be the invoice's currency when given.
    pub currency: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct RemoveInvoiceLineInput {
    pub invoice_id: Uuid,
    pub line_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Give one of `percentBasisPoints` or `fixedAmountMinor`; neither removes the discount.
#[derive(InputObject)]
pub struct SetInvoiceDiscountInput {
    pub invoice_id: Uuid,
    /// A share of the subtotal in basis points (0 to 10000; 1000 = 10 %).
    pub percent_basis_points: Option<i32>,
    /// A fixed amount in minor units, capped at the subtotal.
    pub fixed_amount_minor: Option<MinorUnits>,
    pub currency: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct SetInvoiceTaxInput {
    pub invoice_id: Uuid,
    /// Tax rate in basis points (0 to 10000; 1600 = 16 %).
    pub basis_points: i32,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct IssueInvoiceInput {
    pub invoice_id: Uuid,
    pub due_date: Option<NaiveDate>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct RecordPaymentInput {
    pub invoice_id: Uuid,
    /// More than zero and at most the balance (partial payments are fine).
    pub amount_minor: MinorUnits,
    pub currency: Option<String>,
    pub method: PaymentMethod,
    /// Receipt, card slip or transfer reference.
    pub reference: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct RefundPaymentInput {
    pub invoice_id: Uuid,
    /// The payment refunded (from `payments`).
    pub payment_id: Uuid,
    /// More than zero and at most what is left of that payment.
    pub amount_minor: MinorUnits,
    pub currency: Option<String>,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct VoidInvoiceInput {
    pub invoice_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Filters of `invoices`; all optional, combined with AND.
#[derive(InputObject, Default)]
pub struct InvoiceFilter {
    pub patient_id: Option<Uuid>,
    pub status: Option<InvoiceStatus>,
    /// Only invoices that still take payments (ISSUED or PARTIALLY_PAID).
    pub outstanding_only: Option<bool>,
    /// Created at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Created before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl From<CreateInvoiceInput> for uc::CreateInvoice {
    fn from(i: CreateInvoiceInput) -> Self {
        Self {
            patient_id: i.patient_id,
            appointment_id: i.appointment_id,
            currency: i.currency,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<AddInvoiceLineInput> for uc::AddInvoiceLine {
    fn from(i: AddInvoiceLineInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            code: i.code,
            description: i.description,
            quantity: i.quantity,
            unit_price_minor: i.unit_price_minor.0,
            currency: i.currency,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<RemoveInvoiceLineInput> for uc::RemoveInvoiceLine {
    fn from(i: RemoveInvoiceLineInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            line_id: i.line_id,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<SetInvoiceDiscountInput> for uc::SetInvoiceDiscount {
    fn from(i: SetInvoiceDiscountInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            percent_basis_points: i.percent_basis_points,
            fixed_amount_minor: i.fixed_amount_minor.map(|m| m.0),
            currency: i.currency,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<SetInvoiceTaxInput> for uc::SetInvoiceTax {
    fn from(i: SetInvoiceTaxInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            basis_points: i.basis_points,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<IssueInvoiceInput> for uc::IssueInvoice {
    fn from(i: IssueInvoiceInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            due_date: i.due_date,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<RecordPaymentInput> for uc::RecordPayment {
    fn from(i: RecordPaymentInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            amount_minor: i.amount_minor.0,
            currency: i.currency,
            method: i.method.into(),
            reference: i.reference,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<RefundPaymentInput> for uc::RefundPayment {
    fn from(i: RefundPaymentInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            payment_id: i.payment_id,
            amount_minor: i.amount_minor.0,
            currency: i.currency,
            reason: i.reason,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl From<VoidInvoiceInput> for uc::VoidInvoice {
    fn from(i: VoidInvoiceInput) -> Self {
        Self {
            invoice_id: i.invoice_id,
            reason: i.reason,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

impl InvoiceFilter {
    /// The application's filter; instants out of the accepted years are VALIDATION.
    pub fn parse(self) -> Result<uc::InvoiceFilter> {
        Ok(uc::InvoiceFilter {
            patient_id: self.patient_id,
            status: self.status.map(Into::into),
            outstanding_only: self.outstanding_only.unwrap_or(false),
            from: self.from.map(|v| check_instant("from", v)).transpose()?,
            to: self.to.map(|v| check_instant("to", v)).transpose()?,
        })
    }
}
