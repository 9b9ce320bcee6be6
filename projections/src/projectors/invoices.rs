//! `invoices`, `invoice_lines`, `invoice_payments`: by patient, status, outstanding
//! balance and age. Totals, balances and statuses are taken from the events, never
//! recomputed here.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use hms_domain::billing::{Invoice, InvoiceEvent, InvoiceTotals};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::StreamRow;
use super::{decode_batch, enum_name, json};
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct InvoiceProjector;

/// A row of `invoices` (field names are column names), as written here and read by the
/// API. Money in integer minor units of `currency`, as the events carry it.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvoiceRow {
    pub id: Uuid,
    pub number: String,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub currency: String,
    pub status: String,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    pub balance_minor: i64,
    pub discount: Value,
    pub tax_basis_points: i32,
    pub due_date: Option<NaiveDate>,
    pub issued_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    pub version: i64,
}

super::stream_row!(InvoiceRow);

impl InvoiceRow {
    /// The columns of a row, for the read side's SELECTs (`SELECT {COLUMNS} FROM invoices`).
    pub const COLUMNS: &'static str = "id, number, patient_id, appointment_id, currency, status, \
         subtotal_minor, discount_minor, tax_minor, total_minor, paid_minor, refunded_minor, \
         balance_minor, discount, tax_basis_points, due_date, issued_at, voided_at, void_reason, \
         created_at, updated_at, version";

    /// The invoice `id`, if the read model has it.
    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM invoices WHERE id = $1",
            Self::COLUMNS
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// The row this projector makes of one invoice's whole stream (`events`, in sequence
    /// order), folded in memory: the write side's view of the record, for an answer
    /// while the read model is behind or unavailable. `None` for an empty stream.
    pub fn fold_stream(events: &[StoredEvent]) -> Result<Option<Self>> {
        let mut changes = Changes {
            invoices: RowSet::new("invoices", "id"),
            lines: RowSet::new("invoice_lines", "line_id"),
            payments: RowSet::new("invoice_payments", "id"),
        };
        let mut last = None;
        for (id, stored, event) in decode_batch::<Invoice>("invoices", events)? {
            fold(&mut changes, id, event);
            if let Some(invoice) = changes.invoices.get_mut(&id) {
                invoice.set_version(stored.sequence);
            }
            last = Some(id);
        }
        Ok(last.and_then(|id| changes.invoices.take(&id)))
    }

    /// The totals an event carries; a draft's balance is its total.
    fn set_totals(&mut self, totals: &InvoiceTotals, at: DateTime<Utc>) {
        self.subtotal_minor = totals.subtotal.minor();
        self.discount_minor = totals.discount.minor();
        self.tax_minor = totals.tax.minor();
        self.total_minor = totals.total.minor();
        if self.status == "DRAFT" {
            self.balance_minor = self.total_minor;
        }
        self.updated_at = at;
    }
}

/// A row of `invoice_lines`.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvoiceLineRow {
    pub line_id: Uuid,
    pub invoice_id: Uuid,
    pub code: String,
    pub description: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub amount_minor: i64,
    pub added_at: DateTime<Utc>,
}

impl InvoiceLineRow {
    /// The lines of an invoice, in the order they were added.
    pub async fn of_invoice(db: impl PgExecutor<'_>, invoice_id: Uuid) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(
            "SELECT line_id, invoice_id, code, description, quantity, unit_price_minor, amount_minor, added_at \
               FROM invoice_lines WHERE invoice_id = $1 ORDER BY added_at, line_id",
        )
        .bind(invoice_id)
        .fetch_all(db)
        .await
    }
}

/// A row of `invoice_payments`: a payment, or a refund naming the payment it refunds.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvoicePaymentRow {
    pub id: Uuid,
    pub invoice_id: Uuid,
    pub kind: String,
    pub payment_id: Uuid,
    pub method: Option<String>,
    pub amount_minor: i64,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl InvoicePaymentRow {
    /// The payments and refunds of an invoice, oldest first.
    pub async fn of_invoice(db: impl PgExecutor<'_>, invoice_id: Uuid) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(
            "SELECT id, invoice_id, kind, payment_id, method, amount_minor, reference, reason, at \
               FROM invoice_payments WHERE invoice_id = $1 ORDER BY at, id",
        )
        .bind(invoice_id)
        .fetch_all(db)
        .await
    }
}

/// What one batch does to the three tables.
struct Changes {
    invoices: RowSet<Uuid, InvoiceRow>,
    lines: RowSet<Uuid, InvoiceLineRow>,
    payments: RowSet<Uuid, InvoicePaymentRow>,
}

#[async_trait]
impl Projector for InvoiceProjector {
    fn name(&self) -> &'static str {
        "invoices"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["invoices", "invoice_lines", "invoice_payments"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One read of the invoices the batch changes; one write per table.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let events = decode_batch::<Invoice>(self.name(), events)?;
        if events.is_empty() {
            return Ok(());
        }
        let mut changes = Changes {
            invoices: RowSet::new("invoices", "id"),
            lines: RowSet::new("invoice_lines", "line_id"),
            payments: RowSet::new("invoice_payments", "id"),
        };
        let existing = events
            .iter()
            .filter(|(_, _, e)| !matches!(e, InvoiceEvent::InvoiceDrafted { .. }))
            .map(|(id, _, _)| *id)
            .collect();
        changes.invoices.load(tx, existing).await?;
        for (id, stored, event) in events {
            fold(&mut changes, id, event);
            if let Some(invoice) = changes.invoices.get_mut(&id) {
                invoice.set_version(stored.sequence);
            }
        }
        // Lines and payments refer to their invoice only by value: no order to respect.
        // The rows a command of this process waits for come back as stored (ADR 0017).
        super::store_handing_over(tx, changes.invoices).await?;
        changes.lines.store(tx).await?;
        changes.payments.store(tx).await
    }
}

