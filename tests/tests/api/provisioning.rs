use hms_api::config::{Cli, Command};
use hms_app::tenancy::directory::ProvisioningStep;
use hms_app::tenancy::provisioning::{NewHospital, ProvisionOutcome};
use hms_app::tenancy::TenancyError;
use hms_tests::{spawn_app, ADMIN_PASSWORD};

/// The hash of [`ADMIN_PASSWORD`], made once per test binary.
async fn admin_hash() -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned())
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
            log_format: Default::default(),
            command: Some(Command::SetupHospital(hms_api::config::SetupHospitalArgs {
                name: "Evil".into(),
                code: code.into(),
                plan: "TRIAL".into(),
                admin_username: "evil_admin".into(),
                admin_email: "evil@example.com".into(),
                admin_name: "Evil".into(),
                admin_password: hms_api::config::Secret::new(ADMIN_PASSWORD),
                server: None,
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
    hms_app::tenancy::provisioning::drop_database(
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

// Spare databases (app/src/tenancy/spares.rs).

/// Names of this test's spare databases that exist now.
async fn spare_databases_on_server(app: &hms_tests::TestApp) -> Vec<String> {
    let spare_prefix = app.state.naming.spare_prefix();
    app.databases()
        .await
        .into_iter()
        .filter(|d| d.starts_with(&spare_prefix))
        .collect()
}

async fn database_oid(app: &hms_tests::TestApp, name: &str) -> Option<i64> {
    let mut conn = app.connect("postgres").await;
    sqlx::query_scalar("SELECT oid::bigint FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .expect("oid")
}

async fn event_count(app: &hms_tests::TestApp, code: &str) -> i64 {
    let mut conn = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_spare_database_is_renamed_into_the_new_hospital() {
    let app = spawn_app().await;
    let provisioner = app.state.provisioner().with_spares(1);
    let refill = provisioner.refill_spares().await.expect("refill");
    assert_eq!(refill.created, 1);
    let spares = provisioner.spare_databases().await.expect("spares");
    assert_eq!(spares, spare_databases_on_server(&app).await);
    let spare_oid = database_oid(&app, &spares[0]).await.expect("spare exists");

    // A crash right after the rename: the directory already says MIGRATED.
    let stopped = provisioner
        .provision_until(&request("SPARE1").await, ProvisioningStep::Migrated)
        .await
        .expect("first run");
    assert_eq!(
        stopped,
        ProvisionOutcome::StoppedAfter(ProvisioningStep::Migrated)
    );
    let record = app
        .state
        .directory
        .get("SPARE1")
        .await
        .expect("dir")
        .expect("listed");
    assert_eq!(record.provisioning_step, ProvisioningStep::Migrated);
    assert_eq!(
        database_oid(&app, &app.database_for("SPARE1")).await,
        Some(spare_oid),
        "the spare itself became the hospital's database"
    );
    assert!(provisioner
        .spare_databases()
        .await
        .expect("spares")
        .is_empty());
    assert!(spare_databases_on_server(&app).await.is_empty());

    let done = provisioner
        .provision(&request("SPARE1").await)
        .await
        .expect("completes");
    assert!(matches!(
        done,
        ProvisionOutcome::Ready { resumed: true, .. }
    ));
    assert_eq!(event_count(&app, "SPARE1").await, 2);
    app.login(Some("SPARE1"), "dmc_admin", ADMIN_PASSWORD).await;

    // In one go, and the refill makes a new spare for the next hospital.
    assert_eq!(
        provisioner.refill_spares().await.expect("refill").created,
        1
    );
    let done = provisioner
        .provision(&request("SPARE2").await)
        .await
        .expect("second hospital");
    assert!(matches!(
        done,
        ProvisionOutcome::Ready { resumed: false, .. }
    ));
    assert!(provisioner
        .spare_databases()
        .await
        .expect("spares")
        .is_empty());
    assert_eq!(event_count(&app, "SPARE2").await, 2);
    app.login(Some("SPARE2"), "dmc_admin", ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn without_spares_configured_none_is_made_or_used() {
    let app = spawn_app().await;
    let with = app.state.provisioner().with_spares(1);
    with.refill_spares().await.expect("refill");
    let without = app.state.provisioner().with_spares(0);
    without
        .provision(&request("COLD1").await)
        .await
        .expect("provisioned");
    assert_eq!(
        with.spare_databases().await.expect("spares").len(),
        1,
        "not used"
    );

    // Turning spares off drops the ones left over.
    let refill = without.refill_spares().await.expect("refill");
    assert_eq!((refill.created, refill.dropped), (0, 1));
    assert!(spare_databases_on_server(&app).await.is_empty());
}

#[tokio::test]
async fn unusable_spares_are_discarded_by_the_next_refill() {
    let app = spawn_app().await;
    let provisioner = app.state.provisioner().with_spares(1);
    provisioner.refill_spares().await.expect("refill");
    let good = provisioner.spare_databases().await.expect("spares");
    let template = app.state.naming.template_database();
    let spare_prefix = app.state.naming.spare_prefix();
    let orphan = format!("{spare_prefix}orphan");
    let stale = format!("{spare_prefix}stale");
    let gone = format!("{spare_prefix}gone");
    let mut server = app.connect("postgres").await;
    for name in [&orphan, &stale] {
        // Interrupted refill: a copy without a row.
        sqlx::Executor::execute(
            &mut server,
            format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"").as_str(),
        )
        .await
        .expect("copy");
    }
    let mut control = app.connect(&format!("{}_control", app.prefix)).await;
    let latest = hms_app::tenancy::platform::latest_tenant_migration();
    // A spare of an older template, and a row whose database was dropped by hand.
    for (name, version) in [(&stale, latest - 1), (&gone, latest)] {
        sqlx::query(
            "INSERT INTO spare_databases (database_name, migration_version) VALUES ($1, $2)",
        )
        .bind(name)
        .bind(version)
        .execute(&mut control)
        .await
        .expect("row");
    }

    let refill = provisioner.refill_spares().await.expect("refill");
    assert_eq!((refill.created, refill.dropped), (0, 2), "{refill:?}");
    assert_eq!(spare_databases_on_server(&app).await, good);
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT database_name FROM spare_databases ORDER BY 1")
            .fetch_all(&mut control)
            .await
            .expect("rows");
    assert_eq!(rows, good);

    let good_oid = database_oid(&app, &good[0]).await;
    provisioner
        .provision(&request("AFTER1").await)
        .await
        .expect("provisioned");
    assert_eq!(
        database_oid(&app, &app.database_for("AFTER1")).await,
        good_oid
    );
}

#[tokio::test]
async fn a_spare_whose_rename_is_refused_is_left_as_it_was() {
    // The hospital's database exists already (a crash right after `CREATE DATABASE`,
    // before the step was recorded): the rename fails, its transaction is rolled back
    // with the spare's row, and provisioning goes on with the database that exists.
    let app = spawn_app().await;
    let provisioner = app.state.provisioner().with_spares(1);
    provisioner.refill_spares().await.expect("refill");
    let spares = provisioner.spare_databases().await.expect("spares");
    provisioner
        .provision_until(&request("WINDOW2").await, ProvisioningStep::DatabaseCreated)
        .await
        .expect("first run copies the template");
    let mut control = app.connect(&format!("{}_control", app.prefix)).await;
    sqlx::query("UPDATE tenants SET provisioning_step = 'RESERVED' WHERE code = 'WINDOW2'")
        .execute(&mut control)
        .await
        .expect("rewind");

    let done = provisioner
        .provision(&request("WINDOW2").await)
        .await
        .expect("completes");
    assert!(matches!(
        done,
        ProvisionOutcome::Ready { resumed: true, .. }
    ));
    assert_eq!(provisioner.spare_databases().await.expect("spares"), spares);
    assert_eq!(spare_databases_on_server(&app).await, spares);
    assert_eq!(event_count(&app, "WINDOW2").await, 2);
    app.login(Some("WINDOW2"), "dmc_admin", ADMIN_PASSWORD)
        .await;
}

#[tokio::test]
async fn two_processes_share_the_spares_without_making_or_taking_one_twice() {
    let app = spawn_app().await;
    // A second server process on the same platform.
    let other = hms_app::state::Platform::connect(&app.config)
        .await
        .expect("second process");
    let first = app.state.provisioner().with_spares(1);
    let second = other.provisioner().with_spares(1);

    let (a, b) = tokio::join!(first.refill_spares(), second.refill_spares());
    assert_eq!(a.expect("refill").created + b.expect("refill").created, 1);
    let spares = first.spare_databases().await.expect("spares");
    assert_eq!(spares.len(), 1);
    assert_eq!(spare_databases_on_server(&app).await, spares);
    let spare_oid = database_oid(&app, &spares[0]).await;

    let (a, b) = tokio::join!(
        async { first.provision(&request("TWIN1").await).await },
        async { second.provision(&request("TWIN2").await).await },
    );
    a.expect("first hospital");
    b.expect("second hospital");
    let oids = [
        database_oid(&app, &app.database_for("TWIN1")).await,
        database_oid(&app, &app.database_for("TWIN2")).await,
    ];
    assert_eq!(
        oids.iter().filter(|o| **o == spare_oid).count(),
        1,
        "exactly one hospital got the spare"
    );
    assert!(spare_databases_on_server(&app).await.is_empty());
    for code in ["TWIN1", "TWIN2"] {
        assert_eq!(event_count(&app, code).await, 2);
        app.login(Some(code), "dmc_admin", ADMIN_PASSWORD).await;
    }
    other.registry.close_all().await;
    other.control.close().await;
}

#[tokio::test]
async fn a_refill_cancelled_anywhere_leaves_nothing_half_made() {
    // A process dying mid-refill: its lock is released with its session, and whatever
    // it left (a copy without a row) is dropped by the next refill, never used.
    let app = spawn_app().await;
    let provisioner = app.state.provisioner().with_spares(1);
    // The template exists before the first cancellation.
    provisioner
        .provision(&request("BASE1").await)
        .await
        .expect("first hospital");
    for (i, delay_ms) in [0u64, 3, 10, 25, 60].into_iter().enumerate() {
        let refill = tokio::spawn({
            let provisioner = provisioner.clone();
            async move { provisioner.refill_spares().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        refill.abort();
        let _ = refill.await;
        // The server finishes a statement whose client went away; wait for that.
        let mut server = app.connect("postgres").await;
        for _ in 0..500 {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                   AND pid <> pg_backend_pid() AND query ILIKE '%' || $1 || '%'",
            )
            .bind(&app.prefix)
            .fetch_one(&mut server)
            .await
            .expect("activity");
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        // Nobody holds the provisioning lock any more: a session that held it is gone,
        // not parked in the pool with the lock.
        let mut control = app.connect(&format!("{}_control", app.prefix)).await;
        let mut free = false;
        for _ in 0..500 {
            free = sqlx::query_scalar(
                "SELECT pg_try_advisory_lock(hashtextextended('hms.provisioning', 0))",
            )
            .fetch_one(&mut control)
            .await
            .expect("try lock");
            if free {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            free,
            "the lock is still held after a cancel at {delay_ms} ms"
        );
        drop(control);
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            provisioner.refill_spares(),
        )
        .await
        .expect("the lock was released")
        .expect("refill");
        let spares = provisioner.spare_databases().await.expect("spares");
        assert_eq!(spares.len(), 1, "after a cancel at {delay_ms} ms");
        assert_eq!(spare_databases_on_server(&app).await, spares);

        let code = format!("CANCEL{i}");
        provisioner
            .provision(&request(&code).await)
            .await
            .expect("provisioned");
        assert_eq!(event_count(&app, &code).await, 2);
    }
}

#[tokio::test]
async fn the_server_refills_a_spare_as_soon_as_one_is_used() {
    let app = spawn_app().await;
    let provisioner = app.state.provisioner().with_spares(1);
    // A period far longer than the test: only the start and the use wake it.
    let refiller = provisioner.spawn_spare_refiller(std::time::Duration::from_secs(3600));
    let wait_for_one_spare = || async {
        for _ in 0..1000 {
            let spares = provisioner.spare_databases().await.expect("spares");
            if spares.len() == 1 {
                return spares;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no spare was made");
    };
    let first = wait_for_one_spare().await;
    provisioner
        .provision(&request("REFILL1").await)
        .await
        .expect("provisioned");
    let second = wait_for_one_spare().await;
    assert_ne!(first, second, "a new spare replaced the one used");
    // Idle now (waiting to be woken): stopping it interrupts nothing.
    refiller.abort();
    assert_eq!(spare_databases_on_server(&app).await, second);
    app.login(Some("REFILL1"), "dmc_admin", ADMIN_PASSWORD)
        .await;
}
