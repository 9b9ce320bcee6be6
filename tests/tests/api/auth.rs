use hms_app::commands;
use hms_app::tenancy::TenantStatus;
use hms_domain::common::Username;
use hms_domain::user::{user_id_for, User, UserCommand};
use hms_domain::{Actor, EventMetadata};
use hms_tests::{error_code, spawn_app, ADMIN_PASSWORD};
use serde_json::json;

const ME: &str = "{ me { id username role hospital { code name } } }";

#[tokio::test]
async fn a_hospital_admin_logs_in_and_sees_who_they_are() {
    let app = spawn_app().await;
    let admin = app.setup_hospital("DMC001").await;
    let token = app.login(Some("DMC001"), &admin, ADMIN_PASSWORD).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["username"], admin);
    assert_eq!(me["data"]["me"]["role"], "HOSPITAL_ADMIN");
    assert_eq!(
        me["data"]["me"]["hospital"],
        json!({ "code": "DMC001", "name": "Hospital DMC001" })
    );
}

#[tokio::test]
async fn usernames_are_matched_ignoring_case() {
    let app = spawn_app().await;
    app.setup_hospital("DMC001").await;
    app.login(Some("DMC001"), "DMC001_ADMIN", ADMIN_PASSWORD)
        .await;
}

#[tokio::test]
async fn a_super_administrator_logs_in_without_a_hospital() {
    let app = spawn_app().await;
    let cli = hms_api::config::Cli {
        platform: app.config.clone(),
        log_format: Default::default(),
        command: Some(hms_api::config::Command::CreateSuperadmin {
            username: "root_admin".into(),
            email: "root@hms.example".into(),
            password: hms_api::config::Secret::new(ADMIN_PASSWORD),
        }),
    };
    hms_api::cli::run(cli).await.expect("created");
    let token = app.login(None, "root_admin", ADMIN_PASSWORD).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["role"], "SUPERADMIN");
    assert_eq!(me["data"]["me"]["hospital"], serde_json::Value::Null);

    // The same username again is refused with a clear message.
    let again = hms_api::config::Cli {
        platform: app.config.clone(),
        log_format: Default::default(),
        command: Some(hms_api::config::Command::CreateSuperadmin {
            username: "ROOT_ADMIN".into(),
            email: "root@hms.example".into(),
            password: hms_api::config::Secret::new(ADMIN_PASSWORD),
        }),
    };
    let err = hms_api::cli::run(again).await.expect_err("duplicate");
    assert!(err.to_string().contains("exists already"), "{err}");
}

#[tokio::test]
async fn every_failed_login_answers_the_same_way() {
    let app = spawn_app().await;
    let admin = app.setup_hospital("DMC001").await;
    app.setup_hospital("CLOSED1").await;
    app.state
        .directory
        .set_status("CLOSED1", TenantStatus::Suspended)
        .await
        .expect("suspend");
    app.state.registry.forget("CLOSED1").await;

    let cases = [
        (
            "wrong password",
            Some("DMC001"),
            admin.as_str(),
            "not the password",
        ),
        (
            "unknown user",
            Some("DMC001"),
            "nobody_here",
            ADMIN_PASSWORD,
        ),
        (
            "unknown hospital",
            Some("NOPE999"),
            admin.as_str(),
            ADMIN_PASSWORD,
        ),
        (
            "malformed hospital code",
            Some("'; --"),
            admin.as_str(),
            ADMIN_PASSWORD,
        ),
        (
            "suspended hospital",
            Some("CLOSED1"),
            "closed1_admin",
            ADMIN_PASSWORD,
        ),
        (
            "super admin that is not",
            None,
            admin.as_str(),
            ADMIN_PASSWORD,
        ),
    ];
    let mut answers = Vec::new();
    for (case, hospital, user, password) in cases {
        let response = app.login_response(hospital, user, password).await;
        assert_eq!(
            error_code(&response),
            Some("UNAUTHENTICATED"),
            "{case}: {response}"
        );
        assert_eq!(response["data"], serde_json::Value::Null, "{case}");
        answers.push(response["errors"][0]["message"].clone());
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "all failures look alike: {answers:?}");
}

#[tokio::test]
async fn deactivating_a_user_or_changing_a_password_revokes_earlier_tokens() {
    let app = spawn_app().await;
    let admin = app.setup_hospital("DMC001").await;
    let lease = app.state.registry.get("DMC001").await.expect("tenant");
    let metadata = EventMetadata {
        actor: Actor::system(),
        tenant: "DMC001".into(),
        request_id: "test".into(),
        client_addr: None,
        at: chrono::Utc::now(),
    };
    let id = user_id_for(&Username::parse(&admin).expect("valid")).to_string();

    let token = app.login(Some("DMC001"), &admin, ADMIN_PASSWORD).await;
    let new_hash = hms_app::auth::password::hash("another long password".into())
        .await
        .expect("hash");
    let change = UserCommand::ChangePassword {
        password_hash: new_hash,
        now: chrono::Utc::now(),
    };
    commands::execute::<User>(&lease.pool, &app.state.runner, &id, change, (), &metadata)
        .await
        .expect("password changed");
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(
        error_code(&me),
        Some("UNAUTHENTICATED"),
        "old token after password change: {me}"
    );
    let token = app
        .login(Some("DMC001"), &admin, "another long password")
        .await;

    let deactivate = UserCommand::DeactivateUser {
        now: chrono::Utc::now(),
    };
    commands::execute::<User>(
        &lease.pool,
        &app.state.runner,
        &id,
        deactivate,
        (),
        &metadata,
    )
    .await
    .expect("deactivated");
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(
        error_code(&me),
        Some("UNAUTHENTICATED"),
        "token of a deactivated user: {me}"
    );
    let response = app
        .login_response(Some("DMC001"), &admin, "another long password")
        .await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    app.setup_hospital("DMC001").await;
    let other_keys = hms_app::auth::TokenKeys::new(&[1u8; 32], chrono::Duration::minutes(5));
    let (forged, _) = other_keys.issue(
        uuid::Uuid::new_v4(),
        Some("DMC001".into()),
        hms_domain::Role::HospitalAdmin,
        0,
        chrono::Utc::now(),
    );
    for token in [forged.as_str(), "garbage", ""] {
        let me = app.graphql(ME, json!({}), Some(token)).await;
        assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{token:?}: {me}");
    }
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_even_with_the_right_password() {
    let app = spawn_app().await;
    let admin = app.setup_hospital("THR001").await;
    for _ in 0..hms_app::auth::throttle::MAX_FAILURES {
        let response = app
            .login_response(Some("THR001"), &admin, "wrong password!")
            .await;
        assert_eq!(error_code(&response), Some("UNAUTHENTICATED"));
    }
    let response = app
        .login_response(Some("THR001"), &admin, ADMIN_PASSWORD)
        .await;
    assert_eq!(error_code(&response), Some("RATE_LIMITED"), "{response}");
    // Another account is not locked out by it.
    let other = app.setup_hospital("THR002").await;
    app.login(Some("THR002"), &other, ADMIN_PASSWORD).await;
}
