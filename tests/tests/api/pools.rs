use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use hms_tests::{spawn_app_with, TestConfig, ADMIN_PASSWORD};
use serde_json::json;

const TENANTS: usize = 200;
const BUDGET: u32 = 12;
const PER_TENANT: u32 = 2;

/// 200 hospitals served by one process whose tenant pools may hold 12 connections in
/// all: every hospital answers, and the connections to tenant databases (counted by
/// PostgreSQL itself) never exceed the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hospitals_are_served_within_the_connection_budget() {
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: PER_TENANT,
        tenant_connection_budget: BUDGET,
        production: false,
        // 16 sign-ins at a time below: above the default bound on concurrent password
        // hashes, which would refuse some (RATE_LIMITED) by design.
        max_concurrent_hashes: Some(16),
        ..TestConfig::default()
    })
    .await;
    let hash = hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned())
        .await
        .expect("hash");
    let codes: Vec<String> = (0..TENANTS).map(|i| format!("POOL{i:03}")).collect();
    for code in &codes {
        app.setup_hospital_with_hash(code, "pool_admin", hash.clone())
            .await;
    }
    app.state.registry.close_all().await;

    // Count this process's connections to tenant databases, as PostgreSQL sees them.
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let peak = peak.clone();
        let stop = stop.clone();
        let mut conn = app.connect("postgres").await;
        let pattern = format!("{}%", app.prefix);
        let control = format!("{}_control", app.prefix);
        tokio::spawn(async move {
            loop {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE $1 AND datname <> $2",
                )
                .bind(&pattern)
                .bind(&control)
                .fetch_one(&mut conn)
                .await
                .expect("sample");
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::select! {
                    () = stop.notified() => return,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
    };

    // Log in to every hospital and ask who we are, 16 requests at a time.
    let answered = stream::iter(codes.iter())
        .map(|code| {
            let app = &app;
            async move {
                let token = app.login(Some(code), "pool_admin", ADMIN_PASSWORD).await;
                let me = app
                    .graphql("{ me { hospital { code } } }", json!({}), Some(&token))
                    .await;
                assert_eq!(me["data"]["me"]["hospital"]["code"], code.as_str(), "{me}");
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    stop.notify_one();
    sampler.await.expect("sampler");

    assert_eq!(answered, TENANTS);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 0, "the sampler saw the tenant connections");
    assert!(
        peak <= i64::from(BUDGET),
        "peak {peak} tenant connections > budget {BUDGET}"
    );
    assert!(app.state.registry.open_pools() <= (BUDGET / PER_TENANT) as usize);
}
