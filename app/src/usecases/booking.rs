//! The booking process manager: the use cases that hold or give back a doctor's and a
//! patient's time (book, reschedule, cancel, no-show).
//!
//! No double booking is decided by the per-day schedule streams of the doctor and the
//! patient (ADR 0002). A booking decides, on the streams as they stand:
//! 1. `Reserve` on the doctor's schedule for the local day of the start;
//! 2. `Reserve` on the patient's schedule;
//! 3. `Schedule` on the new appointment;
//!
//! and appends the three decisions' events in one statement ([`crate::commands::together`]):
//! a refusal at any step appends nothing, a concurrent booking of the same doctor or
//! patient on that day makes the append lose its race and the booking is decided again.
//! Rescheduling, cancelling and no-shows change the appointment and its slots the same
//! way, so no step is ever undone by a compensating command and no crash leaves a slot
//! held. (The reservation sweep still releases holds left by the earlier, stepwise
//! bookings.)
//!
//! Times arrive as instants; the hospital's time zone (PostgreSQL's tz database, so the
//! domain needs none) turns them into local, offset-carrying times.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Timelike, Utc};
use hms_domain::appointment::{
    validate_slot, Appointment as AppointmentAggregate, AppointmentAction, AppointmentCommand,
    AppointmentError, BookingPolicy, DoctorFacts, MAX_REASON_CHARS,
};
use hms_domain::common::{BoundedText, Role};
use hms_domain::patient::PatientStatus;
use hms_domain::permissions::Operation;
use hms_domain::schedule::{
    DoctorSchedule, PatientSchedule, ReleaseReason, ScheduleCommand, ScheduleError,
    MAX_APPOINTMENT_MINUTES,
};
use serde::Serialize;
use uuid::Uuid;

use hms_projections::projectors::AppointmentRow;
use hms_projections::{fresh, personal};

use super::appointments::{
    appointment_from_row, check_transition, load_appointment, Appointment, AppointmentChange,
};
use crate::commands::{CommandError, Streams, Unit};
use crate::error::{command_error, load_error, AppError, DomainErrorCode, Result};
use crate::scope::{Authorized, MutationOptions};
use crate::usecases::stored_name;

// ---------------------------------------------------------------------------------
// Input

