//! `hms-replay`: parses the command line and hands over to [`hms_replay::run`]. Errors
//! end here as one line on stderr; the exit code is 0 (clean), 1 (problems found in
//! the log) or 2 (the tool could not do its work).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hms_replay::{Cli, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::ProblemsFound(_)) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hms-replay: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let outcome = runtime.block_on(hms_replay::run(cli, &mut out))?;
    out.flush().context("Failed to write to stdout")?;
    Ok(outcome)
}
