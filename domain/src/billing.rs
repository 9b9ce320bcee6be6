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

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{Actor, BoundedText, Currency, ValidationError};
use crate::hospital::InvoicePrefix;
use crate::permissions::{ensure_allowed, Operation, PermissionDenied};

pub const MAX_LINE_CODE_CHARS: usize = 32;
pub const MAX_LINE_DESCRIPTION_CHARS: usize = 500;
pub const MAX_QUANTITY: u32 = 100_000;
/// 100 % in basis points.
pub const FULL_BASIS_POINTS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("the amount is too large")]
    Overflow,
}

/// An amount of money in minor units (`minor: 1050, currency: USD` is $10.50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_positive(self) -> bool {
        self.minor > 0
    }

    pub fn is_negative(self) -> bool {
        self.minor < 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn checked_mul(self, factor: u32) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(factor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `basis_points / 10 000` of this amount, rounded half away from zero.
    pub fn basis_points(self, basis_points: u32) -> Result<Money, MoneyError> {
        let scaled = i128::from(self.minor) * i128::from(basis_points);
        let half = i128::from(FULL_BASIS_POINTS / 2);
        let rounded = if scaled >= 0 {
            (scaled + half) / i128::from(FULL_BASIS_POINTS)
        } else {
            (scaled - half) / i128::from(FULL_BASIS_POINTS)
        };
        let minor = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(if self.minor <= other.minor {
            self
        } else {
            other
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

/// An invoice number: the hospital's prefix, `-`, and a sequence of at least six digits
/// (`INV-000042`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InvoiceNumber(String);

impl InvoiceNumber {
    pub fn new(prefix: &InvoicePrefix, sequence: u64) -> Result<Self, ValidationError> {
        let digits = format!("{sequence:06}");
        if sequence == 0 || digits.len() > 12 {
            return Err(ValidationError::new(
                "invoice_number",
                "sequence must be between 1 and 999999999999",
            ));
        }
        Ok(Self(format!("{prefix}-{digits}")))
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "invoice_number",
                "must look like INV-000042: a prefix, '-', and 6 to 12 digits",
            )
        };
        let (prefix, digits) = raw.trim().rsplit_once('-').ok_or_else(invalid)?;
        InvoicePrefix::parse(prefix).map_err(|_| invalid())?;
        if (6..=12).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.bytes().any(|b| b != b'0')
        {
            Ok(Self(raw.trim().to_owned()))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InvoiceNumber {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InvoiceNumber> for String {
    fn from(value: InvoiceNumber) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethod {
    Cash,
    Card,
    Insurance,
    BankTransfer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    Draft,
    Issued,
    PartiallyPaid,
    Paid,
    Void,
    Refunded,
}

impl InvoiceStatus {
    /// The status of an issued invoice with these amounts. Over-payment is refused and
    /// refunds never exceed payments, so `0 ≤ paid − refunded ≤ total` here.
    pub fn after_money_moved(total: Money, paid: Money, refunded: Money) -> InvoiceStatus {
        let net = paid.minor() - refunded.minor();
        if net == 0 {
            if refunded.is_positive() {
                InvoiceStatus::Refunded
            } else {
                InvoiceStatus::Issued
            }
        } else if net >= total.minor() {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::PartiallyPaid
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub line_id: Uuid,
    pub code: BoundedText,
    pub description: BoundedText,
    pub quantity: u32,
    pub unit_price: Money,
    /// `quantity × unit_price`.
    pub amount: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discount {
    None,
    /// A share of the subtotal, in basis points (1 000 = 10 %).
    Percent {
        basis_points: u32,
    },
    /// A fixed amount, capped at the subtotal when totals are computed (lines may be
    /// removed after the discount was set).
    Amount(Money),
}

/// What the invoice comes to. `total = subtotal − discount + tax`, with tax charged on the
/// discounted amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTotals {
    pub subtotal: Money,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
}

impl InvoiceTotals {
    pub fn zero(currency: Currency) -> Self {
        let z = Money::zero(currency);
        Self {
            subtotal: z,
            discount: z,
            tax: z,
            total: z,
        }
    }

    pub fn compute(
        currency: Currency,
        lines: &[InvoiceLine],
        discount: Discount,
        tax_basis_points: u32,
    ) -> Result<Self, MoneyError> {
        let subtotal = lines
            .iter()
            .try_fold(Money::zero(currency), |acc, l| acc.checked_add(l.amount))?;
        let discount = match discount {
            Discount::None => Money::zero(currency),
            Discount::Percent { basis_points } => subtotal.basis_points(basis_points)?,
            Discount::Amount(amount) => amount.min(subtotal)?,
        };
        let taxable = subtotal.checked_sub(discount)?;
        let tax = taxable.basis_points(tax_basis_points)?;
        let total = taxable.checked_add(tax)?;
        Ok(Self {
            subtotal,
            discount,
            tax,
            total,
        })
    }
}

/// A payment and how much of it has been refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: Uuid,
    pub amount: Money,
    pub method: PaymentMethod,
    pub refunded: Money,
}

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
        unit_price: Money,
        now: DateTime<Utc>,
    },
    RemoveLine {
        actor: Actor,
        line_id: Uuid,
        now: DateTime<Utc>,
    },
    SetDiscount {
        actor: Actor,
        discount: Discount,
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
        amount: Money,
        method: PaymentMethod,
        reference: Option<BoundedText>,
        now: DateTime<Utc>,
    },
    RefundPayment {
        actor: Actor,
        refund_id: Uuid,
        payment_id: Uuid,
        amount: Money,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    VoidInvoice {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
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
            | C::VoidInvoice { actor, .. } => actor,
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
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("the invoice exists already")]
    AlreadyDrafted,
    #[error("the invoice does not exist")]
    NotFound,
    #[error("an invoice that is {0:?} can no longer be edited")]
    NotDraft(InvoiceStatus),
    #[error("line {0} exists already")]
    DuplicateLine(Uuid),
    #[error("line {0} does not exist")]
    LineNotFound(Uuid),
    #[error("an invoice needs at least one line to be issued")]
    NoLines,
    #[error("an invoice that comes to nothing cannot be issued")]
    NothingToBill,
    #[error("an invoice that is {0:?} does not take payments")]
    NotPayable(InvoiceStatus),
    #[error("the amount must be greater than zero")]
    NonPositiveAmount,
    #[error("the payment of {amount} exceeds the balance of {balance}")]
    Overpayment { amount: Money, balance: Money },
    #[error("payment {0} is recorded already")]
    DuplicatePayment(Uuid),
    #[error("payment {0} does not exist")]
    PaymentNotFound(Uuid),
    #[error("refund {0} is recorded already")]
    DuplicateRefund(Uuid),
    #[error("at most {refundable} of this payment can still be refunded")]
    RefundExceedsPayment { refundable: Money },
    #[error("an invoice with payments cannot be voided; refund them instead")]
    HasPayments,
    #[error("an invoice that is {0:?} cannot be voided")]
    NotVoidable(InvoiceStatus),
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Forbidden(#[from] PermissionDenied),
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

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
                Money::zero(f.currency).checked_add(unit_price)?;
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
                match discount {
                    Discount::Percent { basis_points } if basis_points > FULL_BASIS_POINTS => {
                        return Err(
                            ValidationError::new("discount", "must be at most 100 percent").into(),
                        )
                    }
                    Discount::Amount(amount) => {
                        if amount.is_negative() {
                            return Err(
                                ValidationError::new("discount", "must not be negative").into()
                            );
                        }
                        Money::zero(f.currency).checked_add(amount)?;
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

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::common::Role;

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
            unit_price: kes_minor(unit_minor),
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
            amount: kes_minor(minor),
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
            amount: kes_minor(minor),
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
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::common::Role;
    use cqrs_es::test::TestFramework;

    fn expect_error(given: Vec<InvoiceEvent>, cmd: InvoiceCommand, err: InvoiceError) {
        TestFramework::<Invoice>::with(())
            .given(given)
            .when(cmd)
            .then_expect_error(err);
    }

    fn run(given: Vec<InvoiceEvent>, cmd: InvoiceCommand) -> Vec<InvoiceEvent> {
        TestFramework::<Invoice>::with(())
            .given(given)
            .when(cmd)
            .inspect_result()
            .expect("command succeeds")
    }

    fn usd() -> Currency {
        Currency::parse("USD").expect("valid")
    }

    /// Drafted, one line of 2 × 1 500.00, issued: total 3 000.00.
    fn issued() -> Vec<InvoiceEvent> {
        history(vec![draft(), add_line(1, 2, 150_000), issue()])
    }

    #[test]
    fn a_due_date_before_the_issue_date_is_refused() {
        let drafted = history(vec![draft(), add_line(1, 2, 150_000)]);
        let far_past = NaiveDate::from_ymd_opt(-5000, 1, 1).expect("date");
        TestFramework::<Invoice>::with(())
            .given(drafted)
            .when(InvoiceCommand::Issue {
                actor: accountant(),
                due_date: Some(far_past),
                now: now(),
            })
            .then_expect_error(InvoiceError::Validation(ValidationError::new(
                "due_date",
                "must not be before the issue date",
            )));
    }

    #[test]
    fn money_is_checked() {
        let a = kes_minor(1_050);
        assert_eq!(a.checked_add(kes_minor(50)), Ok(kes_minor(1_100)));
        assert_eq!(
            a.checked_add(Money::new(1, usd())),
            Err(MoneyError::CurrencyMismatch {
                left: kes(),
                right: usd()
            })
        );
        assert_eq!(
            kes_minor(i64::MAX).checked_add(kes_minor(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            kes_minor(i64::MIN).checked_sub(kes_minor(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            kes_minor(i64::MAX).checked_mul(2),
            Err(MoneyError::Overflow)
        );
        assert_eq!(kes_minor(1_000).basis_points(1_600), Ok(kes_minor(160)));
        assert_eq!(
            kes_minor(5).basis_points(1_000),
            Ok(kes_minor(1)),
            "0.5 rounds up"
        );
        assert_eq!(kes_minor(4).basis_points(1_000), Ok(kes_minor(0)));
        assert_eq!(kes_minor(-5).basis_points(1_000), Ok(kes_minor(-1)));
        assert_eq!(format!("{}", kes_minor(-1_050)), "-10.50 KES");
        let json = serde_json::to_value(kes_minor(1_050)).expect("json");
        assert_eq!(json, serde_json::json!({"minor": 1050, "currency": "KES"}));
    }

    #[test]
    fn invoice_numbers_are_prefix_and_sequence() {
        assert_eq!(number().as_str(), "INV-000042");
        assert_eq!(
            InvoiceNumber::parse("DMC24-0001234")
                .expect("valid")
                .as_str(),
            "DMC24-0001234"
        );
        for bad in [
            "",
            "INV",
            "INV-12",
            "inv-000042",
            "INV-000000",
            "INV-00004x",
        ] {
            assert!(InvoiceNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert!(InvoiceNumber::new(&InvoicePrefix::default(), 0).is_err());
    }

    #[test]
    fn totals_apply_discount_then_tax() {
        let lines = vec![InvoiceLine {
            line_id: Uuid::from_u128(1),
            code: text("X"),
            description: text("X"),
            quantity: 3,
            unit_price: kes_minor(1_000),
            amount: kes_minor(3_000),
        }];
        let t = InvoiceTotals::compute(
            kes(),
            &lines,
            Discount::Percent {
                basis_points: 1_000,
            },
            1_600,
        )
        .expect("computes");
        assert_eq!(t.subtotal, kes_minor(3_000));
        assert_eq!(t.discount, kes_minor(300));
        assert_eq!(t.tax, kes_minor(432));
        assert_eq!(t.total, kes_minor(3_132));
        let capped = InvoiceTotals::compute(kes(), &lines, Discount::Amount(kes_minor(9_999)), 0)
            .expect("computes");
        assert_eq!(capped.discount, kes_minor(3_000));
        assert_eq!(capped.total, kes_minor(0));
    }

    #[test]
    fn drafting_and_editing_an_invoice() {
        let drafted = run(vec![], draft());
        assert_eq!(
            drafted,
            vec![InvoiceEvent::InvoiceDrafted {
                invoice_id: INVOICE,
                number: number(),
                patient_id: Uuid::from_u128(0x9A7),
                appointment_id: None,
                currency: kes(),
                at: now(),
            }]
        );
        let added = run(drafted.clone(), add_line(1, 2, 150_000));
        let InvoiceEvent::InvoiceLineAdded { line, totals, .. } = &added[0] else {
            panic!("expected a line: {added:?}");
        };
        assert_eq!(line.amount, kes_minor(300_000));
        assert_eq!(totals.total, kes_minor(300_000));
        let with_line = [drafted.clone(), added].concat();
        TestFramework::<Invoice>::with(())
            .given(with_line.clone())
            .when(InvoiceCommand::RemoveLine {
                actor: accountant(),
                line_id: Uuid::from_u128(1),
                now: now(),
            })
            .then_expect_events(vec![InvoiceEvent::InvoiceLineRemoved {
                line_id: Uuid::from_u128(1),
                totals: InvoiceTotals::zero(kes()),
                at: now(),
            }]);
        let discounted = run(
            with_line.clone(),
            InvoiceCommand::SetDiscount {
                actor: accountant(),
                discount: Discount::Percent { basis_points: 500 },
                now: now(),
            },
        );
        let InvoiceEvent::DiscountSet { totals, .. } = &discounted[0] else {
            panic!("expected a discount");
        };
        assert_eq!(totals.total, kes_minor(285_000));
        let taxed = run(
            with_line,
            InvoiceCommand::SetTax {
                actor: accountant(),
                basis_points: 1_600,
                now: now(),
            },
        );
        let InvoiceEvent::TaxRateSet { totals, .. } = &taxed[0] else {
            panic!("expected tax");
        };
        assert_eq!(totals.total, kes_minor(348_000));
    }

    #[test]
    fn editing_refusals() {
        let drafted = history(vec![draft()]);
        expect_error(drafted.clone(), draft(), InvoiceError::AlreadyDrafted);
        expect_error(vec![], add_line(1, 1, 100), InvoiceError::NotFound);
        expect_error(
            history(vec![draft(), add_line(1, 1, 100)]),
            add_line(1, 1, 100),
            InvoiceError::DuplicateLine(Uuid::from_u128(1)),
        );
        expect_error(
            drafted.clone(),
            InvoiceCommand::RemoveLine {
                actor: accountant(),
                line_id: Uuid::from_u128(9),
                now: now(),
            },
            InvoiceError::LineNotFound(Uuid::from_u128(9)),
        );
        expect_error(
            drafted.clone(),
            add_line(1, 0, 100),
            ValidationError::new("quantity", "must be 1 to 100000").into(),
        );
        expect_error(
            drafted.clone(),
            add_line(1, 1, -100),
            ValidationError::new("unit_price", "must not be negative").into(),
        );
        expect_error(
            drafted.clone(),
            InvoiceCommand::AddLine {
                actor: accountant(),
                line_id: Uuid::from_u128(1),
                code: text("X"),
                description: text("X"),
                quantity: 1,
                unit_price: Money::new(100, usd()),
                now: now(),
            },
            MoneyError::CurrencyMismatch {
                left: kes(),
                right: usd(),
            }
            .into(),
        );
        expect_error(
            drafted.clone(),
            add_line(1, 2, i64::MAX),
            MoneyError::Overflow.into(),
        );
        expect_error(
            drafted.clone(),
            InvoiceCommand::SetDiscount {
                actor: accountant(),
                discount: Discount::Percent {
                    basis_points: 10_001,
                },
                now: now(),
            },
            ValidationError::new("discount", "must be at most 100 percent").into(),
        );
        expect_error(
            drafted.clone(),
            InvoiceCommand::SetDiscount {
                actor: accountant(),
                discount: Discount::Amount(kes_minor(-1)),
                now: now(),
            },
            ValidationError::new("discount", "must not be negative").into(),
        );
        expect_error(
            drafted.clone(),
            InvoiceCommand::SetTax {
                actor: accountant(),
                basis_points: 20_000,
                now: now(),
            },
            ValidationError::new("tax", "must be at most 100 percent").into(),
        );
        expect_error(
            issued(),
            add_line(2, 1, 100),
            InvoiceError::NotDraft(InvoiceStatus::Issued),
        );
        expect_error(
            issued(),
            InvoiceCommand::SetTax {
                actor: accountant(),
                basis_points: 0,
                now: now(),
            },
            InvoiceError::NotDraft(InvoiceStatus::Issued),
        );
        expect_error(
            drafted,
            InvoiceCommand::SetTax {
                actor: Actor {
                    role: Role::Receptionist,
                    ..accountant()
                },
                basis_points: 0,
                now: now(),
            },
            PermissionDenied {
                role: Role::Receptionist,
                operation: Operation::EditInvoice,
            }
            .into(),
        );
    }

    #[test]
    fn issuing_freezes_the_totals() {
        let events = history(vec![draft(), add_line(1, 2, 150_000)]);
        let total = kes_minor(300_000);
        TestFramework::<Invoice>::with(())
            .given(events)
            .when(issue())
            .then_expect_events(vec![InvoiceEvent::InvoiceIssued {
                totals: InvoiceTotals {
                    subtotal: total,
                    discount: kes_minor(0),
                    tax: kes_minor(0),
                    total,
                },
                balance: total,
                due_date: None,
                status: InvoiceStatus::Issued,
                at: now(),
            }]);
        expect_error(history(vec![draft()]), issue(), InvoiceError::NoLines);
        expect_error(
            history(vec![draft(), add_line(1, 1, 0)]),
            issue(),
            InvoiceError::NothingToBill,
        );
        expect_error(
            issued(),
            issue(),
            InvoiceError::NotDraft(InvoiceStatus::Issued),
        );
    }

    #[test]
    fn payments_move_the_balance_and_the_status() {
        TestFramework::<Invoice>::with(())
            .given(issued())
            .when(pay(10, 100_000))
            .then_expect_events(vec![InvoiceEvent::PaymentRecorded {
                payment_id: Uuid::from_u128(10),
                amount: kes_minor(100_000),
                method: PaymentMethod::Cash,
                reference: None,
                paid_total: kes_minor(100_000),
                balance: kes_minor(200_000),
                status: InvoiceStatus::PartiallyPaid,
                at: now(),
            }]);
        let partly = [issued(), history_after(&issued(), vec![pay(10, 100_000)])].concat();
        TestFramework::<Invoice>::with(())
            .given(partly.clone())
            .when(pay(11, 200_000))
            .then_expect_events(vec![InvoiceEvent::PaymentRecorded {
                payment_id: Uuid::from_u128(11),
                amount: kes_minor(200_000),
                method: PaymentMethod::Cash,
                reference: None,
                paid_total: kes_minor(300_000),
                balance: kes_minor(0),
                status: InvoiceStatus::Paid,
                at: now(),
            }]);
        expect_error(
            partly.clone(),
            pay(11, 200_001),
            InvoiceError::Overpayment {
                amount: kes_minor(200_001),
                balance: kes_minor(200_000),
            },
        );
        expect_error(
            partly.clone(),
            pay(10, 1),
            InvoiceError::DuplicatePayment(Uuid::from_u128(10)),
        );
        expect_error(partly, pay(12, 0), InvoiceError::NonPositiveAmount);
        expect_error(
            history(vec![draft(), add_line(1, 1, 100)]),
            pay(10, 100),
            InvoiceError::NotPayable(InvoiceStatus::Draft),
        );
        let paid = [issued(), history_after(&issued(), vec![pay(10, 300_000)])].concat();
        expect_error(
            paid,
            pay(11, 1),
            InvoiceError::NotPayable(InvoiceStatus::Paid),
        );
        expect_error(
            issued(),
            InvoiceCommand::RecordPayment {
                actor: accountant(),
                payment_id: Uuid::from_u128(10),
                amount: Money::new(100, usd()),
                method: PaymentMethod::Card,
                reference: None,
                now: now(),
            },
            MoneyError::CurrencyMismatch {
                left: kes(),
                right: usd(),
            }
            .into(),
        );
    }

    /// The events of running `commands` after `given`.
    fn history_after(given: &[InvoiceEvent], commands: Vec<InvoiceCommand>) -> Vec<InvoiceEvent> {
        let mut inv = Invoice::default();
        for e in given {
            inv.apply(e.clone());
        }
        let mut out = Vec::new();
        for cmd in commands {
            for e in inv.decide(cmd).expect("command succeeds") {
                inv.apply(e.clone());
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn refunds_never_exceed_what_was_paid() {
        let paid = [issued(), history_after(&issued(), vec![pay(10, 300_000)])].concat();
        TestFramework::<Invoice>::with(())
            .given(paid.clone())
            .when(refund(20, 10, 50_000))
            .then_expect_events(vec![InvoiceEvent::PaymentRefunded {
                refund_id: Uuid::from_u128(20),
                payment_id: Uuid::from_u128(10),
                amount: kes_minor(50_000),
                reason: "Overcharged".into(),
                refunded_total: kes_minor(50_000),
                balance: kes_minor(50_000),
                status: InvoiceStatus::PartiallyPaid,
                at: now(),
            }]);
        let all_back = history_after(&paid, vec![refund(20, 10, 300_000)]);
        let InvoiceEvent::PaymentRefunded {
            status, balance, ..
        } = &all_back[0]
        else {
            panic!("expected a refund");
        };
        assert_eq!(*status, InvoiceStatus::Refunded);
        assert_eq!(*balance, kes_minor(300_000));
        expect_error(
            paid.clone(),
            refund(20, 10, 300_001),
            InvoiceError::RefundExceedsPayment {
                refundable: kes_minor(300_000),
            },
        );
        let part = [
            paid.clone(),
            history_after(&paid, vec![refund(20, 10, 100_000)]),
        ]
        .concat();
        expect_error(
            part.clone(),
            refund(21, 10, 200_001),
            InvoiceError::RefundExceedsPayment {
                refundable: kes_minor(200_000),
            },
        );
        expect_error(
            part,
            refund(20, 10, 1),
            InvoiceError::DuplicateRefund(Uuid::from_u128(20)),
        );
        expect_error(
            paid.clone(),
            refund(20, 99, 1),
            InvoiceError::PaymentNotFound(Uuid::from_u128(99)),
        );
        expect_error(paid, refund(20, 10, 0), InvoiceError::NonPositiveAmount);
    }

    #[test]
    fn only_an_invoice_without_payments_is_voided() {
        let void = || InvoiceCommand::VoidInvoice {
            actor: accountant(),
            reason: text("Wrong patient"),
            now: now(),
        };
        let voided = InvoiceEvent::InvoiceVoided {
            reason: "Wrong patient".into(),
            status: InvoiceStatus::Void,
            at: now(),
        };
        TestFramework::<Invoice>::with(())
            .given(history(vec![draft()]))
            .when(void())
            .then_expect_events(vec![voided.clone()]);
        TestFramework::<Invoice>::with(())
            .given(issued())
            .when(void())
            .then_expect_events(vec![voided.clone()]);
        let partly = [issued(), history_after(&issued(), vec![pay(10, 1)])].concat();
        expect_error(partly.clone(), void(), InvoiceError::HasPayments);
        let refunded = [
            partly.clone(),
            history_after(&partly, vec![refund(20, 10, 1)]),
        ]
        .concat();
        expect_error(refunded, void(), InvoiceError::HasPayments);
        let mut gone = history(vec![draft()]);
        gone.push(voided);
        expect_error(
            gone.clone(),
            void(),
            InvoiceError::NotVoidable(InvoiceStatus::Void),
        );
        expect_error(
            gone.clone(),
            pay(10, 1),
            InvoiceError::NotPayable(InvoiceStatus::Void),
        );
        expect_error(
            gone,
            add_line(5, 1, 1),
            InvoiceError::NotDraft(InvoiceStatus::Void),
        );
        expect_error(vec![], void(), InvoiceError::NotFound);
    }
}
