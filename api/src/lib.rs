//! # hms-api
//!
//! The HMS server and its admin subcommands. `main.rs` only parses arguments and calls
//! [`cli::run`]; tests and `hms-replay` reuse everything from here.
//!
//! - [`config`]: command line and environment.
//! - [`tenancy`]: platform database, hospital directory, provisioning, pool registry.
//! - [`commands`]: the command path through cqrs-es/postgres-es, with read-your-writes.
//! - [`auth`]: passwords, tokens, who is calling.
//! - [`graphql`]: the schema; [`http`]: the axum routes around it.
//! - [`projection_daemon`]: keeps read models moving (hints from other processes, retries).
//! - [`reservation_sweep`]: releases slots a broken booking left held.
//! - [`state`]: start-up and shared state; [`cli`]: the subcommands.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod graphql;
pub mod http;
pub mod projection_daemon;
pub mod reservation_sweep;
pub mod state;
pub mod tenancy;
