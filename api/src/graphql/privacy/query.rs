//! The privacy officer's break-glass review queue.

use async_graphql::{Context, Object};
use hms_app::usecases::privacy as uc;
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::BreakGlassAccess;
use crate::graphql::error::Result;
use crate::graphql::pagination::{connection, page_cost, page_request, Page};
use crate::graphql::session::authorize;
use crate::graphql::QUERY_FIELD_COST;

#[derive(Default)]
pub struct PrivacyQuery;

#[Object]
impl PrivacyQuery {
    /// Break-glass accesses, oldest first: those awaiting review, or all of them; of one
    /// patient when named. The patients shown are recorded in the access log.
    #[graphql(complexity = "QUERY_FIELD_COST + page_cost(first, child_complexity)")]
    async fn break_glass_accesses(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] include_reviewed: bool,
        patient_id: Option<Uuid>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<BreakGlassAccess>> {
        let auth = authorize(ctx, Operation::ReviewBreakGlass).await?;
        let page = page_request(first, after)?;
        let found = uc::break_glass_accesses(&auth, include_reviewed, patient_id, &page).await?;
        let items = found
            .items
            .into_iter()
            .map(|(k, r)| Ok((k, BreakGlassAccess::try_from(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(connection(hms_app::page::Page {
            items,
            has_previous: found.has_previous,
            has_next: found.has_next,
        }))
    }
}
