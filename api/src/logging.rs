//! Log lines on standard error: readable text, or one JSON object per line for a log
//! pipeline (`HMS_LOG_FORMAT=json`). Each request logs one line, `request`, with its
//! span's request id, hospital code and actor id, and the operation, outcome and
//! duration. Nothing logged names a patient or carries a secret: request variables and
//! results are never logged, and errors are logged by kind, not by the values they
//! refused.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's subscriber (`RUST_LOG` filters; default `info,sqlx=warn`).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
