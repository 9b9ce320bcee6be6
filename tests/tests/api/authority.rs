//! Authority is read where it is true at that moment: a user's rights and revocation from
//! the write side (their own event stream, current at commit), a hospital's status from
//! the platform database, re-checked by every replica within a stated bound. Never from a
//! token's claims, a lagging read model, or one process's memory.

use std::time::{Duration, Instant};

use hms_app::commands;
use hms_app::tenancy::pools::STATUS_RECHECK;
use hms_domain::user::{User, UserCommand};
use hms_tests::fixtures::{
    admin_actor, event_count, events_after, metadata, register, register_simple, super_admin,
    user_id,
};
use hms_tests::{error_code, spawn_app, TestApp, TestConfig, ADMIN_PASSWORD};
use serde_json::{json, Value};

const PASSWORD: &str = "staff password 123";
const ME: &str = "{ me { username role } }";

async fn admin(app: &TestApp, code: &str) -> String {
    let admin = app.setup_hospital(code).await;
    app.login(Some(code), &admin, ADMIN_PASSWORD).await
}

async fn create_user(app: &TestApp, token: &str, username: &str, role: &str) -> Value {
    app.graphql(
        "mutation($input: CreateUserInput!) { createUser(input: $input) { id role } }",
        json!({ "input": { "username": username, "email": format!("{username}@h.example"),
                           "fullName": "Staff Member", "role": role, "password": PASSWORD } }),
        Some(token),
    )
    .await
}

/// Creates a staff account and returns its id.
async fn created_id(app: &TestApp, token: &str, username: &str, role: &str) -> String {
    let created = create_user(app, token, username, role).await;
    created["data"]["createUser"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("created: {created}"))
        .to_owned()
}

async fn user_mutation(app: &TestApp, token: &str, mutation: &str, id: &str) -> Value {
    let response = app
        .graphql(
            &format!("mutation($id: UUID!) {{ {mutation} }}"),
            json!({ "id": id }),
            Some(token),
        )
        .await;
    assert!(response["errors"].is_null(), "{mutation}: {response}");
    response
}

#[tokio::test]
async fn a_demoted_admin_cannot_use_an_old_token_to_create_another_admin() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT001").await;
    let id = created_id(&app, &root, "second_admin", "HOSPITAL_ADMIN").await;
    let old_token = app.login(Some("AUT001"), "second_admin", PASSWORD).await;

    user_mutation(
        &app,
        &root,
        "changeUserRole(userId: $id, role: STAFF) { role }",
        &id,
    )
    .await;

    // The very next request with the token issued as an admin has the rights of STAFF.
    let me = app.graphql(ME, json!({}), Some(&old_token)).await;
    assert_eq!(me["data"]["me"]["role"], "STAFF", "{me}");
    let escalation = create_user(&app, &old_token, "sneaky_admin", "HOSPITAL_ADMIN").await;
    assert_eq!(error_code(&escalation), Some("FORBIDDEN"), "{escalation}");
    let login = app
        .login_response(Some("AUT001"), "sneaky_admin", PASSWORD)
        .await;
    assert!(
        login["data"]["login"].is_null(),
        "no account was made: {login}"
    );
}

#[tokio::test]
async fn a_token_issued_before_a_deactivation_stays_dead_after_the_reactivation() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT002").await;
    let id = created_id(&app, &root, "nurse_ann", "NURSE").await;
    let old_token = app.login(Some("AUT002"), "nurse_ann", PASSWORD).await;

    user_mutation(&app, &root, "deactivateUser(userId: $id) { active }", &id).await;
    let me = app.graphql(ME, json!({}), Some(&old_token)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");

    user_mutation(&app, &root, "reactivateUser(userId: $id) { active }", &id).await;
    let me = app.graphql(ME, json!({}), Some(&old_token)).await;
    assert_eq!(
        error_code(&me),
        Some("UNAUTHENTICATED"),
        "reactivation revived a token: {me}"
    );
    let fresh = app.login(Some("AUT002"), "nurse_ann", PASSWORD).await;
    let me = app.graphql(ME, json!({}), Some(&fresh)).await;
    assert_eq!(me["data"]["me"]["username"], "nurse_ann", "{me}");
}

