//! The commands of the invoice aggregate and the permission each one needs.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Amount, Discount, InvoiceNumber, Money, PaymentMethod};
use crate::common::{Actor, BoundedText, Currency};
use crate::permissions::Operation;

#[derive(Debug, Clone, PartialEq)]
pub enum InvoiceCommand {
    DraftInvoice {
        actor: Actor,
        invoice_id: Uuid,
        /// Formatted by the caller from the hospital's prefix and a per-tenant sequence.
        number: InvoiceNumber,
        patient_id: Uuid,
        appointment_id: Option<Uuid>,
        currency: Currency,
        now: DateTime<Utc>,
    },
    AddLine {
        actor: Actor,
        line_id: Uuid,
        code: BoundedText,
        description: BoundedText,
        quantity: u32,
        /// In the invoice's currency unless another is named (then refused).
        unit_price: Amount,
        now: DateTime<Utc>,
    },
    RemoveLine {
        actor: Actor,
        line_id: Uuid,
        now: DateTime<Utc>,
    },
    SetDiscount {
        actor: Actor,
        /// A fixed amount in the invoice's currency unless another is named (then refused).
        discount: Discount<Amount>,
        now: DateTime<Utc>,
    },
    SetTax {
        actor: Actor,
        basis_points: u32,
        now: DateTime<Utc>,
    },
    Issue {
        actor: Actor,
        due_date: Option<NaiveDate>,
        now: DateTime<Utc>,
    },
    RecordPayment {
        actor: Actor,
        payment_id: Uuid,
        /// In the invoice's currency unless another is named (then refused).
        amount: Amount,
        method: PaymentMethod,
        reference: Option<BoundedText>,
        now: DateTime<Utc>,
    },
    RefundPayment {
        actor: Actor,
        refund_id: Uuid,
        payment_id: Uuid,
        /// In the invoice's currency unless another is named (then refused).
        amount: Amount,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    VoidInvoice {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    /// A DRAFT invoice opened to take charges from another department (a verified lab
    /// order) when the patient has none open.
    OpenForCharges {
        actor: Actor,
        invoice_id: Uuid,
        number: InvoiceNumber,
        patient_id: Uuid,
        currency: Currency,
        now: DateTime<Utc>,
    },
    /// Charges posted by another department, each at the price it was ordered at. A
    /// charge whose line is on the invoice already is skipped: posting is idempotent.
    PostCharges {
        actor: Actor,
        charges: Vec<ChargeLine>,
        now: DateTime<Utc>,
    },
}

/// A charge to post: its line id is derived from what it bills, so a repeat finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeLine {
    pub line_id: Uuid,
    pub code: BoundedText,
    pub description: BoundedText,
    pub unit_price: Money,
}

impl InvoiceCommand {
    pub fn actor(&self) -> &Actor {
        use InvoiceCommand as C;
        match self {
            C::DraftInvoice { actor, .. }
            | C::AddLine { actor, .. }
            | C::RemoveLine { actor, .. }
            | C::SetDiscount { actor, .. }
            | C::SetTax { actor, .. }
            | C::Issue { actor, .. }
            | C::RecordPayment { actor, .. }
            | C::RefundPayment { actor, .. }
            | C::VoidInvoice { actor, .. }
            | C::OpenForCharges { actor, .. }
            | C::PostCharges { actor, .. } => actor,
        }
    }

    pub fn operation(&self) -> Operation {
        use InvoiceCommand as C;
        match self {
            C::DraftInvoice { .. } => Operation::DraftInvoice,
            C::AddLine { .. } | C::RemoveLine { .. } | C::SetDiscount { .. } | C::SetTax { .. } => {
                Operation::EditInvoice
            }
            C::Issue { .. } => Operation::IssueInvoice,
            C::RecordPayment { .. } => Operation::RecordPayment,
            C::RefundPayment { .. } => Operation::RefundPayment,
            C::VoidInvoice { .. } => Operation::VoidInvoice,
            C::OpenForCharges { .. } | C::PostCharges { .. } => Operation::PostLabCharges,
        }
    }
}
