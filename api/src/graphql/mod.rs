//! The GraphQL schema: one module per area, merged into the query and mutation roots.
//!
//! The tenant and the actor of a request come from the verified token only (see
//! [`RequestContext`]); no argument or header can name another hospital.

pub mod appointments;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod budget;
pub mod error;
pub mod hospital;
pub mod lab;
pub mod operation;
pub mod pagination;
pub mod parsed;
pub mod patients;
pub mod platform;
pub mod privacy;
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
    lab::LabQuery,
    privacy::PrivacyQuery,
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
    lab::LabMutation,
    privacy::PrivacyMutation,
    platform::PlatformMutation,
);

pub type HmsSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Limits that keep one request from costing the server more than it should. The
/// complexity counts each field once per record it is resolved for, and each root field
/// [`QUERY_FIELD_COST`] or [`MUTATION_FIELD_COST`] more: a page counts its
/// size (`first`) times what one node selects ([`pagination::page_cost`]), and a field
/// that records an access and reads the log for each node costs
/// [`pagination::RECORD_READ_COST`] more. The largest ordinary request (a full page of
/// 100 patients with every field) costs about 4,000. The depth admits the standard
/// introspection query (graphql-js's, which GraphiQL sends: `__schema > types > fields >
/// args > type` and nine `ofType`s, 15 deep); the complexity bounds the cost.
pub const MAX_DEPTH: usize = 15;
pub const MAX_COMPLEXITY: usize = 5_000;
/// What a root query field costs before its selection: each one reads the database, so
/// aliasing one field many times is not free (a thousand `me` cost 11,000).
pub const QUERY_FIELD_COST: usize = 10;
/// What a root mutation field costs before its selection: each one runs a command, so
/// one request runs at most 49 of them.
pub const MUTATION_FIELD_COST: usize = 100;

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
    .limit_recursive_depth(32)
    .extension(budget::RequestBudget)
    .extension(operation::OperationLabel)
    // Innermost: the label is still taken from every request's document.
    .extension(parsed::ParsedDocuments::default());
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
        Some(Err(AuthError::Unavailable(e))) => Err(ApiError::unavailable(e)),
        Some(Err(AuthError::Internal(e))) => Err(ApiError::internal(e)),
        _ => Err(ApiError::Unauthenticated),
    }
}
