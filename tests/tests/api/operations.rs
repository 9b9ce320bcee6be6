//! What an operator sees: `/metrics` moves with what the server does.
//!
//! The recorder is one per process, and this binary runs many servers at once, so the
//! counters here are compared before and after (at least what this test did), and the
//! per-hospital gauges use hospital codes no other test uses.

use hms_tests::fixtures::{hospital_with_staff, register_simple};
use hms_tests::process::ProcessPlatform;
use hms_tests::{spawn_app, TestApp};
use serde_json::json;

async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("body")
}

/// The value of the sample `name{labels…}` (labels in any order, others allowed).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_requests_commands_sign_ins_and_projections() {
    let app = spawn_app().await;
    let code = "METRICSA";
    let staff = hospital_with_staff(&app, code).await;
    let before = scrape(&app).await;
    let registered = [("operation", "mutation.registerPatient"), ("outcome", "OK")];
    let refused = [("reason", "invalid_credentials")];

    for i in 0..3 {
        register_simple(&app, &staff.receptionist, "Ada", &format!("Metric{i}")).await;
    }
    // An accountant may not register: the refusal is counted under its code.
    let forbidden = app
        .graphql(
            "mutation { registerPatient(input: { givenName: \"X\", familyName: \"Y\", dateOfBirth: \"1990-01-01\", sex: \"MALE\" }) { id } }",
            json!({}),
            Some(&staff.accountant),
        )
        .await;
    let forbidden_code = hms_tests::error_code(&forbidden)
        .expect("refused")
        .to_owned();
    let wrong = app
        .login_response(Some(code), "metricsa_desk", "not the password")
        .await;
    assert!(wrong["errors"].is_array(), "{wrong}");

    // Registrations do not wait for the read models (docs/adr/0011); a reader of them
    // catches them up, as the audit trail does.
    let lease = app.state.registry.get(code).await.expect("tenant");
    hms_app::commands::wait_for_log(
        &lease.pool,
        &app.state.runner,
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("read models caught up");
    let after = scrape(&app).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        count(&after, name, labels) - count(&before, name, labels)
    };
    assert!(
        delta("hms_requests_total", &registered) >= 3.0,
        "requests counted:\n{after}"
    );
    assert!(
        delta(
            "hms_requests_total",
            &[
                ("operation", "mutation.registerPatient"),
                ("outcome", &forbidden_code)
            ]
        ) >= 1.0,
        "refusal counted under {forbidden_code}"
    );
    assert!(
        delta(
            "hms_request_duration_seconds_count",
            &[("operation", "mutation.registerPatient")]
        ) >= 4.0
    );
    assert!(delta("hms_login_refusals_total", &refused) >= 1.0);
    assert!(
        delta(
            "hms_projection_events_applied_total",
            &[("projector", "patients")]
        ) >= 3.0,
        "catch-up counted"
    );

    // Connections against the budget, this process's pools.
    let budget = sample(&after, "hms_db_connection_budget", &[("pool", "tenants")])
        .expect("tenant budget reported");
    assert!(budget >= 1.0);
    let open = sample(
        &after,
        "hms_db_connections",
        &[("pool", "tenants"), ("state", "open")],
    )
    .expect("tenant connections reported");
    assert!(open >= 1.0 && open <= budget, "{open} of {budget}");
    assert!(sample(&after, "hms_tenant_pools_open", &[]).expect("pools") >= 1.0);
    let on_default = sample(
        &after,
        "hms_db_server_connections",
        &[("server", "default"), ("state", "open")],
    )
    .expect("connections per database server reported");
    let default_budget = sample(
        &after,
        "hms_db_server_connection_budget",
        &[("server", "default")],
    )
    .expect("budget per database server reported");
    assert!(
        on_default >= 1.0 && on_default <= default_budget,
        "{on_default} of {default_budget}"
    );

    // The read models are caught up by commands and readers; the sealer is left to the
    // daemon, which this test server does not run: the seal lags by every event so far.
    let lag = |text: &str, group: &str, what: &str| {
        sample(text, what, &[("hospital", code), ("group", group)])
            .unwrap_or_else(|| panic!("{what} of {group} for {code}:\n{text}"))
    };
    assert_eq!(lag(&after, "read_models", "hms_projection_lag_events"), 0.0);
    assert_eq!(
        lag(&after, "read_models", "hms_projection_lag_seconds"),
        0.0
    );
    let unsealed = lag(&after, "seal", "hms_projection_lag_events");
    assert!(unsealed >= 3.0, "unsealed events: {unsealed}");
    assert!(lag(&after, "seal", "hms_projection_lag_seconds") > 0.0);

    // Once the daemon's catch-up has run, nothing lags.
    hms_app::workers::projection_daemon::catch_up(&app.state.platform, code).await;
    let sealed = scrape(&app).await;
    assert_eq!(lag(&sealed, "seal", "hms_projection_lag_events"), 0.0);
    assert_eq!(lag(&sealed, "seal", "hms_projection_lag_seconds"), 0.0);
    // Every metric has its help text.
    for name in [
        "hms_requests_total",
        "hms_request_duration_seconds",
        "hms_projection_lag_events",
        "hms_db_connections",
    ] {
        assert!(
            sealed.contains(&format!("# HELP {name} ")),
            "help for {name}"
        );
    }
}

