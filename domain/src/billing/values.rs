//! Value objects of the invoice aggregate: [`Money`], invoice numbers, lines, discounts,
//! totals, payments, and the payment method and invoice status.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MoneyError, FULL_BASIS_POINTS};
use crate::common::{BoundedText, Currency, ValidationError};
use crate::hospital::InvoicePrefix;

/// An amount of money in minor units (`minor: 1050, currency: USD` is $10.50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// Money as a till enters it: minor units, in the invoice's currency unless the till
/// names one, which must then be the invoice's. The invoice resolves it
/// ([`Amount::in_currency`]), so a payment needs no read of the invoice before its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub minor: i64,
    pub currency: Option<Currency>,
}

impl Amount {
    /// The amount as money of an invoice in `currency`; another currency named is refused.
    pub fn in_currency(self, currency: Currency) -> Result<Money, MoneyError> {
        match self.currency {
            Some(named) if named != currency => Err(MoneyError::CurrencyMismatch {
                left: currency,
                right: named,
            }),
            _ => Ok(Money::new(self.minor, currency)),
        }
    }
}

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Self {
            minor: money.minor,
            currency: Some(money.currency),
        }
    }
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

/// An invoice's discount rule. Kept and recorded with its fixed amount as `Money`; a
/// command carries the amount as entered (`Discount<Amount>`), which the invoice resolves
/// in its own currency ([`Discount::in_currency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discount<M = Money> {
    None,
    /// A share of the subtotal, in basis points (1 000 = 10 %).
    Percent {
        basis_points: u32,
    },
    /// A fixed amount, capped at the subtotal when totals are computed (lines may be
    /// removed after the discount was set).
    Amount(M),
}

impl Discount<Amount> {
    /// The rule as an invoice in `currency` keeps it; a fixed amount in another currency
    /// is refused.
    pub fn in_currency(self, currency: Currency) -> Result<Discount, MoneyError> {
        Ok(match self {
            Discount::None => Discount::None,
            Discount::Percent { basis_points } => Discount::Percent { basis_points },
            Discount::Amount(amount) => Discount::Amount(amount.in_currency(currency)?),
        })
    }
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
