//! The errors of billing: [`MoneyError`] for arithmetic on [`Money`], and the errors the
//! invoice aggregate refuses commands with.

use uuid::Uuid;

use super::{InvoiceStatus, Money};
use crate::common::{Currency, ValidationError};
use crate::permissions::PermissionDenied;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("the amount is too large")]
    Overflow,
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
