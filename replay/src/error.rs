//! Errors of the tool: one variant per layer it goes through, each with a message an
//! operator can act on (the binary prints it on one line).

use hms_app::error::AppError;
use hms_app::tenancy::TenancyError;
use hms_projections::projectors::seal::SealError;
use hms_projections::ProjectionError;

pub type Result<T, E = ReplayError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown aggregate type '{given}'; known types: {known}")]
    UnknownAggregateType { given: String, known: String },
    #[error("{0}")]
    NotFound(String),
    /// An argument the tool cannot work with, named by its flag.
    #[error("--{flag}: {message}")]
    InvalidArgument { flag: String, message: String },
    /// The configuration cannot be used (a malformed or missing master key).
    #[error("{0}")]
    Config(String),
    /// The application layer failed (a database unreachable, an unexpected stored value).
    #[error(transparent)]
    App(AppError),
}
