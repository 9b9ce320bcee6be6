use std::process::ExitCode;

use clap::Parser;

/// The process's allocator. With glibc's malloc, each 19 MiB argon2 block freed on a
/// blocking thread stayed resident in that thread's arena (its mmap threshold adapts
/// upwards after the first one), so a few dozen password hashes left ~150 MB resident for
/// good; mimalloc gives such blocks back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hms_api::config::Cli::parse();
    hms_api::logging::init(cli.log_format);
    match hms_api::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the chain of causes.
            eprintln!("hms: {e:#}");
            ExitCode::FAILURE
        }
    }
}
