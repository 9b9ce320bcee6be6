//! Appointments: booking, rescheduling and the status machine; lists by doctor, patient,
//! department, status and time, and a doctor's day.
//!
//! Booking, rescheduling, cancelling and marking a no-show hold or give back the
//! doctor's and the patient's time on their day schedules: that is the booking process
//! manager in [`super::booking`]. The transitions that touch no slot (check-in, start,
//! complete) and the reads are here. An appointment's status is the domain's
//! [`AppointmentStatus`]; the read model stores its serde name (see [`stored`]).

pub use super::booking::{
    cancel_appointment, mark_no_show, reschedule_appointment, schedule_appointment,
    CancelAppointment, RescheduleAppointment, ScheduleAppointment,
};

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use hms_domain::appointment::{
    transition, Appointment as AppointmentAggregate, AppointmentAction, AppointmentCommand,
    AppointmentError, AppointmentStatus, MAX_NOTES_CHARS,
};
use hms_domain::common::{BoundedText, Role};
use hms_domain::disclosure::Disclosure;
use hms_domain::permissions::Operation;
use hms_projections::projectors::AppointmentRow;
use serde::Serialize;
use uuid::Uuid;

use super::{stored, stored_name};
use crate::error::{AppError, DomainErrorCode, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, MutationOptions};

// ---------------------------------------------------------------------------------
// What the read model shows

/// An appointment as the read model shows it now.
#[derive(Debug, Clone)]
pub struct Appointment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    pub department_id: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The hospital's local day of the start.
    pub local_date: NaiveDate,
    pub reason: String,
    pub status: AppointmentStatus,
    /// The doctor's notes, once completed.
    pub notes: Option<String>,
    pub cancel_reason: Option<String>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The appointment's version, for `expectedVersion`.
    pub version: i64,
    /// The patient's record is restricted and the caller may not read it in full: the
    /// reason, notes and cancellation reason are withheld.
    pub withheld: bool,
}

impl TryFrom<AppointmentRow> for Appointment {
    type Error = AppError;

    fn try_from(r: AppointmentRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            patient_id: r.patient_id,
            doctor_id: r.doctor_id,
            department_id: r.department_id,
            start: r.start_at,
            end: r.end_at,
            local_date: r.local_date,
            reason: r.reason,
            status: stored(&r.status)?,
            notes: r.notes,
            cancel_reason: r.cancel_reason,
            checked_in_at: r.checked_in_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            cancelled_at: r.cancelled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            withheld: false,
        })
    }
}

/// Marks the appointments of restricted patients the caller may not read in full
/// ([`super::privacy`]): their text is the patient's record.
async fn withhold_restricted(
    auth: &Authorized<'_>,
    appointments: &mut [Appointment],
) -> Result<()> {
    let patients: Vec<Uuid> = appointments.iter().map(|a| a.patient_id).collect();
    let denied = super::restriction::denied_among(auth, &patients).await?;
    for a in appointments.iter_mut() {
        a.withheld = denied.contains(&a.patient_id);
    }
    Ok(())
}

fn to_appointments(rows: Vec<AppointmentRow>) -> Result<Vec<Appointment>> {
    rows.into_iter().map(Appointment::try_from).collect()
}

/// One doctor's local day.
#[derive(Debug, Clone)]
pub struct DoctorDay {
    pub doctor_id: Uuid,
    pub day: NaiveDate,
    /// The hospital's working hours that day (local time); `None` when closed.
    pub opens_at: Option<NaiveTime>,
    pub closes_at: Option<NaiveTime>,
    /// The day's appointments in order of start.
    pub appointments: Vec<Appointment>,
}

/// Filters of [`appointments`]; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AppointmentFilter {
    pub doctor_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    pub status: Option<AppointmentStatus>,
    /// Appointments starting at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Appointments starting before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// Appointment `id` as the read model shows it, or NOT_FOUND.
