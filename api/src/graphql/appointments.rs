//! Appointments: booking, rescheduling and the status machine; lists by doctor, patient,
//! department, status and time, and a doctor's day.
//!
//! No double booking is decided by the per-day schedule streams of the doctor and the
//! patient (ADR 0002). Booking is a short saga run here:
//! 1. `Reserve` on the doctor's schedule for the local day of the start;
//! 2. `Reserve` on the patient's schedule (on failure, release step 1);
//! 3. `Schedule` on the new appointment (on failure, release both).
//!
//! Every step that succeeded is undone in reverse order when a later one fails
//! ([`Saga`]). Times arrive as instants; the hospital's time zone (PostgreSQL's tz
//! database, so the domain needs none) turns them into local, offset-carrying times.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject};
use chrono::{
    DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike, Utc,
};
use hms_domain::appointment::{
    transition, validate_slot, Appointment as AppointmentAggregate, AppointmentAction,
    AppointmentCommand, AppointmentError, BookingPolicy, DoctorFacts, MAX_NOTES_CHARS,
    MAX_REASON_CHARS,
};
use hms_domain::common::{BoundedText, Role};
use hms_domain::permissions::Operation;
use hms_domain::schedule::{
    DoctorSchedule, PatientSchedule, ReleaseReason, ScheduleCommand, ScheduleError,
    MAX_APPOINTMENT_MINUTES,
};
use hms_projections::projectors::AppointmentRow;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequestExt};
use super::session::{authorize, Authorized, DomainErrorCode, MutationOptions};
use super::types::{check_date, check_instant};
use hms_app::commands::{self, CommandError};
use hms_app::error::command_error;

// ---------------------------------------------------------------------------------
// Output types

#[derive(Enum, Copy, Clone, Eq, PartialEq, Serialize, Debug)]
#[graphql(
    remote = "hms_domain::appointment::AppointmentStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum AppointmentStatus {
    Scheduled,
    CheckedIn,
    InProgress,
    Completed,
    Cancelled,
    NoShow,
}

impl AppointmentStatus {
    /// The spelling the events and the read model use.
    fn stored(self) -> String {
        let domain: hms_domain::appointment::AppointmentStatus = self.into();
        match serde_json::to_value(domain) {
            Ok(serde_json::Value::String(s)) => s,
            _ => String::new(),
        }
    }

    fn from_stored(raw: &str) -> Result<Self, ApiError> {
        serde_json::from_value::<hms_domain::appointment::AppointmentStatus>(
            serde_json::Value::String(raw.to_owned()),
        )
        .map(Into::into)
        .map_err(|e| ApiError::internal(format!("appointment status {raw:?}: {e}")))
    }
}

/// An appointment as the read model shows it now.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
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
}

#[ComplexObject]
impl Appointment {
    /// Every change to the appointment, from the event log (HOSPITAL_ADMIN).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        audit::history(
            auth.pool(),
            "appointment",
            &self.id.to_string(),
            first,
            after,
        )
        .await
    }
}

/// One doctor's local day.
#[derive(SimpleObject)]
pub struct DoctorDay {
    pub doctor_id: Uuid,
    pub day: NaiveDate,
    /// The hospital's working hours that day (local time); null when closed.
    pub opens_at: Option<NaiveTime>,
    pub closes_at: Option<NaiveTime>,
    /// The day's appointments in order of start.
    pub appointments: Vec<Appointment>,
}

const APPOINTMENT_COLUMNS: &str = "a.id, a.patient_id, a.doctor_id, a.department_id, a.start_at, \
     a.end_at, a.local_date, a.reason, a.status, a.notes, a.cancel_reason, a.checked_in_at, \
     a.started_at, a.completed_at, a.cancelled_at, a.created_at, a.updated_at, a.version";

impl TryFrom<AppointmentRow> for Appointment {
    type Error = ApiError;

