//! The platform super administrator through the API: onboarding hospitals, their
//! subscriptions (read-only when suspended or cancelled), closing and reopening, the
//! directory and platform-wide figures; and that nobody else gets any of it.

use hms_app::tenant_stats::{is_stale, refresh_tenant_stats};
use hms_tests::{error_code, spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};

use hms_domain::Role;
use hms_tests::fixtures::{super_admin, SUPER_ADMIN as ROOT};

const HOSPITAL_FIELDS: &str = "code name status closedReason closedBy plan databaseServer \
    databaseName createdAt subscription { status plan cycle trialEndsAt periodEndsAt reason \
    canWrite version } statistics { users activeUsers patients appointments invoices \
    revenue { currency paidMinor refundedMinor netMinor } lastActivityAt refreshedAt }";

fn field(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["field"].as_str()
}

async fn create_hospital(app: &TestApp, token: &str, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($input: CreateHospitalInput!) {{ createHospital(input: $input) {{ {HOSPITAL_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

fn new_hospital(code: &str, plan: &str) -> Value {
    let admin = format!("{}_admin", code.trim().to_ascii_lowercase());
    json!({
        "code": code,
        "name": format!("Hospital {code}"),
        "plan": plan,
        "adminUsername": admin,
        "adminEmail": format!("{admin}@hospital.example"),
        "adminName": "First Admin",
        "adminPassword": ADMIN_PASSWORD,
    })
}

/// Runs a platform mutation taking `input` and returns the whole response.
async fn platform_mutation(
    app: &TestApp,
    token: &str,
    name: &str,
    input_type: &str,
    input: Value,
) -> Value {
    app.graphql(
        &format!(
            "mutation($input: {input_type}!) {{ {name}(input: $input) {{ {HOSPITAL_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

async fn platform_hospital(app: &TestApp, token: &str, code: &str) -> Value {
    let response = app
        .graphql(
            &format!(
                "query($code: String!) {{ platformHospital(code: $code) {{ {HOSPITAL_FIELDS} }} }}"
            ),
            json!({ "code": code }),
            Some(token),
        )
        .await;
    response["data"]["platformHospital"].clone()
}

async fn add_department(app: &TestApp, token: &str, name: &str) -> Value {
    app.graphql(
        "mutation($name: String!) { addDepartment(name: $name) { id name } }",
        json!({ "name": name }),
        Some(token),
    )
    .await
}

async fn department_count(app: &TestApp, token: &str) -> usize {
    let response = app
        .graphql("{ departments { id } }", json!({}), Some(token))
        .await;
    response["data"]["departments"]
        .as_array()
        .unwrap_or_else(|| panic!("departments readable: {response}"))
        .len()
}

async fn hospital_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.state.control)
        .await
        .expect("count tenants")
}

#[tokio::test]
async fn a_super_administrator_onboards_a_hospital_whose_administrator_signs_in() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;

    let created = create_hospital(&app, &root, new_hospital("NEW001", "BASIC")).await;
    let hospital = &created["data"]["createHospital"];
    assert_eq!(hospital["code"], "NEW001", "{created}");
    assert_eq!(hospital["name"], "Hospital NEW001");
    assert_eq!(hospital["status"], "ACTIVE");
    assert_eq!(hospital["plan"], "BASIC");
    assert_eq!(hospital["databaseServer"], "default");
    assert_eq!(hospital["databaseName"], app.database_for("NEW001"));
    assert_eq!(hospital["subscription"]["status"], "ACTIVE");
    assert_eq!(hospital["subscription"]["canWrite"], true);
    assert_eq!(hospital["subscription"]["version"], 1);
    assert_eq!(hospital["statistics"]["users"], 1);
    assert_eq!(hospital["statistics"]["activeUsers"], 1);
    assert_eq!(hospital["statistics"]["patients"], 0);
    assert_eq!(hospital["statistics"]["revenue"], json!([]));

    // Its administrator signs in at once, into that hospital.
    let admin = app
        .login(Some("NEW001"), "new001_admin", ADMIN_PASSWORD)
        .await;
    let me = app
        .graphql("{ me { role hospital { code } } }", json!({}), Some(&admin))
        .await;
    assert_eq!(me["data"]["me"]["role"], "HOSPITAL_ADMIN", "{me}");
    assert_eq!(me["data"]["me"]["hospital"]["code"], "NEW001");
    assert_eq!(department_count(&app, &admin).await, 7);

    // A code in use is a conflict, and nothing new is made.
    let databases = app.databases().await;
    let again = create_hospital(&app, &root, new_hospital("NEW001", "TRIAL")).await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
    assert_eq!(app.databases().await, databases);

    // Malformed or malicious codes are refused before anything is created.
    for code in [
        "new002",
        "AB",
        "ABCDEFGHIJKLMNOPQ",
        "1ABC",
        "NEW-002",
        "ÅBC123",
        "X\"; DROP DATABASE postgres; --",
        "NEW002 ",
        "",
    ] {
        let refused = create_hospital(&app, &root, new_hospital(code, "TRIAL")).await;
        if code == "NEW002 " {
            // Surrounding blanks are trimmed: a valid code.
            assert!(refused["errors"].is_null(), "{refused}");
            continue;
        }
        assert_eq!(
            error_code(&refused),
            Some("VALIDATION"),
            "{code:?}: {refused}"
        );
        assert_eq!(field(&refused), Some("code"), "{code:?}: {refused}");
    }
    // Other bad input points at its field.
    let mut bad = new_hospital("NEW003", "TRIAL");
    bad["adminPassword"] = json!("short");
    let refused = create_hospital(&app, &root, bad).await;
    assert_eq!(error_code(&refused), Some("VALIDATION"));
    assert_eq!(field(&refused), Some("adminPassword"));
    let mut bad = new_hospital("NEW003", "TRIAL");
    bad["adminEmail"] = json!("not an address");
    let refused = create_hospital(&app, &root, bad).await;
    assert_eq!(field(&refused), Some("adminEmail"), "{refused}");
    let mut bad = new_hospital("NEW003", "TRIAL");
    bad["name"] = json!("   ");
    let refused = create_hospital(&app, &root, bad).await;
    assert_eq!(field(&refused), Some("name"), "{refused}");
    let mut bad = new_hospital("NEW003", "GOLD");
    bad["adminName"] = json!("x");
    let refused = create_hospital(&app, &root, bad).await;
    assert!(
        refused["errors"].is_array(),
        "an unknown plan is refused: {refused}"
    );

    let mut expected = vec![app.database_for("NEW002")];
    expected.extend(databases);
    expected.sort();
    assert_eq!(app.databases().await, expected);
    assert_eq!(hospital_count(&app).await, 2);

    // The directory lists both, a page at a time, and filters by status.
    let page = "query($after: String, $status: TenantStatus) { hospitals(first: 1, after: $after, status: $status) { edges { cursor node { code plan status } } pageInfo { hasNextPage endCursor } } }";
    let first = app
        .graphql(page, json!({ "after": null }), Some(&root))
        .await;
    let connection = &first["data"]["hospitals"];
    assert_eq!(connection["edges"][0]["node"]["code"], "NEW001", "{first}");
    assert_eq!(connection["pageInfo"]["hasNextPage"], true);
    let second = app
        .graphql(
            page,
            json!({ "after": connection["pageInfo"]["endCursor"] }),
            Some(&root),
        )
        .await;
    let connection = &second["data"]["hospitals"];
    assert_eq!(connection["edges"][0]["node"]["code"], "NEW002", "{second}");
    assert_eq!(connection["edges"][0]["node"]["plan"], "TRIAL");
    assert_eq!(connection["pageInfo"]["hasNextPage"], false);
    let closed = app
        .graphql(page, json!({ "status": "SUSPENDED" }), Some(&root))
        .await;
    assert_eq!(closed["data"]["hospitals"]["edges"], json!([]), "{closed}");
    let too_many = app
        .graphql(
            "{ hospitals(first: 101) { edges { cursor } } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert_eq!(error_code(&too_many), Some("VALIDATION"));

    let missing = app
        .graphql(
            "{ platformHospital(code: \"NOPE01\") { code } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert_eq!(error_code(&missing), Some("NOT_FOUND"), "{missing}");
}

#[tokio::test]
async fn platform_operations_are_for_super_administrators_and_hospital_ones_are_not() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;
    let admin_name = app.setup_hospital("DMC001").await;
    let admin = app.login(Some("DMC001"), &admin_name, ADMIN_PASSWORD).await;

    let platform_operations: Vec<(&str, Value)> = vec![
        ("{ hospitals { edges { cursor } } }", json!({})),
        ("{ platformHospital(code: \"DMC001\") { code } }", json!({})),
        ("{ platformStats { hospitals } }", json!({})),
        (
            "mutation($input: CreateHospitalInput!) { createHospital(input: $input) { code } }",
            json!({ "input": new_hospital("EVIL01", "ENTERPRISE") }),
        ),
        (
            "mutation { changeSubscription(input: { code: \"DMC001\", plan: ENTERPRISE, cycle: YEARLY }) { code } }",
            json!({}),
        ),
        (
            "mutation { suspendHospital(input: { code: \"DMC001\", reason: \"x\" }) { code } }",
            json!({}),
        ),
        (
            "mutation { reactivateHospital(input: { code: \"DMC001\", plan: BASIC, cycle: MONTHLY }) { code } }",
            json!({}),
        ),
        (
            "mutation { cancelHospital(input: { code: \"DMC001\", reason: \"x\" }) { code } }",
            json!({}),
        ),
        (
            "mutation { closeHospital(input: { code: \"DMC001\", reason: \"x\" }) { code } }",
            json!({}),
        ),
        (
            "mutation { reopenHospital(input: { code: \"DMC001\" }) { code } }",
            json!({}),
        ),
    ];
    for (operation, variables) in &platform_operations {
        let as_admin = app
            .graphql(operation, variables.clone(), Some(&admin))
            .await;
        assert_eq!(
            error_code(&as_admin),
            Some("FORBIDDEN"),
            "{operation}: {as_admin}"
        );
        let anonymous = app.graphql(operation, variables.clone(), None).await;
        assert_eq!(
            error_code(&anonymous),
            Some("UNAUTHENTICATED"),
            "{operation}: {anonymous}"
        );
    }
    // Nothing was created or changed.
    assert_eq!(hospital_count(&app).await, 1);
    assert!(!app.databases().await.contains(&app.database_for("EVIL01")));
    let hospital = platform_hospital(&app, &root, "DMC001").await;
    assert_eq!(hospital["status"], "ACTIVE");
    assert_eq!(hospital["plan"], "TRIAL");

    // The super administrator sees no hospital's data and cannot act inside one.
    for operation in [
        "{ hospital { code } }",
        "{ departments { id } }",
        "{ users { edges { cursor } } }",
        "mutation { addDepartment(name: \"Root's\") { id } }",
    ] {
        let as_root = app.graphql(operation, json!({}), Some(&root)).await;
        assert_eq!(
            error_code(&as_root),
            Some("FORBIDDEN"),
            "{operation}: {as_root}"
        );
    }
}

#[tokio::test]
async fn a_suspended_hospital_reads_but_cannot_write_until_reactivated() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;
    let admin_name = app.setup_hospital("SUS001").await;
    let admin = app.login(Some("SUS001"), &admin_name, ADMIN_PASSWORD).await;
    assert!(add_department(&app, &admin, "Oncology").await["errors"].is_null());

    let suspended = platform_mutation(
        &app,
        &root,
        "suspendHospital",
        "SuspendHospitalInput",
        json!({ "code": "SUS001", "reason": "invoice 42 unpaid" }),
    )
    .await;
    let hospital = &suspended["data"]["suspendHospital"];
    assert_eq!(
        hospital["subscription"]["status"], "SUSPENDED",
        "{suspended}"
    );
    assert_eq!(hospital["subscription"]["reason"], "invoice 42 unpaid");
    assert_eq!(hospital["subscription"]["canWrite"], false);
    // Suspending the subscription does not close the hospital.
    assert_eq!(hospital["status"], "ACTIVE");

    // Its staff still sign in and read, but every write is refused.
    let write = add_department(&app, &admin, "Geriatrics").await;
    assert_eq!(error_code(&write), Some("SUBSCRIPTION_INACTIVE"), "{write}");
    assert_eq!(department_count(&app, &admin).await, 8);
    let fresh = app.login(Some("SUS001"), &admin_name, ADMIN_PASSWORD).await;
    assert_eq!(department_count(&app, &fresh).await, 8);

    let again = platform_mutation(
        &app,
        &root,
        "suspendHospital",
        "SuspendHospitalInput",
        json!({ "code": "SUS001", "reason": "again" }),
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
    let empty_reason = platform_mutation(
        &app,
        &root,
        "suspendHospital",
        "SuspendHospitalInput",
        json!({ "code": "SUS001", "reason": "  " }),
    )
    .await;
    assert_eq!(field(&empty_reason), Some("reason"), "{empty_reason}");
    let unknown = platform_mutation(
        &app,
        &root,
        "suspendHospital",
        "SuspendHospitalInput",
        json!({ "code": "NOPE01", "reason": "x" }),
    )
    .await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{unknown}");

    // Reactivation needs a paid plan, then writes work again.
    let trial = platform_mutation(
        &app,
        &root,
        "reactivateHospital",
        "ReactivateHospitalInput",
        json!({ "code": "SUS001", "plan": "TRIAL", "cycle": "MONTHLY" }),
    )
    .await;
    assert_eq!(field(&trial), Some("plan"), "{trial}");
    let reactivated = platform_mutation(
        &app,
        &root,
        "reactivateHospital",
        "ReactivateHospitalInput",
        json!({ "code": "SUS001", "plan": "BASIC", "cycle": "MONTHLY" }),
    )
    .await;
    let hospital = &reactivated["data"]["reactivateHospital"];
    assert_eq!(
        hospital["subscription"]["status"], "ACTIVE",
        "{reactivated}"
    );
    assert_eq!(hospital["subscription"]["canWrite"], true);
    assert_eq!(hospital["subscription"]["plan"], "BASIC");
    assert_eq!(hospital["subscription"]["cycle"], "MONTHLY");
    assert!(hospital["subscription"]["periodEndsAt"].is_string());
    // The directory follows the plan.
    assert_eq!(hospital["plan"], "BASIC");
    let write = add_department(&app, &admin, "Geriatrics").await;
    assert!(write["errors"].is_null(), "{write}");

    // A plan change with a stale version is a conflict; with the current one it works.
    let version = platform_hospital(&app, &root, "SUS001").await["subscription"]["version"]
        .as_i64()
        .expect("version");
    let stale = platform_mutation(
        &app,
        &root,
        "changeSubscription",
        "ChangeSubscriptionInput",
        json!({ "code": "SUS001", "plan": "PROFESSIONAL", "cycle": "YEARLY", "expectedVersion": version - 1 }),
    )
    .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"), "{stale}");
    let past = platform_mutation(
        &app,
        &root,
        "changeSubscription",
        "ChangeSubscriptionInput",
        json!({ "code": "SUS001", "plan": "PROFESSIONAL", "cycle": "YEARLY", "periodEndsAt": "2001-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(field(&past), Some("periodEndsAt"), "{past}");
    let changed = platform_mutation(
        &app,
        &root,
        "changeSubscription",
        "ChangeSubscriptionInput",
        json!({ "code": "SUS001", "plan": "PROFESSIONAL", "cycle": "YEARLY", "expectedVersion": version }),
    )
    .await;
    let hospital = &changed["data"]["changeSubscription"];
    assert_eq!(hospital["plan"], "PROFESSIONAL", "{changed}");
    assert_eq!(hospital["subscription"]["cycle"], "YEARLY");
    assert_eq!(hospital["subscription"]["version"], version + 1);

    // Cancelling is for good: reads stay, writes and reactivation do not.
    let cancelled = platform_mutation(
        &app,
        &root,
        "cancelHospital",
        "CancelHospitalInput",
        json!({ "code": "SUS001", "reason": "left the platform" }),
    )
    .await;
    let hospital = &cancelled["data"]["cancelHospital"];
    assert_eq!(
        hospital["subscription"]["status"], "CANCELLED",
        "{cancelled}"
    );
    assert_eq!(hospital["status"], "ACTIVE");
    let write = add_department(&app, &admin, "Dermatology").await;
    assert_eq!(error_code(&write), Some("SUBSCRIPTION_INACTIVE"), "{write}");
    assert_eq!(department_count(&app, &admin).await, 9);
    let reactivate = platform_mutation(
        &app,
        &root,
        "reactivateHospital",
        "ReactivateHospitalInput",
        json!({ "code": "SUS001", "plan": "BASIC", "cycle": "MONTHLY" }),
    )
    .await;
    assert_eq!(error_code(&reactivate), Some("CONFLICT"), "{reactivate}");
}

#[tokio::test]
async fn a_closed_hospital_is_unreachable_until_reopened() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;
    let admin_name = app.setup_hospital("CLS001").await;
    let admin = app.login(Some("CLS001"), &admin_name, ADMIN_PASSWORD).await;

    let closed = platform_mutation(
        &app,
        &root,
        "closeHospital",
        "CloseHospitalInput",
        json!({ "code": "CLS001", "reason": "court order" }),
    )
    .await;
    let hospital = &closed["data"]["closeHospital"];
    assert_eq!(hospital["status"], "SUSPENDED", "{closed}");
    assert_eq!(hospital["closedReason"], "court order");
    assert_eq!(hospital["closedBy"], ROOT);

    // Tokens issued before stop working, and nobody signs in.
    let me = app
        .graphql("{ me { username } }", json!({}), Some(&admin))
        .await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
    let login = app
        .login_response(Some("CLS001"), &admin_name, ADMIN_PASSWORD)
        .await;
    assert_eq!(error_code(&login), Some("UNAUTHENTICATED"), "{login}");

    // The subscription cannot be changed while closed; closing twice is a conflict.
    let suspend = platform_mutation(
        &app,
        &root,
        "suspendHospital",
        "SuspendHospitalInput",
        json!({ "code": "CLS001", "reason": "x" }),
    )
    .await;
    assert_eq!(error_code(&suspend), Some("CONFLICT"), "{suspend}");
    let twice = platform_mutation(
        &app,
        &root,
        "closeHospital",
        "CloseHospitalInput",
        json!({ "code": "CLS001", "reason": "again" }),
    )
    .await;
    assert_eq!(error_code(&twice), Some("CONFLICT"), "{twice}");
    let listed = app
        .graphql(
            "{ hospitals(status: SUSPENDED) { edges { node { code } } } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert_eq!(
        listed["data"]["hospitals"]["edges"][0]["node"]["code"],
        "CLS001"
    );

    let reopened = platform_mutation(
        &app,
        &root,
        "reopenHospital",
        "ReopenHospitalInput",
        json!({ "code": "CLS001" }),
    )
    .await;
    let hospital = &reopened["data"]["reopenHospital"];
    assert_eq!(hospital["status"], "ACTIVE", "{reopened}");
    assert_eq!(hospital["closedReason"], Value::Null);
    // Refreshed on reopening.
    assert_eq!(hospital["statistics"]["users"], 1);
    let admin = app.login(Some("CLS001"), &admin_name, ADMIN_PASSWORD).await;
    assert!(add_department(&app, &admin, "Oncology").await["errors"].is_null());
    let again = platform_mutation(
        &app,
        &root,
        "reopenHospital",
        "ReopenHospitalInput",
        json!({ "code": "CLS001" }),
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
}

#[tokio::test]
async fn platform_stats_count_hospitals_by_status_and_plan_from_the_platform_database() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;
    for (code, plan) in [
        ("STA001", "TRIAL"),
        ("STA002", "BASIC"),
        ("STA003", "ENTERPRISE"),
    ] {
        let created = create_hospital(&app, &root, new_hospital(code, plan)).await;
        assert!(created["errors"].is_null(), "{created}");
    }
    // Onboarded by the CLI: in the directory, no figures yet.
    app.setup_hospital("STA004").await;
    platform_mutation(
        &app,
        &root,
        "closeHospital",
        "CloseHospitalInput",
        json!({ "code": "STA003", "reason": "audit" }),
    )
    .await;

    // Activity in one hospital shows once its figures are refreshed.
    let admin = app
        .login(Some("STA001"), "sta001_admin", ADMIN_PASSWORD)
        .await;
    for (username, role) in [("doc_amina", "DOCTOR"), ("nurse_brian", "NURSE")] {
        let created = app
            .graphql(
                "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }",
                json!({ "input": {
                    "username": username,
                    "email": format!("{username}@hospital.example"),
                    "fullName": username,
                    "role": role,
                    "password": ADMIN_PASSWORD,
                } }),
                Some(&admin),
            )
            .await;
        assert!(created["errors"].is_null(), "{created}");
    }
    let stats_query =
        "{ platformStats { hospitals byStatus { status count } byPlan { plan count } \
        bySubscriptionStatus { status count } users activeUsers patients appointments invoices \
        revenue { currency netMinor } hospitalsWithoutStatistics oldestStatisticsAt } }";
    let before = app.graphql(stats_query, json!({}), Some(&root)).await;
    assert_eq!(before["data"]["platformStats"]["users"], 3, "{before}");

    let lease = app.state.registry.get("STA001").await.expect("open");
    let written = refresh_tenant_stats(&app.state.control, &lease)
        .await
        .expect("refreshed");
    assert!(written);
    // Periodic callers skip figures younger than they ask for.
    let hour = chrono::Duration::hours(1);
    let stale = is_stale(&app.state.control, "STA001", hour)
        .await
        .expect("checked");
    assert!(!stale);
    let stale = is_stale(&app.state.control, "STA001", chrono::Duration::zero())
        .await
        .expect("checked");
    assert!(stale);
    drop(lease);

    let response = app.graphql(stats_query, json!({}), Some(&root)).await;
    let stats = &response["data"]["platformStats"];
    assert_eq!(stats["hospitals"], 4, "{response}");
    let count = |list: &Value, key: &str, value: &str| {
        list.as_array()
            .expect("list")
            .iter()
            .find(|e| e[key] == value)
            .map(|e| e["count"].as_i64().expect("count"))
    };
    assert_eq!(count(&stats["byStatus"], "status", "ACTIVE"), Some(3));
    assert_eq!(count(&stats["byStatus"], "status", "SUSPENDED"), Some(1));
    assert_eq!(count(&stats["byStatus"], "status", "PROVISIONING"), Some(0));
    assert_eq!(count(&stats["byPlan"], "plan", "TRIAL"), Some(2));
    assert_eq!(count(&stats["byPlan"], "plan", "BASIC"), Some(1));
    assert_eq!(count(&stats["byPlan"], "plan", "ENTERPRISE"), Some(1));
    assert_eq!(count(&stats["byPlan"], "plan", "PROFESSIONAL"), Some(0));
    assert_eq!(
        count(&stats["bySubscriptionStatus"], "status", "TRIAL"),
        Some(1)
    );
    assert_eq!(
        count(&stats["bySubscriptionStatus"], "status", "ACTIVE"),
        Some(2)
    );
    // Three hospitals have figures: one administrator each, two more staff in STA001.
    assert_eq!(stats["hospitalsWithoutStatistics"], 1);
    assert_eq!(stats["users"], 5);
    assert_eq!(stats["activeUsers"], 5);
    assert_eq!(stats["patients"], 0);
    assert_eq!(stats["appointments"], 0);
    assert_eq!(stats["revenue"], json!([]));
    assert!(stats["oldestStatisticsAt"].is_string());

    let hospital = platform_hospital(&app, &root, "STA001").await;
    assert_eq!(hospital["statistics"]["users"], 3, "{hospital}");
    assert!(hospital["statistics"]["lastActivityAt"].is_string());
    // A hospital onboarded by the CLI has no figures in lists until refreshed; asking
    // for it alone refreshes it.
    let listed = app
        .graphql(
            "{ hospitals { edges { node { code statistics { users } } } } }",
            json!({}),
            Some(&root),
        )
        .await;
    let sta004 = listed["data"]["hospitals"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["node"]["code"] == "STA004")
        .cloned()
        .expect("STA004 listed");
    assert_eq!(sta004["node"]["statistics"], Value::Null, "{listed}");
    let alone = platform_hospital(&app, &root, "STA004").await;
    assert_eq!(alone["statistics"]["users"], 1, "{alone}");
    assert_eq!(alone["subscription"]["status"], "TRIAL");
}

const RESTORE: &str = "mutation($i: RestoreHospitalAdminInput!) { restoreHospitalAdmin(input: $i) { id username role active } }";

/// The operator's rescue of a hospital locked out of administration: a deactivated
/// administrator is reactivated and given a new password; an administrator who lost the
/// password gets a new one and their earlier tokens die. Recorded under the operator;
/// other roles, unknown accounts and hospital staff are refused.
#[tokio::test]
async fn the_operator_restores_a_locked_out_hospital_administrator() {
    let app = spawn_app().await;
    let root = super_admin(&app).await;
    let admin = app.setup_hospital("RSC001").await;
    let admin_token = app.login(Some("RSC001"), &admin, ADMIN_PASSWORD).await;
    let second =
        hms_tests::fixtures::create_user(&app, "RSC001", "rsc_second", Role::HospitalAdmin).await;
    let nurse = hms_tests::fixtures::create_user(&app, "RSC001", "rsc_nurse", Role::Nurse).await;
    let off = app
        .graphql(
            "mutation($id: UUID!) { deactivateUser(userId: $id) { active } }",
            json!({ "id": second }),
            Some(&admin_token),
        )
        .await;
    assert_eq!(off["data"]["deactivateUser"]["active"], false, "{off}");

    // Hospital staff, even its administrator, cannot use the platform's rescue.
    let input = |username: &str| json!({ "i": { "code": "RSC001", "username": username, "newPassword": "a brand new password" } });
    let refused = app
        .graphql(RESTORE, input("rsc_second"), Some(&admin_token))
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");

    // The deactivated administrator is back, with the new password.
    let restored = app.graphql(RESTORE, input("rsc_second"), Some(&root)).await;
    let user = &restored["data"]["restoreHospitalAdmin"];
    assert_eq!(user["active"], true, "{restored}");
    assert_eq!(user["role"], "HOSPITAL_ADMIN");
    app.login(Some("RSC001"), "rsc_second", "a brand new password")
        .await;

    // The first administrator "lost" the password: a new one, and the old token dies.
    let restored = app.graphql(RESTORE, input(&admin), Some(&root)).await;
    assert_eq!(
        restored["data"]["restoreHospitalAdmin"]["active"], true,
        "{restored}"
    );
    let stale = app
        .graphql("{ me { username } }", json!({}), Some(&admin_token))
        .await;
    assert_eq!(error_code(&stale), Some("UNAUTHENTICATED"), "{stale}");
    let old = app
        .login_response(Some("RSC001"), &admin, ADMIN_PASSWORD)
        .await;
    assert!(
        old["data"]["login"].is_null(),
        "the old password is gone: {old}"
    );
    app.login(Some("RSC001"), &admin, "a brand new password")
        .await;

    // Only administrators can be restored this way, and only existing ones.
    let not_admin = app.graphql(RESTORE, input("rsc_nurse"), Some(&root)).await;
    assert_eq!(error_code(&not_admin), Some("VALIDATION"), "{not_admin}");
    assert_eq!(field(&not_admin), Some("username"));
    let unknown = app
        .graphql(RESTORE, input("nobody_here"), Some(&root))
        .await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{unknown}");
    let weak = app
        .graphql(
            RESTORE,
            json!({ "i": { "code": "RSC001", "username": "rsc_second", "newPassword": "short" } }),
            Some(&root),
        )
        .await;
    assert_eq!(field(&weak), Some("newPassword"), "{weak}");

    // The hospital's log says the operator did it.
    let mut conn = app.connect(&app.database_for("RSC001")).await;
    let by_operator: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, metadata->>'actor_username' FROM events \
          WHERE aggregate_type = 'user' AND aggregate_id = ANY($1) \
            AND event_type IN ('UserReactivated', 'PasswordChanged') ORDER BY position",
    )
    .bind(vec![second.to_string(), nurse.to_string()])
    .fetch_all(&mut conn)
    .await
    .expect("events");
    assert_eq!(
        by_operator,
        vec![
            ("UserReactivated".to_owned(), ROOT.to_owned()),
            ("PasswordChanged".to_owned(), ROOT.to_owned()),
        ]
    );
}

/// Onboarding is safe under concurrency (issue 13): twenty `createHospital` calls at once
/// all succeed, or get a clear answer to send again; none is INTERNAL, and every
/// hospital ends up onboarded once, its administrator able to sign in.
#[tokio::test]
async fn twenty_concurrent_onboardings_all_succeed_or_are_told_to_retry() {
    let app = spawn_app().await;
    let token = super_admin(&app).await;
    let codes: Vec<String> = (1..=20).map(|i| format!("CON{i:03}")).collect();
    let responses = futures::future::join_all(
        codes
            .iter()
            .map(|code| create_hospital(&app, &token, new_hospital(code, "BASIC"))),
    )
    .await;
    let mut retry = Vec::new();
    for (code, response) in codes.iter().zip(&responses) {
        match error_code(response) {
            None => assert_eq!(response["data"]["createHospital"]["code"], code.as_str()),
            Some("RATE_LIMITED") => retry.push(code),
            Some("CONFLICT") if response["errors"][0]["extensions"]["retryable"] == true => {
                retry.push(code)
            }
            other => panic!("{code}: {other:?}: {response}"),
        }
    }
    println!(
        "{} of 20 onboarded at once, {} told to retry",
        20 - retry.len(),
        retry.len()
    );
    for code in retry {
        let again = create_hospital(&app, &token, new_hospital(code, "BASIC")).await;
        assert!(again["errors"].is_null(), "{code}: {again}");
    }
    assert_eq!(hospital_count(&app).await, 20);
    for code in &codes {
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        app.login(Some(code), &admin, ADMIN_PASSWORD).await;
    }
}
