//! # hms-api
//!
//! The HMS server binary and its admin subcommands: GraphQL types and resolvers (parse
//! input, call one use case of [`hms_app`], map its error), HTTP around them, and the
//! CLI. `main.rs` only parses arguments and calls [`cli::run`].
//!
//! - [`config`]: command line and environment.
//! - [`graphql`]: the schema; [`http`]: the axum routes around it; [`graphiql`]: the
//!   GraphiQL page and its assets, served without any outside host.
//! - [`metrics`]: `/metrics` for Prometheus; [`logging`]: text or JSON log lines.
//! - [`cli`]: the subcommands (`serve`, `migrate`, `create-superadmin`, …).

pub mod cli;
pub mod config;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod logging;
pub mod metrics;
