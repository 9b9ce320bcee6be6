//! Projection catch-up throughput over a large log, next to the raw `SELECT` scan rate
//! of the same events table in the same run (target: at least 25 % of the raw scan).
//!
//! Run: `cargo bench -p hms-tests --bench projections` (uses HMS_TEST_DATABASE_URL).
//! `HMS_BENCH_EVENTS` sets the log size (default 1,000,000), `HMS_TENANT_POOL_SIZE` the
//! tenant pool (default 3, as the server's); `HMS_BENCH_BREAKDOWN=1` adds
//! each projector's own rate (each then reads the whole log again). The log is a mix of
//! staff, patient and record-view events (see `hms_tests::bench::fill_log`). A floor is
//! printed too: PostgreSQL writing just the audit index rows from the log by itself.

use std::time::Instant;

use futures::TryStreamExt;
use hms_app::state::Platform;
use hms_tests::drop_databases;
use sqlx::{Connection, Row};
use uuid::Uuid;

const HOSPITAL: &str = "PRJ001";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: i64 = std::env::var("HMS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let prefix = format!("hmsbench_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let result = run(&prefix, events).await;
    drop_databases(&prefix).await;
    result
}

async fn run(prefix: &str, events: i64) -> anyhow::Result<()> {
    // The tenant pool a server has by default (`HMS_TENANT_POOL_SIZE`): a backlog's
    // catch-up fans out over all its connections but one.
    let pool_size = std::env::var("HMS_TENANT_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let config = hms_tests::bench::platform_config(prefix, pool_size);
    let platform = Platform::connect(&config).await?;
    let (mut db, total) = hms_tests::bench::hospital_with_log(&platform, HOSPITAL, events).await?;

    // Raw: every row of the log in commit order, decoded into Rust values.
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let mut stream = sqlx::query(
            "SELECT position, transaction_id::text::bigint, aggregate_type, aggregate_id, sequence, event_type, \
                    event_version, payload, metadata, recorded_at \
               FROM events ORDER BY transaction_id, position",
        )
        .fetch(&mut db);
        while let Some(row) = stream.try_next().await? {
            let _: i64 = row.get(0);
            rows += 1;
        }
    }
    let raw_secs = started.elapsed().as_secs_f64();
    db.close().await?;

    // The server's runner (every projector, one shared read per batch), from where
    // provisioning left it, through the whole log.
    let lease = platform.registry.get(HOSPITAL).await?;
    let started = Instant::now();
    platform.runner.catch_up(&lease.pool).await?;
    let runner_secs = started.elapsed().as_secs_f64();
    let (staff, patients, views): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM staff), (SELECT count(*) FROM patients), \
                (SELECT count(*) FROM patient_access_log)",
    )
    .fetch_one(&lease.pool)
    .await?;
    println!(
        "read models after catch-up: {staff} staff, {patients} patients, {views} record views"
    );
    // A floor for comparison: what PostgreSQL alone takes to write the rows of one read
    // model (the audit index, one row per event with its indexes) from the same log
    // in one INSERT … SELECT, with no client in the loop.
    sqlx::query("CREATE TABLE bench_audit_floor (LIKE audit_index INCLUDING ALL)")
        .execute(&lease.pool)
        .await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO bench_audit_floor (position, transaction_id, recorded_at, actor_id, actor_username, \
             actor_role, aggregate_type, aggregate_id, sequence, event_type, event_version, request_id) \
         SELECT position, transaction_id::text::bigint, recorded_at, (metadata->>'actor_id')::uuid, \
                metadata->>'actor_username', metadata->>'actor_role', aggregate_type, aggregate_id, \
                sequence, event_type, event_version, metadata->>'request_id' FROM events",
    )
    .execute(&lease.pool)
    .await?;
    let floor_secs = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_audit_floor")
        .execute(&lease.pool)
        .await?;
    // Optionally, each projector alone over the same log (each reads it again).
    let mut per_projector = Vec::new();
    if std::env::var_os("HMS_BENCH_BREAKDOWN").is_some() {
        sqlx::query(
            "UPDATE projection_checkpoints SET last_transaction_id = '0', last_position = 0",
        )
        .execute(&lease.pool)
        .await?;
        for name in platform.runner.projector_names() {
            let tables = platform
                .runner
                .projector(name)
                .map(|p| p.tables())
                .unwrap_or(&[]);
            for table in tables {
                sqlx::query(&format!("TRUNCATE {table}"))
                    .execute(&lease.pool)
                    .await?;
            }
            let one = hms_projections::ProjectionRunner::new(
                hms_projections::projectors::all()
                    .into_iter()
                    .filter(|p| p.name() == name)
                    .collect(),
            );
            let t = Instant::now();
            one.catch_up(&lease.pool).await?;
            per_projector.push((name, t.elapsed().as_secs_f64()));
        }
    }
    drop(lease);

    let rate = |n: f64, secs: f64| n / secs.max(1e-9);
    println!(
        "projection catch-up benchmark over {total} events ({} projectors, tenant pool of {pool_size})",
        platform.runner.projector_names().len()
    );
    println!(
        "raw SELECT scan (commit order)  {:>10.0} events/s  {raw_secs:>7.2} s",
        rate(rows as f64, raw_secs)
    );
    println!(
        "runner catch-up (all projectors){:>10.0} events/s  {runner_secs:>7.2} s",
        rate(total as f64, runner_secs)
    );
    println!(
        "SQL-only audit index write (floor){:>8.0} events/s  {floor_secs:>7.2} s",
        rate(total as f64, floor_secs)
    );
    for (name, secs) in &per_projector {
        println!(
            "  {name:<20} {:>10.0} events/s  {secs:>7.2} s",
            rate(total as f64, *secs)
        );
    }
    println!(
        "catch-up / raw scan: {:.1} % (target >= 25 %)",
        100.0 * rate(total as f64, runner_secs) / rate(rows as f64, raw_secs)
    );
    platform.registry.close_all().await;
    platform.control.close().await;
    Ok(())
}
