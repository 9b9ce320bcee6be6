//! Billing: invoices, their lines, discounts, tax, payments and refunds.
//!
//! Money crosses the API as integer minor units (cents) in the [`MinorUnits`] scalar,
//! next to the invoice's `currency`; never as a float. GraphQL's `Int` is 32-bit
//! (±21 million major units of a currency with cents, far less for currencies such as
//! UGX), so amounts use their own scalar: a JSON integer limited to ±(2^53 − 1), the
//! range a JavaScript client reads exactly.
//!
//! Reads come from the `invoices`, `invoice_lines` and `invoice_payments` read models;
//! every write is a command on the invoice's own stream, and the mutation returns the
//! invoice as the read model shows it afterwards.

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, InputValueError, InputValueResult, Object, Scalar,
    ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use hms_domain::billing::{self as domain, InvoiceCommand, InvoiceNumber};
use hms_domain::common::{BoundedText, Currency};
use hms_domain::permissions::Operation;
use hms_projections::projectors::{InvoiceLineRow, InvoicePaymentRow, InvoiceRow};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequestExt};
use super::session::{authorize, hospital_scope, Authorized, MutationOptions};
use super::types::check_instant;

/// The largest amount accepted: 2^53 − 1, exact in every JSON and JavaScript client.
pub const MAX_MINOR_UNITS: i64 = (1 << 53) - 1;
pub const MAX_REFERENCE_CHARS: usize = 200;
pub const MAX_REASON_CHARS: usize = 500;

/// An amount in minor units (see the scalar's description below, which is the SDL's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
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
        // The range is checked by the resolvers, which name the field in the error.
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize)]
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
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum PaymentKind {
    Payment,
    Refund,
}

/// Reads a status or method stored in a read model by its serde name.
fn from_stored<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| ApiError::internal(format!("unknown stored value {raw:?}: {e}")))
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

#[ComplexObject]
impl InvoiceView {
    /// The billed items, in the order they were added.
    async fn lines(&self, ctx: &Context<'_>) -> Result<Vec<InvoiceLine>> {
        let scope = hospital_scope(ctx).await?;
        let rows: Vec<InvoiceLineRow> = sqlx::query_as(
            "SELECT line_id, invoice_id, code, description, quantity, unit_price_minor, amount_minor, added_at \
               FROM invoice_lines WHERE invoice_id = $1 ORDER BY added_at, line_id",
        )
        .bind(self.id)
        .fetch_all(scope.pool())
        .await
        .map_err(ApiError::internal)?;
        Ok(rows
            .into_iter()
            .map(|r| InvoiceLine {
                id: r.line_id,
                code: r.code,
                description: r.description,
                quantity: r.quantity,
                unit_price_minor: MinorUnits(r.unit_price_minor),
                amount_minor: MinorUnits(r.amount_minor),
                added_at: r.added_at,
            })
            .collect())
    }

    /// Payments and refunds, oldest first.
    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<InvoicePayment>> {
        let scope = hospital_scope(ctx).await?;
        let rows: Vec<InvoicePaymentRow> = sqlx::query_as(
            "SELECT id, invoice_id, kind, payment_id, method, amount_minor, reference, reason, at \
               FROM invoice_payments WHERE invoice_id = $1 ORDER BY at, id",
        )
        .bind(self.id)
        .fetch_all(scope.pool())
        .await
        .map_err(ApiError::internal)?;
        let refunded_of = |payment: Uuid| -> i64 {
            rows.iter()
                .filter(|r| r.kind == "REFUND" && r.payment_id == payment)
                .map(|r| r.amount_minor)
                .sum()
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let is_payment = r.kind == "PAYMENT";
            out.push(InvoicePayment {
                id: r.id,
                kind: if is_payment {
                    PaymentKind::Payment
                } else {
                    PaymentKind::Refund
                },
                payment_id: r.payment_id,
                method: r
                    .method
                    .as_deref()
                    .map(from_stored::<domain::PaymentMethod>)
                    .transpose()?
                    .map(Into::into),
                amount_minor: MinorUnits(r.amount_minor),
                refunded_minor: is_payment.then(|| MinorUnits(refunded_of(r.payment_id))),
                reference: r.reference.clone(),
                reason: r.reason.clone(),
                at: r.at,
            });
        }
        Ok(out)
    }

