use hms_app::tenancy::migrate::migrate_all;
use hms_tests::{spawn_app, ADMIN_PASSWORD};

#[tokio::test]
async fn migrate_brings_every_tenant_database_up_to_date_and_is_safe_to_rerun() {
    let app = spawn_app().await;
    for code in ["MIG001", "MIG002", "MIG003"] {
        app.setup_hospital(code).await;
    }
    // Roll the staff/hospital read-model migration back by hand in two tenants, as if
    // they were created before it was released.
    let latest = hms_app::tenancy::platform::TENANT_MIGRATOR
        .iter()
        .find(|m| m.description.contains("hospital staff"))
        .map(|m| m.version)
        .expect("the staff read-model migration");
    for code in ["MIG001", "MIG003"] {
        let mut conn = app.connect(&app.database_for(code)).await;
        sqlx::raw_sql("DROP TABLE staff; DROP TABLE departments; DROP TABLE hospital_profile;")
            .execute(&mut conn)
            .await
            .expect("roll back");
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(latest)
            .execute(&mut conn)
            .await
            .expect("forget");
    }
    app.state.registry.close_all().await;

    let mut seen = Vec::new();
    let report = migrate_all(
        &app.state.control,
        &app.state.directory,
        &app.state.servers,
        &app.state.naming,
        2,
        |_, total, db, result| {
            assert!(result.is_ok(), "{db}: {result:?}");
            seen.push((db.to_owned(), total));
        },
    )
    .await
    .expect("migrate");
    assert_eq!(report.failures, vec![]);
    assert_eq!(
        report.migrations_applied, 2,
        "one migration in each of the two stale tenants"
    );
    assert_eq!(report.databases, 4, "three tenants and the template");
    assert_eq!(seen.len(), 4);

    for code in ["MIG001", "MIG003"] {
        let mut conn = app.connect(&app.database_for(code)).await;
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('staff', 'departments', 'hospital_profile')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("tables");
        assert_eq!(tables, 3, "{code}");
    }

    let again = migrate_all(
        &app.state.control,
        &app.state.directory,
        &app.state.servers,
        &app.state.naming,
        2,
        |_, _, _, _| {},
    )
    .await
    .expect("rerun");
    assert_eq!(again.migrations_applied, 0);
    // The rebuilt tables are empty until the read models are rebuilt; the untouched
    // tenant still signs in.
    app.login(Some("MIG002"), "mig002_admin", ADMIN_PASSWORD)
        .await;
}
