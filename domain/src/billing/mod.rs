//! Billing: [`Money`] and the invoice aggregate (one stream per invoice).
//!
//! Money is an integer count of the currency's minor unit (cents) with its currency,
//! never a float; every operation is checked (overflow and currency mismatch are errors,
//! not wrap-arounds). Percentages are basis points (1/100 of a percent) and round half up
//! to the minor unit.
//!
//! ```text
//! DRAFT ──Issue──▶ ISSUED ──pay part──▶ PARTIALLY_PAID ──pay rest──▶ PAID
//!   │                │  └──────────pay all──────────────────────────▲  │
//!   └──Void──▶ VOID ◀┘ (only without payments)       refund part ◀───┘  │
//!                                   refund everything ──▶ REFUNDED ◀─────┘
//! ```
//!
//! Invariant, checked by a property test: `balance = total − paid + refunded`, with
//! `0 ≤ refunded ≤ paid` and `paid − refunded ≤ total`. Payment and refund events carry the
//! new totals, balance and status, so read models copy them instead of recomputing.
//!
//! The invoice number arrives in the command: the hospital's prefix plus the next value of
//! a per-tenant database sequence ([`InvoiceNumber::new`]).

mod commands;
mod errors;
mod events;
mod values;

pub use commands::*;
pub use errors::*;
pub use events::*;
pub use values::*;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Currency, ValidationError};
use crate::permissions::ensure_allowed;

pub const MAX_LINE_CODE_CHARS: usize = 32;
pub const MAX_LINE_DESCRIPTION_CHARS: usize = 500;
pub const MAX_QUANTITY: u32 = 100_000;
/// 100 % in basis points.
pub const FULL_BASIS_POINTS: u32 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: Option<Uuid>,
    pub number: Option<InvoiceNumber>,
    pub patient_id: Option<Uuid>,
    pub appointment_id: Option<Uuid>,
    pub currency: Option<Currency>,
    pub status: Option<InvoiceStatus>,
    pub lines: Vec<InvoiceLine>,
    pub discount: Option<Discount>,
    pub tax_basis_points: u32,
    pub totals: Option<InvoiceTotals>,
    pub paid: Option<Money>,
    pub refunded: Option<Money>,
    pub balance: Option<Money>,
    pub payments: Vec<Payment>,
    pub refund_ids: Vec<Uuid>,
    pub due_date: Option<NaiveDate>,
}

/// The figures of an existing invoice, for `decide`.
struct Figures {
    currency: Currency,
    status: InvoiceStatus,
    totals: InvoiceTotals,
    paid: Money,
    refunded: Money,
}

impl Invoice {
    fn figures(&self) -> Result<Figures, InvoiceError> {
        let currency = self.currency.ok_or(InvoiceError::NotFound)?;
        Ok(Figures {
            currency,
            status: self.status.ok_or(InvoiceError::NotFound)?,
            totals: self.totals.unwrap_or(InvoiceTotals::zero(currency)),
            paid: self.paid.unwrap_or(Money::zero(currency)),
            refunded: self.refunded.unwrap_or(Money::zero(currency)),
        })
    }

    fn ensure_draft(&self) -> Result<Figures, InvoiceError> {
        let f = self.figures()?;
        if f.status == InvoiceStatus::Draft {
            Ok(f)
        } else {
            Err(InvoiceError::NotDraft(f.status))
        }
    }

    fn totals_with(
        &self,
        currency: Currency,
        lines: &[InvoiceLine],
        discount: Option<Discount>,
        tax_basis_points: u32,
    ) -> Result<InvoiceTotals, InvoiceError> {
        Ok(InvoiceTotals::compute(
            currency,
            lines,
            discount.unwrap_or(Discount::None),
            tax_basis_points,
        )?)
    }

