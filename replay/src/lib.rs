//! # hms-replay
//!
//! The auditor's and operator's tool over a hospital's event log, the system of record.
//! It finds hospitals through the platform database and reaches them with the server's
//! own tenancy code (`hms_app::state::Platform`), and reads the log with the read side's
//! reader and the domain's own decoders, upcasters and `apply`: nothing here is a second
//! interpretation of the data.
//!
//! - [`cli`]: the command line (clap derive); [`run`] executes it, writing to any
//!   writer so tests run the tool in-process.
//! - [`audit`]: the trail in commit order, streamed in constant memory, as a table,
//!   JSON lines, CSV or FHIR R4 AuditEvent resources.
//! - [`state`]: one aggregate rebuilt as it was at an instant or a sequence number.
//! - [`verify`]: every event decodes, sequences have no gaps, metadata is present, and
//!   the hash chain kept by `hms_projections::projectors::seal` matches the events and
//!   the head recorded in the platform database.
//! - [`seal`]: brings the seal up to date and records the head in the platform database.
//! - [`fhir`]: one patient's verified lab results as FHIR R4 resources, folded from the
//!   lab orders' streams (not the read models).
//! - [`access_report`]: every access to one patient's record, as the server's
//!   `patientAccessReport` builds it, in CSV or JSON; the operator's, so not recorded.
//!
//! Secrets in payloads (password hashes) are redacted in every output ([`redact`]).

pub mod access_report;
pub mod audit;
pub mod cli;
pub mod error;
pub mod fhir;
mod kinds;
mod output;
pub mod rebuild;
pub use hms_app::redact;
pub mod seal;
pub mod state;
mod tenant;
pub mod verify;

use std::io::Write;

use hms_app::state::Platform;

pub use cli::{Cli, Command};
pub use error::{ReplayError, Result};

/// How a run ended, when it could do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// `verify` found this many problems (the exit code is then non-zero).
    ProblemsFound(usize),
}

/// Connects to the platform named by `cli` and runs its command, writing the report or
/// export to `out` (or to `--output`).
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<Outcome> {
    // Sealed personal data opens under the platform's master keys (ADR 0008); a process
    // that runs the tool more than once keeps the keys it installed first.
    let keyring = cli.platform.keyring().map_err(ReplayError::Config)?;
    let _ = hms_projections::personal::install(keyring);
    let platform = Platform::connect(&cli.platform).await?;
    let outcome = run_on(&platform, cli.command, out).await;
    platform.control.close().await;
    outcome
}

/// Runs one command against a platform that is already connected.
pub async fn run_on(
    platform: &Platform,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    match command {
        Command::Audit(args) => audit::run(platform, &args, out).await,
        Command::State(args) => state::run(platform, &args, out).await,
        Command::Verify(args) => verify::run(platform, &args, out).await,
        Command::Seal(args) => seal::run(platform, &args, out).await,
        Command::Rebuild(args) => rebuild::run(platform, &args, out).await,
        Command::FhirExport(args) => fhir::run(platform, &args, out).await,
        Command::AccessReport(args) => access_report::run(platform, &args, out).await,
    }
}