#[tokio::test]
async fn a_deactivation_revokes_tokens_at_commit_even_when_the_read_models_lag() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT003").await;
    create_user(&app, &root, "desk_bob", "RECEPTIONIST").await;
    let token = app.login(Some("AUT003"), "desk_bob", PASSWORD).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["username"], "desk_bob", "{me}");

    // Appended without running any projector: the `staff` read model still shows the
    // account as active.
    let lease = app.state.registry.get("AUT003").await.expect("tenant");
    commands::append::<User>(
        &lease.pool,
        &user_id("desk_bob"),
        UserCommand::DeactivateUser {
            now: chrono::Utc::now(),
        },
        (),
        &metadata("AUT003", admin_actor("AUT003")),
    )
    .await
    .expect("deactivated");
    let still_active: bool =
        sqlx::query_scalar("SELECT active FROM staff WHERE lower(username) = 'desk_bob'")
            .fetch_one(&lease.pool)
            .await
            .expect("staff row");
    assert!(still_active, "the read model lags on purpose");
    drop(lease);

    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
}

#[tokio::test]
async fn a_token_issued_before_a_hospital_was_closed_stays_dead_after_it_reopens() {
    let app = spawn_app().await;
    let staff_token = admin(&app, "AUT004").await;
    let root = super_admin(&app).await;
    for mutation in [
        "mutation { closeHospital(input: { code: \"AUT004\", reason: \"legal hold\" }) { code } }",
        "mutation { reopenHospital(input: { code: \"AUT004\" }) { code } }",
    ] {
        let done = app.graphql(mutation, json!({}), Some(&root)).await;
        assert!(done["errors"].is_null(), "{mutation}: {done}");
    }
    let me = app.graphql(ME, json!({}), Some(&staff_token)).await;
    assert_eq!(
        error_code(&me),
        Some("UNAUTHENTICATED"),
        "reopening revived a token: {me}"
    );
    let fresh = app
        .login(Some("AUT004"), "aut004_admin", ADMIN_PASSWORD)
        .await;
    let me = app.graphql(ME, json!({}), Some(&fresh)).await;
    assert_eq!(me["data"]["me"]["role"], "HOSPITAL_ADMIN", "{me}");
}

#[tokio::test]
async fn closing_a_hospital_through_one_replica_stops_it_on_another_within_the_bound() {
    let app = spawn_app().await;
    let token = admin(&app, "AUT005").await;
    let root = super_admin(&app).await;
    let replica = app.spawn_replica(TestConfig::default()).await;
    // The replica opens the hospital's pool and serves it.
    let me = replica.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "HOSPITAL_ADMIN", "{me}");

    let closed = app
        .graphql(
            "mutation { closeHospital(input: { code: \"AUT005\", reason: \"abuse\" }) { code } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert!(closed["errors"].is_null(), "{closed}");
    let started = Instant::now();
    let bound = STATUS_RECHECK + Duration::from_secs(1);
    assert!(
        bound <= Duration::from_secs(5),
        "the stated bound is at most 5 s"
    );
    loop {
        let me = replica.graphql(ME, json!({}), Some(&token)).await;
        if error_code(&me) == Some("UNAUTHENTICATED") {
            break;
        }
        assert!(
            started.elapsed() < bound,
            "the replica still serves the closed hospital after {:?}: {me}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Work through the replica is refused too, not only `me`.
    let users = replica
        .graphql(
            "{ users(first: 5) { edges { node { id } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&users), Some("UNAUTHENTICATED"), "{users}");
}

#[tokio::test]
async fn a_role_changed_through_one_replica_counts_on_another_at_the_next_request() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT006").await;
    let replica = app.spawn_replica(TestConfig::default()).await;
    let id = created_id(&app, &root, "nurse_cal", "NURSE").await;
    let token = app.login(Some("AUT006"), "nurse_cal", PASSWORD).await;
    // The replica has decoded (and keeps) the account as a nurse's.
    let me = replica.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "NURSE", "{me}");

    user_mutation(
        &app,
        &root,
        "changeUserRole(userId: $id, role: STAFF) { role }",
        &id,
    )
    .await;
    // No bound to wait for: every request reads the account's stream on the write side.
    let me = replica.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "STAFF", "{me}");
}

