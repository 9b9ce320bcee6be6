//! `hms migrate`: the platform database, the template and every tenant database to the
//! latest migrations, a few at a time. Safe to re-run: applied migrations are skipped,
//! and a database that failed is reported without stopping the others.

use futures::stream::{self, StreamExt};
use sqlx::postgres::PgConnectOptions;

use super::directory::{ProvisioningStep, TenantDirectory};
use super::names::TenantNaming;
use super::platform;
use super::Result;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub databases: usize,
    pub migrations_applied: usize,
    /// `(database, error)` for each database that could not be migrated.
    pub failures: Vec<(String, String)>,
}

/// Migrates the template (if it exists) and every tenant whose database exists.
/// `progress` is called after each database with `(done, total, database, result)`.
pub async fn migrate_all(
    control: &sqlx::PgPool,
    directory: &TenantDirectory,
    server: &PgConnectOptions,
    naming: &TenantNaming,
    concurrency: usize,
    mut progress: impl FnMut(usize, usize, &str, &std::result::Result<usize, String>),
) -> Result<MigrationReport> {
    let mut targets: Vec<String> = directory
        .list()
        .await?
        .into_iter()
        .filter(|t| t.provisioning_step >= ProvisioningStep::DatabaseCreated)
        .map(|t| t.database_name)
        .collect();
    let mut conn = platform::connect_once(&server.clone().database("postgres")).await?;
    if platform::database_exists(&mut conn, &naming.template_database()).await? {
        targets.insert(0, naming.template_database());
    }
    drop(conn);

    let total = targets.len();
    let mut report = MigrationReport {
        databases: total,
        ..Default::default()
    };
    let writer = naming.writer_role();
    let writer = writer.as_str();
    let mut results = stream::iter(targets)
        .map(|db| async move {
            let result = platform::migrate_tenant_database(&server.clone().database(&db), writer)
                .await
                .map_err(|e| e.to_string());
            (db, result)
        })
        .buffer_unordered(concurrency.max(1));
    let mut done = 0;
    let template = naming.template_database();
    while let Some((db, result)) = results.next().await {
        done += 1;
        if db == template && result.is_ok() {
            platform::record_template_version(control, &template).await?;
        }
        progress(done, total, &db, &result);
        match result {
            Ok(n) => report.migrations_applied += n,
            Err(e) => report.failures.push((db, e)),
        }
    }
    Ok(report)
}
