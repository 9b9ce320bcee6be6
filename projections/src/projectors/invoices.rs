//! `invoices`, `invoice_lines`, `invoice_payments`: by patient, status, outstanding
//! balance and age. Totals, balances and statuses are taken from the events, never
//! recomputed here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::billing::{Invoice, InvoiceEvent, InvoiceTotals};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{enum_name, json};
use crate::{Projector, Result, StoredEvent};

pub struct InvoiceProjector;

#[async_trait]
impl Projector for InvoiceProjector {
    fn name(&self) -> &'static str {
        "invoices"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["invoices", "invoice_lines", "invoice_payments"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <Invoice as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let id = super::uuid_id(self.name(), event)?;
        match event.decode::<Invoice>(&hms_domain::upcasters())? {
            InvoiceEvent::InvoiceDrafted {
                invoice_id,
                number,
                patient_id,
                appointment_id,
                currency,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO invoices (id, number, patient_id, appointment_id, currency, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'DRAFT', $6, $6)",
                )
                .bind(invoice_id)
                .bind(number.as_str())
                .bind(patient_id)
                .bind(appointment_id)
                .bind(currency.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            InvoiceEvent::InvoiceLineAdded { line, totals, at } => {
                sqlx::query(
                    "INSERT INTO invoice_lines (line_id, invoice_id, code, description, quantity, unit_price_minor, \
                         amount_minor, added_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(line.line_id)
                .bind(id)
                .bind(line.code.as_str())
                .bind(line.description.as_str())
                .bind(i32::try_from(line.quantity).unwrap_or(i32::MAX))
                .bind(line.unit_price.minor())
                .bind(line.amount.minor())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                set_totals(tx, id, &totals, None, at).await?;
            }
            InvoiceEvent::InvoiceLineRemoved {
                line_id,
                totals,
                at,
            } => {
                sqlx::query("DELETE FROM invoice_lines WHERE line_id = $1")
                    .bind(line_id)
                    .execute(&mut *tx)
                    .await?;
                set_totals(tx, id, &totals, None, at).await?;
            }
            InvoiceEvent::DiscountSet {
                discount,
                totals,
                at,
            } => {
                set_totals(tx, id, &totals, Some(("discount", json(&discount))), at).await?;
            }
            InvoiceEvent::TaxRateSet {
                basis_points,
                totals,
                at,
            } => {
                set_totals(
                    tx,
                    id,
                    &totals,
                    Some(("tax_basis_points", serde_json::Value::from(basis_points))),
                    at,
                )
                .await?;
            }
            InvoiceEvent::InvoiceIssued {
                totals,
                balance,
                due_date,
                status,
                at,
            } => {
                set_totals(tx, id, &totals, None, at).await?;
                sqlx::query(
                    "UPDATE invoices SET balance_minor = $2, due_date = $3, status = $4, issued_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(balance.minor())
                .bind(due_date)
                .bind(enum_name(&status))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            InvoiceEvent::PaymentRecorded {
                payment_id,
                amount,
                method,
                reference,
                paid_total,
                balance,
                status,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO invoice_payments (id, invoice_id, kind, payment_id, method, amount_minor, reference, at) \
                     VALUES ($1, $2, 'PAYMENT', $1, $3, $4, $5, $6)",
                )
                .bind(payment_id)
                .bind(id)
                .bind(enum_name(&method))
                .bind(amount.minor())
                .bind(&reference)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE invoices SET paid_minor = $2, balance_minor = $3, status = $4, updated_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(paid_total.minor())
                .bind(balance.minor())
                .bind(enum_name(&status))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            InvoiceEvent::PaymentRefunded {
                refund_id,
                payment_id,
                amount,
                reason,
                refunded_total,
                balance,
                status,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO invoice_payments (id, invoice_id, kind, payment_id, amount_minor, reason, at) \
                     VALUES ($1, $2, 'REFUND', $3, $4, $5, $6)",
                )
                .bind(refund_id)
                .bind(id)
                .bind(payment_id)
                .bind(amount.minor())
                .bind(&reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE invoices SET refunded_minor = $2, balance_minor = $3, status = $4, updated_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(refunded_total.minor())
                .bind(balance.minor())
                .bind(enum_name(&status))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            InvoiceEvent::InvoiceVoided { reason, status, at } => {
                sqlx::query(
                    "UPDATE invoices SET status = $2, void_reason = $3, voided_at = $4, balance_minor = 0, updated_at = $4 \
                      WHERE id = $1",
                )
                .bind(id)
                .bind(enum_name(&status))
                .bind(&reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// Writes the totals an event carries, and optionally one more column.
async fn set_totals(
    tx: &mut PgConnection,
    id: Uuid,
    totals: &InvoiceTotals,
    extra: Option<(&'static str, serde_json::Value)>,
    at: DateTime<Utc>,
) -> Result<()> {
    let extra_sql = match &extra {
        Some(("discount", _)) => ", discount = $7",
        Some(("tax_basis_points", _)) => ", tax_basis_points = ($7::jsonb)::integer",
        _ => "",
    };
    // `extra_sql` is one of the fixed fragments above.
    let sql = format!(
        "UPDATE invoices SET subtotal_minor = $2, discount_minor = $3, tax_minor = $4, total_minor = $5, \
             balance_minor = CASE WHEN status = 'DRAFT' THEN $5 ELSE balance_minor END, \
             updated_at = $6{extra_sql} WHERE id = $1"
    );
    let mut query = sqlx::query(&sql)
        .bind(id)
        .bind(totals.subtotal.minor())
        .bind(totals.discount.minor())
        .bind(totals.tax.minor())
        .bind(totals.total.minor())
        .bind(at);
    if let Some((_, value)) = extra {
        query = query.bind(value);
    }
    query.execute(tx).await?;
    Ok(())
}
