//! Billing over GraphQL: invoices, their lines, discounts, tax, payments and refunds.
//! The rules and the reads live in [`hms_app::usecases::billing`]; here inputs are
//! parsed and results shaped.
//!
//! Money crosses the API as integer minor units (cents) in the [`MinorUnits`] scalar,
//! next to the invoice's `currency`; never as a float. GraphQL's `Int` is 32-bit
//! (±21 million major units of a currency with cents, far less for currencies such as
//! UGX), so amounts use their own scalar: a JSON integer limited to ±(2^53 − 1), the
//! range a JavaScript client reads exactly.
//!
//! Every mutation returns the invoice as the read model shows it afterwards.
//!
//! - [`types`]: the GraphQL types and inputs, and their conversions.
//! - [`query`]: `invoices`, `invoice`, and the invoice's lines, payments and history.
//! - [`mutation`]: drafting, editing, issuing, payments, refunds and voiding.

mod mutation;
mod query;
mod types;

pub use mutation::BillingMutation;
pub use query::BillingQuery;
pub use types::{
    AddInvoiceLineInput, CreateInvoiceInput, DiscountRule, InvoiceFilter, InvoiceLine,
    InvoicePayment, InvoiceStatus, InvoiceView, IssueInvoiceInput, MinorUnits, PaymentKind,
    PaymentMethod, RecordPaymentInput, RefundPaymentInput, RemoveInvoiceLineInput,
    SetInvoiceDiscountInput, SetInvoiceTaxInput, VoidInvoiceInput,
};
