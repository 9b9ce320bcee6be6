//! The hospital administration queries.

use async_graphql::{Context, Object};
use hms_app::usecases::hospital as uc;
use hms_domain::permissions::Operation;
use hms_projections::projectors::StaffFilter;
use uuid::Uuid;

use super::types::{Department, Hospital, HospitalStats, StaffUser};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_cost, page_request, Page};
use crate::graphql::session::{authorize, hospital_scope};
use crate::graphql::types::Role;
use crate::graphql::QUERY_FIELD_COST;

#[derive(Default)]
pub struct HospitalQuery;

#[Object]
impl HospitalQuery {
    /// The caller's hospital.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn hospital(&self, ctx: &Context<'_>) -> Result<Hospital> {
        let scope = hospital_scope(ctx).await?;
        Ok(uc::hospital(&scope).await?.into())
    }

    /// The hospital's departments.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn departments(
        &self,
        ctx: &Context<'_>,
        active_only: Option<bool>,
    ) -> Result<Vec<Department>> {
        let scope = hospital_scope(ctx).await?;
        let departments = uc::departments(&scope, active_only.unwrap_or(false)).await?;
        Ok(departments.into_iter().map(Department::from).collect())
    }

    /// Staff accounts, by username.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        role: Option<Role>,
        department_id: Option<Uuid>,
        active: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<StaffUser>> {
        let auth = authorize(ctx, Operation::ViewStaff).await?;
        let page = page_request(first, after)?;
        let filter = StaffFilter {
            role: role.map(Into::into),
            department_id,
            active,
        };
        let users = uc::users(&auth, &page, &filter).await?;
        Ok(connection(users.map(StaffUser::from)))
    }

    /// One staff account.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn user(&self, ctx: &Context<'_>, id: Uuid) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ViewStaff).await?;
        Ok(uc::user(&auth, id).await?.into())
    }

    /// Figures for the hospital dashboard.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn hospital_stats(&self, ctx: &Context<'_>) -> Result<HospitalStats> {
        let auth = authorize(ctx, Operation::ViewReports).await?;
        Ok(uc::hospital_stats(&auth).await?.try_into()?)
    }
}