/// Whether the process would take the caller's rights as assumed for a write now (it
/// kept the account and the hospital), as the transport asks for a mutation.
async fn assumed_for_a_write(app: &TestApp, token: &str) -> bool {
    let principal = app
        .state
        .auth
        .authenticate(token, true)
        .await
        .expect("the token is good");
    principal.authority.assumption().is_some()
}

/// Deactivates `username` by appending to their stream directly: no request of the app
/// reads the account, so the process keeps it as it was.
async fn deactivate_behind_the_process(app: &TestApp, code: &str, username: &str) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    commands::append::<User>(
        &lease.pool,
        &user_id(username),
        UserCommand::DeactivateUser {
            now: chrono::Utc::now(),
        },
        (),
        &metadata(code, admin_actor(code)),
    )
    .await
    .expect("deactivated");
}

/// Fails with `what` if the hospital's log holds more than its first `count` events.
async fn assert_nothing_written(app: &TestApp, code: &str, count: i64, what: &str) {
    let written = events_after(app, code, count).await;
    assert!(written.is_empty(), "{what}: {written:?}");
}

fn patient(given: &str) -> Value {
    json!({ "givenName": given, "familyName": "Guarded", "dateOfBirth": "1990-01-02", "sex": "FEMALE" })
}

/// A write may start from the account and hospital this process last read (docs/adr/0012),
/// because its append lands only while neither stream has moved since. An account
/// deactivated after that read gets UNAUTHENTICATED and nothing is written; so does an
/// answer that appended nothing (a refused input), which leaves only after a read.
#[tokio::test]
async fn a_write_on_an_account_deactivated_since_the_process_read_it_is_refused_and_writes_nothing()
{
    let app = spawn_app().await;
    let root = admin(&app, "AUT010").await;
    for desk in ["desk_eve", "desk_fay"] {
        create_user(&app, &root, desk, "RECEPTIONIST").await;
    }
    let eve = app.login(Some("AUT010"), "desk_eve", PASSWORD).await;
    let fay = app.login(Some("AUT010"), "desk_fay", PASSWORD).await;
    for token in [&eve, &fay] {
        register_simple(&app, token, "Read", "First").await;
        assert!(
            assumed_for_a_write(&app, token).await,
            "the process kept both streams"
        );
    }
    deactivate_behind_the_process(&app, "AUT010", "desk_eve").await;
    deactivate_behind_the_process(&app, "AUT010", "desk_fay").await;
    let before = event_count(&app, "AUT010").await;

    // The append's guard finds the account moved: the rights are read, and refuse.
    let refused = register(&app, &eve, patient("Eve")).await;
    assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
    assert!(refused["data"].is_null(), "{refused}");
    // No append at all: the answer (VALIDATION) waits for the read, which refuses.
    let invalid = register(
        &app,
        &fay,
        json!({ "givenName": "", "familyName": "X",
        "dateOfBirth": "1990-01-02", "sex": "FEMALE" }),
    )
    .await;
    assert_eq!(error_code(&invalid), Some("UNAUTHENTICATED"), "{invalid}");
    assert_nothing_written(&app, "AUT010", before, "a revoked caller wrote").await;
}

