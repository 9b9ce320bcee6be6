//! The appointments' GraphQL types and their conversions from and to the use cases'.

use async_graphql::{ComplexObject, Context, Enum, InputObject, SimpleObject};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use hms_app::usecases::appointments as uc;
use hms_app::usecases::patients::record_patient_view;
use hms_domain::disclosure::Disclosure;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use crate::graphql::audit::{self, AuditEntry};
use crate::graphql::error::Result;
use crate::graphql::pagination::{page_cost, page_request, Page, RECORD_READ_COST};
use crate::graphql::session::{authorize, disclose};
use crate::graphql::types::check_instant;

// ---------------------------------------------------------------------------------
// Output types

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
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

/// An appointment as the read model shows it now. Which patient it is for, the reason
/// and the notes are shown to the roles the disclosure rules allow (README, "Who may do
/// and see what"); to others those fields are null with a FORBIDDEN error.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Appointment {
    pub id: Uuid,
    #[graphql(skip)]
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    pub department_id: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The hospital's local day of the start.
    pub local_date: NaiveDate,
    #[graphql(skip)]
    pub reason: String,
    pub status: AppointmentStatus,
    #[graphql(skip)]
    pub notes: Option<String>,
    #[graphql(skip)]
    pub cancel_reason: Option<String>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The appointment's version, for `expectedVersion`.
    pub version: i64,
    #[graphql(skip)]
    pub withheld: bool,
}

impl Appointment {
    /// The patient's text: withheld whole when their record is restricted and the caller
    /// may not read it in full, else by the disclosure rules of the caller's role.
    fn disclose_text<T>(
        &self,
        ctx: &Context<'_>,
        what: Disclosure,
        value: Option<T>,
    ) -> Result<Option<T>> {
        if self.withheld {
            let error = async_graphql::Error::from(crate::graphql::error::ApiError::Restricted);
            ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
            return Ok(None);
        }
        disclose(ctx, what, value)
    }
}

#[ComplexObject]
impl Appointment {
    /// The patient it is for.
    async fn patient_id(&self, ctx: &Context<'_>) -> Result<Option<Uuid>> {
        disclose(ctx, Disclosure::Identity, Some(self.patient_id))
    }

    /// Why the patient comes.
    async fn reason(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        self.disclose_text(ctx, Disclosure::VisitReason, Some(self.reason.as_str()))
    }

    /// The doctor's notes, once completed.
    async fn notes(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        self.disclose_text(ctx, Disclosure::ConsultationNotes, self.notes.as_deref())
    }

    async fn cancel_reason(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        self.disclose_text(ctx, Disclosure::VisitReason, self.cancel_reason.as_deref())
    }

    /// Every change to the appointment, from the event log (HOSPITAL_ADMIN). Reading it
    /// is recorded in the patient's access log.
    #[graphql(complexity = "RECORD_READ_COST + page_cost(first, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        // A bad page request is refused before a view is recorded.
        page_request(first, after.clone())?;
        record_patient_view(&auth, self.patient_id, "appointment history").await?;
        audit::history(&auth, "appointment", &self.id.to_string(), first, after).await
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

impl From<uc::Appointment> for Appointment {
    fn from(a: uc::Appointment) -> Self {
        Self {
            id: a.id,
            patient_id: a.patient_id,
            doctor_id: a.doctor_id,
            department_id: a.department_id,
            start: a.start,
            end: a.end,
            local_date: a.local_date,
            reason: a.reason,
            status: a.status.into(),
            notes: a.notes,
            cancel_reason: a.cancel_reason,
            checked_in_at: a.checked_in_at,
            started_at: a.started_at,
            completed_at: a.completed_at,
            cancelled_at: a.cancelled_at,
            created_at: a.created_at,
            updated_at: a.updated_at,
            version: a.version,
            withheld: a.withheld,
        }
    }
}

impl From<uc::DoctorDay> for DoctorDay {
    fn from(d: uc::DoctorDay) -> Self {
        Self {
            doctor_id: d.doctor_id,
            day: d.day,
            opens_at: d.opens_at,
            closes_at: d.closes_at,
            appointments: d.appointments.into_iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Inputs

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

impl AppointmentFilter {
    /// The use case's filter; instants out of the accepted years are VALIDATION.
    pub fn parse(self) -> Result<uc::AppointmentFilter> {
        Ok(uc::AppointmentFilter {
            doctor_id: self.doctor_id,
            patient_id: self.patient_id,
            department_id: self.department_id,
            status: self.status.map(Into::into),
            from: self.from.map(|v| check_instant("from", v)).transpose()?,
            to: self.to.map(|v| check_instant("to", v)).transpose()?,
        })
    }
}

#[derive(InputObject)]
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

impl ScheduleAppointmentInput {
    /// The use case's input; a start out of the accepted years is VALIDATION.
    pub fn parse(self) -> Result<uc::ScheduleAppointment> {
        Ok(uc::ScheduleAppointment {
            patient_id: self.patient_id,
            doctor_id: self.doctor_id,
            department_id: self.department_id,
            start: check_instant("start", self.start)?,
            duration_minutes: self.duration_minutes,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
        })
    }
}

#[derive(InputObject)]
pub struct RescheduleAppointmentInput {
    pub appointment_id: Uuid,
    pub start: DateTime<Utc>,
    /// Length in minutes; the current length when left out.
    pub duration_minutes: Option<i32>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl RescheduleAppointmentInput {
    /// The use case's input; a start out of the accepted years is VALIDATION.
    pub fn parse(self) -> Result<uc::RescheduleAppointment> {
        Ok(uc::RescheduleAppointment {
            appointment_id: self.appointment_id,
            start: check_instant("start", self.start)?,
            duration_minutes: self.duration_minutes,
            expected_version: self.expected_version,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// Check-in, start or no-show of one appointment.
#[derive(InputObject)]
pub struct AppointmentActionInput {
    pub appointment_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<AppointmentActionInput> for uc::AppointmentChange {
    fn from(i: AppointmentActionInput) -> Self {
        Self {
            appointment_id: i.appointment_id,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct CompleteAppointmentInput {
    pub appointment_id: Uuid,
    /// The doctor's notes.
    pub notes: Option<String>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<CompleteAppointmentInput> for uc::CompleteAppointment {
    fn from(i: CompleteAppointmentInput) -> Self {
        Self {
            appointment_id: i.appointment_id,
            notes: i.notes,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct CancelAppointmentInput {
    pub appointment_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<CancelAppointmentInput> for uc::CancelAppointment {
    fn from(i: CancelAppointmentInput) -> Self {
        Self {
            appointment_id: i.appointment_id,
            reason: i.reason,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}
