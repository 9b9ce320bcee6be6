//! Provisioning time per hospital, next to a bare `CREATE DATABASE … TEMPLATE` of the
//! same template measured in the same run (target: within 1.5× the bare figure).
//!
//! Run: `cargo bench -p hms-tests --bench provisioning` (uses HMS_TEST_DATABASE_URL).
//! Set `HMS_BENCH_ROUNDS` to change the number of rounds (default 20).

use std::time::{Duration, Instant};

use hms_api::config::{Environment, PlatformConfig, Secret};
use hms_api::state::Platform;
use hms_api::tenancy::names::quote_ident;
use hms_api::tenancy::provisioning::NewHospital;
use hms_tests::{drop_databases, server_options, ADMIN_PASSWORD};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{label:<40} median {:>8.1} ms   min {:>8.1} ms   p90 {:>8.1} ms   (n={})",
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
    let server = server_options();
    let config = PlatformConfig {
        database_url: Secret::new(format!(
            "postgres://{}@{}:{}/{prefix}_control",
            server.get_username(),
            server.get_host(),
            server.get_port()
        )),
        tenant_db_prefix: prefix.clone(),
        tenant_connection_budget: 10,
        tenant_pool_size: 2,
        control_pool_size: 3,
        environment: Environment::Development,
    };
    let result = run(&config, &prefix, rounds).await;
    drop_databases(&prefix).await;
    result
}

async fn run(config: &PlatformConfig, prefix: &str, rounds: usize) -> anyhow::Result<()> {
    let platform = Platform::connect(config).await?;
    let provisioner = platform.provisioner();
    let hash = hms_api::auth::password::hash(ADMIN_PASSWORD.to_owned()).await?;
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
    // Warm-up: creates and migrates the template, opens the platform pool.
    provisioner.provision(&request("WARMUP")?).await?;
    let template = platform.naming.template_database();

    let mut conn = PgConnection::connect_with(&server_options()).await?;
    let mut bare = Vec::with_capacity(rounds);
    let mut full = Vec::with_capacity(rounds);
    // Interleave the two so that both see the same server state (WAL, cache, disk).
    for i in 0..rounds {
        let started = Instant::now();
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&format!("{prefix}bare{i}")),
            quote_ident(&template)
        ))
        .execute(&mut conn)
        .await?;
        bare.push(started.elapsed());

        let code = format!("BENCH{i:03}");
        let started = Instant::now();
        provisioner.provision(&request(&code)?).await?;
        full.push(started.elapsed());
    }
    conn.close().await?;

    println!("provisioning benchmark ({rounds} rounds, template {template})");
    let bare = summary("bare CREATE DATABASE ... TEMPLATE", bare);
    let full = summary("hms provisioning (all steps)", full);
    println!(
        "ratio provisioning / bare: {:.2}x (target <= 1.5x)",
        full.as_secs_f64() / bare.as_secs_f64()
    );
    platform.registry.close_all().await;
    platform.control.close().await;
    Ok(())
}
