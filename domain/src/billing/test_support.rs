//! Builders shared by the tests of this crate (invoices, lines, payments).

use super::*;
use crate::common::{Actor, BoundedText, Role};
use crate::hospital::InvoicePrefix;
use chrono::{DateTime, Utc};

pub const INVOICE: Uuid = Uuid::from_u128(0x1111);

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

pub fn kes() -> Currency {
    Currency::parse("KES").expect("valid")
}

pub fn kes_minor(minor: i64) -> Money {
    Money::new(minor, kes())
}

pub fn accountant() -> Actor {
    Actor {
        user_id: Uuid::from_u128(0xACC),
        username: "acc".into(),
        role: Role::Accountant,
    }
}

pub fn text(s: &str) -> BoundedText {
    BoundedText::parse("text", s, 500).expect("valid")
}

pub fn number() -> InvoiceNumber {
    InvoiceNumber::new(&InvoicePrefix::default(), 42).expect("valid")
}

pub fn draft() -> InvoiceCommand {
    InvoiceCommand::DraftInvoice {
        actor: accountant(),
        invoice_id: INVOICE,
        number: number(),
        patient_id: Uuid::from_u128(0x9A7),
        appointment_id: None,
        currency: kes(),
        now: now(),
    }
}

pub fn add_line(id: u128, quantity: u32, unit_minor: i64) -> InvoiceCommand {
    InvoiceCommand::AddLine {
        actor: accountant(),
        line_id: Uuid::from_u128(id),
        code: text("CONS"),
        description: text("Consultation"),
        quantity,
        // As entered: in the invoice's currency.
        unit_price: Amount {
            minor: unit_minor,
            currency: None,
        },
        now: now(),
    }
}

pub fn issue() -> InvoiceCommand {
    InvoiceCommand::Issue {
        actor: accountant(),
        due_date: None,
        now: now(),
    }
}

pub fn pay(id: u128, minor: i64) -> InvoiceCommand {
    InvoiceCommand::RecordPayment {
        actor: accountant(),
        payment_id: Uuid::from_u128(id),
        // As a till enters it: in the invoice's currency.
        amount: Amount {
            minor,
            currency: None,
        },
        method: PaymentMethod::Cash,
        reference: None,
        now: now(),
    }
}

pub fn refund(id: u128, payment: u128, minor: i64) -> InvoiceCommand {
    InvoiceCommand::RefundPayment {
        actor: accountant(),
        refund_id: Uuid::from_u128(id),
        payment_id: Uuid::from_u128(payment),
        amount: kes_minor(minor).into(),
        reason: text("Overcharged"),
        now: now(),
    }
}

/// Run commands that must all succeed; return the events.
pub fn history(commands: Vec<InvoiceCommand>) -> Vec<InvoiceEvent> {
    let mut inv = Invoice::default();
    let mut events = Vec::new();
    for cmd in commands {
        for e in inv.decide(cmd).expect("command succeeds") {
            inv.apply(e.clone());
            events.push(e);
        }
    }
    events
}
