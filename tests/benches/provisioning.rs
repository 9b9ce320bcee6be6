//! Provisioning time per hospital, next to a bare `CREATE DATABASE … TEMPLATE` of the
//! same template measured in the same run (target: within 1.5× the bare figure).
//!
//! Each round measures the bare copy; a cold provisioning (no spare database: it runs
//! `CREATE DATABASE … TEMPLATE` itself); and a provisioning that renames a spare
//! database, in an order that rotates from round to round. The spare is made at the
//! start of the round, untimed (a server makes it in the background ahead of time), so
//! the spare figure is what a hospital waits for when a spare is ready, and the cold
//! figure when none is.
//!
//! Run: `cargo bench -p hms-tests --bench provisioning` (uses HMS_TEST_DATABASE_URL).
//! Set `HMS_BENCH_ROUNDS` to change the number of rounds (default 20), and
//! `RUST_LOG=hms_app=debug` for each step's time.

use std::time::{Duration, Instant};

use hms_app::config::PlatformConfig;
use hms_app::state::Platform;
use hms_app::tenancy::names::quote_ident;
use hms_app::tenancy::provisioning::NewHospital;
use hms_tests::{drop_databases, server_options, ADMIN_PASSWORD};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{label:<42} median {:>8.1} ms   min {:>8.1} ms   p90 {:>8.1} ms   (n={})",
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() * 9 / 10]),
        samples.len()
    );
    median
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let rounds: usize = std::env::var("HMS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let prefix = format!("hmsbench_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let config = hms_tests::bench::platform_config(&prefix, 2);
    let result = run(&config, &prefix, rounds).await;
    drop_databases(&prefix).await;
    result
}

async fn run(config: &PlatformConfig, prefix: &str, rounds: usize) -> anyhow::Result<()> {
    let platform = Platform::connect(config).await?;
    let cold = platform.provisioner().with_spares(0);
    let spare = platform.provisioner().with_spares(1);
    let hash = hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned()).await?;
    let request = |code: &str| {
        NewHospital::parse(
            code,
            "Bench Hospital",
            "TRIAL",
            "bench_admin",
            "admin@bench.example",
            "Bench Admin",
            hash.clone(),
        )
    };
    // Warm-up: creates and migrates the template, opens the platform pool, goes once
    // through each path.
    cold.provision(&request("WARMUP")?).await?;
    spare.refill_spares().await?;
    spare.provision(&request("WARMSPARE")?).await?;
    let template = platform.naming.template_database();

    let mut conn = PgConnection::connect_with(&server_options()).await?;
    let mut bare = Vec::with_capacity(rounds);
    let mut full = Vec::with_capacity(rounds);
    let mut renamed = Vec::with_capacity(rounds);
    let mut spares_used = 0;
    // Interleave the three so that all see the same server state (WAL, cache, disk),
    // in an order that rotates each round, so that none always follows the same one.
    for i in 0..rounds {
        // Untimed: the spare a server would have made in the background.
        spare.refill_spares().await?;
        for measure in (0..3).map(|k| (k + i) % 3) {
            match measure {
                0 => {
                    let started = Instant::now();
                    sqlx::raw_sql(&format!(
                        "CREATE DATABASE {} TEMPLATE {}",
                        quote_ident(&format!("{prefix}bare{i}")),
                        quote_ident(&template)
                    ))
                    .execute(&mut conn)
                    .await?;
                    bare.push(started.elapsed());
                }
                1 => {
                    let code = format!("COLD{i:03}");
                    let started = Instant::now();
                    cold.provision(&request(&code)?).await?;
                    full.push(started.elapsed());
                }
                _ => {
                    let code = format!("SPARE{i:03}");
                    let started = Instant::now();
                    spare.provision(&request(&code)?).await?;
                    renamed.push(started.elapsed());
                    if spare.spare_databases().await?.is_empty() {
                        spares_used += 1;
                    }
                }
            }
        }
    }
    conn.close().await?;

    println!("provisioning benchmark ({rounds} rounds, template {template})");
    let bare = summary("bare CREATE DATABASE ... TEMPLATE", bare);
    let full = summary("provisioning, cold (copies the template)", full);
    let renamed = summary("provisioning, spare (renames a spare)", renamed);
    println!(
        "ratio cold provisioning / bare:  {:.2}x (target <= 1.5x)",
        full.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "ratio spare provisioning / bare: {:.2}x (spare made beforehand, untimed; used in {spares_used}/{rounds} rounds)",
        renamed.as_secs_f64() / bare.as_secs_f64()
    );
    platform.registry.close_all().await;
    platform.control.close().await;
    Ok(())
}
