//! `hms-replay audit --format jsonl` over a large tenant, next to a raw
//! `COPY (SELECT … FROM events ORDER BY transaction_id, position) TO STDOUT` of the same
//! rows in the same run. Targets: at least 50 % of the raw rate, peak memory under 100 MB.
//!
//! Run: `cargo bench -p hms-tests --bench audit` (uses HMS_TEST_DATABASE_URL).
//! `HMS_BENCH_EVENTS` sets the log size (default 1,000,000).
//!
//! The audit runs in a child process (this binary again, with `HMS_BENCH_AUDIT_CHILD`
//! set) so that its peak resident memory (`VmHWM`) is its own, not the set-up's.

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use hms_app::state::Platform;
use hms_tests::drop_databases;
use sqlx::Connection;
use uuid::Uuid;

const HOSPITAL: &str = "BNC001";
const CHILD_ENV: &str = "HMS_BENCH_AUDIT_CHILD";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        return child(args.to_string_lossy().split('\u{1f}').collect()).await;
    }
    let events: i64 = std::env::var("HMS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let prefix = format!("hmsbench_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let result = run(&prefix, events).await;
    drop_databases(&prefix).await;
    result
}

/// The audit alone, then its own peak memory.
async fn child(args: Vec<&str>) -> anyhow::Result<()> {
    let cli = hms_replay::Cli::try_parse_from(args)?;
    let started = Instant::now();
    let mut sink = std::io::sink();
    hms_replay::run(cli, &mut sink).await?;
    let secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("secs={secs} vmhwm_kb={hwm_kb}");
    Ok(())
}

async fn run(prefix: &str, events: i64) -> anyhow::Result<()> {
    let config = hms_tests::bench::platform_config(prefix, 2);
    let platform = Platform::connect(&config).await?;
    let (mut db, total) = hms_tests::bench::hospital_with_log(&platform, HOSPITAL, events).await?;

    let dir = std::env::temp_dir().join(format!("hms-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;

    // Raw: the same rows, same order, straight out of the server into a file.
    let raw_path = dir.join("raw.copy");
    let started = Instant::now();
    let mut file = std::io::BufWriter::with_capacity(1 << 18, std::fs::File::create(&raw_path)?);
    let mut bytes = 0u64;
    {
        let mut copy = db
            .copy_out_raw(
                "COPY (SELECT position, transaction_id, aggregate_type, aggregate_id, sequence, \
                              event_type, event_version, payload, metadata, recorded_at \
                         FROM events ORDER BY transaction_id, position) TO STDOUT",
            )
            .await?;
        while let Some(chunk) = copy.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
    }
    file.flush()?;
    let raw_secs = started.elapsed().as_secs_f64();
    db.close().await?;
    platform.registry.close_all().await;
    platform.control.close().await;

    // hms-replay in a child process.
    let out_path = dir.join("audit.jsonl");
    let args = [
        "hms-replay",
        "--database-url",
        config.database_url.expose(),
        "--tenant-db-prefix",
        prefix,
        "audit",
        "--hospital",
        HOSPITAL,
        "--format",
        "jsonl",
        "--output",
        out_path.to_str().unwrap_or_default(),
    ]
    .join("\u{1f}");
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, args)
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.success(),
        "the audit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let audit_secs = field("secs=");
    let hwm_mb = field("vmhwm_kb=") / 1024.0;
    let audit_bytes = std::fs::metadata(&out_path)?.len();
    let _ = std::fs::remove_dir_all(&dir);

    let rate = |secs: f64| total as f64 / secs.max(1e-9);
    println!(
        "raw COPY TO STDOUT        {:>10.0} events/s  {:>7.2} s  {:>8.1} MB written",
        rate(raw_secs),
        raw_secs,
        bytes as f64 / 1e6
    );
    println!(
        "hms-replay audit --jsonl  {:>10.0} events/s  {:>7.2} s  {:>8.1} MB written  (process {wall:.2} s)",
        rate(audit_secs),
        audit_secs,
        audit_bytes as f64 / 1e6
    );
    println!(
        "audit / raw rate: {:.0} % (target >= 50 %);  audit peak memory (VmHWM): {hwm_mb:.1} MB (target < 100 MB)",
        100.0 * rate(audit_secs) / rate(raw_secs)
    );
    Ok(())
}
