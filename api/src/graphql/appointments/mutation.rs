//! The appointments' changes: each resolver parses its input and runs one use case.

use async_graphql::{Context, Object};
use hms_app::usecases::appointments as uc;
use hms_domain::permissions::Operation;

use super::types::{
    Appointment, AppointmentActionInput, CancelAppointmentInput, CompleteAppointmentInput,
    RescheduleAppointmentInput, ScheduleAppointmentInput,
};
use crate::graphql::error::Result;
use crate::graphql::session::authorize;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct AppointmentMutation;

#[Object]
impl AppointmentMutation {
    /// Books an appointment: holds the doctor's and the patient's time (neither can be
    /// double booked, also under concurrent requests), then records the appointment.
    /// An overlapping booking is a CONFLICT.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn schedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: ScheduleAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::ScheduleAppointment).await?;
        let input = input.parse()?;
        Ok(uc::schedule_appointment(&auth, &input).await?.into())
    }

    /// Moves a scheduled appointment: the new time is held before the old one is given
    /// back (on the same day the old slot is given back first and taken back if the new
    /// one cannot be held).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: RescheduleAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::RescheduleAppointment).await?;
        let input = input.parse()?;
        Ok(uc::reschedule_appointment(&auth, &input).await?.into())
    }

    /// The patient has arrived.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn check_in_appointment(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CheckInAppointment).await?;
        Ok(uc::check_in_appointment(&auth, &input.into()).await?.into())
    }

    /// The consultation starts (the appointment's own DOCTOR).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn start_appointment(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::StartAppointment).await?;
        Ok(uc::start_appointment(&auth, &input.into()).await?.into())
    }

    /// The consultation ends, with the doctor's notes (the appointment's own DOCTOR).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn complete_appointment(
        &self,
        ctx: &Context<'_>,
        input: CompleteAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CompleteAppointment).await?;
        Ok(uc::complete_appointment(&auth, &input.into()).await?.into())
    }

    /// Cancels a scheduled or checked-in appointment and frees the doctor's and the
    /// patient's time.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn cancel_appointment(
        &self,
        ctx: &Context<'_>,
        input: CancelAppointmentInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::CancelAppointment).await?;
        Ok(uc::cancel_appointment(&auth, &input.into()).await?.into())
    }

    /// The patient did not come (at or after the start); frees the time.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn mark_no_show(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::MarkNoShow).await?;
        Ok(uc::mark_no_show(&auth, &input.into()).await?.into())
    }
}