    pub fn decide(&self, command: InvoiceCommand) -> Result<Vec<InvoiceEvent>, InvoiceError> {
        use InvoiceCommand as C;
        use InvoiceEvent as E;
        ensure_allowed(command.actor(), command.operation())?;
        let event = match command {
            C::OpenForCharges {
                invoice_id,
                number,
                patient_id,
                currency,
                now,
                ..
            } => {
                if self.status.is_some() {
                    return Err(InvoiceError::AlreadyDrafted);
                }
                E::InvoiceDrafted {
                    invoice_id,
                    number,
                    patient_id,
                    appointment_id: None,
                    currency,
                    at: now,
                }
            }
            C::PostCharges { charges, now, .. } => return self.post_charges(charges, now),
            C::DraftInvoice {
                invoice_id,
                number,
                patient_id,
                appointment_id,
                currency,
                now,
                ..
            } => {
                if self.status.is_some() {
                    return Err(InvoiceError::AlreadyDrafted);
                }
                E::InvoiceDrafted {
                    invoice_id,
                    number,
                    patient_id,
                    appointment_id,
                    currency,
                    at: now,
                }
            }
            C::AddLine {
                line_id,
                code,
                description,
                quantity,
                unit_price,
                now,
                ..
            } => {
                let f = self.ensure_draft()?;
                let unit_price = unit_price.in_currency(f.currency)?;
                if self.lines.iter().any(|l| l.line_id == line_id) {
                    return Err(InvoiceError::DuplicateLine(line_id));
                }
                if code.as_str().chars().count() > MAX_LINE_CODE_CHARS {
                    return Err(ValidationError::new("code", "is too long").into());
                }
                if description.as_str().chars().count() > MAX_LINE_DESCRIPTION_CHARS {
                    return Err(ValidationError::new("description", "is too long").into());
                }
                if !(1..=MAX_QUANTITY).contains(&quantity) {
                    return Err(ValidationError::new(
                        "quantity",
                        format!("must be 1 to {MAX_QUANTITY}"),
                    )
                    .into());
                }
                if unit_price.is_negative() {
                    return Err(ValidationError::new("unit_price", "must not be negative").into());
                }
                let line = InvoiceLine {
                    line_id,
                    code,
                    description,
                    quantity,
                    unit_price,
                    amount: unit_price.checked_mul(quantity)?,
                };
                let mut lines = self.lines.clone();
                lines.push(line.clone());
                let totals =
                    self.totals_with(f.currency, &lines, self.discount, self.tax_basis_points)?;
                E::InvoiceLineAdded {
                    line,
                    totals,
                    at: now,
                }
            }
            C::RemoveLine { line_id, now, .. } => {
                let f = self.ensure_draft()?;
                if !self.lines.iter().any(|l| l.line_id == line_id) {
                    return Err(InvoiceError::LineNotFound(line_id));
                }
                let lines: Vec<_> = self
                    .lines
                    .iter()
                    .filter(|l| l.line_id != line_id)
                    .cloned()
                    .collect();
                let totals =
                    self.totals_with(f.currency, &lines, self.discount, self.tax_basis_points)?;
                E::InvoiceLineRemoved {
                    line_id,
                    totals,
                    at: now,
                }
            }
            C::SetDiscount { discount, now, .. } => {
                let f = self.ensure_draft()?;
                let discount = discount.in_currency(f.currency)?;
                match discount {
                    Discount::Percent { basis_points } if basis_points > FULL_BASIS_POINTS => {
                        return Err(
                            ValidationError::new("discount", "must be at most 100 percent").into(),
                        )
                    }
                    Discount::Amount(amount) if amount.is_negative() => {
                        return Err(ValidationError::new("discount", "must not be negative").into())
                    }
                    _ => {}
                }
                let totals = self.totals_with(
                    f.currency,
                    &self.lines,
                    Some(discount),
                    self.tax_basis_points,
                )?;
                E::DiscountSet {
                    discount,
                    totals,
                    at: now,
                }
            }
            C::SetTax {
                basis_points, now, ..
            } => {
                let f = self.ensure_draft()?;
                if basis_points > FULL_BASIS_POINTS {
                    return Err(ValidationError::new("tax", "must be at most 100 percent").into());
                }
                let totals =
                    self.totals_with(f.currency, &self.lines, self.discount, basis_points)?;
                E::TaxRateSet {
                    basis_points,
                    totals,
                    at: now,
                }
            }
            C::Issue { due_date, now, .. } => {
                let f = self.ensure_draft()?;
                if due_date.is_some_and(|due| due < now.date_naive()) {
                    return Err(ValidationError::new(
                        "due_date",
                        "must not be before the issue date",
                    )
                    .into());
                }
                if self.lines.is_empty() {
                    return Err(InvoiceError::NoLines);
                }
                if !f.totals.total.is_positive() {
                    return Err(InvoiceError::NothingToBill);
                }
                E::InvoiceIssued {
                    totals: f.totals,
                    balance: f.totals.total,
                    due_date,
                    status: InvoiceStatus::Issued,
                    at: now,
                }
            }
            C::RecordPayment {
                payment_id,
                amount,
                method,
                reference,
                now,
                ..
            } => {
                let f = self.figures()?;
                let amount = amount.in_currency(f.currency)?;
                if !matches!(
                    f.status,
                    InvoiceStatus::Issued | InvoiceStatus::PartiallyPaid
                ) {
                    return Err(InvoiceError::NotPayable(f.status));
                }
                if self.payments.iter().any(|p| p.payment_id == payment_id) {
                    return Err(InvoiceError::DuplicatePayment(payment_id));
                }
                if !amount.is_positive() {
                    return Err(InvoiceError::NonPositiveAmount);
                }
                let balance = f
                    .totals
                    .total
                    .checked_sub(f.paid)?
                    .checked_add(f.refunded)?;
                let new_balance = balance.checked_sub(amount)?;
                if new_balance.is_negative() {
                    return Err(InvoiceError::Overpayment { amount, balance });
                }
                let paid_total = f.paid.checked_add(amount)?;
                E::PaymentRecorded {
                    payment_id,
                    amount,
                    method,
                    reference: reference.map(|r| r.to_string()),
                    paid_total,
                    balance: new_balance,
                    status: InvoiceStatus::after_money_moved(
                        f.totals.total,
                        paid_total,
                        f.refunded,
                    ),
                    at: now,
                }
            }
            C::RefundPayment {
                refund_id,
                payment_id,
                amount,
                reason,
                now,
                ..
            } => {
                let f = self.figures()?;
                let amount = amount.in_currency(f.currency)?;
                if self.refund_ids.contains(&refund_id) {
                    return Err(InvoiceError::DuplicateRefund(refund_id));
                }
                let payment = self
                    .payments
                    .iter()
                    .find(|p| p.payment_id == payment_id)
                    .ok_or(InvoiceError::PaymentNotFound(payment_id))?;
                if !amount.is_positive() {
                    return Err(InvoiceError::NonPositiveAmount);
                }
                let refundable = payment.amount.checked_sub(payment.refunded)?;
                if refundable.checked_sub(amount)?.is_negative() {
                    return Err(InvoiceError::RefundExceedsPayment { refundable });
                }
                let refunded_total = f.refunded.checked_add(amount)?;
                let balance = f
                    .totals
                    .total
                    .checked_sub(f.paid)?
                    .checked_add(refunded_total)?;
                E::PaymentRefunded {
                    refund_id,
                    payment_id,
                    amount,
                    reason: reason.to_string(),
                    refunded_total,
                    balance,
                    status: InvoiceStatus::after_money_moved(
                        f.totals.total,
                        f.paid,
                        refunded_total,
                    ),
                    at: now,
                }
            }
            C::VoidInvoice { reason, now, .. } => {
                let f = self.figures()?;
                if !self.payments.is_empty() {
                    return Err(InvoiceError::HasPayments);
                }
                if !matches!(f.status, InvoiceStatus::Draft | InvoiceStatus::Issued) {
                    return Err(InvoiceError::NotVoidable(f.status));
                }
                E::InvoiceVoided {
                    reason: reason.to_string(),
                    status: InvoiceStatus::Void,
                    at: now,
                }
            }
        };
        Ok(vec![event])
    }

