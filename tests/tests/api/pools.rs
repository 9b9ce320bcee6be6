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
    // Onboarding's own connections (and the pools just closed) leave PostgreSQL's list
    // of backends a moment after they are closed: start counting once they are gone.
    {
        let mut conn = app.connect("postgres").await;
        for _ in 0..100 {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, $1) AND datname <> $2",
            )
            .bind(&app.prefix)
            .bind(format!("{}_control", app.prefix))
            .fetch_one(&mut conn)
            .await
            .expect("count");
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

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
    // The registry keeps its pools and the watcher (to `postgres`, not counted here)
    // within the budget; a closed pool's backend still listed past the registry's wait
    // (a loaded machine) may add one for a moment, which this bound leaves room for.
    assert!(
        peak <= i64::from(BUDGET),
        "peak {peak} tenant connections > budget {BUDGET}"
    );
    // Pools start with one connection: as many hospitals stay warm as the budget holds.
    assert!(app.state.registry.open_pools() < BUDGET as usize);
}

/// A pool starts with one connection and grows when its hospital is busy, closing pools
/// nobody used for a while to make room within the budget; the connections PostgreSQL
/// sees never exceed the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_hospitals_pool_grows_within_the_budget_and_idle_ones_make_room() {
    // Three pools of one, the watcher, and room for the busy one to grow to three while
    // its old pool finishes: only once the two quiet ones are closed.
    const BUDGET: u32 = 5;
    const TENANT_SHARE: i64 = BUDGET as i64 - 1;
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: 3,
        tenant_connection_budget: BUDGET,
        ..TestConfig::default()
    })
    .await;
    let tokens = signed_in_admins(&app, &["GROWA", "GROWB", "GROWC"], "grow_admin").await;
    let registry = &app.state.registry;
    // Signing in (and the background work after onboarding) may have made a pool busy
    // already: start again from three quiet pools of one connection.
    registry.close_all().await;
    for code in ["GROWA", "GROWB", "GROWC"] {
        drop(registry.get(code).await.expect("lease"));
    }
    for code in ["GROWA", "GROWB", "GROWC"] {
        assert_eq!(
            registry.pool_connections(code),
            Some(1),
            "{code} starts small"
        );
    }
    // B and C go quiet for longer than a growing pool may wait for them.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let database = app.database_for("GROWA");
    let mut probe = app.connect("postgres").await;
    let mut peak = 0i64;
    for _ in 0..20 {
        let n = concurrent_requests(&app, &mut probe, "GROWA", &tokens[0], 16).await;
        peak = peak.max(n);
    }
    assert_eq!(
        registry.pool_connections("GROWA"),
        Some(3),
        "the busy pool grew"
    );
    let on_a: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .fetch_one(&mut probe)
        .await
        .expect("count");
    assert!(
        on_a > 1,
        "the busy hospital uses more than one connection: {on_a}"
    );
    assert!(
        peak <= TENANT_SHARE,
        "peak {peak} tenant connections > budget {BUDGET} less the watcher"
    );
    assert!(
        registry.usage().connections < BUDGET,
        "{:?}",
        registry.usage()
    );
    // The quiet hospitals are still served (their pools open again, small).
    for (code, token) in ["GROWB", "GROWC"].iter().zip(&tokens[1..]) {
        let me = app
            .graphql("{ me { hospital { code } } }", json!({}), Some(token))
            .await;
        assert_eq!(me["data"]["me"]["hospital"]["code"], *code, "{me}");
    }
}

/// A backlog met on a server pool of one connection is spread over lanes on a wider pool
/// of the same hospital (the runner asks the registry for it), and ends caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_backlog_on_a_small_pool_is_caught_up_on_a_wider_one() {
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: 4,
        tenant_connection_budget: 8,
        ..TestConfig::default()
    })
    .await;
    app.setup_hospital("WIDE01").await;
    let lease = app.state.registry.get("WIDE01").await.expect("lease");
    assert_eq!(app.state.registry.pool_connections("WIDE01"), Some(1));
    let mut owner = app.connect(&app.database_for("WIDE01")).await;
    let total = hms_tests::bench::fill_log(&mut owner, 5_000)
        .await
        .expect("a backlog");
    app.state
        .runner
        .catch_up(&lease.pool)
        .await
        .expect("caught up");
    assert_eq!(
        app.state.registry.pool_connections("WIDE01"),
        Some(4),
        "the pool grew for the backlog"
    );
    for lag in app.state.runner.lag(&lease.pool).await.expect("lag") {
        assert_eq!(lag.events, 0, "{lag:?} of {total} events");
    }
}

/// A hospital whose pool of the usual size is saturated keeps growing (doubling, up to
/// the maximum) while a quarter of the budget stays free, never beyond the budget;
/// another hospital still opens at once; once quiet, the pool shrinks back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_busy_hospitals_pool_grows_past_its_size_with_budget_to_spare_and_shrinks_when_quiet(
) {
    const BUDGET: u32 = 24;
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: 3,
        tenant_pool_max: Some(8),
        tenant_connection_budget: BUDGET,
        ..TestConfig::default()
    })
    .await;
    let tokens = signed_in_admins(&app, &["BURSTA", "BURSTB"], "burst_admin").await;
    let (busy, other) = (&tokens[0], &tokens[1]);
    let registry = &app.state.registry;
    registry.close_all().await;
    let mut probe = app.connect("postgres").await;
    let mut peak = 0i64;
    for _ in 0..40 {
        let n = concurrent_requests(&app, &mut probe, "BURSTA", busy, 32).await;
        peak = peak.max(n);
        if registry.pool_connections("BURSTA") == Some(8) {
            break;
        }
    }
    let grown = registry.pool_connections("BURSTA").expect("open");
    assert!(grown > 3 && grown <= 8, "the pool grew past 3, to {grown}");
    assert!(
        peak < i64::from(BUDGET),
        "peak {peak} tenant connections, budget {BUDGET} with the watcher"
    );
    // The spare is there: another hospital opens without waiting for the busy one.
    let me = app
        .graphql("{ me { hospital { code } } }", json!({}), Some(other))
        .await;
    assert_eq!(me["data"]["me"]["hospital"]["code"], "BURSTB", "{me}");

    // Quiet now: the pool goes back to its usual size and still serves.
    registry.shrink_bursts(Duration::ZERO);
    assert_eq!(registry.pool_connections("BURSTA"), Some(3));
    let me = app
        .graphql("{ me { hospital { code } } }", json!({}), Some(busy))
        .await;
    assert_eq!(me["data"]["me"]["hospital"]["code"], "BURSTA", "{me}");
    assert!(
        registry.usage().connections < BUDGET,
        "{:?}",
        registry.usage()
    );
}