/// A booking. Serialized as the request whose idempotency key it carries.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleAppointment {
    pub patient_id: Uuid,
    /// A user with the DOCTOR role.
    pub doctor_id: Uuid,
    pub department_id: Option<Uuid>,
    /// The start as an instant; booked in the hospital's local time, on the slot grid
    /// and inside working hours.
    pub start: DateTime<Utc>,
    /// Length in minutes, a multiple of the slot length; one slot when `None`.
    pub duration_minutes: Option<i32>,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RescheduleAppointment {
    pub appointment_id: Uuid,
    pub start: DateTime<Utc>,
    /// Length in minutes; the current length when `None`.
    pub duration_minutes: Option<i32>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CancelAppointment {
    pub appointment_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

// ---------------------------------------------------------------------------------
// Use cases

/// Books an appointment (ScheduleAppointment): holds the doctor's and the patient's time
/// (neither can be double booked, also under concurrent requests), then records the
/// appointment. An overlapping booking is a CONFLICT.
pub async fn schedule_appointment(
    auth: &Authorized<'_>,
    input: &ScheduleAppointment,
) -> Result<Appointment> {
    auth.require(Operation::ScheduleAppointment)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let policy = BookingPolicy::from(&auth.hospital.settings);
    let minutes = duration_minutes(input.duration_minutes, policy.slot_length.get())?;
    let reason = BoundedText::parse("reason", &input.reason, MAX_REASON_CHARS)?;
    if let Some(department) = input.department_id {
        let department = auth
            .hospital
            .department(department)
            .ok_or(AppError::NotFound)?;
        if !department.active {
            return Err(AppError::validation(
                "departmentId",
                "the department is inactive",
            ));
        }
    }
    let BookingFacts {
        doctor,
        patient_active,
        patient_restricted,
        patient_key,
        start,
    } = booking_facts(
        auth,
        input.doctor_id,
        input.patient_id,
        whole_minutes(input.start)?,
    )
    .await?;
    // A doctor booking themselves joins the care team of a restricted record: only one
    // who may read it already (or broke the glass) may do that.
    if auth.actor().role == Role::Doctor {
        super::restriction::require_full_access(auth, input.patient_id).await?;
    }
    // Fail fast, before any slot is held; `Schedule` checks all of it again.
    if doctor.role != Role::Doctor {
        return Err(AppointmentError::NotADoctor(doctor.role).to_app_error());
    }
    if !doctor.active {
        return Err(AppointmentError::DoctorInactive.to_app_error());
    }
    if !patient_active {
        return Err(AppointmentError::PatientInactive.to_app_error());
    }
    validate_slot(start, minutes, &policy, auth.now).map_err(|e| e.to_app_error())?;

    // The new appointment's row as the booking's append stored it (docs/adr/0011). Should
    // the append write none (the patient's key went meanwhile), the round that stores it
    // hands it over (docs/adr/0017), so it is named before the append. Neither on a keyed
    // retry, which books nothing.
    let stored = std::sync::Mutex::new(None);
    let wanted = std::sync::Mutex::new(None);
    let id = auth
        .idempotent_id(&options, input, || async {
            let appointment_id = auth.new_id(&options);
            let row = fresh::want(auth.pool(), "appointments", appointment_id);
            *wanted.lock().unwrap_or_else(|e| e.into_inner()) = Some(row);
            let appointment = appointment_id.to_string();
            let day = start.date_naive();
            let streams = schedules(Streams::new(), input.doctor_id, input.patient_id, day)
                .expecting::<AppointmentAggregate>(appointment.as_str(), Some(0));
            let written = auth
                .together_inline(streams, |unit| {
                    if let Some(key) = &patient_key {
                        unit.knows_key(key.clone());
                    }
                    let booking = Booking::new(auth, appointment_id, unit);
                    let command = AppointmentCommand::Schedule {
                        actor: auth.actor(),
                        appointment_id,
                        patient_id: input.patient_id,
                        doctor_id: input.doctor_id,
                        department_id: input.department_id,
                        start,
                        minutes,
                        reason: reason.clone(),
                        policy,
                        doctor,
                        patient_active,
                        now: auth.now,
                    };
                    let (appointment, input) = (appointment.as_str(), input);
                    async move {
                        booking
                            .reserve(Party::Doctor, input.doctor_id, start, minutes)
                            .await?;
                        booking
                            .reserve(Party::Patient, input.patient_id, start, minutes)
                            .await?;
                        booking.appointment(appointment, command).await
                    }
                })
                .await?;
            *stored.lock().unwrap_or_else(|e| e.into_inner()) = written;
            Ok::<_, AppError>(appointment_id)
        })
        .await?;
    let stored = stored.into_inner().unwrap_or_else(|e| e.into_inner());
    let inline = stored
        .map(|rows| rows.rows::<AppointmentRow>("appointments"))
        .transpose()?
        .and_then(|rows| rows.into_iter().find(|row| row.id == id));
    let wanted = wanted.into_inner().unwrap_or_else(|e| e.into_inner());
    // A new appointment's stream is at version 1 once booked.
    match inline.or_else(|| wanted.and_then(|row| row.take::<AppointmentRow>(1))) {
        // The restriction flag as the booking read it with the patient's status.
        Some(row) => appointment_from_row(auth, row, patient_restricted).await,
        None => load_appointment(auth, id).await,
    }
}

/// Moves a scheduled appointment (RescheduleAppointment): the old slots are given back
/// and the new ones held in the same unit as the appointment's change, so the time is
/// never held twice nor lost.
pub async fn reschedule_appointment(
    auth: &Authorized<'_>,
    input: &RescheduleAppointment,
) -> Result<Appointment> {
    auth.require(Operation::RescheduleAppointment)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let id = input.appointment_id;
    let policy = BookingPolicy::from(&auth.hospital.settings);
    // Checked before the appointment is read: a bad length or start fails fast.
    if let Some(minutes) = input.duration_minutes {
        duration_minutes(Some(minutes), policy.slot_length.get())?;
    }
    let start = local_time(auth, whole_minutes(input.start)?).await?;

    auth.idempotent(&options, input, || async {
        let appointment = id.to_string();
        let streams = Streams::new()
            .expecting::<AppointmentAggregate>(appointment.as_str(), options.expected_version);
        auth.together(streams, |unit| {
            let booking = Booking::new(auth, id, unit);
            let (appointment, input) = (appointment.as_str(), input);
            async move {
                let current = booking
                    .current(appointment, AppointmentAction::Reschedule)
                    .await?;
                let (Some(doctor), Some(patient), Some(old_start), Some(old_end), Some(old_day)) = (
                    current.doctor_id,
                    current.patient_id,
                    current.start,
                    current.end,
                    current.local_date,
                ) else {
                    return Err(AppError::NotFound);
                };
                let old_minutes = u32::try_from((old_end - old_start).num_minutes())
                    .map_err(AppError::internal)?;
                let minutes = duration_minutes(input.duration_minutes, old_minutes)?;
                validate_slot(start, minutes, &policy, auth.now).map_err(|e| e.to_app_error())?;
                let day = start.date_naive();
                booking.include(doctor, patient, &[old_day, day]).await?;
                for (party, owner) in [(Party::Doctor, doctor), (Party::Patient, patient)] {
                    // Given back first: on the same day one stream holds both slots, and
                    // it refuses a second slot for the same appointment.
                    booking
                        .release(party, owner, old_day, ReleaseReason::Rescheduled)
                        .await?;
                    booking.reserve(party, owner, start, minutes).await?;
                }
                let command = AppointmentCommand::Reschedule {
                    actor: auth.actor(),
                    start,
                    minutes,
                    policy,
                    now: auth.now,
                };
                booking.appointment(appointment, command).await
            }
        })
        .await?;
        Ok::<_, AppError>(appointment)
    })
    .await?;
    load_appointment(auth, id).await
}

/// Cancels a scheduled or checked-in appointment and frees the doctor's and the
/// patient's time (CancelAppointment).
pub async fn cancel_appointment(
    auth: &Authorized<'_>,
    input: &CancelAppointment,
) -> Result<Appointment> {
    auth.require(Operation::CancelAppointment)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let reason = BoundedText::parse("reason", &input.reason, MAX_REASON_CHARS)?;
    let command = AppointmentCommand::Cancel {
        actor: auth.actor(),
        reason,
        now: auth.now,
    };
    end_and_release(
        auth,
        &options,
        input,
        input.appointment_id,
        command,
        ReleaseReason::Cancelled,
    )
    .await
}

/// The patient did not come (at or after the start); frees the time (MarkNoShow).
pub async fn mark_no_show(auth: &Authorized<'_>, input: &AppointmentChange) -> Result<Appointment> {
    auth.require(Operation::MarkNoShow)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let command = AppointmentCommand::MarkNoShow {
        actor: auth.actor(),
        now: auth.now,
    };
    end_and_release(
        auth,
        &options,
        input,
        input.appointment_id,
        command,
        ReleaseReason::NoShow,
    )
    .await
}

/// Cancel or no-show: the appointment's change and the release of both slots, as one
/// unit.
async fn end_and_release(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: AppointmentCommand,
    reason: ReleaseReason,
) -> Result<Appointment> {
    let action = command
        .action()
        .ok_or_else(|| AppError::internal("end_and_release needs a status change"))?;
    auth.idempotent(options, input, || async {
        let appointment = id.to_string();
        let streams = Streams::new()
            .expecting::<AppointmentAggregate>(appointment.as_str(), options.expected_version);
        auth.together(streams, |unit| {
            let booking = Booking::new(auth, id, unit);
            let (appointment, command) = (appointment.as_str(), command.clone());
            async move {
                let current = booking.current(appointment, action).await?;
                if let (Some(doctor), Some(patient), Some(day)) =
                    (current.doctor_id, current.patient_id, current.local_date)
                {
                    booking.include(doctor, patient, &[day]).await?;
                    booking.release(Party::Doctor, doctor, day, reason).await?;
                    booking
                        .release(Party::Patient, patient, day, reason)
                        .await?;
                }
                booking.appointment(appointment, command).await
            }
        })
        .await?;
        Ok::<_, AppError>(appointment)
    })
    .await?;
    load_appointment(auth, id).await
}

// ---------------------------------------------------------------------------------
// What a booking needs to know

fn duration_minutes(raw: Option<i32>, default: u32) -> Result<u32> {
    match raw {
        None => Ok(default),
        Some(m) => u32::try_from(m)
            .ok()
            .filter(|m| (1..=MAX_APPOINTMENT_MINUTES).contains(m))
            .ok_or_else(|| {
                AppError::validation(
                    "durationMinutes",
                    format!("must be 1 to {MAX_APPOINTMENT_MINUTES} minutes"),
                )
            }),
    }
}

fn whole_minutes(start: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if start.second() != 0 || start.nanosecond() != 0 {
        return Err(AppError::validation("start", "must be on a whole minute"));
    }
    Ok(start)
}

/// `instant` in the hospital's local time, with the UTC offset in force at that instant
/// (from PostgreSQL's time-zone database). A zone PostgreSQL does not know is a CONFLICT
/// an administrator must resolve.
async fn local_time(
    auth: &Authorized<'_>,
    instant: DateTime<Utc>,
) -> Result<DateTime<FixedOffset>> {
    let zone = time_zone(auth);
    let local: NaiveDateTime = sqlx::query_scalar("SELECT ($1::timestamptz AT TIME ZONE $2)")
        .bind(instant)
        .bind(zone)
        .fetch_one(auth.pool())
        .await
        .map_err(|e| zone_error(zone, e))?;
    with_offset(zone, instant, local)
}

fn time_zone<'a>(auth: &'a Authorized<'_>) -> &'a str {
    auth.hospital
        .profile
        .as_ref()
        .map_or("UTC", |p| p.time_zone.as_str())
}

fn unknown_zone(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22023"))
}

fn zone_error(zone: &str, e: sqlx::Error) -> AppError {
    if unknown_zone(&e) {
        AppError::Conflict(format!(
            "the hospital's time zone {zone} is not known; an administrator must correct it"
        ))
    } else {
        AppError::internal(e)
    }
}

/// `instant` carrying the offset between it and its `local` wall-clock time.
fn with_offset(
    zone: &str,
    instant: DateTime<Utc>,
    local: NaiveDateTime,
) -> Result<DateTime<FixedOffset>> {
    let offset = (local - instant.naive_utc()).num_seconds();
    let offset = i32::try_from(offset)
        .ok()
        .and_then(FixedOffset::east_opt)
        .ok_or_else(|| AppError::internal(format!("time zone {zone}: offset {offset}s")))?;
    Ok(instant.with_timezone(&offset))
}

/// What a booking must know before it holds any time.
struct BookingFacts {
    doctor: DoctorFacts,
    patient_active: bool,
    /// Whether the patient's record is restricted (read model), for the answer.
    patient_restricted: bool,
    /// The patient's data key, to seal the booking's events with (none when the key
    /// table holds none for the patient: the seal then asks it, and refuses an erased
    /// patient).
    patient_key: Option<personal::KnownKey>,
    /// The start in the hospital's local time.
    start: DateTime<FixedOffset>,
}

/// The doctor's facts (staff read model), whether the patient may be booked and whether
/// their record is restricted (patients read model), the patient's data key (to seal the
/// booking with, docs/adr/0017) and the start's local time, in one statement:
/// NOT_FOUND for an unknown
/// doctor or patient, CONFLICT for a time zone PostgreSQL does not know (checked after
/// them, as the separate look-ups would).
async fn booking_facts(
    auth: &Authorized<'_>,
    doctor_id: Uuid,
    patient_id: Uuid,
    instant: DateTime<Utc>,
) -> Result<BookingFacts> {
    let zone = time_zone(auth);
    #[derive(sqlx::FromRow)]
    struct Found {
        role: Option<String>,
        active: Option<bool>,
        status: Option<String>,
        restricted: Option<bool>,
        master_key_id: Option<String>,
        wrapped_key: Option<Vec<u8>>,
        local: NaiveDateTime,
    }
    let found: std::result::Result<Found, _> = sqlx::query_as(
        "SELECT s.role, s.active, p.status, p.restricted, k.master_key_id, k.wrapped_key, \
                ($3::timestamptz AT TIME ZONE $4) AS local \
           FROM (SELECT 1) AS one LEFT JOIN staff AS s ON s.id = $1 \
                LEFT JOIN patients AS p ON p.id = $2 \
                LEFT JOIN patient_keys AS k ON k.patient_id = $2",
    )
    .bind(doctor_id)
    .bind(patient_id)
    .bind(instant)
    .bind(zone)
    .fetch_one(auth.pool())
    .await;
    let Found {
        role,
        active,
        status,
        restricted,
        master_key_id,
        wrapped_key,
        local,
    } = match found {
        Ok(found) => found,
        Err(e) if unknown_zone(&e) => {
            doctor_facts(auth, doctor_id).await?;
            patient_active(auth, patient_id).await?;
            return Err(zone_error(zone, e));
        }
        Err(e) => return Err(e.into()),
    };
    let (Some(role), Some(active)) = (role, active) else {
        return Err(AppError::NotFound);
    };
    let status = status.ok_or(AppError::NotFound)?;
    Ok(BookingFacts {
        doctor: DoctorFacts {
            active,
            role: Role::parse(&role).map_err(AppError::internal)?,
        },
        patient_active: status == stored_name(&PatientStatus::Active)?,
        patient_restricted: restricted.unwrap_or(false),
        patient_key: personal::KnownKey::stored(patient_id, master_key_id, wrapped_key)
            .map_err(AppError::internal)?,
        start: with_offset(zone, instant, local)?,
    })
}

/// The facts `Schedule` needs about the doctor, from the staff read model; NOT_FOUND for
/// an unknown user.
async fn doctor_facts(auth: &Authorized<'_>, doctor_id: Uuid) -> Result<DoctorFacts> {
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT role, active FROM staff WHERE id = $1")
            .bind(doctor_id)
            .fetch_optional(auth.pool())
            .await?;
    let (role, active) = row.ok_or(AppError::NotFound)?;
    let role = Role::parse(&role).map_err(AppError::internal)?;
    Ok(DoctorFacts { active, role })
}

/// Whether the patient may be booked, from the patients read model; NOT_FOUND for an
/// unknown patient.
async fn patient_active(auth: &Authorized<'_>, patient_id: Uuid) -> Result<bool> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM patients WHERE id = $1")
        .bind(patient_id)
        .fetch_optional(auth.pool())
        .await?;
    Ok(status.ok_or(AppError::NotFound)? == stored_name(&PatientStatus::Active)?)
}

// ---------------------------------------------------------------------------------
// The process manager

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

/// `streams` and the doctor's and the patient's schedules of local day `day`.
fn schedules(streams: Streams, doctor: Uuid, patient: Uuid, day: NaiveDate) -> Streams {
    streams
        .with::<DoctorSchedule>(Party::Doctor.stream(doctor, day))
        .with::<PatientSchedule>(Party::Patient.stream(patient, day))
}

/// The decisions of one booking, rescheduling or cancellation of appointment `id`, made
/// in one unit: every event is appended together, or none is, so a refusal at any step
/// leaves nothing to undo.
struct Booking<'s, 'a> {
    auth: &'s Authorized<'a>,
    appointment_id: Uuid,
    unit: Unit,
}

impl<'s, 'a> Booking<'s, 'a> {
    fn new(auth: &'s Authorized<'a>, appointment_id: Uuid, unit: Unit) -> Self {
        Self {
            auth,
            appointment_id,
            unit,
        }
    }

    /// The appointment as the unit reads it; NOT_FOUND if it does not exist, CONFLICT if
    /// `action` is not allowed from its status.
    async fn current(&self, id: &str, action: AppointmentAction) -> Result<AppointmentAggregate> {
        let (current, _) = self
            .unit
            .state::<AppointmentAggregate>(id)
            .await
            .map_err(command_error)?;
        check_transition(&current, action)?;
        Ok(current)
    }

    /// Adds the doctor's and the patient's schedules of `days` to the unit.
    async fn include(&self, doctor: Uuid, patient: Uuid, days: &[NaiveDate]) -> Result<()> {
        let streams = days.iter().fold(Streams::new(), |streams, day| {
            schedules(streams, doctor, patient, *day)
        });
        self.unit.include(streams).await.map_err(load_error)
    }

    /// Decides the appointment's own command.
    async fn appointment(&self, id: &str, command: AppointmentCommand) -> Result<()> {
        self.unit
            .decide::<AppointmentAggregate>(id, command, ())
            .await
            .map_err(command_error)
    }

    /// Decides one schedule command. The domain's refusal stays typed: a taken slot and
    /// a slot already given back are told apart.
    async fn schedule(
        &self,
        party: Party,
        stream: &str,
        command: ScheduleCommand,
    ) -> Result<(), CommandError<ScheduleError>> {
        match party {
            Party::Doctor => {
                self.unit
                    .decide::<DoctorSchedule>(stream, command, ())
                    .await
            }
            Party::Patient => {
                self.unit
                    .decide::<PatientSchedule>(stream, command, ())
                    .await
            }
        }
    }

    /// Holds the owner's time from `start`: a CONFLICT that says whose time is taken.
    async fn reserve(
        &self,
        party: Party,
        owner: Uuid,
        start: DateTime<FixedOffset>,
        minutes: u32,
    ) -> Result<()> {
        let command = ScheduleCommand::Reserve {
            actor: self.auth.actor(),
            owner_id: owner,
            appointment_id: self.appointment_id,
            start,
            minutes,
            now: self.auth.now,
        };
        self.schedule(party, &party.stream(owner, start.date_naive()), command)
            .await
            .map_err(|e| reservation_error(party, e))
    }

    /// Gives back the owner's time on `day`. A slot that is not held (released by an
    /// operator, or never held by an appointment booked before reservations existed)
    /// has nothing to give back.
    async fn release(
        &self,
        party: Party,
        owner: Uuid,
        day: NaiveDate,
        reason: ReleaseReason,
    ) -> Result<()> {
        let command = ScheduleCommand::Release {
            actor: self.auth.actor(),
            appointment_id: self.appointment_id,
            reason,
            now: self.auth.now,
        };
        match self
            .schedule(party, &party.stream(owner, day), command)
            .await
        {
            Ok(()) | Err(CommandError::Rejected(ScheduleError::NotReserved(_))) => Ok(()),
            Err(e) => Err(command_error(e)),
        }
    }
}

/// A refused reservation, in words that say whose time is taken.
fn reservation_error(party: Party, e: CommandError<ScheduleError>) -> AppError {
    let who = party.name();
    match e {
        CommandError::Rejected(ScheduleError::SlotTaken { .. }) => AppError::Conflict(format!(
            "the {who} already has an appointment at an overlapping time"
        )),
        CommandError::Conflict => AppError::Conflict(format!(
            "another booking for the {who} on that day was made at the same moment; \
             reload the schedule and try again"
        )),
        CommandError::Contended => AppError::Contended(format!(
            "many bookings for the {who} on that day are being made at the same moment; \
             try again"
        )),
        other => command_error(other),
    }
}
