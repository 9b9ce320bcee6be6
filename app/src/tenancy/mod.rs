//! Tenancy: the platform database, the directory of hospitals, their databases and the
//! pools that reach them. Shared by the server and `hms-replay`.
//!
//! - [`platform`]: connecting to (and creating) the platform database; migrations.
//! - [`directory`]: the `tenants` table.
//! - [`names`]: tenant database names.
//! - [`pools`]: the pool registry that keeps thousands of tenants inside one server's
//!   connection limit.
//! - [`provisioning`]: onboarding a hospital, idempotent and resumable.
//! - [`servers`]: the PostgreSQL servers hospitals are placed on, and placement.
//! - [`spares`]: spare tenant databases made ahead of time, renamed at onboarding.
//! - [`writer`]: the role the tenant side runs under, which cannot rewrite the log.

pub mod backup;
pub mod directory;
pub mod migrate;
pub mod moving;
pub mod names;
pub mod platform;
pub mod pools;
pub mod provisioning;
pub mod servers;
pub mod spares;
pub mod writer;

use hms_domain::common::ValidationError;
use thiserror::Error;

pub use directory::{TenantDirectory, TenantRecord, TenantStatus};
pub use names::TenantNaming;
pub use pools::{PoolRegistry, TenantLease};

#[derive(Debug, Error)]
pub enum TenancyError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("a hospital with code {0} exists already")]
    AlreadyExists(String),
    #[error("no hospital with code {0}")]
    NotFound(String),
    #[error("hospital {0} is still being provisioned")]
    NotReady(String),
    #[error("too many hospitals are busy right now; try again shortly")]
    Busy,
    /// One line for the operator: where, and the innermost reason.
    #[error("cannot reach the database server at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// No database server may take the hospital (unknown, draining, or all full).
    #[error("{0}")]
    Placement(String),
    #[error("{0}")]
    Command(String),
}

pub type Result<T, E = TenancyError> = std::result::Result<T, E>;
