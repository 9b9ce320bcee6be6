//! The appointments' reads.

use async_graphql::{Context, Object};
use chrono::NaiveDate;
use hms_app::usecases::appointments as uc;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{Appointment, AppointmentFilter, DoctorDay};
use crate::graphql::error::Result;
use crate::graphql::pagination::{
    connection, nodes_select, page_cost, page_request, selects, Page,
};
use crate::graphql::session::authorize;
use crate::graphql::types::check_date;
use crate::graphql::QUERY_FIELD_COST;

/// The fields of an appointment that say something about its patient.
const PATIENT_FIELDS: &[&str] = &["patientId", "reason", "notes", "cancelReason", "history"];

/// What a response about appointments shows, for the access log.
fn showing(asks_patient_fields: bool) -> uc::Showing {
    if asks_patient_fields {
        uc::Showing::PatientDetails
    } else {
        uc::Showing::Schedule
    }
}

#[derive(Default)]
pub struct AppointmentQuery;

#[Object]
impl AppointmentQuery {
    /// Appointments in order of start.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
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
        let showing = showing(nodes_select(ctx, PATIENT_FIELDS));
        let appointments = uc::appointments(&auth, &filter, &page, showing).await?;
        Ok(connection(appointments.map(Appointment::from)))
    }

    /// One appointment.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn appointment(&self, ctx: &Context<'_>, id: Uuid) -> Result<Appointment> {
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        let showing = showing(selects(&ctx.look_ahead(), PATIENT_FIELDS));
        Ok(uc::appointment(&auth, id, showing).await?.into())
    }

    /// A doctor's appointments on one local day, in order of start; cancelled ones only
    /// when asked for. NOT_FOUND unless `doctorId` is a DOCTOR of this hospital.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn doctor_schedule(
        &self,
        ctx: &Context<'_>,
        doctor_id: Uuid,
        day: NaiveDate,
        #[graphql(default)] include_cancelled: bool,
    ) -> Result<DoctorDay> {
        let day = check_date("day", day)?;
        let auth = authorize(ctx, Operation::ViewAppointments).await?;
        let appointments = ctx.look_ahead().field("appointments");
        let showing = showing(selects(&appointments, PATIENT_FIELDS));
        Ok(
            uc::doctor_day(&auth, doctor_id, day, include_cancelled, showing)
                .await?
                .into(),
        )
    }
}
