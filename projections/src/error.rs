use thiserror::Error;

pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "event at position {position} ({event_type} {event_version}) does not decode: {source}"
    )]
    Decode {
        position: i64,
        event_type: String,
        event_version: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("projector {projector} failed at position {position}: {message}")]
    ProjectorFailed {
        projector: &'static str,
        position: i64,
        message: String,
    },
    #[error("{0}")]
    Row(String),
    #[error("{0}")]
    Busy(String),
    #[error("no projector named {0}")]
    UnknownProjector(String),
    #[error("read models did not catch up within {0:?}")]
    CatchUpTimeout(std::time::Duration),
}
