//! The events of the invoice aggregate, with their persisted names and versions.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Discount, InvoiceLine, InvoiceNumber, InvoiceStatus, InvoiceTotals, Money, PaymentMethod,
};
use crate::common::Currency;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    InvoiceDrafted {
        invoice_id: Uuid,
        number: InvoiceNumber,
        patient_id: Uuid,
        appointment_id: Option<Uuid>,
        currency: Currency,
        at: DateTime<Utc>,
    },
    InvoiceLineAdded {
        line: InvoiceLine,
        totals: InvoiceTotals,
        at: DateTime<Utc>,
    },
    InvoiceLineRemoved {
        line_id: Uuid,
        totals: InvoiceTotals,
        at: DateTime<Utc>,
    },
    DiscountSet {
        discount: Discount,
        totals: InvoiceTotals,
        at: DateTime<Utc>,
    },
    TaxRateSet {
        basis_points: u32,
        totals: InvoiceTotals,
        at: DateTime<Utc>,
    },
    InvoiceIssued {
        totals: InvoiceTotals,
        balance: Money,
        due_date: Option<NaiveDate>,
        status: InvoiceStatus,
        at: DateTime<Utc>,
    },
    PaymentRecorded {
        payment_id: Uuid,
        amount: Money,
        method: PaymentMethod,
        reference: Option<String>,
        paid_total: Money,
        balance: Money,
        status: InvoiceStatus,
        at: DateTime<Utc>,
    },
    PaymentRefunded {
        refund_id: Uuid,
        payment_id: Uuid,
        amount: Money,
        reason: String,
        refunded_total: Money,
        balance: Money,
        status: InvoiceStatus,
        at: DateTime<Utc>,
    },
    InvoiceVoided {
        reason: String,
        status: InvoiceStatus,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        use InvoiceEvent as E;
        match self {
            E::InvoiceDrafted { .. } => "InvoiceDrafted",
            E::InvoiceLineAdded { .. } => "InvoiceLineAdded",
            E::InvoiceLineRemoved { .. } => "InvoiceLineRemoved",
            E::DiscountSet { .. } => "DiscountSet",
            E::TaxRateSet { .. } => "TaxRateSet",
            E::InvoiceIssued { .. } => "InvoiceIssued",
            E::PaymentRecorded { .. } => "PaymentRecorded",
            E::PaymentRefunded { .. } => "PaymentRefunded",
            E::InvoiceVoided { .. } => "InvoiceVoided",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
