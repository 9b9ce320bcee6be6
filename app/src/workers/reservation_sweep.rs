//! Releasing slots that a broken booking left held (ADR 0002).
//!
//! Booking was once a saga of three appends (doctor's day, patient's day, appointment),
//! and a crash between them, or a compensation or release that failed, left a slot held
//! that no active appointment uses: nobody is double booked, but that time can no longer
//! be booked. Bookings are now one atomic unit, so new holds of that kind do not arise;
//! the sweep stays for those already in the logs and for events written outside the API. The sweep finds future holds that disagree with their appointment in the read
//! models, confirms each against the event store (read models may lag), and releases it
//! on the schedule stream like the saga would have.
//!
//! A hold is only touched once it is older than a grace period, long enough for any
//! booking or rescheduling still in progress to have finished.

use chrono::{DateTime, Utc};
use hms_domain::appointment::{Appointment, AppointmentStatus};
use hms_domain::schedule::{
    DoctorSchedule, PatientSchedule, ReleaseReason, ScheduleCommand, ScheduleError,
};
use hms_domain::{Actor, EventMetadata, Role};
use sqlx::PgPool;
use uuid::Uuid;

use crate::commands::{self, CommandError};

/// How old a hold must be before the sweep may release it.
pub const GRACE: chrono::Duration = chrono::Duration::minutes(10);
/// Holds examined per sweep; the next sweep takes the rest.
const MAX_PER_SWEEP: i64 = 200;

/// Who the releases are recorded as in the audit trail: the hospital's own maintenance,
/// with the rights of an administrator (who may cancel and reschedule).
fn sweeper() -> Actor {
    Actor {
        user_id: Uuid::nil(),
        username: "reservation-sweep".to_owned(),
        role: Role::HospitalAdmin,
    }
}

#[derive(sqlx::FromRow)]
struct Hold {
    schedule_type: String,
    schedule_id: String,
    appointment_id: Uuid,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
}

/// Releases the stale holds of one hospital; returns how many were released.
pub async fn sweep(
    pool: &PgPool,
    code: &str,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<usize, SweepError> {
    let candidates: Vec<Hold> = sqlx::query_as(
        "SELECT h.schedule_type, h.schedule_id, h.appointment_id, h.start_at, h.end_at \
           FROM slot_holds h LEFT JOIN appointments a ON a.id = h.appointment_id \
          WHERE h.end_at > $1 AND h.reserved_at <= $2 \
            AND (a.id IS NULL OR a.status = ANY($4) \
                 OR a.start_at <> h.start_at OR a.end_at <> h.end_at) \
          ORDER BY h.start_at LIMIT $3",
    )
    .bind(now)
    .bind(now - grace)
    .bind(MAX_PER_SWEEP)
    .bind(released_statuses()?)
    .fetch_all(pool)
    .await?;
    let mut released = 0;
    for hold in candidates {
        // The event store decides: the read model may not show a recent change yet.
        let (appointment, version) =
            commands::load::<Appointment>(pool, &hold.appointment_id.to_string())
                .await
                .map_err(|e| SweepError::Command(e.to_string()))?;
        let reason = if version == 0 {
            ReleaseReason::Compensation
        } else {
            match appointment.status {
                Some(AppointmentStatus::Cancelled) => ReleaseReason::Cancelled,
                Some(AppointmentStatus::NoShow) => ReleaseReason::NoShow,
                _ if appointment.start != Some(hold.start_at)
                    || appointment.end != Some(hold.end_at) =>
                {
                    ReleaseReason::Rescheduled
                }
                _ => continue,
            }
        };
        let metadata = EventMetadata {
            actor: sweeper(),
            tenant: code.to_owned(),
            request_id: format!("sweep-{}", Uuid::new_v4()),
            client_addr: None,
            at: now,
        };
        let command = ScheduleCommand::Release {
            actor: sweeper(),
            appointment_id: hold.appointment_id,
            reason,
            now,
        };
        let result = if hold.schedule_type == <DoctorSchedule as cqrs_es::Aggregate>::TYPE {
            commands::append::<DoctorSchedule>(pool, &hold.schedule_id, command, (), &metadata)
                .await
        } else {
            commands::append::<PatientSchedule>(pool, &hold.schedule_id, command, (), &metadata)
                .await
        };
        match result {
            Ok(()) => {
                tracing::warn!(
                    code,
                    appointment_id = %hold.appointment_id,
                    schedule = %hold.schedule_id,
                    ?reason,
                    "released a slot a broken booking left held"
                );
                released += 1;
            }
            // Released meanwhile (by the saga's retry or another process): nothing to do.
            Err(CommandError::Rejected(ScheduleError::NotReserved(_)))
            | Err(CommandError::Conflict)
            | Err(CommandError::Contended) => {}
            Err(e) => return Err(SweepError::Command(e.to_string())),
        }
    }
    Ok(released)
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Command(String),
}

/// The appointment statuses that hold no time, by their stored names.
fn released_statuses() -> Result<Vec<String>, SweepError> {
    [AppointmentStatus::Cancelled, AppointmentStatus::NoShow]
        .iter()
        .map(|s| crate::usecases::stored_name(s).map_err(|e| SweepError::Command(e.to_string())))
        .collect()
}
