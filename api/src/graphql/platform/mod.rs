//! The platform super administrator's operations over GraphQL: the directory of
//! hospitals, their subscriptions and platform-wide figures. The rules live in
//! [`hms_app::usecases::platform`]; here inputs are parsed and results shaped.
//!
//! - [`types`]: the GraphQL objects, enums and inputs, and their conversions.
//! - [`query`] / [`mutation`]: resolvers that parse input, call one use case of
//!   [`hms_app::usecases::platform`] and map its error.

mod mutation;
mod query;
mod types;

use async_graphql::Context;
use hms_app::usecases::platform::PlatformScope;

use super::error::Result;
use super::{principal, request, state};
pub use mutation::PlatformMutation;
pub use query::PlatformQuery;
pub use types::*;

/// The caller as a platform super administrator, or UNAUTHENTICATED / FORBIDDEN.
fn platform_scope<'a>(ctx: &Context<'a>) -> Result<PlatformScope<'a>> {
    Ok(PlatformScope::open(
        state(ctx),
        principal(ctx)?,
        &request(ctx).info,
    )?)
}
