//! # hms-projections
//!
//! The read side of HMS. The event log is the system of record; everything here is
//! derived from it and can be thrown away and rebuilt.
//!
//! - [`log`]: reads a tenant's events in commit order, safely past in-flight
//!   transactions, and decodes them through the domain's upcasters.
//! - [`runner`]: applies events to each [`Projector`] and stores the projector's
//!   checkpoint in the same transaction as its read-model change.
//! - [`projectors`]: the read models themselves, one module per aggregate family; most
//!   write a whole batch with a few set-based statements (`rows`).
//! - [`personal`]: personal data in events sealed under a key per patient, for erasure by
//!   destroying the key (crypto-shredding).
//! - [`inline`]: the few rows an append writes itself, so its answer needs no wait.
//! - [`fresh`]: rows a catch-up round wrote, handed to the commands waiting on it.
//! - [`rebuild`]: rebuilding a projector's tables from the log while the old ones serve.

pub mod error;
pub mod fresh;
pub mod inline;
pub mod log;
pub mod personal;
pub mod projectors;
pub mod rebuild;
mod rows;
pub mod runner;

pub use error::{ProjectionError, Result};

/// The server and database behind `pool` (`host:port/name`): what this process keys a
/// tenant database's shared state by (its catch-up rounds, kept states, turns, sequence
/// draws, rows handed over). A hospital moved to another server is another key, under
/// the same name too.
pub fn database_key(pool: &sqlx::PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}
pub use log::{LogCursor, StoredEvent};
pub use runner::{Lag, ProjectionRunner, Projector};
