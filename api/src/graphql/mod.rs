//! The GraphQL schema: one module per area, merged into the query and mutation roots.
//!
//! The tenant and the actor of a request come from the verified token only (see
//! [`RequestContext`]); no argument or header can name another hospital.

pub mod appointments;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod error;
pub mod hospital;
pub mod pagination;
pub mod patients;
pub mod platform;
pub mod session;
pub mod types;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};

use error::ApiError;
use hms_app::auth::{AuthError, Principal};
use hms_app::scope::RequestInfo;
use hms_app::state::AppState;

// One line per area, so areas can be added independently.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    auth::AuthQuery,
    hospital::HospitalQuery,
    patients::PatientQuery,
    appointments::AppointmentQuery,
    billing::BillingQuery,
    audit::AuditQuery,
    platform::PlatformQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    auth::AuthMutation,
    hospital::HospitalMutation,
    patients::PatientMutation,
    appointments::AppointmentMutation,
    billing::BillingMutation,
    platform::PlatformMutation,
);

pub type HmsSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Limits that keep one request from costing the server more than it should.
pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 1_000;

/// Per-request facts attached before execution.
pub struct RequestContext {
    /// Request id and client address, recorded on every event the request causes.
    pub info: RequestInfo,
    /// `None` when no token was sent.
    pub auth: Option<Result<Principal, AuthError>>,
}

pub fn build_schema(state: Option<AppState>, production: bool) -> HmsSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32);
    if production {
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The schema in SDL, as committed in `api/schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, false).sdl()
}

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

pub(crate) fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    ctx.data_unchecked::<RequestContext>()
}

/// The authenticated caller, or UNAUTHENTICATED.
pub(crate) fn principal<'a>(ctx: &Context<'a>) -> Result<&'a Principal, ApiError> {
    match &request(ctx).auth {
        Some(Ok(p)) => Ok(p),
        Some(Err(AuthError::Unavailable(e))) => Err(ApiError::internal(e)),
        Some(Err(AuthError::Internal(e))) => Err(ApiError::internal(e)),
        _ => Err(ApiError::Unauthenticated),
    }
}
