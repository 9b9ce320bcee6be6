//! The request capability as resolvers reach it: [`hospital_scope`] opens the caller's
//! hospital ([`HospitalScope::open`]) and [`authorize`] asks the permission matrix for
//! one operation, returning the [`Authorized`] value without which nothing is written.

use async_graphql::Context;
use hms_domain::disclosure::Disclosure;
use hms_domain::permissions::Operation;

use super::error::{ApiError, Result};
use super::{principal, request, state};
pub use hms_app::error::DomainErrorCode;
pub use hms_app::scope::{Authorized, HospitalScope, MutationOptions, MAX_IDEMPOTENCY_KEY_LEN};

/// The caller's hospital, or UNAUTHENTICATED / FORBIDDEN (super administrators).
pub async fn hospital_scope<'a>(ctx: &Context<'a>) -> Result<HospitalScope<'a>> {
    Ok(HospitalScope::open(state(ctx), principal(ctx)?, &request(ctx).info).await?)
}

/// The caller's hospital with permission for `operation`, or the reason not.
pub async fn authorize<'a>(ctx: &Context<'a>, operation: Operation) -> Result<Authorized<'a>> {
    Ok(hospital_scope(ctx).await?.authorize(operation).await?)
}

/// Whether the caller's role may read this field's kind of information
/// ([`Disclosure`]): the one check every restricted field of an output type makes. If
/// not, a FORBIDDEN error naming what was withheld is recorded at the field's path and
/// the field answers `null` (an error returned instead would drop the field from the
/// response, and with it a record whose every selected field was withheld).
pub fn disclosed(ctx: &Context<'_>, what: Disclosure) -> Result<bool> {
    match what.ensure(principal(ctx)?.role) {
        Ok(()) => Ok(true),
        Err(withheld) => {
            let error = async_graphql::Error::from(ApiError::Withheld(withheld));
            ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
            Ok(false)
        }
    }
}