    fn try_from(r: AppointmentRow) -> Result<Self, ApiError> {
        Ok(Self {
            id: r.id,
            patient_id: r.patient_id,
            doctor_id: r.doctor_id,
            department_id: r.department_id,
            start: r.start_at,
            end: r.end_at,
            local_date: r.local_date,
            reason: r.reason,
            status: AppointmentStatus::from_stored(&r.status)?,
            notes: r.notes,
            cancel_reason: r.cancel_reason,
            checked_in_at: r.checked_in_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            cancelled_at: r.cancelled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

fn rows_to_appointments(rows: Vec<AppointmentRow>) -> Result<Vec<Appointment>, ApiError> {
    rows.into_iter().map(Appointment::try_from).collect()
}

async fn load_appointment(pool: &PgPool, id: Uuid) -> Result<Appointment, ApiError> {
    let row: Option<AppointmentRow> = sqlx::query_as(&format!(
        "SELECT {APPOINTMENT_COLUMNS} FROM appointments a WHERE a.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?;
    row.map(Appointment::try_from)
        .transpose()?
        .ok_or(ApiError::NotFound)
}

// ---------------------------------------------------------------------------------
// Queries

/// Filters of `appointments`; all optional, combined with AND.
#[derive(InputObject, Default)]
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

#[derive(Default)]
pub struct AppointmentQuery;

#[Object]
impl AppointmentQuery {
    /// Appointments in order of start.
    async fn appointments(
        &self,
        ctx: &Context<'_>,
        filter: Option<AppointmentFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Appointment>> {
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        let page = page_request(first, after)?;
        let filter = filter.unwrap_or_default();
        let after = page
            .after
            .as_ref()
            .map(|k| {
                let bad = || ApiError::validation("after", "is not a cursor from this API");
                let at = DateTime::parse_from_rfc3339(&k.key).map_err(|_| bad())?;
                let id = Uuid::parse_str(&k.id).map_err(|_| bad())?;
                Ok::<_, ApiError>((at.with_timezone(&Utc), id))
            })
            .transpose()?;
        let rows: Vec<AppointmentRow> = sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments a \
              WHERE ($1::uuid IS NULL OR a.doctor_id = $1) \
                AND ($2::uuid IS NULL OR a.patient_id = $2) \
                AND ($3::uuid IS NULL OR a.department_id = $3) \
                AND ($4::text IS NULL OR a.status = $4) \
                AND ($5::timestamptz IS NULL OR a.start_at >= $5) \
                AND ($6::timestamptz IS NULL OR a.start_at < $6) \
                AND ($7::timestamptz IS NULL OR (a.start_at, a.id) > ($7, $8)) \
              ORDER BY a.start_at, a.id \
              LIMIT $9"
        ))
        .bind(filter.doctor_id)
        .bind(filter.patient_id)
        .bind(filter.department_id)
        .bind(filter.status.map(AppointmentStatus::stored))
        .bind(filter.from.map(|v| check_instant("from", v)).transpose()?)
        .bind(filter.to.map(|v| check_instant("to", v)).transpose()?)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(page.fetch_limit())
        .fetch_all(auth.pool())
        .await
        .map_err(ApiError::internal)?;
        let appointments = rows_to_appointments(rows)?;
        Ok(page.connection(appointments, |a| Keyset {
            key: a.start.to_rfc3339_opts(SecondsFormat::Micros, true),
            id: a.id.to_string(),
        }))
    }

    /// One appointment.
    async fn appointment(&self, ctx: &Context<'_>, id: Uuid) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        load_appointment(auth.pool(), id).await
    }

    /// A doctor's appointments on one local day, in order of start; cancelled ones only
    /// when asked for. NOT_FOUND unless `doctorId` is a DOCTOR of this hospital.
    async fn doctor_schedule(
        &self,
        ctx: &Context<'_>,
        doctor_id: Uuid,
        day: NaiveDate,
        #[graphql(default)] include_cancelled: bool,
    ) -> Result<DoctorDay> {
        let day = check_date("day", day)?;
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        let is_doctor: Option<String> = sqlx::query_scalar("SELECT role FROM staff WHERE id = $1")
            .bind(doctor_id)
            .fetch_optional(auth.pool())
            .await
            .map_err(ApiError::internal)?;
        if is_doctor.as_deref() != Some(Role::Doctor.as_str()) {
            return Err(ApiError::NotFound);
        }
        let rows: Vec<AppointmentRow> = sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments a \
              WHERE a.doctor_id = $1 AND a.local_date = $2 AND ($3 OR a.status <> 'CANCELLED') \
              ORDER BY a.start_at, a.id"
        ))
        .bind(doctor_id)
        .bind(day)
        .bind(include_cancelled)
        .fetch_all(auth.pool())
        .await
        .map_err(ApiError::internal)?;
        let hours = auth.hospital.working_hours_on(day);
        Ok(DoctorDay {
            doctor_id,
            day,
            opens_at: hours.map(|h| h.open()),
            closes_at: hours.map(|h| h.close()),
            appointments: rows_to_appointments(rows)?,
        })
    }
}

// ---------------------------------------------------------------------------------
// Inputs

#[derive(InputObject, Serialize)]
pub struct ScheduleAppointmentInput {
    pub patient_id: Uuid,
    /// A user with the DOCTOR role.
    pub doctor_id: Uuid,
    pub department_id: Option<Uuid>,
    /// The start as an instant (any UTC offset); booked in the hospital's local time,
    /// on the slot grid and inside working hours.
    pub start: DateTime<Utc>,
    /// Length in minutes, a multiple of the slot length; one slot when left out.
    pub duration_minutes: Option<i32>,
    pub reason: String,
    /// A retry with the same key books nothing new and returns the first answer.
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct RescheduleAppointmentInput {
    pub appointment_id: Uuid,
    pub start: DateTime<Utc>,
    /// Length in minutes; the current length when left out.
    pub duration_minutes: Option<i32>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Check-in, start or no-show of one appointment.
#[derive(InputObject, Serialize)]
pub struct AppointmentActionInput {
    pub appointment_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct CompleteAppointmentInput {
    pub appointment_id: Uuid,
    /// The doctor's notes.
    pub notes: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct CancelAppointmentInput {
    pub appointment_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

fn duration_minutes(raw: Option<i32>, default: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(m) => u32::try_from(m)
            .ok()
            .filter(|m| (1..=MAX_APPOINTMENT_MINUTES).contains(m))
            .ok_or_else(|| {
                ApiError::validation(
                    "durationMinutes",
                    format!("must be 1 to {MAX_APPOINTMENT_MINUTES} minutes"),
                )
            }),
    }
}

// ---------------------------------------------------------------------------------
// Time zone

/// `instant` in the hospital's local time, with the UTC offset in force at that instant
/// (from PostgreSQL's time-zone database).
async fn local_time(
    auth: &Authorized<'_>,
    instant: DateTime<Utc>,
) -> Result<DateTime<FixedOffset>, ApiError> {
    let zone = auth
        .hospital
        .profile
        .as_ref()
        .map_or("UTC", |p| p.time_zone.as_str());
    let local: NaiveDateTime = sqlx::query_scalar("SELECT ($1::timestamptz AT TIME ZONE $2)")
        .bind(instant)
        .bind(zone)
        .fetch_one(auth.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22023") => {
                ApiError::Conflict(format!(
                    "the hospital's time zone {zone} is not known; an administrator must correct it"
                ))
            }
            _ => ApiError::internal(e),
        })?;
    let offset = (local - instant.naive_utc()).num_seconds();
    let offset = i32::try_from(offset)
        .ok()
        .and_then(FixedOffset::east_opt)
        .ok_or_else(|| ApiError::internal(format!("time zone {zone}: offset {offset}s")))?;
    Ok(instant.with_timezone(&offset))
}

fn whole_minutes(start: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if start.second() != 0 || start.nanosecond() != 0 {
        return Err(ApiError::validation("start", "must be on a whole minute"));
    }
    Ok(start)
}

// ---------------------------------------------------------------------------------
// The booking saga

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Doctor,
    Patient,
}

impl Party {
    /// The id of the owner's schedule stream for local day `day`.
    fn stream(self, owner: Uuid, day: NaiveDate) -> String {
        match self {
            Party::Doctor => DoctorSchedule::id_for(owner, day),
            Party::Patient => PatientSchedule::id_for(owner, day),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Party::Doctor => "doctor",
            Party::Patient => "patient",
        }
    }
}

/// A step that succeeded and how to take it back.
#[derive(Debug, Clone)]
enum Undo {
    /// Give back a slot that was reserved.
    Release {
        party: Party,
        owner: Uuid,
        day: NaiveDate,
    },
    /// Take back a slot that was released (a same-day reschedule that failed).
    Reserve {
        party: Party,
        owner: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
    },
}

/// The steps of one booking, rescheduling or cancellation of appointment `id`.
struct Saga<'s, 'a> {
    auth: &'s Authorized<'a>,
    appointment_id: Uuid,
    done: Vec<Undo>,
}

impl<'s, 'a> Saga<'s, 'a> {
    fn new(auth: &'s Authorized<'a>, appointment_id: Uuid) -> Self {
        Self {
            auth,
            appointment_id,
            done: Vec::new(),
        }
    }

    async fn run_schedule(
        &self,
        party: Party,
        stream: &str,
        command: ScheduleCommand,
    ) -> Result<(), CommandError<ScheduleError>> {
        let auth = self.auth;
        let runner = &auth.scope.state.runner;
        let metadata = auth.metadata();
        match party {
            Party::Doctor => {
                commands::execute::<DoctorSchedule>(
                    auth.pool(),
                    runner,
                    stream,
                    command,
                    (),
                    &metadata,
                )
                .await
            }
            Party::Patient => {
                commands::execute::<PatientSchedule>(
                    auth.pool(),
                    runner,
                    stream,
                    command,
                    (),
                    &metadata,
                )
                .await
            }
        }
    }

    async fn try_reserve(
        &self,
        party: Party,
        owner: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
    ) -> Result<(), CommandError<ScheduleError>> {
        let command = ScheduleCommand::Reserve {
            actor: self.auth.actor(),
            owner_id: owner,
            appointment_id: self.appointment_id,
            start,
            minutes,
            now: self.auth.now,
        };
        self.run_schedule(party, &party.stream(owner, start.date_naive()), command)
            .await
    }

    async fn try_release(
        &self,
        party: Party,
        owner: Uuid,
        day: NaiveDate,
        reason: ReleaseReason,
    ) -> Result<(), CommandError<ScheduleError>> {
        let command = ScheduleCommand::Release {
            actor: self.auth.actor(),
            appointment_id: self.appointment_id,
            reason,
            now: self.auth.now,
        };
        self.run_schedule(party, &party.stream(owner, day), command)
            .await
    }

    /// Reserves the slot; on success remembers to release it if a later step fails.
    async fn reserve(
        &mut self,
        party: Party,
        owner: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
    ) -> Result<(), ApiError> {
        match self.try_reserve(party, owner, start, minutes).await {
            Ok(()) => {
                self.done.push(Undo::Release {
                    party,
                    owner,
                    day: start.date_naive(),
                });
                Ok(())
            }
            Err(e) => {
                let error = reservation_error(party, e);
                self.compensate().await;
                Err(error)
            }
        }
    }

    /// Releases the slot held for `start`; on success remembers to take it back if a
    /// later step fails.
    async fn release_for_move(
        &mut self,
        party: Party,
        owner: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
    ) -> Result<(), ApiError> {
        match self
            .try_release(party, owner, start.date_naive(), ReleaseReason::Rescheduled)
            .await
        {
            Ok(()) => {
                self.done.push(Undo::Reserve {
                    party,
                    owner,
                    start,
                    minutes,
                });
                Ok(())
            }
            Err(e) => {
                self.compensate().await;
                Err(command_error(e).into())
            }
        }
    }

    /// Fails the saga after a non-schedule step failed: undoes what was done.
    async fn fail(mut self, error: ApiError) -> ApiError {
        self.compensate().await;
        error
    }

    /// Undoes the steps that succeeded, newest first. An undo that fails leaves a slot
    /// held (never a double booking); it is logged for the operators' sweep.
    async fn compensate(&mut self) {
        while let Some(step) = self.done.pop() {
            let result = match &step {
                Undo::Release { party, owner, day } => {
                    self.try_release(*party, *owner, *day, ReleaseReason::Compensation)
                        .await
                }
                Undo::Reserve {
                    party,
                    owner,
                    start,
                    minutes,
                } => self.try_reserve(*party, *owner, *start, *minutes).await,
            };
            if let Err(e) = result {
                tracing::error!(
                    appointment_id = %self.appointment_id,
                    ?step,
                    error = %e,
                    "compensating a booking step failed; the slot needs a manual release"
                );
            }
        }
    }

    /// Releases a slot after the appointment itself has changed (cancel, no-show, the
    /// old day of a reschedule). The appointment is already final, so a failure is
    /// logged rather than undoing it; a slot already released is fine.
    async fn release_after(
        &self,
        party: Party,
        owner: Uuid,
        day: NaiveDate,
        reason: ReleaseReason,
    ) {
        match self.try_release(party, owner, day, reason).await {
            Ok(()) | Err(CommandError::Rejected(ScheduleError::NotReserved(_))) => {}
            Err(e) => tracing::error!(
                appointment_id = %self.appointment_id,
                party = party.name(),
                %owner,
                %day,
                error = %e,
                "releasing a slot failed; it stays held until released by an operator"
            ),
        }
    }
}

/// A refused reservation, in words that say whose time is taken.
fn reservation_error(party: Party, e: CommandError<ScheduleError>) -> ApiError {
    let who = party.name();
    match e {
        CommandError::Rejected(ScheduleError::SlotTaken { .. }) => ApiError::Conflict(format!(
            "the {who} already has an appointment at an overlapping time"
        )),
        CommandError::Conflict => ApiError::Conflict(format!(
            "another booking for the {who} on that day was made at the same moment; \
             reload the schedule and try again"
        )),
        other => command_error(other).into(),
    }
}

// ---------------------------------------------------------------------------------
// Mutations

#[derive(Default)]
pub struct AppointmentMutation;

/// The facts `Schedule` needs about the doctor, from the staff read model.
async fn doctor_facts(pool: &PgPool, doctor_id: Uuid) -> Result<DoctorFacts, ApiError> {
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT role, active FROM staff WHERE id = $1")
            .bind(doctor_id)
            .fetch_optional(pool)
            .await
            .map_err(ApiError::internal)?;
    let (role, active) = row.ok_or(ApiError::NotFound)?;
    let role = Role::parse(&role).map_err(ApiError::internal)?;
    Ok(DoctorFacts { active, role })
}

/// Whether the patient may be booked, from the patients read model.
async fn patient_active(pool: &PgPool, patient_id: Uuid) -> Result<bool, ApiError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM patients WHERE id = $1")
        .bind(patient_id)
        .fetch_optional(pool)
        .await
        .map_err(ApiError::internal)?;
    Ok(status.ok_or(ApiError::NotFound)? == "ACTIVE")
}

/// Loads appointment `id` and checks `action` is legal from its status, before any slot
/// is touched (the aggregate checks again when the command runs).
async fn load_for(
    auth: &Authorized<'_>,
    id: Uuid,
    action: AppointmentAction,
) -> Result<AppointmentAggregate, ApiError> {
    let (appointment, _) = auth.load::<AppointmentAggregate>(&id.to_string()).await?;
    check_transition(&appointment, action)?;
    Ok(appointment)
}

fn check_transition(
    appointment: &AppointmentAggregate,
    action: AppointmentAction,
) -> Result<(), ApiError> {
    let from = appointment.status.ok_or(ApiError::NotFound)?;
    if transition(from, action).is_none() {
        return Err(ApiError::from(
            AppointmentError::IllegalTransition { from, action }.to_app_error(),
        ));
    }
    Ok(())
}

/// Runs one status change of appointment `id` and returns it as the read model shows it.
async fn appointment_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: AppointmentCommand,
) -> Result<Appointment, ApiError> {
    auth.idempotent(options, input, || async {
        auth.execute::<AppointmentAggregate>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, ApiError>(id.to_string())
    })
    .await?;
    load_appointment(auth.pool(), id).await
}

/// Cancel or no-show: the appointment first (so a slot is never free while the
/// appointment still holds it), then both slots.
async fn end_and_release(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: AppointmentCommand,
    reason: ReleaseReason,
) -> Result<Appointment, ApiError> {
    let action = command
        .action()
        .ok_or_else(|| ApiError::internal("end_and_release needs a status change"))?;
    auth.idempotent(options, input, || async {
        let appointment = load_for(auth, id, action).await?;
        auth.execute::<AppointmentAggregate>(&id.to_string(), command, options.expected_version)
            .await?;
        if let (Some(doctor), Some(patient), Some(day)) = (
            appointment.doctor_id,
            appointment.patient_id,
            appointment.local_date,
        ) {
            let saga = Saga::new(auth, id);
            saga.release_after(Party::Doctor, doctor, day, reason).await;
            saga.release_after(Party::Patient, patient, day, reason)
                .await;
        }
        Ok::<_, ApiError>(id.to_string())
    })
    .await?;
    load_appointment(auth.pool(), id).await
}

#[Object]
impl AppointmentMutation {
    /// Books an appointment: holds the doctor's and the patient's time (neither can be
    /// double booked, also under concurrent requests), then records the appointment.
    /// An overlapping booking is a CONFLICT.
    async fn schedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: ScheduleAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::ScheduleAppointment).await?;
        let options = MutationOptions::new(None, input.idempotency_key.clone())?;
        let policy = BookingPolicy::from(&auth.hospital.settings);
        let minutes = duration_minutes(input.duration_minutes, policy.slot_length.get())?;
        let reason = BoundedText::parse("reason", &input.reason, MAX_REASON_CHARS)
            .map_err(ApiError::from)?;
        if let Some(department) = input.department_id {
            let department = auth
                .hospital
                .department(department)
                .ok_or(ApiError::NotFound)?;
            if !department.active {
                return Err(ApiError::validation(
                    "departmentId",
                    "the department is inactive",
                ));
            }
        }
        let doctor = doctor_facts(auth.pool(), input.doctor_id).await?;
        let patient_active = patient_active(auth.pool(), input.patient_id).await?;
        let start = local_time(&auth, whole_minutes(check_instant("start", input.start)?)?).await?;
        // Fail fast, before any slot is held; `Schedule` checks all of it again.
        if doctor.role != Role::Doctor {
            return Err(ApiError::from(
                AppointmentError::NotADoctor(doctor.role).to_app_error(),
            ));
        }
        if !doctor.active {
            return Err(ApiError::from(
                AppointmentError::DoctorInactive.to_app_error(),
            ));
        }
        if !patient_active {
            return Err(ApiError::from(
                AppointmentError::PatientInactive.to_app_error(),
            ));
        }
        validate_slot(start, minutes, &policy, auth.now)
            .map_err(|e| ApiError::from(e.to_app_error()))?;

        let id = auth
            .idempotent_id(&options, &input, || async {
                let appointment_id = auth.new_id(&options);
                let mut saga = Saga::new(&auth, appointment_id);
                saga.reserve(Party::Doctor, input.doctor_id, start, minutes)
                    .await?;
                saga.reserve(Party::Patient, input.patient_id, start, minutes)
                    .await?;
                let command = AppointmentCommand::Schedule {
                    actor: auth.actor(),
                    appointment_id,
                    patient_id: input.patient_id,
                    doctor_id: input.doctor_id,
                    department_id: input.department_id,
                    start,
                    minutes,
                    reason,
                    policy,
                    doctor,
                    patient_active,
                    now: auth.now,
                };
                match auth
                    .execute::<AppointmentAggregate>(&appointment_id.to_string(), command, Some(0))
                    .await
                {
                    Ok(()) => Ok(appointment_id),
                    Err(e) => Err(saga.fail(e.into()).await),
                }
            })
            .await?;
        load_appointment(auth.pool(), id).await
    }

