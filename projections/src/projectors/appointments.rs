//! `appointments`: by doctor and day, by patient, by department, by status.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::appointment::{Appointment, AppointmentEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::enum_name;
use crate::{Projector, Result, StoredEvent};

pub struct AppointmentProjector;

#[async_trait]
impl Projector for AppointmentProjector {
    fn name(&self) -> &'static str {
        "appointments"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["appointments"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <Appointment as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let id = super::uuid_id(self.name(), event)?;
        match event.decode::<Appointment>(&hms_domain::upcasters())? {
            AppointmentEvent::AppointmentScheduled {
                appointment_id,
                patient_id,
                doctor_id,
                department_id,
                start,
                end,
                local_date,
                reason,
                status,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO appointments (id, patient_id, doctor_id, department_id, start_at, end_at, \
                         local_date, reason, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                )
                .bind(appointment_id)
                .bind(patient_id)
                .bind(doctor_id)
                .bind(department_id)
                .bind(start)
                .bind(end)
                .bind(local_date)
                .bind(&reason)
                .bind(enum_name(&status))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            AppointmentEvent::AppointmentRescheduled {
                start,
                end,
                local_date,
                at,
                ..
            } => {
                sqlx::query(
                    "UPDATE appointments SET start_at = $2, end_at = $3, local_date = $4, updated_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(start)
                .bind(end)
                .bind(local_date)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            AppointmentEvent::AppointmentCheckedIn { at } => {
                transition(tx, id, "CHECKED_IN", Some("checked_in_at"), at).await?;
            }
            AppointmentEvent::AppointmentStarted { at } => {
                transition(tx, id, "IN_PROGRESS", Some("started_at"), at).await?;
            }
            AppointmentEvent::AppointmentCompleted { notes, at } => {
                sqlx::query(
                    "UPDATE appointments SET status = 'COMPLETED', notes = $2, completed_at = $3, updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(&notes)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            AppointmentEvent::AppointmentCancelled { reason, at } => {
                sqlx::query(
                    "UPDATE appointments SET status = 'CANCELLED', cancel_reason = $2, cancelled_at = $3, updated_at = $3 \
                      WHERE id = $1",
                )
                .bind(id)
                .bind(&reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            AppointmentEvent::AppointmentNoShow { at } => {
                transition(tx, id, "NO_SHOW", None, at).await?;
            }
        }
        Ok(())
    }
}

async fn transition(
    tx: &mut PgConnection,
    id: Uuid,
    status: &str,
    stamp: Option<&'static str>,
    at: DateTime<Utc>,
) -> Result<()> {
    let stamp = stamp
        .map(|column| format!("{column} = $3, "))
        .unwrap_or_default();
    sqlx::query(&format!(
        "UPDATE appointments SET status = $2, {stamp}updated_at = $3 WHERE id = $1"
    ))
    .bind(id)
    .bind(status)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}
