//! One redaction rule for every reader of the log: the GraphQL `auditTrail` and the
//! auditor's export (`hms-replay audit`) hide exactly the same payload keys with the
//! same replacement, so neither can drift from the other.

use clap::Parser;
use hms_app::redact::REDACTED;
use hms_domain::Role;
use hms_replay::{Cli, Outcome};
use hms_tests::{spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};

use hms_tests::fixtures::staff;

const HOSPITAL: &str = "RED001";
const REFRESH_TOKEN: &str = "rt-9f8e7d6c5b4a";
const CLIENT_SECRET: &str = "cs-0a1b2c3d4e5f";

const TRAIL: &str = "query($filter: AuditTrailFilter) { auditTrail(filter: $filter, first: 100) { \
    edges { node { position aggregateType aggregateId sequence eventType payload } } } }";

/// `hms-replay audit --hospital RED001 --format jsonl`, in-process; one value per line.
async fn replay_jsonl(app: &TestApp) -> Vec<Value> {
    let argv = [
        "hms-replay",
        "--database-url",
        app.config.database_url.expose(),
        "--tenant-db-prefix",
        &app.config.tenant_db_prefix,
        "audit",
        "--hospital",
        HOSPITAL,
        "--format",
        "jsonl",
    ];
    let cli = Cli::try_parse_from(argv).expect("a valid command line");
    let mut out = Vec::new();
    let outcome = hms_replay::run(cli, &mut out).await.expect("the tool runs");
    assert_eq!(outcome, Outcome::Clean);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        !text.contains(REFRESH_TOKEN),
        "the export leaks a token:\n{text}"
    );
    assert!(
        !text.contains(CLIENT_SECRET),
        "the export leaks a secret:\n{text}"
    );
    assert!(!text.contains("argon2"), "the export leaks a hash:\n{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The paths (`a.b.0.c`) whose value is exactly the replacement, sorted.
fn redacted_paths(value: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            Value::String(s) if s == REDACTED => out.push(path.to_owned()),
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, &join(k), out)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &join(&i.to_string()), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out
}

/// The payload of the one event of `(aggregate_type, event_type)` in each output.
fn payload_of<'a>(
    events: &'a [Value],
    type_key: &str,
    event_key: &str,
    aggregate_type: &str,
    event_type: &str,
) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e[type_key] == aggregate_type && e[event_key] == event_type)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {aggregate_type} {event_type}: {events:?}"
    );
    &found[0]["payload"]
}

#[tokio::test]
async fn the_api_and_the_export_redact_the_same_keys_the_same_way() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital(HOSPITAL).await;
    let admin = app.login(Some(HOSPITAL), &admin_name, ADMIN_PASSWORD).await;
    // A user: its creation carries a password hash.
    staff(&app, HOSPITAL, "red.nurse", Role::Nurse).await;

    // An event written behind the command path's back (an integration's record), whose
    // payload carries secrets at two depths and a field that only looks like one.
    let lease = app.state.registry.get(HOSPITAL).await.expect("tenant");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         VALUES ('integration', 'lab-1', 1, 'IntegrationConnected', '1.0', $1, $2)",
    )
    .bind(json!({ "IntegrationConnected": {
        "name": "lab",
        "refresh_token": REFRESH_TOKEN,
        "client_secret_value": CLIENT_SECRET,
        "endpoints": [{ "url": "https://lab.example", "refresh_token": REFRESH_TOKEN }],
        "token_count": 2,
    } }))
    .bind(json!({ "actor_username": "integration", "request_id": "red-1" }))
    .execute(&lease.pool)
    .await
    .expect("insert");
    app.state
        .runner
        .catch_up(&lease.pool)
        .await
        .expect("read models");
    drop(lease);

    let response = app.graphql(TRAIL, json!({}), Some(&admin)).await;
    let text = response.to_string();
    assert!(
        !text.contains(REFRESH_TOKEN),
        "the API leaks a token: {text}"
    );
    assert!(
        !text.contains(CLIENT_SECRET),
        "the API leaks a secret: {text}"
    );
    assert!(!text.contains("argon2"), "the API leaks a hash: {text}");
    let api: Vec<Value> = response["data"]["auditTrail"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no trail: {response}"))
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let export = replay_jsonl(&app).await;
    assert_eq!(api.len(), export.len(), "the same events");

    // The integration's secrets: the same keys, the same replacement, on both sides.
    let api_payload = payload_of(
        &api,
        "aggregateType",
        "eventType",
        "integration",
        "IntegrationConnected",
    );
    let export_payload = payload_of(
        &export,
        "aggregate_type",
        "event_type",
        "integration",
        "IntegrationConnected",
    );
    let expected = [
        "IntegrationConnected.client_secret_value",
        "IntegrationConnected.endpoints.0.refresh_token",
        "IntegrationConnected.refresh_token",
    ];
    assert_eq!(redacted_paths(api_payload), expected, "{api_payload}");
    assert_eq!(redacted_paths(export_payload), expected, "{export_payload}");
    assert_eq!(api_payload, export_payload);
    assert_eq!(api_payload["IntegrationConnected"]["token_count"], 2);
    assert_eq!(api_payload["IntegrationConnected"]["name"], "lab");

    // The password hash of every user's creation (the administrator's and the nurse's),
    // on both sides.
    let created = |events: &[Value], type_key: &str, event_key: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e[type_key] == "user" && e[event_key] == "UserCreated")
            .map(|e| e["payload"].clone())
            .collect()
    };
    let api_users = created(&api, "aggregateType", "eventType");
    let export_users = created(&export, "aggregate_type", "event_type");
    assert_eq!(api_users.len(), 2, "{api_users:?}");
    assert_eq!(api_users, export_users);
    for payload in &api_users {
        assert_eq!(
            redacted_paths(payload),
            ["UserCreated.password_hash"],
            "{payload}"
        );
    }

    // Every event: whatever one side hides, the other hides too.
    for (a, e) in api.iter().zip(&export) {
        assert_eq!(a["position"], e["position"], "commit order");
        assert_eq!(redacted_paths(&a["payload"]), redacted_paths(&e["payload"]));
    }
}