    /// Moves a scheduled appointment: the new time is held before the old one is given
    /// back (on the same day the old slot is given back first and taken back if the new
    /// one cannot be held).
    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: RescheduleAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::RescheduleAppointment).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let id = input.appointment_id;
        let (current, version) = auth.load::<AppointmentAggregate>(&id.to_string()).await?;
        let stale = options.expected_version.is_some_and(|v| v != version);
        let (Some(doctor), Some(patient), Some(old_start), Some(old_end), Some(old_day)) = (
            current.doctor_id,
            current.patient_id,
            current.start,
            current.end,
            current.local_date,
        ) else {
            return Err(ApiError::NotFound);
        };
        let old_minutes =
            u32::try_from((old_end - old_start).num_minutes()).map_err(ApiError::internal)?;
        let policy = BookingPolicy::from(&auth.hospital.settings);
        let minutes = duration_minutes(input.duration_minutes, old_minutes)?;
        let start = local_time(&auth, whole_minutes(check_instant("start", input.start)?)?).await?;
        validate_slot(start, minutes, &policy, auth.now)
            .map_err(|e| ApiError::from(e.to_app_error()))?;
        let old_local = local_time(&auth, old_start).await?;
        let same_day = start.date_naive() == old_day;

        auth.idempotent(&options, &input, || async {
            // A stale version is refused before any slot is touched (inside the
            // idempotent block: a retry of a request that succeeded gets its answer).
            if stale {
                return Err(ApiError::from(command_error::<AppointmentError>(
                    CommandError::Conflict,
                )));
            }
            check_transition(&current, AppointmentAction::Reschedule)?;
            let mut saga = Saga::new(&auth, id);
            for (party, owner) in [(Party::Doctor, doctor), (Party::Patient, patient)] {
                if same_day {
                    // One stream holds both slots, and it refuses a second slot for the
                    // same appointment: give the old one back first.
                    saga.release_for_move(party, owner, old_local, old_minutes)
                        .await?;
                }
                saga.reserve(party, owner, start, minutes).await?;
            }
            let command = AppointmentCommand::Reschedule {
                actor: auth.actor(),
                start,
                minutes,
                policy,
                now: auth.now,
            };
            if let Err(e) = auth
                .execute::<AppointmentAggregate>(&id.to_string(), command, options.expected_version)
                .await
            {
                return Err(saga.fail(e.into()).await);
            }
            if !same_day {
                saga.release_after(Party::Doctor, doctor, old_day, ReleaseReason::Rescheduled)
                    .await;
                saga.release_after(Party::Patient, patient, old_day, ReleaseReason::Rescheduled)
                    .await;
            }
            Ok::<_, ApiError>(id.to_string())
        })
        .await?;
        load_appointment(auth.pool(), id).await
    }

    /// The patient has arrived.
    async fn check_in_appointment(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CheckInAppointment).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = AppointmentCommand::CheckIn {
            actor: auth.actor(),
            now: auth.now,
        };
        appointment_command(&auth, &options, &input, input.appointment_id, command).await
    }

    /// The consultation starts (the appointment's own DOCTOR).
    async fn start_appointment(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::StartAppointment).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = AppointmentCommand::Start {
            actor: auth.actor(),
            now: auth.now,
        };
        appointment_command(&auth, &options, &input, input.appointment_id, command).await
    }

    /// The consultation ends, with the doctor's notes (the appointment's own DOCTOR).
    async fn complete_appointment(
        &self,
        ctx: &Context<'_>,
        input: CompleteAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CompleteAppointment).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let notes = match input.notes.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => {
                Some(BoundedText::parse("notes", n, MAX_NOTES_CHARS).map_err(ApiError::from)?)
            }
        };
        let command = AppointmentCommand::Complete {
            actor: auth.actor(),
            notes,
            now: auth.now,
        };
        appointment_command(&auth, &options, &input, input.appointment_id, command).await
    }

    /// Cancels a scheduled or checked-in appointment and frees the doctor's and the
    /// patient's time.
    async fn cancel_appointment(
        &self,
        ctx: &Context<'_>,
        input: CancelAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CancelAppointment).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let reason = BoundedText::parse("reason", &input.reason, MAX_REASON_CHARS)
            .map_err(ApiError::from)?;
        let id = input.appointment_id;
        let command = AppointmentCommand::Cancel {
            actor: auth.actor(),
            reason,
            now: auth.now,
        };
        end_and_release(
            &auth,
            &options,
            &input,
            id,
            command,
            ReleaseReason::Cancelled,
        )
        .await
    }

    /// The patient did not come (at or after the start); frees the time.
    async fn mark_no_show(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::MarkNoShow).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let id = input.appointment_id;
        let command = AppointmentCommand::MarkNoShow {
            actor: auth.actor(),
            now: auth.now,
        };
        end_and_release(&auth, &options, &input, id, command, ReleaseReason::NoShow).await
    }
}

// ---------------------------------------------------------------------------------
// Errors
