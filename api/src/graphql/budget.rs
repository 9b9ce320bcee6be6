//! Charges each request's cost to its caller's budget ([`hms_app::auth::budget`]) once
//! the document is validated, when its complexity is known and before anything runs.
//! Requests without a valid token are not charged: sign-in has its own throttle and
//! everything else refuses them.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{ServerError, ValidationResult};
use hms_app::state::AppState;

use super::error::ApiError;
use super::RequestContext;

pub struct RequestBudget;

impl ExtensionFactory for RequestBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Charge)
    }
}

struct Charge;

#[async_trait::async_trait]
impl Extension for Charge {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let principal = match ctx.data_opt::<RequestContext>().map(|r| &r.auth) {
            Some(Some(Ok(p))) => p,
            _ => return Ok(result),
        };
        let Some(state) = ctx.data_opt::<AppState>() else {
            return Ok(result);
        };
        if let Err(e) = state
            .budget
            .charge(principal.user_id, result.complexity)
            .await
        {
            let error: async_graphql::Error = ApiError::from(e).into();
            return Err(vec![error.into_server_error(Default::default())]);
        }
        Ok(result)
    }
}