/// A demotion after the process last read the account: the demoted admin's write was
/// decided as an admin's, so its append refuses, and the request is decided again on the
/// role read now: FORBIDDEN. No account is made.
#[tokio::test]
async fn a_write_decided_on_a_role_taken_away_since_the_process_read_it_is_forbidden() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT011").await;
    let id = created_id(&app, &root, "admin_gil", "HOSPITAL_ADMIN").await;
    let gil = app.login(Some("AUT011"), "admin_gil", PASSWORD).await;
    create_user(&app, &gil, "made_by_gil", "NURSE").await;
    assert!(
        assumed_for_a_write(&app, &gil).await,
        "the process kept gil as an admin"
    );

    // Through the same process: the command loads gil's stream, not the kept state.
    user_mutation(
        &app,
        &root,
        "changeUserRole(userId: $id, role: STAFF) { role }",
        &id,
    )
    .await;
    let before = event_count(&app, "AUT011").await;
    let escalation = create_user(&app, &gil, "sneaky_admin", "HOSPITAL_ADMIN").await;
    assert_eq!(error_code(&escalation), Some("FORBIDDEN"), "{escalation}");
    assert_nothing_written(&app, "AUT011", before, "a demoted admin wrote").await;
}

/// The hospital's stream moved after the process last read it (its branding changed):
/// a write decided on the old state appends nothing, and the request is decided again
/// on the new one and lands, once.
#[tokio::test]
async fn a_write_assuming_a_hospital_changed_since_is_decided_again_and_lands_once() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT012").await;
    create_user(&app, &root, "desk_hal", "RECEPTIONIST").await;
    let hal = app.login(Some("AUT012"), "desk_hal", PASSWORD).await;
    register_simple(&app, &hal, "Read", "First").await;
    assert!(
        assumed_for_a_write(&app, &hal).await,
        "the process kept both streams"
    );

    let branded = app
        .graphql(
            "mutation { updateBranding(input: { primaryColor: \"#123456\" }) { code } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert!(branded["errors"].is_null(), "{branded}");
    let before = event_count(&app, "AUT012").await;
    let registered = register(&app, &hal, patient("Hal")).await;
    assert!(
        registered["data"]["registerPatient"]["id"].is_string(),
        "{registered}"
    );
    let appended = events_after(&app, "AUT012", before).await;
    assert_eq!(
        appended
            .iter()
            .filter(|e| e.starts_with("patient/PatientRegistered "))
            .count(),
        1,
        "{appended:?}"
    );
}

/// Behind the system's back (as a restore would), takes the last event of account `id`'s
/// stream (its second, a role change) out of the log; a change to `role` then lands at
/// the same sequence.
async fn replace_last_role_change(app: &TestApp, code: &str, root: &str, id: &str, role: &str) {
    let mut owner = app.connect(&app.database_for(code)).await;
    hms_tests::fixtures::take_last_event_out(&mut owner, "user", id).await;
    user_mutation(
        app,
        root,
        &format!("changeUserRole(userId: $id, role: {role}) {{ role }}"),
        id,
    )
    .await;
    let version: i64 = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&mut owner)
    .await
    .expect("the stream's version");
    assert_eq!(version, 2, "the new event has the replaced one's sequence");
}

/// A replica keeps an account it decoded, with the place of its last event in the log.
/// When the stream is rewritten under it (a restore; here a last event replaced by
/// another one at the same sequence), the kept account is not taken for current: the
/// stream is read afresh.
#[tokio::test]
async fn an_account_rewritten_under_a_kept_one_is_read_afresh() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT007").await;
    let id = created_id(&app, &root, "desk_dee", "RECEPTIONIST").await;
    user_mutation(
        &app,
        &root,
        "changeUserRole(userId: $id, role: STAFF) { role }",
        &id,
    )
    .await;
    let token = app.login(Some("AUT007"), "desk_dee", PASSWORD).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "STAFF", "{me}");

    replace_last_role_change(&app, "AUT007", &root, &id, "NURSE").await;

    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "NURSE", "{me}");
}

/// The code of a database error, or a panic naming what was expected to fail.
fn refused_code(what: &str, result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    match result {
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => panic!("{what} was not refused by the database: {other:?}"),
    }
}

