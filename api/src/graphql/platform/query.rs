//! The super administrator's queries.

use async_graphql::{Context, Object};

use super::platform_scope;
use super::types::{PlatformHospital, PlatformStats, TenantStatus};
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_cost, page_request, Page};
use crate::graphql::QUERY_FIELD_COST;

#[derive(Default)]
pub struct PlatformQuery;

#[Object]
impl PlatformQuery {
    /// Every hospital on the platform, by code (super administrator only).
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn hospitals(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Only hospitals with this directory status.")] status: Option<
            TenantStatus,
        >,
    ) -> Result<Page<PlatformHospital>> {
        let scope = platform_scope(ctx)?;
        let page = page_request(first, after)?;
        let hospitals = scope.hospitals(&page, status.map(Into::into)).await?;
        Ok(connection(hospitals.map(PlatformHospital::from)))
    }

    /// One hospital by code (super administrator only). Its subscription and figures
    /// are first refreshed from its own database when it is open, so `version` is
    /// current; lists show the figures as last refreshed.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn platform_hospital(&self, ctx: &Context<'_>, code: String) -> Result<PlatformHospital> {
        Ok(platform_scope(ctx)?.hospital(&code).await?.into())
    }

    /// Hospitals by status and plan, and activity totals across them, as of each
    /// hospital's last statistics refresh (super administrator only).
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn platform_stats(&self, ctx: &Context<'_>) -> Result<PlatformStats> {
        Ok(platform_scope(ctx)?.stats().await?.into())
    }
}