pub(crate) async fn load_appointment(auth: &Authorized<'_>, id: Uuid) -> Result<Appointment> {
    /// The row, and whether its patient's record is restricted (read with it: the access
    /// decision is then needed only for a restricted record).
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        row: AppointmentRow,
        patient_restricted: bool,
    }
    let found: Option<Found> = sqlx::query_as(&format!(
        "SELECT {}, EXISTS (SELECT 1 FROM patients p \
                             WHERE p.id = appointments.patient_id AND p.restricted) \
                    AS patient_restricted \
           FROM appointments WHERE id = $1",
        AppointmentRow::COLUMNS
    ))
    .bind(id)
    .fetch_optional(auth.pool())
    .await?;
    let found = found.ok_or(AppError::NotFound)?;
    appointment_from_row(auth, found.row, found.patient_restricted).await
}

/// The appointment of `row`, with what the caller may not read of a restricted record
/// withheld (`patient_restricted`: the read model's flag of the row's patient).
pub(crate) async fn appointment_from_row(
    auth: &Authorized<'_>,
    row: AppointmentRow,
    patient_restricted: bool,
) -> Result<Appointment> {
    let mut appointment = Appointment::try_from(row)?;
    if patient_restricted {
        withhold_restricted(auth, std::slice::from_mut(&mut appointment)).await?;
    }
    Ok(appointment)
}

// ---------------------------------------------------------------------------------
// Queries

/// Whether a response about appointments asks for anything about their patients (which
/// patient, the visit's reason, the notes). If it does, and the caller's role may read
/// who the patients are (to others those fields are withheld), they are recorded in the
/// access log, one event per response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Showing {
    /// Times, doctors, departments and statuses only.
    Schedule,
    PatientDetails,
}

async fn record_shown(
    auth: &Authorized<'_>,
    showing: Showing,
    patients: impl IntoIterator<Item = Uuid>,
) -> Result<()> {
    if showing == Showing::PatientDetails && Disclosure::Identity.allows(auth.actor().role) {
        super::restriction::record_list_viewed(auth, patients, "appointments").await?;
    }
    Ok(())
}

