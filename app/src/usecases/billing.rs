//! Billing: invoices, their lines, discounts, tax, payments and refunds.
//!
//! Money is a whole number of the currency's minor unit (cents), next to the invoice's
//! `currency`; never a float. Amounts are limited to ±(2^53 − 1) ([`MAX_MINOR_UNITS`]),
//! the range a JavaScript client reads exactly.
//!
//! Reads come from the `invoices`, `invoice_lines` and `invoice_payments` read models,
//! through their projector's row types; every write is a command on the invoice's own
//! stream, and a use case that changes an invoice answers with the invoice as the read
//! model shows it afterwards.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use hms_domain::billing::{
    self as domain, Discount, InvoiceCommand, InvoiceNumber, InvoiceStatus, PaymentMethod,
};
use hms_domain::common::Currency;
use hms_domain::permissions::Operation;
use hms_projections::projectors::{InvoiceLineRow, InvoicePaymentRow, InvoiceRow};
use hms_projections::{fresh, log};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{optional_text, stored, stored_name, text};
use crate::error::{AppError, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, HospitalScope, MutationOptions};

/// The largest amount accepted: 2^53 − 1, exact in every JSON and JavaScript client.
pub const MAX_MINOR_UNITS: i64 = (1 << 53) - 1;
pub const MAX_REFERENCE_CHARS: usize = 200;
pub const MAX_REASON_CHARS: usize = 500;

/// The aggregate type of an invoice, as the audit trail names it.
pub const INVOICE_TYPE: &str = <domain::Invoice as cqrs_es::Aggregate>::TYPE;

// ---------------------------------------------------------------------------------------
// What billing shows

/// An invoice as the read model shows it. Amounts are in minor units of `currency`;
/// `balance = total − paid + refunded` once issued.
#[derive(Debug, Clone)]
pub struct InvoiceView {
    pub id: Uuid,
    /// The hospital's invoice number, e.g. `INV-000042`.
    pub number: String,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub status: InvoiceStatus,
    /// ISO 4217 code of every amount on the invoice.
    pub currency: String,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    /// What is still owed (the total while drafting; 0 once void).
    pub balance_minor: i64,
    pub discount: Discount,
    pub tax_basis_points: i32,
    pub due_date: Option<NaiveDate>,
    pub issued_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The invoice's version (its number of events), for `expected_version`.
    pub version: i64,
}

/// A payment taken, or money given back (the `kind` of an `invoice_payments` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentKind {
    Payment,
    Refund,
}