/// `n` requests at once by `token`'s user of hospital `code`, each answered with its
/// hospital; then the connections PostgreSQL lists to the app's hospital databases.
async fn concurrent_requests(
    app: &hms_tests::TestApp,
    probe: &mut sqlx::PgConnection,
    code: &str,
    token: &str,
    n: usize,
) -> i64 {
    let answers: Vec<serde_json::Value> = stream::iter(0..n)
        .map(|_| app.graphql("{ me { hospital { code } } }", json!({}), Some(token)))
        .buffer_unordered(n)
        .collect()
        .await;
    for me in &answers {
        assert_eq!(me["data"]["me"]["hospital"]["code"], code, "{me}");
    }
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, $1) AND datname <> $2",
    )
    .bind(&app.prefix)
    .bind(format!("{}_control", app.prefix))
    .fetch_one(probe)
    .await
    .expect("count")
}

/// Hospitals `codes`, each with an administrator `username` (one password hash for
/// all), and a token of each administrator, in order.
async fn signed_in_admins(app: &hms_tests::TestApp, codes: &[&str], username: &str) -> Vec<String> {
    let hash = hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned())
        .await
        .expect("hash");
    let mut tokens = Vec::new();
    for code in codes {
        app.setup_hospital_with_hash(code, username, hash.clone())
            .await;
    }
    for code in codes {
        tokens.push(app.login(Some(code), username, ADMIN_PASSWORD).await);
    }
    tokens
}

/// A closed pool leaves no backend behind, also when it closes while a connection is
/// being given back (sqlx checks it with a ping first): the registry keeps a closed
/// pool's connections counted until PostgreSQL no longer lists their backends, so one
/// left idle would hold budget for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_closed_while_a_connection_is_given_back_leaves_no_backend() {
    use hms_app::tenancy::pools::close_pool;
    use sqlx::postgres::PgPoolOptions;
    use sqlx::{Connection, PgConnection};

    let name = format!("hms-close-{}", uuid::Uuid::new_v4().simple());
    let mut watcher = PgConnection::connect_with(&hms_tests::server_options())
        .await
        .expect("a watcher");
    let mut left_behind = 0;
    for attempt in 0..60u32 {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(hms_tests::server_options().application_name(&name));
        let conn = pool.acquire().await.expect("a connection");
        drop(conn);
        // Let the give-back start its ping (a varying head start, to meet the window).
        for _ in 0..attempt % 6 {
            tokio::task::yield_now().await;
        }
        close_pool(&pool).await;
        // The pool value is still alive here, as while the registry waits for exits.
        let mut listed = 1;
        for _ in 0..100 {
            listed = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&name)
            .fetch_one(&mut watcher)
            .await
            .expect("activity");
            if listed == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if listed > 0 {
            left_behind += 1;
        }
        drop(pool);
    }
    assert_eq!(
        left_behind, 0,
        "closed pools whose backend stayed for 500 ms"
    );
}

/// Connections cut while they sat idle in the server's pools (a database restart, a
/// dropped link) are found out before a request uses them: the next request is served
/// on new connections, not refused. The serving pools skip sqlx's ping for connections
/// in steady use, and ping those idle for [`PING_WHEN_IDLE_FOR`]; without that ping,
/// the request's first statement on a cut connection fails.
///
/// [`PING_WHEN_IDLE_FOR`]: hms_app::tenancy::pools::PING_WHEN_IDLE_FOR
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_while_idle_are_replaced_before_a_request_uses_them() {
    use hms_app::tenancy::pools::PING_WHEN_IDLE_FOR;
    use hms_tests::fixtures::register_simple;

    let app = hms_tests::spawn_app().await;
    let admin = app.setup_hospital("CUTIDLE").await;
    let token = app.login(Some("CUTIDLE"), &admin, ADMIN_PASSWORD).await;
    register_simple(&app, &token, "Ada", "Before").await;

    // Every session of this test's databases ends, the platform's and the hospital's,
    // as when their server restarts.
    let mut operator = app.connect("postgres").await;
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE starts_with(datname, $1) AND pid <> pg_backend_pid()) t",
    )
    .bind(&app.prefix)
    .fetch_one(&mut operator)
    .await
    .expect("end the sessions");
    assert!(
        ended >= 2,
        "the server held connections to both databases ({ended})"
    );
    tokio::time::sleep(PING_WHEN_IDLE_FOR + Duration::from_millis(300)).await;

    // Each is served (the fixture fails with the response otherwise).
    for family in ["After", "AfterAgain"] {
        register_simple(&app, &token, "Ada", family).await;
    }
    let patients = app
        .graphql(
            "query { patients(first: 10) { edges { node { familyName } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert!(patients["errors"].is_null(), "{patients}");
    assert_eq!(
        patients["data"]["patients"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{patients}"
    );
}