/// Appointments in order of start (ViewAppointments).
pub async fn appointments(
    auth: &Authorized<'_>,
    filter: &AppointmentFilter,
    page: &PageRequest,
    showing: Showing,
) -> Result<Page<Appointment>> {
    auth.require(Operation::ViewAppointments)?;
    let after = page
        .after
        .as_ref()
        .map(|k| {
            let bad = || AppError::validation("after", "is not a cursor from this API");
            let at = DateTime::parse_from_rfc3339(&k.key).map_err(|_| bad())?;
            let id = Uuid::parse_str(&k.id).map_err(|_| bad())?;
            Ok::<_, AppError>((at.with_timezone(&Utc), id))
        })
        .transpose()?;
    let rows: Vec<AppointmentRow> = sqlx::query_as(&format!(
        "SELECT {} FROM appointments \
          WHERE ($1::uuid IS NULL OR doctor_id = $1) \
            AND ($2::uuid IS NULL OR patient_id = $2) \
            AND ($3::uuid IS NULL OR department_id = $3) \
            AND ($4::text IS NULL OR status = $4) \
            AND ($5::timestamptz IS NULL OR start_at >= $5) \
            AND ($6::timestamptz IS NULL OR start_at < $6) \
            AND ($7::timestamptz IS NULL OR (start_at, id) > ($7, $8)) \
          ORDER BY start_at, id \
          LIMIT $9",
        AppointmentRow::COLUMNS
    ))
    .bind(filter.doctor_id)
    .bind(filter.patient_id)
    .bind(filter.department_id)
    .bind(filter.status.as_ref().map(stored_name).transpose()?)
    .bind(filter.from)
    .bind(filter.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let mut appointments = to_appointments(rows)?;
    withhold_restricted(auth, &mut appointments).await?;
    let found = page.page(appointments, |a| Keyset {
        key: a.start.to_rfc3339_opts(SecondsFormat::Micros, true),
        id: a.id.to_string(),
    });
    record_shown(auth, showing, found.items.iter().map(|(_, a)| a.patient_id)).await?;
    Ok(found)
}

/// One appointment (ViewAppointments).
pub async fn appointment(auth: &Authorized<'_>, id: Uuid, showing: Showing) -> Result<Appointment> {
    auth.require(Operation::ViewAppointments)?;
    let appointment = load_appointment(auth, id).await?;
    record_shown(auth, showing, [appointment.patient_id]).await?;
    Ok(appointment)
}

/// A doctor's appointments on one local day, in order of start, with the hospital's
/// working hours that day; cancelled ones only when asked for. NOT_FOUND unless
/// `doctor_id` is a DOCTOR of this hospital (ViewAppointments).
pub async fn doctor_day(
    auth: &Authorized<'_>,
    doctor_id: Uuid,
    day: NaiveDate,
    include_cancelled: bool,
    showing: Showing,
) -> Result<DoctorDay> {
    auth.require(Operation::ViewAppointments)?;
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM staff WHERE id = $1")
        .bind(doctor_id)
        .fetch_optional(auth.pool())
        .await?;
    if role.as_deref() != Some(Role::Doctor.as_str()) {
        return Err(AppError::NotFound);
    }
    let rows: Vec<AppointmentRow> = sqlx::query_as(&format!(
        "SELECT {} FROM appointments \
          WHERE doctor_id = $1 AND local_date = $2 AND ($3 OR status <> $4) \
          ORDER BY start_at, id",
        AppointmentRow::COLUMNS
    ))
    .bind(doctor_id)
    .bind(day)
    .bind(include_cancelled)
    .bind(stored_name(&AppointmentStatus::Cancelled)?)
    .fetch_all(auth.pool())
    .await?;
    let mut appointments = to_appointments(rows)?;
    withhold_restricted(auth, &mut appointments).await?;
    record_shown(auth, showing, appointments.iter().map(|a| a.patient_id)).await?;
    let hours = auth.hospital.working_hours_on(day);
    Ok(DoctorDay {
        doctor_id,
        day,
        opens_at: hours.map(|h| h.open()),
        closes_at: hours.map(|h| h.close()),
        appointments,
    })
}

// ---------------------------------------------------------------------------------
// Transitions that hold no slot

/// Check-in, start or no-show of one appointment. Serialized as the request whose
/// idempotency key it carries.
#[derive(Debug, Clone, Serialize)]
pub struct AppointmentChange {
    pub appointment_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompleteAppointment {
    pub appointment_id: Uuid,
    /// The doctor's notes; blank is none.
    pub notes: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// The patient has arrived (CheckInAppointment).
pub async fn check_in_appointment(
    auth: &Authorized<'_>,
    input: &AppointmentChange,
) -> Result<Appointment> {
    auth.require(Operation::CheckInAppointment)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = AppointmentCommand::CheckIn {
        actor: auth.actor(),
        now: auth.now,
    };
    appointment_command(auth, &options, input, input.appointment_id, command).await
}

/// The consultation starts (StartAppointment; the appointment's own DOCTOR).
pub async fn start_appointment(
    auth: &Authorized<'_>,
    input: &AppointmentChange,
) -> Result<Appointment> {
    auth.require(Operation::StartAppointment)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = AppointmentCommand::Start {
        actor: auth.actor(),
        now: auth.now,
    };
    appointment_command(auth, &options, input, input.appointment_id, command).await
}

/// The consultation ends, with the doctor's notes (CompleteAppointment; the
/// appointment's own DOCTOR).
pub async fn complete_appointment(
    auth: &Authorized<'_>,
    input: &CompleteAppointment,
) -> Result<Appointment> {
    auth.require(Operation::CompleteAppointment)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let notes = match input.notes.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) => Some(BoundedText::parse("notes", n, MAX_NOTES_CHARS)?),
    };
    let command = AppointmentCommand::Complete {
        actor: auth.actor(),
        notes,
        now: auth.now,
    };
    appointment_command(auth, &options, input, input.appointment_id, command).await
}

/// Runs one status change of appointment `id` and returns it as the read model shows it.
async fn appointment_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: AppointmentCommand,
) -> Result<Appointment> {
    auth.idempotent(options, input, || async {
        auth.execute::<AppointmentAggregate>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, AppError>(id.to_string())
    })
    .await?;
    load_appointment(auth, id).await
}

/// NOT_FOUND for an appointment that does not exist, CONFLICT for an illegal `action`.
pub(crate) fn check_transition(
    appointment: &AppointmentAggregate,
    action: AppointmentAction,
) -> Result<()> {
    let from = appointment.status.ok_or(AppError::NotFound)?;
    if transition(from, action).is_none() {
        return Err(AppointmentError::IllegalTransition { from, action }.to_app_error());
    }
    Ok(())
}
