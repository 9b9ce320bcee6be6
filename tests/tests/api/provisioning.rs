use hms_api::config::{Cli, Command};
use hms_api::tenancy::directory::ProvisioningStep;
use hms_api::tenancy::provisioning::{NewHospital, ProvisionOutcome};
use hms_api::tenancy::TenancyError;
use hms_tests::{spawn_app, ADMIN_PASSWORD};

/// The hash of [`ADMIN_PASSWORD`], made once per test binary.
async fn admin_hash() -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        hms_api::auth::password::hash(ADMIN_PASSWORD.to_owned())
            .await
            .expect("hash")
    })
    .await
    .clone()
}

async fn request(code: &str) -> NewHospital {
    NewHospital::parse(
        code,
        "Downtown Medical Center",
        "TRIAL",
        "dmc_admin",
        "admin@dmc.example",
        "Ada Admin",
        admin_hash().await,
    )
    .expect("valid request")
}

#[tokio::test]
async fn provisioning_creates_a_migrated_database_with_the_registration_events() {
    let app = spawn_app().await;
    app.setup_hospital("DMC001").await;

    assert!(app.databases().await.contains(&app.database_for("DMC001")));
    let mut conn = app.connect(&app.database_for("DMC001")).await;
    let events: Vec<(String, String, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_type, event_type, sequence, metadata FROM events ORDER BY position",
    )
    .fetch_all(&mut conn)
    .await
    .expect("events");
    let kinds: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|(a, e, s, _)| (a.as_str(), e.as_str(), *s))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("hospital", "HospitalRegistered", 1),
            ("user", "UserCreated", 1)
        ]
    );
    for (_, _, _, metadata) in &events {
        assert_eq!(metadata["tenant"], "DMC001");
        assert_eq!(metadata["actor_username"], "system");
        assert!(metadata["at"].is_string() && metadata["request_id"].is_string());
    }
    let departments: Vec<String> = sqlx::query_scalar("SELECT name FROM departments ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .expect("departments");
    assert_eq!(
        departments,
        [
            "Cardiology",
            "Emergency",
            "Laboratory",
            "Pediatrics",
            "Pharmacy",
            "Radiology",
            "Surgery"
        ]
    );
    let tenant = app
        .state
        .directory
        .get("DMC001")
        .await
        .expect("directory")
        .expect("listed");
    assert_eq!(tenant.status.as_str(), "ACTIVE");
    assert_eq!(tenant.provisioning_step, ProvisioningStep::Ready);
    assert!(
        tenant.pending_admin.is_none(),
        "the admin's hash is not kept once ready"
    );

    app.login(Some("DMC001"), "dmc001_admin", ADMIN_PASSWORD)
        .await;
}

#[tokio::test]
async fn a_duplicate_code_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.setup_hospital("DMC001").await;
    let mut conn = app.connect(&app.database_for("DMC001")).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count");

    let result = app
        .state
        .provisioner()
        .provision(&request("DMC001").await)
        .await;
    assert!(
        matches!(result, Err(TenancyError::AlreadyExists(ref c)) if c == "DMC001"),
        "{result:?}"
    );

    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(before, after);
    let tenant = app
        .state
        .directory
        .get("DMC001")
        .await
        .expect("dir")
        .expect("listed");
    assert_eq!(
        tenant.name, "Hospital DMC001",
        "the first registration is kept"
    );
}