/// A payment or a refund, in the order they happened.
#[derive(Debug, Clone)]
pub struct InvoicePayment {
    pub id: Uuid,
    pub kind: PaymentKind,
    /// This entry's own id for a payment, the refunded payment's for a refund.
    pub payment_id: Uuid,
    /// How it was paid (payments only).
    pub method: Option<PaymentMethod>,
    pub amount_minor: i64,
    /// For a payment: how much of it was refunded so far.
    pub refunded_minor: Option<i64>,
    /// The payer's reference (payments only).
    pub reference: Option<String>,
    /// Why the money was given back (refunds only).
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl TryFrom<InvoiceRow> for InvoiceView {
    type Error = AppError;

    fn try_from(r: InvoiceRow) -> Result<Self> {
        let status: InvoiceStatus = stored(&r.status)?;
        let discount: Discount = serde_json::from_value(r.discount)
            .map_err(|e| AppError::internal(format!("stored discount: {e}")))?;
        // While drafting nothing can be paid, so the aggregate's balance is the total;
        // the read model only starts tracking the balance at issue.
        let balance_minor = if status == InvoiceStatus::Draft {
            r.total_minor
        } else {
            r.balance_minor
        };
        Ok(InvoiceView {
            id: r.id,
            number: r.number,
            patient_id: r.patient_id,
            appointment_id: r.appointment_id,
            status,
            currency: r.currency,
            subtotal_minor: r.subtotal_minor,
            discount_minor: r.discount_minor,
            tax_minor: r.tax_minor,
            total_minor: r.total_minor,
            paid_minor: r.paid_minor,
            refunded_minor: r.refunded_minor,
            balance_minor,
            discount,
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

/// The invoice as the read model shows it, or NOT_FOUND (also for another hospital's:
/// the pool is the caller's hospital's).
async fn invoice_or_not_found(auth: &Authorized<'_>, id: Uuid) -> Result<InvoiceView> {
    InvoiceRow::find(auth.pool(), id)
        .await?
        .map(InvoiceView::try_from)
        .transpose()?
        .ok_or(AppError::NotFound)
}

/// The invoice after this request wrote to it: the row this process's catch-up round
/// stored and handed over (`fresh`, docs/adr/0017), else the read model when it shows the
/// stream's version the request left (`written`; `None` when an earlier attempt of the
/// request wrote, then the stream's newest version), otherwise the same row folded from
/// the write side (the read side is behind or unavailable). A committed write is a
/// success either way.
async fn invoice_after_write(
    auth: &Authorized<'_>,
    id: Uuid,
    written: Option<u64>,
    fresh: Option<&fresh::Wanted>,
) -> Result<InvoiceView> {
    // The row as this process's round stored it, at the write's version or later.
    let handed = fresh.zip(written).and_then(|(fresh, version)| {
        fresh.take::<InvoiceRow>(i64::try_from(version).unwrap_or(i64::MAX))
    });
    if let Some(row) = handed {
        return InvoiceView::try_from(row);
    }
    /// The row, and the stream's version read with it (one round trip).
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        row: InvoiceRow,
        stream_version: i64,
    }
    let mut conn = auth.pool().acquire().await?;
    let found: std::result::Result<Option<(InvoiceRow, i64)>, sqlx::Error> = match written {
        // The version is known: the row alone answers (the stream's head is not looked up).
        Some(version) => InvoiceRow::find(&mut *conn, id)
            .await
            .map(|row| row.map(|row| (row, i64::try_from(version).unwrap_or(i64::MAX)))),
        None => sqlx::query_as::<_, Found>(&format!(
            "SELECT {}, (SELECT coalesce(max(e.sequence), 0) FROM public.events e \
                          WHERE e.aggregate_type = $2 AND e.aggregate_id = $3) AS stream_version \
               FROM invoices WHERE id = $1",
            InvoiceRow::COLUMNS
        ))
        .bind(id)
        .bind(INVOICE_TYPE)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map(|found| found.map(|f| (f.row, f.stream_version))),
    };
    match found {
        Ok(Some((row, version))) if row.version >= version => InvoiceView::try_from(row),
        Ok(_) => invoice_from_write_side(&mut conn, id).await,
        Err(error) => {
            tracing::warn!(
                %error,
                invoice = %id,
                "the invoices read model is unavailable; answering from the write side"
            );
            invoice_from_write_side(&mut conn, id).await
        }
    }
}

/// The invoice row folded from its stream, as the projector would write it; NOT_FOUND
/// for a stream that does not exist in this hospital.
async fn invoice_from_write_side(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<InvoiceView> {
    let events = log::read_stream(conn, INVOICE_TYPE, &id.to_string()).await?;
    InvoiceRow::fold_stream(&events)?
        .map(InvoiceView::try_from)
        .transpose()?
        .ok_or(AppError::NotFound)
}

// ---------------------------------------------------------------------------------------
// Queries

/// Filters of [`invoices`]; combined with AND.
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub patient_id: Option<Uuid>,
    pub status: Option<InvoiceStatus>,
    /// Only invoices that still take payments (ISSUED or PARTIALLY_PAID).
    pub outstanding_only: bool,
    /// Created at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Created before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// Invoices of this hospital, oldest first (by creation, then id).
pub async fn invoices(
    auth: &Authorized<'_>,
    filter: &InvoiceFilter,
    page: &PageRequest,
) -> Result<Page<InvoiceView>> {
    auth.require(Operation::ViewInvoices)?;
    let status = filter.status.as_ref().map(stored_name).transpose()?;
    let (after_at, after_id) = page.after_instant_and_id()?;
    // The outstanding statuses are those of the partial index `invoices_outstanding`.
    let sql = format!(
        "SELECT {} FROM invoices \
          WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid)) \
            AND ($3::uuid IS NULL OR patient_id = $3) \
            AND ($4::text IS NULL OR status = $4) \
            AND (NOT $5 OR status IN ('ISSUED', 'PARTIALLY_PAID')) \
            AND ($6::timestamptz IS NULL OR created_at >= $6) \
            AND ($7::timestamptz IS NULL OR created_at < $7) \
          ORDER BY created_at, id \
          LIMIT $8",
        InvoiceRow::COLUMNS
    );
    let rows: Vec<InvoiceRow> = sqlx::query_as(&sql)
        .bind(after_at)
        .bind(after_id)
        .bind(filter.patient_id)
        .bind(status)
        .bind(filter.outstanding_only)
        .bind(filter.from)
        .bind(filter.to)
        .bind(page.fetch_limit())
        .fetch_all(auth.pool())
        .await?;
    let invoices = rows
        .into_iter()
        .map(InvoiceView::try_from)
        .collect::<Result<Vec<_>>>()?;
    let found = page.page(invoices, |i| Keyset {
        key: i.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        id: i.id.to_string(),
    });
    // What a patient was billed for is theirs: the page's patients are recorded.
    let patients = found.items.iter().map(|(_, i)| i.patient_id);
    super::patients::record_patients_viewed(auth, patients, "invoices").await?;
    Ok(found)
}

/// One invoice, or NOT_FOUND.
pub async fn invoice(auth: &Authorized<'_>, id: Uuid) -> Result<InvoiceView> {
    auth.require(Operation::ViewInvoices)?;
    let invoice = invoice_or_not_found(auth, id).await?;
    super::patients::record_patients_viewed(auth, [invoice.patient_id], "invoice").await?;
    Ok(invoice)
}

/// The billed items of an invoice, in the order they were added. Read in the caller's
/// hospital without a permission check of its own: the invoice was read under one.
pub async fn invoice_lines(
    scope: &HospitalScope<'_>,
    invoice_id: Uuid,
) -> Result<Vec<InvoiceLineRow>> {
    Ok(InvoiceLineRow::of_invoice(scope.pool(), invoice_id).await?)
}

/// Payments and refunds of an invoice, oldest first, each payment with what was refunded
/// of it so far. Like [`invoice_lines`], read under the invoice's permission.
pub async fn invoice_payments(
    scope: &HospitalScope<'_>,
    invoice_id: Uuid,
) -> Result<Vec<InvoicePayment>> {
    let rows = InvoicePaymentRow::of_invoice(scope.pool(), invoice_id).await?;
    let entries = rows
        .iter()
        .map(|r| Ok((r, stored::<PaymentKind>(&r.kind)?)))
        .collect::<Result<Vec<_>>>()?;
    let refunded_of = |payment: Uuid| -> i64 {
        entries
            .iter()
            .filter(|(r, kind)| *kind == PaymentKind::Refund && r.payment_id == payment)
            .map(|(r, _)| r.amount_minor)
            .sum()
    };
    entries
        .iter()
        .map(|&(r, kind)| {
            Ok(InvoicePayment {
                id: r.id,
                kind,
                payment_id: r.payment_id,
                method: r.method.as_deref().map(stored).transpose()?,
                amount_minor: r.amount_minor,
                refunded_minor: (kind == PaymentKind::Payment).then(|| refunded_of(r.payment_id)),
                reference: r.reference.clone(),
                reason: r.reason.clone(),
                at: r.at,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Parsing input

fn parse_currency(raw: &str) -> Result<Currency> {
    Ok(Currency::parse(raw)?)
}

/// An amount as entered: within the limits, in the currency named if any (the invoice
/// refuses another than its own, docs/adr/0015).
fn amount(field: &'static str, minor: i64, currency: Option<&str>) -> Result<domain::Amount> {
    if !(-MAX_MINOR_UNITS..=MAX_MINOR_UNITS).contains(&minor) {
        return Err(AppError::validation(
            field,
            format!("must be between -{MAX_MINOR_UNITS} and {MAX_MINOR_UNITS} minor units"),
        ));
    }
    Ok(domain::Amount {
        minor,
        currency: currency.map(parse_currency).transpose()?,
    })
}

fn basis_points(field: &'static str, value: i32) -> Result<u32> {
    u32::try_from(value).map_err(|_| AppError::validation(field, "must not be negative"))
}

// ---------------------------------------------------------------------------------------
// Changing an invoice

/// Runs one command on existing invoice `id`: once per idempotency key, checked against
/// the expected version, and answers with the invoice as the read model now shows it.
async fn edit(
    auth: &Authorized<'_>,
    id: Uuid,
    options: &MutationOptions,
    input: &impl Serialize,
    command: InvoiceCommand,
) -> Result<InvoiceView> {
    auth.require(command.operation())?;
    // Said before the append: the round that applies it hands the row over (ADR 0017).
    let fresh = fresh::want(auth.pool(), "invoices", id);
    let mut written = None;
    let slot = &mut written;
    auth.idempotent(options, input, move || async move {
        *slot = auth
            .execute::<domain::Invoice>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, AppError>(id.to_string())
    })
    .await?;
    invoice_after_write(auth, id, written, Some(&fresh)).await
}

/// A new invoice, as entered. Its serialized form identifies a retry.
#[derive(Debug, Clone, Serialize)]
pub struct CreateInvoice {
    /// The patient billed (must be registered in this hospital).
    pub patient_id: Uuid,
    /// The visit billed, if any; it must be this patient's.
    pub appointment_id: Option<Uuid>,
    /// ISO 4217 code; defaults to the currency of the hospital profile.
    pub currency: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Opens a DRAFT invoice for a patient, numbered from the hospital's invoice prefix and
/// sequence. A merged patient is a CONFLICT (bill the surviving record); the visit, if
/// named, must be the patient's.
pub async fn create_invoice(auth: &Authorized<'_>, input: CreateInvoice) -> Result<InvoiceView> {
    auth.require(Operation::DraftInvoice)?;
    let options = &MutationOptions::new(None, input.idempotency_key.clone())?;
    let patient_id = input.patient_id;
    let appointment_id = input.appointment_id;
    // The patients read model keeps a status name and the survivor of a merge.
    let patient: Option<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT status, merged_into FROM patients WHERE id = $1")
            .bind(patient_id)
            .fetch_optional(auth.pool())
            .await?;
    match patient {
        None => return Err(AppError::NotFound),
        Some((status, survivor)) if status == "MERGED" => {
            let survivor = survivor.map(|s| s.to_string()).unwrap_or_default();
            return Err(AppError::Conflict(format!(
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
                .await?;
        match owner {
            None => return Err(AppError::NotFound),
            Some(owner) if owner != patient_id => {
                return Err(AppError::validation(
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
            return Err(AppError::validation(
                "currency",
                "the hospital profile names no currency; give one",
            ))
        }
    };
    let mut written = None;
    let slot = &mut written;
    let id = auth
        .idempotent_id(options, &input, move || async move {
            // Taken only when the command runs: a retry uses no number. A refused
            // command leaves a gap, never a duplicate.
            let sequence: i64 = sqlx::query_scalar("SELECT nextval('invoice_number_seq')")
                .fetch_one(auth.pool())
                .await?;
            let sequence = u64::try_from(sequence).map_err(AppError::internal)?;
            let number = InvoiceNumber::new(&auth.hospital.settings.invoice_prefix, sequence)?;
            let invoice_id = auth.new_id(options);
            let command = InvoiceCommand::DraftInvoice {
                actor: auth.actor(),
                invoice_id,
                number,
                patient_id,
                appointment_id,
                currency,
                now: auth.now,
            };
            *slot = auth
                .execute::<domain::Invoice>(&invoice_id.to_string(), command, Some(0))
                .await?;
            Ok::<_, AppError>(invoice_id)
        })
        .await?;
    invoice_after_write(auth, id, written, None).await
}

/// A line to add, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct AddInvoiceLine {
    pub invoice_id: Uuid,
    /// A tariff or service code (up to 32 characters).
    pub code: String,
    pub description: String,
    /// 1 to 100000.
    pub quantity: i32,
    /// The price of one unit, in minor units.
    pub unit_price_minor: i64,
    /// Must be the invoice's currency when given.
    pub currency: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Adds a line to a DRAFT invoice.
pub async fn add_invoice_line(auth: &Authorized<'_>, input: AddInvoiceLine) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let quantity = u32::try_from(input.quantity)
        .map_err(|_| AppError::validation("quantity", "must be 1 to 100000"))?;
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
        unit_price: amount(
            "unitPriceMinor",
            input.unit_price_minor,
            input.currency.as_deref(),
        )?,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// A line to remove.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveInvoiceLine {
    pub invoice_id: Uuid,
    pub line_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Removes a line from a DRAFT invoice.
pub async fn remove_invoice_line(
    auth: &Authorized<'_>,
    input: RemoveInvoiceLine,
) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::RemoveLine {
        actor: auth.actor(),
        line_id: input.line_id,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// A discount rule, as entered: one of a percentage or a fixed amount; neither removes
/// the discount.
#[derive(Debug, Clone, Serialize)]
pub struct SetInvoiceDiscount {
    pub invoice_id: Uuid,
    /// A share of the subtotal in basis points (0 to 10000; 1000 = 10 %).
    pub percent_basis_points: Option<i32>,
    /// A fixed amount in minor units, capped at the subtotal.
    pub fixed_amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Sets or removes the discount of a DRAFT invoice.
pub async fn set_invoice_discount(
    auth: &Authorized<'_>,
    input: SetInvoiceDiscount,
) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let discount = match (input.percent_basis_points, input.fixed_amount_minor) {
        (Some(_), Some(_)) => {
            return Err(AppError::validation(
                "discount",
                "give either percentBasisPoints or fixedAmountMinor, not both",
            ))
        }
        (Some(bp), None) => Discount::Percent {
            basis_points: basis_points("percentBasisPoints", bp)?,
        },
        (None, Some(minor)) => Discount::Amount(amount(
            "fixedAmountMinor",
            minor,
            input.currency.as_deref(),
        )?),
        (None, None) => Discount::None,
    };
    let command = InvoiceCommand::SetDiscount {
        actor: auth.actor(),
        discount,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// A tax rate, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct SetInvoiceTax {
    pub invoice_id: Uuid,
    /// Tax rate in basis points (0 to 10000; 1600 = 16 %).
    pub basis_points: i32,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Sets the tax rate of a DRAFT invoice.
pub async fn set_invoice_tax(auth: &Authorized<'_>, input: SetInvoiceTax) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::SetTax {
        actor: auth.actor(),
        basis_points: basis_points("basisPoints", input.basis_points)?,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// An invoice to issue.
#[derive(Debug, Clone, Serialize)]
pub struct IssueInvoice {
    pub invoice_id: Uuid,
    pub due_date: Option<NaiveDate>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Issues a DRAFT invoice: its totals are frozen and it takes payments.
pub async fn issue_invoice(auth: &Authorized<'_>, input: IssueInvoice) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::Issue {
        actor: auth.actor(),
        due_date: input.due_date,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// A payment taken, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct RecordPayment {
    pub invoice_id: Uuid,
    /// More than zero and at most the balance (partial payments are fine).
    pub amount_minor: i64,
    pub currency: Option<String>,
    pub method: PaymentMethod,
    /// Receipt, card slip or transfer reference.
    pub reference: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Records a payment on an issued invoice: partial payments are fine, more than the
/// balance is refused.
pub async fn record_payment(auth: &Authorized<'_>, input: RecordPayment) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::RecordPayment {
        actor: auth.actor(),
        payment_id: auth.new_id(&options),
        amount: amount("amountMinor", input.amount_minor, input.currency.as_deref())?,
        method: input.method,
        reference: optional_text("reference", input.reference.as_deref(), MAX_REFERENCE_CHARS)?,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// Money given back, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct RefundPayment {
    pub invoice_id: Uuid,
    /// The payment refunded.
    pub payment_id: Uuid,
    /// More than zero and at most what is left of that payment.
    pub amount_minor: i64,
    pub currency: Option<String>,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Gives back part or all of a payment; never more than was paid.
pub async fn refund_payment(auth: &Authorized<'_>, input: RefundPayment) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::RefundPayment {
        actor: auth.actor(),
        refund_id: auth.new_id(&options),
        payment_id: input.payment_id,
        amount: amount("amountMinor", input.amount_minor, input.currency.as_deref())?,
        reason: text("reason", &input.reason, MAX_REASON_CHARS)?,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}

/// An invoice to void, and why.
#[derive(Debug, Clone, Serialize)]
pub struct VoidInvoice {
    pub invoice_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Voids an invoice that has taken no payments.
pub async fn void_invoice(auth: &Authorized<'_>, input: VoidInvoice) -> Result<InvoiceView> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = InvoiceCommand::VoidInvoice {
        actor: auth.actor(),
        reason: text("reason", &input.reason, MAX_REASON_CHARS)?,
        now: auth.now,
    };
    edit(auth, input.invoice_id, &options, &input, command).await
}