fn fold(changes: &mut Changes, id: Uuid, event: InvoiceEvent) {
    if let InvoiceEvent::InvoiceDrafted {
        invoice_id,
        number,
        patient_id,
        appointment_id,
        currency,
        at,
    } = event
    {
        let row = InvoiceRow {
            id: invoice_id,
            number: number.as_str().to_owned(),
            patient_id,
            appointment_id,
            currency: currency.as_str().to_owned(),
            status: "DRAFT".into(),
            subtotal_minor: 0,
            discount_minor: 0,
            tax_minor: 0,
            total_minor: 0,
            paid_minor: 0,
            refunded_minor: 0,
            balance_minor: 0,
            discount: Value::from("NONE"),
            tax_basis_points: 0,
            due_date: None,
            issued_at: None,
            voided_at: None,
            void_reason: None,
            created_at: at,
            updated_at: at,
            version: 0,
        };
        changes.invoices.insert(invoice_id, row);
        return;
    }
    // Lines and payments are written even if the invoice row were missing, as before.
    match &event {
        InvoiceEvent::InvoiceLineAdded { line, at, .. } => {
            let row = InvoiceLineRow {
                line_id: line.line_id,
                invoice_id: id,
                code: line.code.as_str().to_owned(),
                description: line.description.as_str().to_owned(),
                quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
                unit_price_minor: line.unit_price.minor(),
                amount_minor: line.amount.minor(),
                added_at: *at,
            };
            changes.lines.insert(line.line_id, row);
        }
        InvoiceEvent::InvoiceLineRemoved { line_id, .. } => changes.lines.remove(*line_id),
        InvoiceEvent::PaymentRecorded {
            payment_id,
            amount,
            method,
            reference,
            at,
            ..
        } => {
            let row = InvoicePaymentRow {
                id: *payment_id,
                invoice_id: id,
                kind: "PAYMENT".into(),
                payment_id: *payment_id,
                method: Some(enum_name(method)),
                amount_minor: amount.minor(),
                reference: reference.clone(),
                reason: None,
                at: *at,
            };
            changes.payments.insert(*payment_id, row);
        }
        InvoiceEvent::PaymentRefunded {
            refund_id,
            payment_id,
            amount,
            reason,
            at,
            ..
        } => {
            let row = InvoicePaymentRow {
                id: *refund_id,
                invoice_id: id,
                kind: "REFUND".into(),
                payment_id: *payment_id,
                method: None,
                amount_minor: amount.minor(),
                reference: None,
                reason: Some(reason.clone()),
                at: *at,
            };
            changes.payments.insert(*refund_id, row);
        }
        _ => {}
    }
    let Some(invoice) = changes.invoices.get_mut(&id) else {
        return;
    };
    match event {
        InvoiceEvent::InvoiceDrafted { .. } => {}
        InvoiceEvent::InvoiceLineAdded { totals, at, .. }
        | InvoiceEvent::InvoiceLineRemoved { totals, at, .. } => invoice.set_totals(&totals, at),
        InvoiceEvent::DiscountSet {
            discount,
            totals,
            at,
        } => {
            invoice.set_totals(&totals, at);
            invoice.discount = json(&discount);
        }
        InvoiceEvent::TaxRateSet {
            basis_points,
            totals,
            at,
        } => {
            invoice.set_totals(&totals, at);
            invoice.tax_basis_points = i32::try_from(basis_points).unwrap_or(i32::MAX);
        }
        InvoiceEvent::InvoiceIssued {
            totals,
            balance,
            due_date,
            status,
            at,
        } => {
            invoice.set_totals(&totals, at);
            invoice.balance_minor = balance.minor();
            invoice.due_date = due_date;
            invoice.status = enum_name(&status);
            invoice.issued_at = Some(at);
        }
        InvoiceEvent::PaymentRecorded {
            paid_total,
            balance,
            status,
            at,
            ..
        } => {
            invoice.paid_minor = paid_total.minor();
            invoice.balance_minor = balance.minor();
            invoice.status = enum_name(&status);
            invoice.updated_at = at;
        }
        InvoiceEvent::PaymentRefunded {
            refunded_total,
            balance,
            status,
            at,
            ..
        } => {
            invoice.refunded_minor = refunded_total.minor();
            invoice.balance_minor = balance.minor();
            invoice.status = enum_name(&status);
            invoice.updated_at = at;
        }
        InvoiceEvent::InvoiceVoided { reason, status, at } => {
            invoice.status = enum_name(&status);
            invoice.void_reason = Some(reason);
            invoice.voided_at = Some(at);
            invoice.balance_minor = 0;
            invoice.updated_at = at;
        }
    }
}