    /// Every change to this invoice, oldest first (needs the audit permission).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        let id = self.id.to_string();
        audit::history(auth.pool(), INVOICE_TYPE, &id, first, after).await
    }
}

const INVOICE_TYPE: &str = <domain::Invoice as cqrs_es::Aggregate>::TYPE;

/// The columns of [`InvoiceView`].
const INVOICE_COLUMNS: &str = "i.id, i.number, i.patient_id, i.appointment_id, i.currency, i.status, \
     i.subtotal_minor, i.discount_minor, i.tax_minor, i.total_minor, i.paid_minor, i.refunded_minor, \
     i.balance_minor, i.discount, i.tax_basis_points, i.due_date, i.issued_at, i.voided_at, i.void_reason, \
     i.created_at, i.updated_at, i.version";

impl TryFrom<InvoiceRow> for InvoiceView {
    type Error = ApiError;

    fn try_from(r: InvoiceRow) -> Result<Self, ApiError> {
        let status: domain::InvoiceStatus = from_stored(&r.status)?;
        let discount: domain::Discount = serde_json::from_value(r.discount)
            .map_err(|e| ApiError::internal(format!("stored discount: {e}")))?;
        let discount_rule = match discount {
            domain::Discount::None => None,
            domain::Discount::Percent { basis_points } => Some(DiscountRule {
                percent_basis_points: Some(i32::try_from(basis_points).unwrap_or(i32::MAX)),
                fixed_amount_minor: None,
            }),
            domain::Discount::Amount(m) => Some(DiscountRule {
                percent_basis_points: None,
                fixed_amount_minor: Some(MinorUnits(m.minor())),
            }),
        };
        // While drafting nothing can be paid, so the aggregate's balance is the total;
        // the read model only starts tracking the balance at issue.
        let balance = if status == domain::InvoiceStatus::Draft {
            r.total_minor
        } else {
            r.balance_minor
        };
        Ok(InvoiceView {
            id: r.id,
            number: r.number,
            patient_id: r.patient_id,
            appointment_id: r.appointment_id,
            status: status.into(),
            currency: r.currency,
            subtotal_minor: MinorUnits(r.subtotal_minor),
            discount_minor: MinorUnits(r.discount_minor),
            tax_minor: MinorUnits(r.tax_minor),
            total_minor: MinorUnits(r.total_minor),
            paid_minor: MinorUnits(r.paid_minor),
            refunded_minor: MinorUnits(r.refunded_minor),
            balance_minor: MinorUnits(balance),
            discount_rule,
            tax_basis_points: r.tax_basis_points,
            due_date: r.due_date,
            issued_at: r.issued_at,
            voided_at: r.voided_at,
            void_reason: r.void_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

/// The invoice as the read model shows it, if it exists in this hospital.
async fn find_invoice(pool: &PgPool, id: Uuid) -> Result<Option<InvoiceView>, ApiError> {
    let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoices i WHERE i.id = $1");
    let row: Option<InvoiceRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ApiError::internal)?;
    row.map(InvoiceView::try_from).transpose()
}

async fn invoice_or_not_found(pool: &PgPool, id: Uuid) -> Result<InvoiceView, ApiError> {
    find_invoice(pool, id).await?.ok_or(ApiError::NotFound)
}

fn parse_currency(raw: &str) -> Result<Currency, ApiError> {
    Ok(Currency::parse(raw)?)
}

/// An amount in the invoice's currency; `currency`, when given, must be the invoice's.
fn money(
    field: &'static str,
    invoice: &InvoiceView,
    minor: MinorUnits,
    currency: Option<&str>,
) -> Result<domain::Money, ApiError> {
    if !(-MAX_MINOR_UNITS..=MAX_MINOR_UNITS).contains(&minor.0) {
        return Err(ApiError::validation(
            field,
            format!("must be between -{MAX_MINOR_UNITS} and {MAX_MINOR_UNITS} minor units"),
        ));
    }
    let currency = parse_currency(currency.unwrap_or(&invoice.currency))?;
    Ok(domain::Money::new(minor.0, currency))
}

fn basis_points(field: &'static str, value: i32) -> Result<u32, ApiError> {
    u32::try_from(value).map_err(|_| ApiError::validation(field, "must not be negative"))
}

/// Required text; a ValidationError must become an ApiError (never `?` it into
/// `async_graphql::Error` directly, which would drop the code).
fn text(field: &'static str, raw: &str, max: usize) -> Result<BoundedText, ApiError> {
    Ok(BoundedText::parse(field, raw, max)?)
}

fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<BoundedText>, ApiError> {
    match raw {
        Some(s) if !s.trim().is_empty() => Ok(Some(BoundedText::parse(field, s, max)?)),
        _ => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

#[derive(InputObject, Serialize)]
pub struct CreateInvoiceInput {
    /// The patient billed (must be registered in this hospital).
    pub patient_id: Uuid,
    /// The visit billed, if any; it must be this patient's.
    pub appointment_id: Option<Uuid>,
    /// ISO 4217 code; defaults to the currency of the hospital profile.
    pub currency: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
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

#[derive(InputObject, Serialize)]
pub struct RemoveInvoiceLineInput {
    pub invoice_id: Uuid,
    pub line_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Give one of `percentBasisPoints` or `fixedAmountMinor`; neither removes the discount.
#[derive(InputObject, Serialize)]
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

#[derive(InputObject, Serialize)]
pub struct SetInvoiceTaxInput {
    pub invoice_id: Uuid,
    /// Tax rate in basis points (0 to 10000; 1600 = 16 %).
    pub basis_points: i32,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct IssueInvoiceInput {
    pub invoice_id: Uuid,
    pub due_date: Option<NaiveDate>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
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

#[derive(InputObject, Serialize)]
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

#[derive(InputObject, Serialize)]
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

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Default)]
pub struct BillingQuery;

#[Object]
impl BillingQuery {
    /// Invoices of this hospital, oldest first.
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        filter: Option<InvoiceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<InvoiceView>> {
        let auth = authorize(ctx, Operation::ViewInvoices).await?;
        let page = page_request(first, after)?;
        let filter = filter.unwrap_or_default();
        let patient_id = filter.patient_id;
        let status = filter.status.map(|s| status_name(s.into()));
        let (after_at, after_id) = match &page.after {
            Some(k) => {
                let at = DateTime::parse_from_rfc3339(&k.key)
                    .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))?
                    .with_timezone(&Utc);
                let id = Uuid::parse_str(&k.id)
                    .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))?;
                (Some(at), Some(id))
            }
            None => (None, None),
        };
        let sql = format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices i \
              WHERE ($1::timestamptz IS NULL OR (i.created_at, i.id) > ($1, $2::uuid)) \
                AND ($3::uuid IS NULL OR i.patient_id = $3) \
                AND ($4::text IS NULL OR i.status = $4) \
                AND (NOT $5 OR i.status IN ('ISSUED', 'PARTIALLY_PAID')) \
                AND ($6::timestamptz IS NULL OR i.created_at >= $6) \
                AND ($7::timestamptz IS NULL OR i.created_at < $7) \
              ORDER BY i.created_at, i.id \
              LIMIT $8"
        );
        let rows: Vec<InvoiceRow> = sqlx::query_as(&sql)
            .bind(after_at)
            .bind(after_id)
            .bind(patient_id)
            .bind(status)
            .bind(filter.outstanding_only.unwrap_or(false))
            .bind(filter.from.map(|v| check_instant("from", v)).transpose()?)
            .bind(filter.to.map(|v| check_instant("to", v)).transpose()?)
            .bind(page.fetch_limit())
            .fetch_all(auth.pool())
            .await
            .map_err(ApiError::internal)?;
        let invoices = rows
            .into_iter()
            .map(InvoiceView::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.connection(invoices, |i| Keyset {
            key: i.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            id: i.id.to_string(),
        }))
    }

    /// One invoice with its lines and payments.
    async fn invoice(&self, ctx: &Context<'_>, id: Uuid) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::ViewInvoices).await?;
        invoice_or_not_found(auth.pool(), id).await
    }
}

pub(crate) fn status_name(status: domain::InvoiceStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Mutations

#[derive(Default)]
pub struct BillingMutation;

/// Runs one command on an existing invoice: once per idempotency key, checked against
/// `expectedVersion`, and answers with the invoice as the read model now shows it.
async fn edit(
    auth: &Authorized<'_>,
    invoice: &InvoiceView,
    options: &MutationOptions,
    input: &impl Serialize,
    command: InvoiceCommand,
) -> Result<InvoiceView> {
    let id = invoice.id;
    auth.idempotent(options, input, || async {
        auth.execute::<domain::Invoice>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, ApiError>(id.to_string())
    })
    .await?;
    invoice_or_not_found(auth.pool(), id).await
}

/// Authorizes `operation` and finds the invoice the input names.
async fn prepare<'a>(
    ctx: &Context<'a>,
    operation: Operation,
    invoice_id: Uuid,
    expected_version: Option<i64>,
    idempotency_key: Option<String>,
) -> Result<(Authorized<'a>, InvoiceView, MutationOptions), ApiError> {
    let auth = authorize(ctx, operation).await?;
    let options = MutationOptions::new(expected_version, idempotency_key)?;
    let invoice = invoice_or_not_found(auth.pool(), invoice_id).await?;
    Ok((auth, invoice, options))
}

#[Object]
impl BillingMutation {
    /// Opens a DRAFT invoice for a patient, numbered from the hospital's invoice prefix
    /// and sequence.
    async fn create_invoice(
        &self,
        ctx: &Context<'_>,
        input: CreateInvoiceInput,
    ) -> Result<InvoiceView> {
        let auth = authorize(ctx, Operation::DraftInvoice).await?;
        let options = MutationOptions::new(None, input.idempotency_key.clone())?;
        let patient_id = input.patient_id;
        let appointment_id = input.appointment_id;
        let patient: Option<(String, Option<Uuid>)> =
            sqlx::query_as("SELECT status, merged_into FROM patients WHERE id = $1")
                .bind(patient_id)
                .fetch_optional(auth.pool())
                .await
                .map_err(ApiError::internal)?;
        match patient {
            None => return Err(ApiError::NotFound),
            Some((status, survivor)) if status == "MERGED" => {
                let survivor = survivor.map(|s| s.to_string()).unwrap_or_default();
                return Err(ApiError::Conflict(format!(
                    "the patient was merged into {survivor}; bill that record"
                )));
            }
            Some(_) => {}
        }
        if let Some(appointment_id) = appointment_id {
            let owner: Option<Uuid> =
                sqlx::query_scalar("SELECT patient_id FROM appointments WHERE id = $1")
                    .bind(appointment_id)
                    .fetch_optional(auth.pool())
                    .await
                    .map_err(ApiError::internal)?;
            match owner {
                None => return Err(ApiError::NotFound),
                Some(owner) if owner != patient_id => {
                    return Err(ApiError::validation(
                        "appointmentId",
                        "is an appointment of another patient",
                    ))
                }
                Some(_) => {}
            }
        }
        let currency = match (&input.currency, &auth.hospital.profile) {
            (Some(raw), _) => parse_currency(raw)?,
            (None, Some(profile)) => profile.currency,
            (None, None) => {
                return Err(ApiError::validation(
                    "currency",
                    "the hospital profile names no currency; give one",
                ))
            }
        };
        let id = auth
            .idempotent_id(&options, &input, || async {
                // Taken only when the command runs: a retry uses no number. A refused
                // command leaves a gap, never a duplicate.
                let sequence: i64 = sqlx::query_scalar("SELECT nextval('invoice_number_seq')")
                    .fetch_one(auth.pool())
                    .await
                    .map_err(ApiError::internal)?;
                let sequence = u64::try_from(sequence).map_err(ApiError::internal)?;
                let number = InvoiceNumber::new(&auth.hospital.settings.invoice_prefix, sequence)?;
                let invoice_id = auth.new_id(&options);
                let command = InvoiceCommand::DraftInvoice {
                    actor: auth.actor(),
                    invoice_id,
                    number,
                    patient_id,
                    appointment_id,
                    currency,
                    now: auth.now,
                };
                auth.execute::<domain::Invoice>(&invoice_id.to_string(), command, Some(0))
                    .await?;
                Ok::<_, ApiError>(invoice_id)
            })
            .await?;
        invoice_or_not_found(auth.pool(), id).await
    }

    /// Adds a line to a DRAFT invoice.
    async fn add_invoice_line(
        &self,
        ctx: &Context<'_>,
        input: AddInvoiceLineInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::EditInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let quantity = u32::try_from(input.quantity)
            .map_err(|_| ApiError::validation("quantity", "must be 1 to 100000"))?;
        let command = InvoiceCommand::AddLine {
            actor: auth.actor(),
            line_id: auth.new_id(&options),
            code: text("code", &input.code, domain::MAX_LINE_CODE_CHARS)?,
            description: text(
                "description",
                &input.description,
                domain::MAX_LINE_DESCRIPTION_CHARS,
            )?,
            quantity,
            unit_price: money(
                "unitPriceMinor",
                &invoice,
                input.unit_price_minor,
                input.currency.as_deref(),
            )?,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Removes a line from a DRAFT invoice.
    async fn remove_invoice_line(
        &self,
        ctx: &Context<'_>,
        input: RemoveInvoiceLineInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::EditInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::RemoveLine {
            actor: auth.actor(),
            line_id: input.line_id,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Sets or removes the discount of a DRAFT invoice.
    async fn set_invoice_discount(
        &self,
        ctx: &Context<'_>,
        input: SetInvoiceDiscountInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::EditInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let discount = match (input.percent_basis_points, input.fixed_amount_minor) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "discount",
                    "give either percentBasisPoints or fixedAmountMinor, not both",
                ))
            }
            (Some(bp), None) => domain::Discount::Percent {
                basis_points: basis_points("percentBasisPoints", bp)?,
            },
            (None, Some(amount)) => domain::Discount::Amount(money(
                "fixedAmountMinor",
                &invoice,
                amount,
                input.currency.as_deref(),
            )?),
            (None, None) => domain::Discount::None,
        };
        let command = InvoiceCommand::SetDiscount {
            actor: auth.actor(),
            discount,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Sets the tax rate of a DRAFT invoice.
    async fn set_invoice_tax(
        &self,
        ctx: &Context<'_>,
        input: SetInvoiceTaxInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::EditInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::SetTax {
            actor: auth.actor(),
            basis_points: basis_points("basisPoints", input.basis_points)?,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Issues a DRAFT invoice: its totals are frozen and it takes payments.
    async fn issue_invoice(
        &self,
        ctx: &Context<'_>,
        input: IssueInvoiceInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::IssueInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::Issue {
            actor: auth.actor(),
            due_date: input.due_date,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Records a payment on an issued invoice: partial payments are fine, more than the
    /// balance is refused.
    async fn record_payment(
        &self,
        ctx: &Context<'_>,
        input: RecordPaymentInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::RecordPayment,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::RecordPayment {
            actor: auth.actor(),
            payment_id: auth.new_id(&options),
            amount: money(
                "amountMinor",
                &invoice,
                input.amount_minor,
                input.currency.as_deref(),
            )?,
            method: input.method.into(),
            reference: optional_text("reference", input.reference.as_deref(), MAX_REFERENCE_CHARS)?,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Gives back part or all of a payment; never more than was paid.
    async fn refund_payment(
        &self,
        ctx: &Context<'_>,
        input: RefundPaymentInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::RefundPayment,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::RefundPayment {
            actor: auth.actor(),
            refund_id: auth.new_id(&options),
            payment_id: input.payment_id,
            amount: money(
                "amountMinor",
                &invoice,
                input.amount_minor,
                input.currency.as_deref(),
            )?,
            reason: text("reason", &input.reason, MAX_REASON_CHARS)?,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }

    /// Voids an invoice that has taken no payments.
    async fn void_invoice(
        &self,
        ctx: &Context<'_>,
        input: VoidInvoiceInput,
    ) -> Result<InvoiceView> {
        let (auth, invoice, options) = prepare(
            ctx,
            Operation::VoidInvoice,
            input.invoice_id,
            input.expected_version,
            input.idempotency_key.clone(),
        )
        .await?;
        let command = InvoiceCommand::VoidInvoice {
            actor: auth.actor(),
            reason: text("reason", &input.reason, MAX_REASON_CHARS)?,
            now: auth.now,
        };
        edit(&auth, &invoice, &options, &input, command).await
    }
}