    /// One `InvoiceLineAdded` per charge not on the invoice yet, each with the running
    /// totals.
    fn post_charges(
        &self,
        charges: Vec<ChargeLine>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<InvoiceEvent>, InvoiceError> {
        let f = self.ensure_draft()?;
        let mut lines = self.lines.clone();
        let mut events = Vec::new();
        for charge in charges {
            if lines.iter().any(|l| l.line_id == charge.line_id) {
                continue;
            }
            if charge.unit_price.is_negative() {
                return Err(ValidationError::new("unit_price", "must not be negative").into());
            }
            Money::zero(f.currency).checked_add(charge.unit_price)?;
            let line = InvoiceLine {
                line_id: charge.line_id,
                code: charge.code,
                description: charge.description,
                quantity: 1,
                unit_price: charge.unit_price,
                amount: charge.unit_price,
            };
            lines.push(line.clone());
            let totals =
                self.totals_with(f.currency, &lines, self.discount, self.tax_basis_points)?;
            events.push(InvoiceEvent::InvoiceLineAdded {
                line,
                totals,
                at: now,
            });
        }
        Ok(events)
    }

    /// `total − paid + refunded`, or `None` before the invoice exists.
    pub fn expected_balance(&self) -> Option<i64> {
        let total = self.totals?.total.minor();
        Some(total - self.paid?.minor() + self.refunded?.minor())
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "invoice";
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = InvoiceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use InvoiceEvent as E;
        match event {
            E::InvoiceDrafted {
                invoice_id,
                number,
                patient_id,
                appointment_id,
                currency,
                ..
            } => {
                let zero = Money::zero(currency);
                self.id = Some(invoice_id);
                self.number = Some(number);
                self.patient_id = Some(patient_id);
                self.appointment_id = appointment_id;
                self.currency = Some(currency);
                self.status = Some(InvoiceStatus::Draft);
                self.totals = Some(InvoiceTotals::zero(currency));
                self.paid = Some(zero);
                self.refunded = Some(zero);
                self.balance = Some(zero);
            }
            E::InvoiceLineAdded { line, totals, .. } => {
                self.lines.push(line);
                self.set_draft_totals(totals);
            }
            E::InvoiceLineRemoved {
                line_id, totals, ..
            } => {
                self.lines.retain(|l| l.line_id != line_id);
                self.set_draft_totals(totals);
            }
            E::DiscountSet {
                discount, totals, ..
            } => {
                self.discount = Some(discount);
                self.set_draft_totals(totals);
            }
            E::TaxRateSet {
                basis_points,
                totals,
                ..
            } => {
                self.tax_basis_points = basis_points;
                self.set_draft_totals(totals);
            }
            E::InvoiceIssued {
                totals,
                balance,
                due_date,
                status,
                ..
            } => {
                self.totals = Some(totals);
                self.balance = Some(balance);
                self.due_date = due_date;
                self.status = Some(status);
            }
            E::PaymentRecorded {
                payment_id,
                amount,
                method,
                paid_total,
                balance,
                status,
                ..
            } => {
                self.payments.push(Payment {
                    payment_id,
                    amount,
                    method,
                    refunded: Money::zero(amount.currency()),
                });
                self.paid = Some(paid_total);
                self.balance = Some(balance);
                self.status = Some(status);
            }
            E::PaymentRefunded {
                refund_id,
                payment_id,
                amount,
                refunded_total,
                balance,
                status,
                ..
            } => {
                if let Some(p) = self
                    .payments
                    .iter_mut()
                    .find(|p| p.payment_id == payment_id)
                {
                    p.refunded = Money::new(
                        p.refunded.minor().saturating_add(amount.minor()),
                        amount.currency(),
                    );
                }
                self.refund_ids.push(refund_id);
                self.refunded = Some(refunded_total);
                self.balance = Some(balance);
                self.status = Some(status);
            }
            E::InvoiceVoided { status, .. } => self.status = Some(status),
        }
    }
}

impl Invoice {
    /// While drafting, nothing is paid, so the balance is the total.
    fn set_draft_totals(&mut self, totals: InvoiceTotals) {
        self.totals = Some(totals);
        self.balance = Some(totals.total);
    }
}
