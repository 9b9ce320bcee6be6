//! # hms-app
//!
//! The application layer of HMS: everything between a transport (GraphQL over HTTP, a
//! CLI) and the domain. No axum, no async-graphql: the server (`hms-api`) and the
//! auditor's tool (`hms-replay`) both build on it, and data flows one way:
//! `api → app → {projections, domain}`.
//!
//! - [`config`], [`state`]: platform settings, the platform connection ([`Platform`])
//!   and the state a serving process shares ([`AppState`]); [`application`] builds and
//!   runs a serving process with its workers.
//! - [`tenancy`]: directory, pools, provisioning, spares, migrate.
//! - [`commands`]: the command path through cqrs-es/postgres-es, with read-your-writes.
//! - [`auth`]: passwords, tokens, throttling; [`scope`]: the request capability
//!   (`HospitalScope` → `Authorized`); [`idempotency`]: retried mutations.
//! - [`usecases`]: one module per area; each takes typed input and returns domain or
//!   read-model types.
//! - [`workers`]: projection daemon and reservation sweep; [`hints`]: the "new events"
//!   channel between processes; [`tenant_stats`]: per-hospital figures for the platform.
//! - [`error`], [`domain_errors`]: the layer's error and how domain refusals map to it.
//! - [`page`]: keyset pagination.
//! - [`telemetry`]: the metrics this process records, named and described in one place.

pub mod application;
pub mod auth;
pub mod batching;
pub mod commands;
pub mod config;
pub mod domain_errors;
pub mod error;
pub mod hints;
pub mod idempotency;
pub mod page;
pub mod redact;
pub mod scope;
pub mod sequences;
pub mod state;
pub mod telemetry;
pub mod tenancy;
pub mod tenant_stats;
pub mod usecases;
pub mod workers;

pub use error::{AppError, Result};
pub use state::{AppState, Platform};
