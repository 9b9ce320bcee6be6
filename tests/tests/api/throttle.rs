//! Sign-in throttling (ADR 0005): claimed in the platform database before the password
//! is hashed, shared by every replica; per account and address, so an attacker cannot
//! lock the administrator out; a bound on concurrent hashes; `X-Forwarded-For` believed
//! only from trusted proxies.

use futures::future::join_all;
use hms_app::auth::throttle::{ACCOUNT_LOCK_FAILURES, MAX_FAILURES};
use hms_tests::{error_code, spawn_app_with, TestApp, TestConfig, ADMIN_PASSWORD};
use serde_json::{json, Value};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { token } }";

/// The tests' server listens on 127.0.0.1: trusting it makes `X-Forwarded-For` the client.
fn behind_proxy() -> TestConfig {
    TestConfig {
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..TestConfig::default()
    }
}

/// Runs `query` with `X-Forwarded-For: forwarded_for` (if any).
async fn graphql_from(
    app: &TestApp,
    forwarded_for: Option<&str>,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> Value {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(addr) = forwarded_for {
        request = request.header("x-forwarded-for", addr);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON")
}

async fn login_from(
    app: &TestApp,
    forwarded_for: Option<&str>,
    hospital: &str,
    username: &str,
    password: &str,
) -> Value {
    let input = json!({ "input": { "hospitalCode": hospital, "username": username, "password": password } });
    graphql_from(app, forwarded_for, LOGIN, input, None).await
}

fn signed_in(response: &Value) -> bool {
    response["data"]["login"]["token"].is_string()
}

fn count(answers: &[Value], code: &str) -> usize {
    answers
        .iter()
        .filter(|a| error_code(a) == Some(code))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_wrong_guesses_on_two_replicas_reach_argon2_at_most_max_failures_times() {
    // A hash bound above the burst, so that only the throttle stands in the way.
    let config = TestConfig {
        max_concurrent_hashes: Some(64),
        ..TestConfig::default()
    };
    let first = spawn_app_with(config.clone()).await;
    let second = first.spawn_replica(config).await;
    let admin = first.setup_hospital("RAC001").await;

    let guesses = (0..60).map(|i| {
        let replica = if i % 2 == 0 { &first } else { &second };
        login_from(replica, None, "RAC001", &admin, "wrong password!")
    });
    let answers = join_all(guesses).await;

    let (unauthenticated, limited) = (
        count(&answers, "UNAUTHENTICATED"),
        count(&answers, "RATE_LIMITED"),
    );
    assert_eq!(unauthenticated + limited, 60, "{answers:?}");
    let verified =
        first.state.auth.password_verifications() + second.state.auth.password_verifications();
    println!("verified {verified}, unauthenticated {unauthenticated}, rate limited {limited}");
    assert!(
        verified <= u64::from(MAX_FAILURES),
        "{verified} guesses reached argon2 (at most {MAX_FAILURES} may)"
    );
    assert!(unauthenticated <= MAX_FAILURES as usize);

    // The state is shared: the right password now fails on either replica, without
    // a hash.
    for replica in [&first, &second] {
        let right = login_from(replica, None, "RAC001", &admin, ADMIN_PASSWORD).await;
        assert_eq!(error_code(&right), Some("RATE_LIMITED"), "{right}");
    }
    let verified_after =
        first.state.auth.password_verifications() + second.state.auth.password_verifications();
    assert_eq!(verified_after, verified);
}

#[tokio::test]
async fn an_attackers_failures_from_one_address_do_not_stop_the_administrator_from_another() {
    let app = spawn_app_with(behind_proxy()).await;
    let admin = app.setup_hospital("LCK001").await;
    let attacker = "203.0.113.66";
    for _ in 0..MAX_FAILURES {
        let guess = login_from(&app, Some(attacker), "LCK001", &admin, "wrong password!").await;
        assert_eq!(error_code(&guess), Some("UNAUTHENTICATED"), "{guess}");
    }
    let more = login_from(&app, Some(attacker), "LCK001", &admin, ADMIN_PASSWORD).await;
    assert_eq!(error_code(&more), Some("RATE_LIMITED"), "{more}");

    let real = login_from(
        &app,
        Some("198.51.100.20"),
        "LCK001",
        &admin,
        ADMIN_PASSWORD,
    )
    .await;
    assert!(signed_in(&real), "the administrator is locked out: {real}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_many_addresses_lock_the_account_except_from_an_address_that_signed_in_before(
) {
    let app = spawn_app_with(TestConfig {
        max_concurrent_hashes: Some(16),
        ..behind_proxy()
    })
    .await;
    let admin = app.setup_hospital("BOT001").await;
    let office = "198.51.100.20";
    let first = login_from(&app, Some(office), "BOT001", &admin, ADMIN_PASSWORD).await;
    assert!(signed_in(&first), "{first}");

    // A botnet: ACCOUNT_LOCK_FAILURES failures, MAX_FAILURES from each address.
    let addresses = ACCOUNT_LOCK_FAILURES.div_ceil(MAX_FAILURES);
    for a in 0..addresses {
        let from = format!("203.0.113.{}", a + 1);
        let guesses = (0..MAX_FAILURES)
            .map(|_| login_from(&app, Some(&from), "BOT001", &admin, "wrong password!"));
        let answers = join_all(guesses).await;
        assert_eq!(
            count(&answers, "UNAUTHENTICATED"),
            MAX_FAILURES as usize,
            "{answers:?}"
        );
    }

    let stranger = login_from(&app, Some("192.0.2.99"), "BOT001", &admin, ADMIN_PASSWORD).await;
    assert_eq!(
        error_code(&stranger),
        Some("RATE_LIMITED"),
        "the account is locked for new addresses: {stranger}"
    );
    let known = login_from(&app, Some(office), "BOT001", &admin, ADMIN_PASSWORD).await;
    assert!(
        signed_in(&known),
        "the administrator's own address still works: {known}"
    );
}

/// The client address events record (the `client_addr` of the newest event's metadata).
async fn recorded_client_addr(app: &TestApp, code: &str) -> Option<String> {
    let mut conn = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar("SELECT metadata->>'client_addr' FROM events ORDER BY sequence DESC LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .expect("an event")
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_peer_and_honoured_from_a_trusted_one() {
    let add_department = "mutation { addDepartment(name: \"Proxy Studies\") { id } }";
    for (config, trusted) in [(TestConfig::default(), false), (behind_proxy(), true)] {
        let app = spawn_app_with(config).await;
        let admin = app.setup_hospital("XFF001").await;
        for _ in 0..MAX_FAILURES {
            let guess = login_from(
                &app,
                Some("203.0.113.7"),
                "XFF001",
                &admin,
                "wrong password!",
            )
            .await;
            assert_eq!(error_code(&guess), Some("UNAUTHENTICATED"), "{guess}");
        }
        // A client claiming another address (spoofed, or a second proxy hop).
        let other = login_from(
            &app,
            Some("198.51.100.1, 198.51.100.20"),
            "XFF001",
            &admin,
            ADMIN_PASSWORD,
        )
        .await;
        if !trusted {
            assert_eq!(
                error_code(&other),
                Some("RATE_LIMITED"),
                "an untrusted peer's X-Forwarded-For must not open a fresh budget: {other}"
            );
            continue;
        }
        assert!(
            signed_in(&other),
            "behind a trusted proxy the client is another address: {other}"
        );
        let token = other["data"]["login"]["token"].as_str().expect("token");
        let added = graphql_from(
            &app,
            Some("198.51.100.20"),
            add_department,
            json!({}),
            Some(token),
        )
        .await;
        assert!(added["data"]["addDepartment"].is_object(), "{added}");
        assert_eq!(
            recorded_client_addr(&app, "XFF001").await.as_deref(),
            Some("198.51.100.20")
        );
    }

    // Without trust the peer is recorded, whatever the header says.
    let app = spawn_app_with(TestConfig::default()).await;
    let admin = app.setup_hospital("XFF002").await;
    let token = app.login(Some("XFF002"), &admin, ADMIN_PASSWORD).await;
    let added = graphql_from(
        &app,
        Some("198.51.100.20"),
        add_department,
        json!({}),
        Some(&token),
    )
    .await;
    assert!(added["data"]["addDepartment"].is_object(), "{added}");
    assert_eq!(
        recorded_client_addr(&app, "XFF002").await.as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_sign_ins_than_the_hash_bound_are_refused_at_once() {
    let app = spawn_app_with(TestConfig {
        max_concurrent_hashes: Some(1),
        ..behind_proxy()
    })
    .await;
    let admin = app.setup_hospital("MEM001").await;
    // Sixteen different accounts from sixteen addresses: no throttle applies.
    let app = &app;
    let attempts = (0..16).map(|i| {
        let from = format!("203.0.113.{}", i + 1);
        let user = format!("nobody{i}");
        async move { login_from(app, Some(&from), "MEM001", &user, "wrong password!").await }
    });
    let answers = join_all(attempts).await;
    let (unauthenticated, limited) = (
        count(&answers, "UNAUTHENTICATED"),
        count(&answers, "RATE_LIMITED"),
    );
    println!("unauthenticated {unauthenticated}, rate limited {limited}");
    assert_eq!(unauthenticated + limited, 16, "{answers:?}");
    assert!(limited >= 1, "none was refused: {answers:?}");
    assert_eq!(
        app.state.auth.password_verifications(),
        unauthenticated as u64,
        "a refused sign-in never reaches argon2"
    );

    // The bound is released again: the administrator signs in.
    let real = login_from(app, Some("198.51.100.20"), "MEM001", &admin, ADMIN_PASSWORD).await;
    assert!(signed_in(&real), "{real}");
}

#[tokio::test]
async fn change_password_guesses_count_against_the_same_budget_as_sign_ins() {
    let app = spawn_app_with(behind_proxy()).await;
    let admin = app.setup_hospital("CPW001").await;
    let here = "198.51.100.20";
    let login = login_from(&app, Some(here), "CPW001", &admin, ADMIN_PASSWORD).await;
    let token = login["data"]["login"]["token"].as_str().expect("token");
    let change = "mutation($c: String!) { changePassword(currentPassword: $c, newPassword: \"brand new password\") }";
    for _ in 0..MAX_FAILURES {
        let wrong = graphql_from(
            &app,
            Some(here),
            change,
            json!({ "c": "not my password" }),
            Some(token),
        )
        .await;
        assert_eq!(error_code(&wrong), Some("VALIDATION"), "{wrong}");
    }
    let right = graphql_from(
        &app,
        Some(here),
        change,
        json!({ "c": ADMIN_PASSWORD }),
        Some(token),
    )
    .await;
    assert_eq!(
        error_code(&right),
        Some("RATE_LIMITED"),
        "guessing the current password must be throttled: {right}"
    );
    let login_here = login_from(&app, Some(here), "CPW001", &admin, ADMIN_PASSWORD).await;
    assert_eq!(
        error_code(&login_here),
        Some("RATE_LIMITED"),
        "{login_here}"
    );
    // Not an account-wide lock.
    let elsewhere = login_from(&app, Some("192.0.2.50"), "CPW001", &admin, ADMIN_PASSWORD).await;
    assert!(signed_in(&elsewhere), "{elsewhere}");
}