#[tokio::test]
async fn the_tenant_side_cannot_rewrite_the_log_or_record_a_head_whatever_it_sets() {
    let app = spawn_app().await;
    let token = admin(&app, "AUT010").await;
    let created = create_user(&app, &token, "aut010_nurse", "NURSE").await;
    assert!(created["errors"].is_null(), "{created}");
    // The server's own pool for the hospital: commands, reads and the sealer run on it.
    let lease = app.state.registry.get("AUT010").await.expect("tenant");
    app.state
        .runner
        .catch_up(&lease.pool)
        .await
        .expect("the writer seals and projects");
    let mut conn = lease.pool.acquire().await.expect("connection");
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await
        .expect("role");
    assert_eq!(role, format!("{}writer", app.prefix));
    let sealed: i64 = sqlx::query_scalar("SELECT count(*) FROM event_seals")
        .fetch_one(&mut *conn)
        .await
        .expect("seals");
    assert!(sealed >= 3, "the writer appended seals: {sealed}");

    // The repair switch that opens the triggers changes nothing for this role: the
    // privilege is not there. Nor may it remove the triggers: it owns no table.
    sqlx::query("SET hms.log_repair = 'on'")
        .execute(&mut *conn)
        .await
        .expect("any session may set a custom setting");
    for (what, statement) in [
        (
            "UPDATE events",
            "UPDATE events SET payload = payload WHERE sequence = 1",
        ),
        ("DELETE events", "DELETE FROM events WHERE sequence = 2"),
        ("TRUNCATE events", "TRUNCATE events"),
        (
            "UPDATE event_seals",
            "UPDATE event_seals SET chain_index = chain_index",
        ),
        ("DELETE event_seals", "DELETE FROM event_seals"),
        (
            "DELETE event_seal_encodings",
            "DELETE FROM event_seal_encodings",
        ),
        (
            "DISABLE TRIGGER",
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
        ),
        ("DROP TRIGGER", "DROP TRIGGER events_append_only ON events"),
        ("DROP TABLE", "DROP TABLE event_seals"),
        ("migration records", "DELETE FROM _sqlx_migrations"),
    ] {
        let result = sqlx::query(statement).execute(&mut *conn).await;
        assert_eq!(refused_code(what, result), "42501", "{what}");
    }
    drop(conn);

    // The log heads live in the platform database, where the writer has no rights.
    let control = app
        .config
        .database_url
        .expose()
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .username(&role);
    let mut platform = <sqlx::PgConnection as sqlx::Connection>::connect_with(&control)
        .await
        .expect("connect as the writer");
    for (what, statement) in [
        (
            "UPDATE tenant_log_heads",
            "UPDATE tenant_log_heads SET chain_index = chain_index",
        ),
        ("DELETE tenant_log_heads", "DELETE FROM tenant_log_heads"),
        (
            "INSERT tenant_log_heads",
            "INSERT INTO tenant_log_heads (code, chain_index, position, chain_hash) \
             VALUES ('AUT010', 1, 1, decode(repeat('00', 32), 'hex'))",
        ),
        ("UPDATE tenants", "UPDATE tenants SET status = status"),
    ] {
        let result = sqlx::query(statement).execute(&mut platform).await;
        assert_eq!(refused_code(what, result), "42501", "{what}");
    }
    <sqlx::PgConnection as sqlx::Connection>::close(platform)
        .await
        .expect("close");

    // The server itself keeps working under the role: a command and a read.
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert!(me["errors"].is_null(), "{me}");
}

