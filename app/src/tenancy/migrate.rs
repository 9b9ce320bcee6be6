//! `hms migrate`: the platform database, the template and every tenant database to the
//! latest migrations, a few at a time. Safe to re-run: applied migrations are skipped,
//! and a database that failed is reported without stopping the others.

use futures::stream::{self, StreamExt};

use super::directory::{ProvisioningStep, TenantDirectory};
use super::names::TenantNaming;
use super::platform;
use super::servers::{ServerDirectory, DEFAULT_SERVER};
use super::Result;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub databases: usize,
    pub migrations_applied: usize,
    /// `(database, error)` for each database that could not be migrated.
    pub failures: Vec<(String, String)>,
}

/// Migrates, on every database server, its template (if it exists) and every tenant
/// whose database exists there: `concurrency` databases at a time per server, the servers
/// side by side. `progress` is called after each database with `(done, total, database,
/// result)`; a database on another server than `default` is named `server/database`.
pub async fn migrate_all(
    control: &sqlx::PgPool,
    directory: &TenantDirectory,
    servers: &ServerDirectory,
    naming: &TenantNaming,
    concurrency: usize,
    mut progress: impl FnMut(usize, usize, &str, &std::result::Result<usize, String>),
) -> Result<MigrationReport> {
    let tenants = directory.list().await?;
    let template = naming.template_database();
    let writer = naming.writer_role();
    let mut per_server = Vec::new();
    let mut total = 0;
    for server in servers.names().await? {
        let options = servers.options(&server).await?;
        let mut targets: Vec<String> = tenants
            .iter()
            .filter(|t| t.db_server == server)
            .filter(|t| t.provisioning_step >= ProvisioningStep::DatabaseCreated)
            .map(|t| t.database_name.clone())
            .collect();
        let mut conn = platform::connect_once(&options.clone().database("postgres")).await?;
        if platform::database_exists(&mut conn, &template).await? {
            targets.insert(0, template.clone());
        }
        drop(conn);
        total += targets.len();
        let writer = writer.clone();
        let migrations = stream::iter(targets)
            .map(move |db| {
                let options = options.clone().database(&db);
                let writer = writer.clone();
                let server = server.clone();
                async move {
                    let result = platform::migrate_tenant_database(&options, &writer)
                        .await
                        .map_err(|e| e.to_string());
                    (server, db, result)
                }
            })
            .buffer_unordered(concurrency.max(1));
        per_server.push(Box::pin(migrations));
    }

    let mut report = MigrationReport {
        databases: total,
        ..Default::default()
    };
    let mut results = stream::select_all(per_server);
    let mut done = 0;
    while let Some((server, db, result)) = results.next().await {
        done += 1;
        if db == template && result.is_ok() {
            platform::record_template_version(control, &server, &template).await?;
        }
        let name = if server == DEFAULT_SERVER {
            db
        } else {
            format!("{server}/{db}")
        };
        progress(done, total, &name, &result);
        match result {
            Ok(n) => report.migrations_applied += n,
            Err(e) => report.failures.push((name, e)),
        }
    }
    Ok(report)
}
