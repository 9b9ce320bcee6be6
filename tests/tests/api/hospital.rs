use futures::future::join_all;
use hms_tests::{error_code, spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};

const CREATE_USER: &str =
    "mutation($input: CreateUserInput!) { createUser(input: $input) { id username role active } }";
const STAFF_PASSWORD: &str = "staff password 123";

async fn admin_token(app: &TestApp, code: &str) -> String {
    let admin = app.setup_hospital(code).await;
    app.login(Some(code), &admin, ADMIN_PASSWORD).await
}

async fn create_user(app: &TestApp, token: &str, username: &str, role: &str) -> Value {
    app.graphql(
        CREATE_USER,
        json!({ "input": { "username": username, "email": format!("{username}@h.example"), "fullName": "Staff Member", "role": role, "password": STAFF_PASSWORD } }),
        Some(token),
    )
    .await
}

async fn event_count(app: &TestApp, code: &str, event_type: &str) -> i64 {
    let mut conn = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

#[tokio::test]
async fn an_admin_staffs_the_hospital_and_each_account_can_sign_in() {
    let app = spawn_app().await;
    let token = admin_token(&app, "STF001").await;
    for (username, role) in [
        ("dr_house", "DOCTOR"),
        ("nurse_joy", "NURSE"),
        ("front_desk", "RECEPTIONIST"),
        ("money", "ACCOUNTANT"),
    ] {
        let created = create_user(&app, &token, username, role).await;
        assert_eq!(created["data"]["createUser"]["role"], role, "{created}");
        let staff_token = app.login(Some("STF001"), username, STAFF_PASSWORD).await;
        let me = app
            .graphql("{ me { role } }", json!({}), Some(&staff_token))
            .await;
        assert_eq!(me["data"]["me"]["role"], role);
    }
    let users = app
        .graphql("{ users(first: 2) { edges { node { username } } pageInfo { hasNextPage endCursor } } }", json!({}), Some(&token))
        .await;
    let page = &users["data"]["users"];
    assert_eq!(page["edges"].as_array().map(Vec::len), Some(2), "{users}");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let next = app
        .graphql(
            "query($after: String) { users(first: 100, after: $after) { edges { node { username } } } }",
            json!({ "after": page["pageInfo"]["endCursor"] }),
            Some(&token),
        )
        .await;
    assert_eq!(
        next["data"]["users"]["edges"].as_array().map(Vec::len),
        Some(3),
        "five accounts in all: {next}"
    );

    // The same username in another case is the same account.
    let dup = create_user(&app, &token, "DR_HOUSE", "NURSE").await;
    assert_eq!(error_code(&dup), Some("CONFLICT"), "{dup}");
    // A hospital account can never be a super administrator.
    let sneaky = create_user(&app, &token, "sneaky", "SUPERADMIN").await;
    assert_eq!(error_code(&sneaky), Some("VALIDATION"), "{sneaky}");
}

#[tokio::test]
async fn only_administrators_manage_staff() {
    let app = spawn_app().await;
    let token = admin_token(&app, "STF002").await;
    create_user(&app, &token, "dr_who", "DOCTOR").await;
    let doctor = app.login(Some("STF002"), "dr_who", STAFF_PASSWORD).await;
    let attempt = create_user(&app, &doctor, "intruder", "HOSPITAL_ADMIN").await;
    assert_eq!(error_code(&attempt), Some("FORBIDDEN"), "{attempt}");
    let attempt = app
        .graphql(
            "mutation { addDepartment(name: \"Oncology\") { id } }",
            json!({}),
            Some(&doctor),
        )
        .await;
    assert_eq!(error_code(&attempt), Some("FORBIDDEN"));
    assert_eq!(event_count(&app, "STF002", "DepartmentAdded").await, 0);
}

#[tokio::test]
async fn departments_are_added_renamed_and_deactivated_with_unique_names() {
    let app = spawn_app().await;
    let token = admin_token(&app, "DEP001").await;
    let added = app
        .graphql(
            "mutation { addDepartment(name: \"Oncology\") { id name active } }",
            json!({}),
            Some(&token),
        )
        .await;
    let id = added["data"]["addDepartment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dup = app
        .graphql(
            "mutation { addDepartment(name: \"SURGERY\") { id } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        error_code(&dup),
        Some("CONFLICT"),
        "Surgery exists by default: {dup}"
    );
    let renamed = app
        .graphql("mutation($id: UUID!) { renameDepartment(departmentId: $id, name: \"Medical Oncology\") { name } }", json!({ "id": id }), Some(&token))
        .await;
    assert_eq!(
        renamed["data"]["renameDepartment"]["name"],
        "Medical Oncology"
    );
    let off = app
        .graphql(
            "mutation($id: UUID!) { deactivateDepartment(departmentId: $id) { active } }",
            json!({ "id": id }),
            Some(&token),
        )
        .await;
    assert_eq!(off["data"]["deactivateDepartment"]["active"], false);
    // Nobody is placed in an inactive department, as nobody is booked into one.
    let users_before = event_count(&app, "DEP001", "UserCreated").await;
    let placed = app
        .graphql(
            CREATE_USER,
            json!({ "input": { "username": "onc_nurse", "email": "onc_nurse@h.example", "fullName": "Staff Member",
                               "role": "NURSE", "password": STAFF_PASSWORD, "departmentId": id } }),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&placed), Some("VALIDATION"), "{placed}");
    assert!(
        placed.to_string().contains("inactive"),
        "the refusal says why: {placed}"
    );
    assert_eq!(
        event_count(&app, "DEP001", "UserCreated").await,
        users_before
    );
    let active = app
        .graphql(
            "{ departments(activeOnly: true) { name } }",
            json!({}),
            Some(&token),
        )
        .await;
    let names: Vec<&str> = active["data"]["departments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names.len(), 7);
    assert!(!names.contains(&"Medical Oncology"));
    let missing = app
        .graphql(
            "mutation($id: UUID!) { renameDepartment(departmentId: $id, name: \"X\") { name } }",
            json!({ "id": uuid::Uuid::new_v4() }),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&missing), Some("NOT_FOUND"));
}

#[tokio::test]
async fn settings_profile_and_modules_round_trip() {
    let app = spawn_app().await;
    let token = admin_token(&app, "SET001").await;
    let profile = app
        .graphql(
            "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { name timeZone currency address { city country } } }",
            json!({ "i": { "name": "Set General", "timeZone": "Africa/Nairobi", "currency": "KES", "contactEmail": "info@set.example",
                           "address": { "line1": "1 Main St", "city": "Nairobi", "country": "KE" } } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        profile["data"]["updateHospitalProfile"]["timeZone"], "Africa/Nairobi",
        "{profile}"
    );
    assert_eq!(
        profile["data"]["updateHospitalProfile"]["address"]["country"],
        "KE"
    );
    let settings = app
        .graphql(
            "mutation($i: UpdateHospitalSettingsInput!) { updateHospitalSettings(input: $i) { settings { slotLengthMinutes invoicePrefix workingHours { weekday open close } } } }",
            json!({ "i": { "slotLengthMinutes": 20, "invoicePrefix": "SET", "workingHours": [{ "weekday": "MONDAY", "open": "08:00", "close": "16:00" }] } }),
            Some(&token),
        )
        .await;
    let s = &settings["data"]["updateHospitalSettings"]["settings"];
    assert_eq!(s["slotLengthMinutes"], 20, "{settings}");
    assert_eq!(
        s["workingHours"],
        json!([{ "weekday": "MONDAY", "open": "08:00", "close": "16:00" }])
    );
    let bad = app
        .graphql(
            "mutation($i: UpdateHospitalSettingsInput!) { updateHospitalSettings(input: $i) { code } }",
            json!({ "i": { "slotLengthMinutes": 20, "invoicePrefix": "SET", "workingHours": [{ "weekday": "MONDAY", "open": "18:00", "close": "08:00" }] } }),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&bad), Some("VALIDATION"), "{bad}");

    let off = app
        .graphql(
            "mutation { disableModule(module: TELEMEDICINE) { modules } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert!(
        !off["data"]["disableModule"]["modules"]
            .as_array()
            .expect("modules")
            .contains(&json!("TELEMEDICINE")),
        "{off}"
    );
    let core = app
        .graphql(
            "mutation { disableModule(module: PATIENTS) { modules } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&core), Some("VALIDATION"), "{core}");
}

#[tokio::test]
async fn deactivated_staff_lose_access_and_the_last_admin_stays() {
    let app = spawn_app().await;
    let token = admin_token(&app, "DEA001").await;
    let nurse = create_user(&app, &token, "nurse_a", "NURSE").await;
    let nurse_id = nurse["data"]["createUser"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let nurse_token = app.login(Some("DEA001"), "nurse_a", STAFF_PASSWORD).await;
    let off = app
        .graphql(
            "mutation($id: UUID!) { deactivateUser(userId: $id) { active } }",
            json!({ "id": nurse_id }),
            Some(&token),
        )
        .await;
    assert_eq!(off["data"]["deactivateUser"]["active"], false, "{off}");
    let me = app
        .graphql("{ me { username } }", json!({}), Some(&nurse_token))
        .await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"));

    let me = app.graphql("{ me { id } }", json!({}), Some(&token)).await;
    let admin_id = me["data"]["me"]["id"].as_str().expect("id").to_owned();
    let demote = app
        .graphql(
            "mutation($id: UUID!) { changeUserRole(userId: $id, role: NURSE) { role } }",
            json!({ "id": admin_id }),
            Some(&token),
        )
        .await;
    assert_eq!(
        error_code(&demote),
        Some("CONFLICT"),
        "the only admin cannot be demoted: {demote}"
    );
}

#[tokio::test]
async fn a_password_change_requires_the_current_password_and_revokes_old_tokens() {
    let app = spawn_app().await;
    let token = admin_token(&app, "PWD001").await;
    let wrong = app
        .graphql("mutation { changePassword(currentPassword: \"nope nope nope\", newPassword: \"brand new password\") }", json!({}), Some(&token))
        .await;
    assert_eq!(error_code(&wrong), Some("VALIDATION"));
    let ok = app
        .graphql(
            "mutation($c: String!) { changePassword(currentPassword: $c, newPassword: \"brand new password\") }",
            json!({ "c": ADMIN_PASSWORD }),
            Some(&token),
        )
        .await;
    assert_eq!(ok["data"]["changePassword"], true, "{ok}");
    let me = app
        .graphql("{ me { username } }", json!({}), Some(&token))
        .await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"));
    app.login(Some("PWD001"), "pwd001_admin", "brand new password")
        .await;
}

#[tokio::test]
async fn ten_concurrent_retries_with_one_idempotency_key_append_one_event() {
    let app = spawn_app().await;
    let token = admin_token(&app, "IDEM01").await;
    let mutation = "mutation($k: String) { addDepartment(name: \"Geriatrics\", idempotencyKey: $k) { id name } }";
    let answers = join_all(
        (0..10).map(|_| app.graphql(mutation, json!({ "k": "add-geriatrics-1" }), Some(&token))),
    )
    .await;
    let ids: Vec<&Value> = answers
        .iter()
        .map(|a| &a["data"]["addDepartment"]["id"])
        .collect();
    assert!(
        ids.iter().all(|id| id.is_string() && *id == ids[0]),
        "every retry gets the first answer: {answers:?}"
    );
    assert_eq!(event_count(&app, "IDEM01", "DepartmentAdded").await, 1);

    // The same key for a different request is refused.
    let other = app
        .graphql("mutation($k: String) { addDepartment(name: \"Dermatology\", idempotencyKey: $k) { id } }", json!({ "k": "add-geriatrics-1" }), Some(&token))
        .await;
    assert_eq!(error_code(&other), Some("VALIDATION"), "{other}");
    assert_eq!(event_count(&app, "IDEM01", "DepartmentAdded").await, 1);
}

#[tokio::test]
async fn concurrent_updates_with_the_same_expected_version_let_exactly_one_through() {
    let app = spawn_app().await;
    let token = admin_token(&app, "VER001").await;
    let mut conn = app.connect(&app.database_for("VER001")).await;
    let version: i64 =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = 'hospital'")
            .fetch_one(&mut conn)
            .await
            .expect("version");
    let mutation = "mutation($i: UpdateBrandingInput!) { updateBranding(input: $i) { branding { primaryColor } } }";
    let answers = join_all((0..6).map(|i| {
        app.graphql(
            mutation,
            json!({ "i": { "primaryColor": format!("#00000{i}"), "expectedVersion": version } }),
            Some(&token),
        )
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|a| a["data"]["updateBranding"].is_object())
        .count();
    let conflicts = answers
        .iter()
        .filter(|a| error_code(a) == Some("CONFLICT"))
        .count();
    assert_eq!((ok, conflicts), (1, 5), "{answers:?}");
    assert_eq!(event_count(&app, "VER001", "BrandingUpdated").await, 1);

    let stale = app
        .graphql(
            mutation,
            json!({ "i": { "primaryColor": "#ffffff", "expectedVersion": version } }),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"));
    let fresh = app
        .graphql(
            mutation,
            json!({ "i": { "primaryColor": "#ffffff", "expectedVersion": version + 1 } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        fresh["data"]["updateBranding"]["branding"]["primaryColor"], "#FFFFFF",
        "{fresh}"
    );
}

#[tokio::test]
async fn the_dashboard_counts_what_the_hospital_has() {
    let app = spawn_app().await;
    let token = admin_token(&app, "DSH001").await;
    create_user(&app, &token, "dr_dash", "DOCTOR").await;
    let stats = app
        .graphql("{ hospitalStats { patients activeStaff appointmentsToday { status count } revenueThisMonthMinor outstandingMinor } }", json!({}), Some(&token))
        .await;
    let s = &stats["data"]["hospitalStats"];
    assert_eq!(s["activeStaff"], 2, "{stats}");
    assert_eq!(s["patients"], 0);
    assert_eq!(s["revenueThisMonthMinor"], 0);
}