#[tokio::test]
async fn malicious_and_malformed_codes_are_refused_before_any_sql_runs() {
    let app = spawn_app().await;
    let before = app.databases().await;
    let long = "A".repeat(200);
    for code in [
        "x'; DROP DATABASE postgres; --",
        "",
        long.as_str(),
        "dmc001",
        "DMÇ001",
        "DM",
        "DMC 01",
    ] {
        let cli = Cli {
            platform: app.config.clone(),
            command: Some(Command::SetupHospital(hms_api::config::SetupHospitalArgs {
                name: "Evil".into(),
                code: code.into(),
                plan: "TRIAL".into(),
                admin_username: "evil_admin".into(),
                admin_email: "evil@example.com".into(),
                admin_name: "Evil".into(),
                admin_password: hms_api::config::Secret::new(ADMIN_PASSWORD),
            })),
        };
        let err = hms_api::cli::run(cli).await.expect_err("refused");
        assert!(err.to_string().starts_with("code:"), "{code:?}: {err}");
    }
    assert_eq!(app.databases().await, before, "no database appeared");
    assert!(app.state.directory.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn an_interrupted_provisioning_is_completed_by_the_next_run() {
    let app = spawn_app().await;
    let provisioner = app.state.provisioner();
    let steps = [
        ProvisioningStep::Reserved,
        ProvisioningStep::DatabaseCreated,
        ProvisioningStep::Migrated,
        ProvisioningStep::Registered,
    ];
    for (i, crash_after) in steps.into_iter().enumerate() {
        let code = format!("CRASH{i}");
        let stopped = provisioner
            .provision_until(&request(&code).await, crash_after)
            .await
            .expect("first run");
        assert_eq!(stopped, ProvisionOutcome::StoppedAfter(crash_after));
        let record = app
            .state
            .directory
            .get(&code)
            .await
            .expect("dir")
            .expect("reserved");
        assert_eq!(record.status.as_str(), "PROVISIONING");
        // Nobody can sign in to a half-made hospital.
        let refused = app
            .login_response(Some(&code), "dmc_admin", ADMIN_PASSWORD)
            .await;
        assert_eq!(hms_tests::error_code(&refused), Some("UNAUTHENTICATED"));

        let done = provisioner
            .provision(&request(&code).await)
            .await
            .expect("second run completes");
        assert!(
            matches!(done, ProvisionOutcome::Ready { resumed: true, .. }),
            "{done:?}"
        );
        let mut conn = app.connect(&app.database_for(&code)).await;
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(
            events, 2,
            "after crashing at {crash_after:?}: nothing written twice"
        );
        app.login(Some(&code), "dmc_admin", ADMIN_PASSWORD).await;
    }
}

#[tokio::test]
async fn a_crash_right_after_create_database_is_recovered() {
    // The window between `CREATE DATABASE` and recording that step: the database exists
    // but the directory still says RESERVED.
    let app = spawn_app().await;
    let provisioner = app.state.provisioner();
    provisioner
        .provision_until(&request("WINDOW1").await, ProvisioningStep::DatabaseCreated)
        .await
        .expect("first run");
    let mut control = app.connect(&format!("{}_control", app.prefix)).await;
    sqlx::query("UPDATE tenants SET provisioning_step = 'RESERVED' WHERE code = 'WINDOW1'")
        .execute(&mut control)
        .await
        .expect("rewind");
    let done = provisioner
        .provision(&request("WINDOW1").await)
        .await
        .expect("completes");
    assert!(matches!(
        done,
        ProvisionOutcome::Ready { resumed: true, .. }
    ));
    app.login(Some("WINDOW1"), "dmc_admin", ADMIN_PASSWORD)
        .await;
}

#[tokio::test]
async fn a_template_dropped_behind_the_servers_back_is_made_again() {
    // Provisioning remembers that the template is current instead of asking each time;
    // a template that disappeared since is rebuilt, not reported as a failure.
    let app = spawn_app().await;
    app.state
        .provisioner()
        .provision(&request("FIRST1").await)
        .await
        .expect("first hospital");
    let mut server = app.connect("postgres").await;
    hms_api::tenancy::provisioning::drop_database(
        &mut server,
        &app.state.naming.template_database(),
    )
    .await
    .expect("drop the template");

    let done = app
        .state
        .provisioner()
        .provision(&request("SECOND2").await)
        .await
        .expect("second hospital");
    assert!(matches!(
        done,
        ProvisionOutcome::Ready { resumed: false, .. }
    ));
    assert!(app
        .databases()
        .await
        .contains(&app.state.naming.template_database()));
    app.login(Some("SECOND2"), "dmc_admin", ADMIN_PASSWORD)
        .await;
}
