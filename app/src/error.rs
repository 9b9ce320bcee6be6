//! The application layer's error: what a use case tells its caller, in categories a
//! client can act on (each maps to one stable API code), with the cause of an
//! infrastructure failure kept whole for the log — never flattened into a string the
//! client could see.

use std::error::Error as StdError;
use std::fmt;

use hms_domain::access::{AccessError, LimitedResource, PlanLimitReached};
use hms_domain::common::ValidationError;

use crate::commands::CommandError;
use crate::tenancy::TenancyError;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid hospital, username or password")]
    InvalidCredentials,
    #[error("you are not allowed to do this")]
    Forbidden,
    /// The patient's record is restricted to its care team and the caller is not on it:
    /// FORBIDDEN, with the way in (breaking the glass) named.
    #[error("the record is restricted to its care team; break the glass to read it")]
    Restricted,
    #[error("not found")]
    NotFound,
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// A final refusal: the request cannot succeed as it stands (the record's state
    /// forbids it, or the client's expected version is stale).
    #[error("{0}")]
    Conflict(String),
    /// Concurrent changes got in the way and the server's own retries ran out (or the
    /// first attempt with the same idempotency key is still running): the same request
    /// may succeed if sent again.
    #[error("{0}")]
    Contended(String),
    #[error("{0}")]
    SubscriptionInactive(String),
    #[error("{0}")]
    ModuleDisabled(String),
    #[error("too many requests; try again later")]
    RateLimited,
    /// A database could not be reached (down, restarting, refusing connections, the
    /// link broke); the same request may succeed shortly. The cause is for the log only.
    #[error("a database is unreachable: {0}")]
    Unavailable(#[source] Internal),
    /// Infrastructure failed; the cause is for the log only.
    #[error("internal error: {0}")]
    Internal(#[source] Internal),
}

/// The cause of an internal error, with its chain of sources.
pub struct Internal(Box<dyn StdError + Send + Sync>);

impl Internal {
    pub fn cause(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The whole chain of causes, so a log line says why.
impl fmt::Debug for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl StdError for Internal {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl AppError {
    /// An infrastructure failure; `cause` is kept for the log.
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        AppError::Internal(Internal(cause.into()))
    }

    /// A database could not be reached; `cause` is kept for the log.
    pub fn unavailable(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        AppError::Unavailable(Internal(cause.into()))
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for AppError {
    fn from(e: ValidationError) -> Self {
        AppError::validation(e.field, e.message)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if crate::tenancy::platform::is_unreachable(&e) {
            AppError::unavailable(e)
        } else {
            AppError::internal(e)
        }
    }
}

impl From<hms_projections::ProjectionError> for AppError {
    fn from(e: hms_projections::ProjectionError) -> Self {
        match e {
            hms_projections::ProjectionError::Database(e) => e.into(),
            other => AppError::internal(other),
        }
    }
}

impl From<AccessError> for AppError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Forbidden(_) => AppError::Forbidden,
            AccessError::Subscription(e) => AppError::SubscriptionInactive(e.to_string()),
            AccessError::Module(e) => AppError::ModuleDisabled(e.to_string()),
        }
    }
}

/// The plan's limit as the client sees it: a CONFLICT that says what to do.
impl From<PlanLimitReached> for AppError {
    fn from(e: PlanLimitReached) -> Self {
        AppError::Conflict(format!(
            "the {} plan allows {} {}; upgrade the plan to add more",
            e.plan,
            e.limit,
            match e.resource {
                LimitedResource::Users => "active users",
                LimitedResource::Patients => "patients",
            }
        ))
    }
}

/// How a tenancy failure reaches a client that asked about a hospital.
impl From<TenancyError> for AppError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::NotFound(_) => AppError::NotFound,
            TenancyError::Invalid(e) => e.into(),
            TenancyError::Busy => AppError::RateLimited,
            TenancyError::Database(e) => e.into(),
            e @ TenancyError::Unreachable { .. } => AppError::unavailable(e),
            other => AppError::internal(other),
        }
    }
}

/// How an aggregate's refusal reaches the client. Implemented once per aggregate error
/// type (in [`crate::domain_errors`]).
pub trait DomainErrorCode: StdError {
    fn to_app_error(&self) -> AppError;
}

/// Maps a failure to load an aggregate (no command ran, so nothing was refused): an
/// unreachable database is UNAVAILABLE, anything else internal.
pub fn load_error<E: StdError>(e: CommandError<E>) -> AppError {
    match e {
        CommandError::Unavailable(e) => AppError::unavailable(e),
        CommandError::Projection(e) => e.into(),
        other => AppError::internal(other.to_string()),
    }
}

/// Maps a command failure to what the client sees.
pub fn command_error<E: DomainErrorCode + Send + Sync + 'static>(e: CommandError<E>) -> AppError {
    command_failure(e, |e| e.to_app_error())
}

/// Maps the failure of a unit of commands ([`crate::commands::together`]), whose
/// refusals are the use case's own answers already.
pub fn unit_error(e: CommandError<AppError>) -> AppError {
    command_failure(e, |e| e)
}

fn command_failure<E: StdError>(
    e: CommandError<E>,
    rejected: impl FnOnce(E) -> AppError,
) -> AppError {
    match e {
        CommandError::Rejected(e) => rejected(e),
        CommandError::Conflict => AppError::Conflict(
            "the record was changed by someone else; reload and try again".into(),
        ),
        CommandError::Contended => AppError::Contended(
            "the record is being changed by many requests at once; try again".into(),
        ),
        CommandError::Unavailable(e) => AppError::unavailable(e),
        // The transport decides the request again on the rights read (docs/adr/0012):
        // this answer is replaced before it leaves.
        CommandError::AuthorityChanged => AppError::Contended(
            "your account or hospital changed while the request ran; try again".into(),
        ),
        CommandError::Erased(message) => AppError::Conflict(message),
        CommandError::Store(e) => AppError::internal(e),
        CommandError::Projection(e) => e.into(),
    }
}
