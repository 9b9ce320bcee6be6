use hms_tests::{error_code, spawn_app, spawn_app_with, TestConfig};
use serde_json::json;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn readiness_fails_when_the_platform_database_is_gone() {
    let app = spawn_app().await;
    app.state.control.close().await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "the process is still up");
}

/// Graceful shutdown (issue 13): once asked to stop, the server says "draining" on
/// `/readyz` (so a load balancer takes it out of rotation) while it still serves
/// requests, then closes its listener; the process is then gone.
#[tokio::test]
async fn a_stopping_server_drains_not_ready_but_serving_then_closes() {
    let mut app = spawn_app_with(TestConfig {
        drain: std::time::Duration::from_secs(2),
        ..TestConfig::default()
    })
    .await;
    let admin = app.setup_hospital("DRN001").await;
    let token = app
        .login(Some("DRN001"), &admin, hms_tests::ADMIN_PASSWORD)
        .await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.address)).send();
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);

    app.begin_shutdown();
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.address)).send();
    let ready = get("/readyz").await.expect("still listening");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.expect("body"), "draining");
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    let me = app
        .graphql("{ me { username } }", json!({}), Some(&token))
        .await;
    assert_eq!(me["data"]["me"]["username"], admin.as_str(), "{me}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    // After the drain the listener closes and the server ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn graphiql_is_served_in_development_and_not_in_production() {
    let dev = spawn_app().await;
    let page = dev
        .http
        .get(format!("{}/graphql", dev.address))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.expect("body");
    assert!(html.contains("graphiql"));
    // Everything the page loads comes from this server: on a hospital network without
    // internet access it must not be a blank page.
    assert!(!html.contains("://"), "the page names another host: {html}");
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/graphiql/assets/"))
        .collect();
    assert!(assets.len() >= 4, "{html}");
    for asset in &assets {
        let response = dev
            .http
            .get(format!("{}{asset}", dev.address))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.bytes().await.expect("body");
        assert!(!body.is_empty(), "{asset}");
    }
    // The introspection query GraphiQL sends (graphql-js's: nine `ofType`s under
    // `args { type }`) fits the depth limit.
    let type_ref = format!(
        "kind name {}",
        "ofType { kind name ".repeat(9) + &"}".repeat(9)
    );
    let introspection = dev
        .graphql(
            &format!(
                "query IntrospectionQuery {{ __schema {{ queryType {{ name }} types {{ name \
                 fields(includeDeprecated: true) {{ name args {{ name type {{ {type_ref} }} }} \
                 type {{ {type_ref} }} }} inputFields {{ name type {{ {type_ref} }} }} }} }} }}"
            ),
            json!({}),
            None,
        )
        .await;
    assert!(introspection.get("errors").is_none(), "{introspection}");
    assert_eq!(
        introspection["data"]["__schema"]["queryType"]["name"],
        "QueryRoot"
    );
    let unknown = dev
        .http
        .get(format!("{}/graphiql/assets/..%2fCargo.toml", dev.address))
        .send()
        .await
        .expect("get");
    assert_eq!(unknown.status(), 404);

    let prod = spawn_app_with(TestConfig {
        production: true,
        ..TestConfig::default()
    })
    .await;
    let page = prod
        .http
        .get(format!("{}/graphql", prod.address))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 404);
    let asset = prod
        .http
        .get(format!("{}{}", prod.address, assets[0]))
        .send()
        .await
        .expect("get");
    assert_eq!(asset.status(), 404);
    let introspection = prod
        .graphql("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    assert_eq!(
        introspection["data"]["__schema"],
        serde_json::Value::Null,
        "{introspection}"
    );
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = app
        .post_graphql(
            json!({ "query": format!("{{ me {{ username }} }} # {huge}") }),
            None,
        )
        .await;
    assert_eq!(response.status(), 413);

    let garbage = app
        .http
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(garbage.status(), 400);

    let deep = format!("{{ me {} }}", "{ hospital ".repeat(50) + &"}".repeat(50));
    let response = app.graphql(&deep, json!({}), None).await;
    assert_eq!(
        error_code(&response),
        Some("VALIDATION"),
        "the depth limit: {response}"
    );
    let bad_uuid = app
        .graphql(
            "query($id: UUID!) { user(id: $id) { username } }",
            json!({ "id": "not-a-uuid" }),
            None,
        )
        .await;
    assert_eq!(error_code(&bad_uuid), Some("VALIDATION"), "{bad_uuid}");

    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let me = app.graphql("{ me { username } }", json!({}), None).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn only_configured_browser_origins_may_call_the_api() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://front.example").await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://front.example"
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}
