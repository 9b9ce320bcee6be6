//! The appointments' reads.

use async_graphql::{Context, Object};
use chrono::NaiveDate;
use hms_app::usecases::appointments as uc;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{Appointment, AppointmentFilter, DoctorDay};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_request, Page};
use crate::graphql::session::authorize;
use crate::graphql::types::check_date;

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
        let filter = filter.unwrap_or_default().parse()?;
        let appointments = uc::appointments(&auth, &filter, &page).await?;
        Ok(connection(appointments.map(Appointment::from)))
    }

    /// One appointment.
    async fn appointment(&self, ctx: &Context<'_>, id: Uuid) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        Ok(uc::appointment(&auth, id).await?.into())
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
        Ok(uc::doctor_day(&auth, doctor_id, day, include_cancelled)
            .await?
            .into())
    }
}