#[tokio::test]
async fn request_labels_are_bounded_by_the_schema() {
    let app = spawn_app().await;
    // A made-up root field and operation name are not labels.
    app.post_graphql(
        json!({ "query": "query Invented { madeUpField }", "operationName": "Invented" }),
        None,
    )
    .await;
    app.post_graphql(json!({ "query": "{ not valid" }), None)
        .await;
    let text = scrape(&app).await;
    assert!(!text.contains("madeUpField") && !text.contains("Invented"));
    assert!(
        count(
            &text,
            "hms_requests_total",
            &[("operation", "query.unknown"), ("outcome", "VALIDATION")]
        ) >= 1.0
    );
    assert!(
        count(
            &text,
            "hms_requests_total",
            &[("operation", "unparsed"), ("outcome", "VALIDATION")]
        ) >= 1.0
    );
}

/// A full scenario through the real binary with `HMS_LOG_FORMAT=json`: every line is one
/// JSON object, each request logs a line with its request id, hospital, actor,
/// operation, outcome and duration, and no line names a patient or carries a password,
/// a token or the signing secret.
#[tokio::test]
async fn json_logs_describe_requests_and_hold_no_patient_data_or_secrets() {
    let platform = ProcessPlatform::new();
    let password = "plum kettle orbit 4711";
    let wrong_password = "guessed quince ladder 0815";
    let (_, setup_log) = platform
        .run(&[
            "setup-hospital",
            "--name",
            "Logging General",
            "--code",
            "LOGJSON",
            "--admin-username",
            "logadmin",
            "--admin-email",
            "admin@logging.example",
            "--admin-password",
            password,
        ])
        .await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let mut server = platform
        .serve(&[("HMS_METRICS_LISTEN", metrics_address.as_str())])
        .await;
    let client = reqwest::Client::new();
    let graphql = |query: &'static str, variables: serde_json::Value, token: Option<String>| {
        let client = client.clone();
        let url = format!("{}/graphql", server.address);
        async move {
            let mut request = client
                .post(url)
                .json(&json!({ "query": query, "variables": variables }));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response: serde_json::Value = request
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("json");
            response
        }
    };
    const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { token } }";
    let refused = graphql(
        LOGIN,
        json!({ "input": { "hospitalCode": "LOGJSON", "username": "logadmin", "password": wrong_password } }),
        None,
    )
    .await;
    assert!(refused["errors"].is_array(), "{refused}");
    let signed_in = graphql(
        LOGIN,
        json!({ "input": { "hospitalCode": "LOGJSON", "username": "logadmin", "password": password } }),
        None,
    )
    .await;
    let token = signed_in["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{signed_in}"))
        .to_owned();
    let patient = json!({
        "givenName": "Quillonia",
        "familyName": "Vantablackwood",
        "dateOfBirth": "1971-03-09",
        "sex": "FEMALE",
        "phone": "+254700987123",
        "email": "quillonia@patients.example",
        "address": { "line1": "17 Jacaranda Crescent", "city": "Kisumuzulu", "country": "KE" }
    });
    let registered = graphql(
        "mutation($input: RegisterPatientInput!) { registerPatient(input: $input) { id } }",
        json!({ "input": patient }),
        Some(token.clone()),
    )
    .await;
    let id = registered["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"))
        .to_owned();
    let found = graphql(
        "query($q: String!) { patients(search: $q, first: 5) { edges { node { id familyName } } } }",
        json!({ "q": "Vantablackwood" }),
        Some(token.clone()),
    )
    .await;
    assert!(found["data"]["patients"]["edges"][0].is_object(), "{found}");
    // A refused input names the value nowhere but in the answer.
    let bad = graphql(
        "mutation($input: RegisterPatientInput!) { registerPatient(input: $input) { id } }",
        json!({ "input": { "familyName": "Vantablackwood", "dateOfBirth": "2999-01-01", "sex": "FEMALE" } }),
        Some(token.clone()),
    )
    .await;
    assert!(bad["errors"].is_array(), "{bad}");
    // With an address of its own, /metrics is there and not on the API's listener.
    let scraped = client
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(scraped.status(), 200);
    let figures = scraped.text().await.expect("figures");
    assert!(
        figures.contains("operation=\"mutation.registerPatient\""),
        "{figures}"
    );
    let hidden = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .expect("get");
    assert_eq!(hidden.status(), 404);
    server.stop().await;
    let log = server.log_text();
    platform.cleanup().await;

    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.len() >= 5, "{log}");
    for line in &requests {
        assert!(line["span"]["request_id"].is_string(), "{line}");
        assert!(line["outcome"].is_string(), "{line}");
        assert!(line["duration_ms"].is_number(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    let registration = requests
        .iter()
        .find(|l| l["operation"] == "mutation.registerPatient" && l["outcome"] == "OK")
        .unwrap_or_else(|| panic!("no registration line: {log}"));
    assert_eq!(registration["span"]["hospital"], "LOGJSON");
    assert!(
        registration["span"]["actor"]
            .as_str()
            .is_some_and(|a| uuid::Uuid::parse_str(a).is_ok()),
        "{registration}"
    );
    assert!(requests
        .iter()
        .any(|l| l["operation"] == "mutation.login" && l["outcome"] == "UNAUTHENTICATED"));

    let everything = format!("{setup_log}\n{log}");
    for secret in [
        "Quillonia",
        "Vantablackwood",
        "700987123",
        "quillonia@",
        "Jacaranda",
        "Kisumuzulu",
        "1971-03-09",
        password,
        wrong_password,
        &platform.jwt_secret,
        &token,
        &id,
    ] {
        assert!(
            !everything.contains(secret),
            "the log holds {secret:?}:\n{everything}"
        );
    }
}