/// A query may start from the kept account and hospital too (docs/adr/0012, 2026-12-07):
/// a record view's access-log append is guarded like any other. An account deactivated
/// since the process read it gets UNAUTHENTICATED, never the data, and its view is not
/// recorded; a query that appends nothing is answered only after the read, which refuses.
#[tokio::test]
async fn a_read_on_an_account_deactivated_since_the_process_read_it_shows_nothing_and_logs_nothing()
{
    let app = spawn_app().await;
    let root = admin(&app, "AUT014").await;
    for nurse in ["nurse_ida", "nurse_jo"] {
        create_user(&app, &root, nurse, "NURSE").await;
    }
    register_simple(&app, &root, "Kept", "Secret").await;
    let ida = app.login(Some("AUT014"), "nurse_ida", PASSWORD).await;
    let jo = app.login(Some("AUT014"), "nurse_jo", PASSWORD).await;
    let search = "{ patients(search: \"secret\") { nodes { id fullName } } }";
    for token in [&ida, &jo] {
        let found = app.graphql(search, json!({}), Some(token)).await;
        assert_eq!(
            found["data"]["patients"]["nodes"].as_array().map(Vec::len),
            Some(1),
            "{found}"
        );
        assert!(
            assumed_for_a_write(&app, token).await,
            "the process kept both streams"
        );
    }
    deactivate_behind_the_process(&app, "AUT014", "nurse_ida").await;
    deactivate_behind_the_process(&app, "AUT014", "nurse_jo").await;
    let before = event_count(&app, "AUT014").await;

    let refused = app.graphql(search, json!({}), Some(&ida)).await;
    assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
    assert!(refused["data"].is_null(), "{refused}");
    assert!(!refused.to_string().contains("Secret"), "{refused}");
    let me = app.graphql(ME, json!({}), Some(&jo)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
    assert!(me["data"].is_null(), "{me}");
    assert_nothing_written(&app, "AUT014", before, "a revoked reader was logged").await;
}

/// A record view decided on a hospital that changed since the process read it: its
/// access-log append refuses, the query is decided again on the new state, and the view
/// is recorded once.
#[tokio::test]
async fn a_read_assuming_a_hospital_changed_since_is_decided_again_and_logged_once() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT015").await;
    create_user(&app, &root, "nurse_kim", "NURSE").await;
    register_simple(&app, &root, "Logged", "Once").await;
    let kim = app.login(Some("AUT015"), "nurse_kim", PASSWORD).await;
    let search = "{ patients(search: \"once\") { nodes { id } } }";
    let first = app.graphql(search, json!({}), Some(&kim)).await;
    assert!(first["errors"].is_null(), "{first}");
    assert!(
        assumed_for_a_write(&app, &kim).await,
        "the process kept both streams"
    );

    let branded = app
        .graphql(
            "mutation { updateBranding(input: { primaryColor: \"#654321\" }) { code } }",
            json!({}),
            Some(&root),
        )
        .await;
    assert!(branded["errors"].is_null(), "{branded}");
    let before = event_count(&app, "AUT015").await;
    let found = app.graphql(search, json!({}), Some(&kim)).await;
    assert_eq!(
        found["data"]["patients"]["nodes"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let appended = events_after(&app, "AUT015", before).await;
    assert_eq!(
        appended
            .iter()
            .filter(|e| e.starts_with("record_access/PatientRecordsViewed "))
            .count(),
        1,
        "{appended:?}"
    );
    assert_eq!(appended.len(), 1, "{appended:?}");
}

/// A write assumed on a kept account whose stream was rewritten under it at the same
/// version (a restore; here the role change that made the account a receptionist is
/// replaced by one to ACCOUNTANT): the append's guard requires the kept last event itself,
/// not only its sequence, so nothing lands on the old role; the request is decided again
/// on the account as it is, and refused.
#[tokio::test]
async fn a_write_assumed_on_an_account_rewritten_under_it_at_the_same_version_is_refused() {
    let app = spawn_app().await;
    let root = admin(&app, "AUT016").await;
    let id = created_id(&app, &root, "desk_lou", "STAFF").await;
    user_mutation(
        &app,
        &root,
        "changeUserRole(userId: $id, role: RECEPTIONIST) { role }",
        &id,
    )
    .await;
    let lou = app.login(Some("AUT016"), "desk_lou", PASSWORD).await;
    register_simple(&app, &lou, "Before", "Rewrite").await;
    assert!(
        assumed_for_a_write(&app, &lou).await,
        "the process kept lou as a receptionist"
    );

    replace_last_role_change(&app, "AUT016", &root, &id, "ACCOUNTANT").await;

    let before = event_count(&app, "AUT016").await;
    let refused = register(&app, &lou, patient("Lou")).await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    assert_nothing_written(&app, "AUT016", before, "a write on a rewritten role landed").await;
}
