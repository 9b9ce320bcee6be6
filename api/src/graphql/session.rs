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

/// A restricted field's value as the caller may see it: `value` when the caller's role
/// may read this kind of information ([`Disclosure`]), otherwise `None` with a FORBIDDEN
/// error naming what was withheld recorded at the field's path. The one check every
/// restricted field of an output type makes. (An error returned instead would drop the
/// field from the response, and with it a record whose every selected field was
/// withheld.)
pub fn disclose<T>(ctx: &Context<'_>, what: Disclosure, value: Option<T>) -> Result<Option<T>> {
    match what.ensure(principal(ctx)?.role) {
        Ok(()) => Ok(value),
        Err(withheld) => {
            let error = async_graphql::Error::from(ApiError::Withheld(withheld));
            ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
            Ok(None)
        }
    }
}
