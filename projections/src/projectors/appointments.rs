//! `appointments`: by doctor and day, by patient, by department, by status.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use hms_domain::appointment::{Appointment, AppointmentEvent, AppointmentStatus};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{enum_name, fold_rows};
use crate::rows::{InlineRows, RowSet};
use crate::{Projector, Result, StoredEvent};

pub struct AppointmentProjector;

/// A row of `appointments` (field names are column names), as written here and read by
/// the application layer (with [`AppointmentRow::COLUMNS`]).
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    pub department_id: Option<Uuid>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// The hospital's local day of the start (a doctor's day).
    pub local_date: NaiveDate,
    pub reason: String,
    pub status: String,
    pub notes: Option<String>,
    pub cancel_reason: Option<String>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    pub version: i64,
}

super::stream_row!(AppointmentRow);

impl AppointmentRow {
    /// The columns of the row, in order, for a `SELECT` of `appointments` read into it.
    pub const COLUMNS: &'static str = "id, patient_id, doctor_id, department_id, start_at, \
        end_at, local_date, reason, status, notes, cancel_reason, checked_in_at, started_at, \
        completed_at, cancelled_at, created_at, updated_at, version";
}

#[async_trait]
impl Projector for AppointmentProjector {
    fn name(&self) -> &'static str {
        "appointments"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["appointments"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One read of the rows the batch changes, one write of their last state.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        fold_rows::<Appointment, AppointmentRow>(
            tx,
            self.name(),
            "appointments",
            events,
            // A booking's row is written by its append (docs/adr/0011): loaded, so that
            // the booking is passed over.
            |_| false,
            fold,
        )
        .await?;
        // A visit's reason, notes and cancellation reason are the patient's sealed text.
        let erased = super::erased_patients(events);
        if !erased.is_empty() {
            sqlx::query(
                "UPDATE appointments SET reason = $2, \
                        notes = CASE WHEN notes IS NULL THEN NULL ELSE $2 END, \
                        cancel_reason = CASE WHEN cancel_reason IS NULL THEN NULL ELSE $2 END \
                  WHERE patient_id = ANY($1)",
            )
            .bind(&erased)
            .bind(crate::personal::ERASED)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The rows a booking's append writes itself (docs/adr/0011): the new appointment's row,
/// from its stream's first event as decided (its reason not yet sealed), at version 1.
/// The row holds the patient's text in the clear, so it is only written while the
/// patient's key still stands ([`InlineRows::key_owners`]).
pub(crate) fn inline(events: &[SerializedEvent]) -> Result<Option<InlineRows>> {
    let rows = super::rows_created_by(
        events,
        Appointment::TYPE,
        "AppointmentScheduled",
        "a booking",
        scheduled,
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let owners = rows.iter().map(|row| row.patient_id).collect();
    InlineRows::of("appointments", &rows).map(|rows| Some(rows.while_keys_stand(owners)))
}

fn fold(
    appointments: &mut RowSet<Uuid, AppointmentRow>,
    id: Uuid,
    _: &StoredEvent,
    event: AppointmentEvent,
) {
    if let AppointmentEvent::AppointmentScheduled { .. } = event {
        if let Some(row) = scheduled(event) {
            appointments.insert(row.id, row);
        }
        return;
    }
    let Some(row) = appointments.get_mut(&id) else {
        return;
    };
    match event {
        AppointmentEvent::AppointmentScheduled { .. } => {}
        AppointmentEvent::AppointmentRescheduled {
            start,
            end,
            local_date,
            at,
            ..
        } => {
            row.start_at = start;
            row.end_at = end;
            row.local_date = local_date;
            row.updated_at = at;
        }
        AppointmentEvent::AppointmentCheckedIn { at } => {
            row.status = enum_name(&AppointmentStatus::CheckedIn);
            row.checked_in_at = Some(at);
            row.updated_at = at;
        }
        AppointmentEvent::AppointmentStarted { at } => {
            row.status = enum_name(&AppointmentStatus::InProgress);
            row.started_at = Some(at);
            row.updated_at = at;
        }
        AppointmentEvent::AppointmentCompleted { notes, at } => {
            row.status = enum_name(&AppointmentStatus::Completed);
            row.notes = notes;
            row.completed_at = Some(at);
            row.updated_at = at;
        }
        AppointmentEvent::AppointmentCancelled { reason, at } => {
            row.status = enum_name(&AppointmentStatus::Cancelled);
            row.cancel_reason = Some(reason);
            row.cancelled_at = Some(at);
            row.updated_at = at;
        }
        AppointmentEvent::AppointmentNoShow { at } => {
            row.status = enum_name(&AppointmentStatus::NoShow);
            row.updated_at = at;
        }
    }
}

/// A booked appointment's row (version 0, set by whoever writes it).
fn scheduled(event: AppointmentEvent) -> Option<AppointmentRow> {
    let AppointmentEvent::AppointmentScheduled {
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
    } = event
    else {
        return None;
    };
    Some(AppointmentRow {
        id: appointment_id,
        patient_id,
        doctor_id,
        department_id,
        start_at: start,
        end_at: end,
        local_date,
        reason,
        status: enum_name(&status),
        notes: None,
        cancel_reason: None,
        checked_in_at: None,
        started_at: None,
        completed_at: None,
        cancelled_at: None,
        created_at: at,
        updated_at: at,
        version: 0,
    })
}
