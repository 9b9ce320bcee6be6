//! Reaching one hospital's database.
//!
//! The tool connects as the platform's own role, the owner of the tenant databases, not
//! as the server's tenant writer (see `hms_app::tenancy::writer`): a rebuild swaps
//! tables, which only an owner may. It opens the database the directory names, for open
//! and closed hospitals alike (an auditor must still read a closed hospital's history),
//! and never guesses a database name, on the server the directory names.

use hms_app::state::Platform;
use hms_app::tenancy::directory::ProvisioningStep;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::Result;

/// Connections the tool holds on one hospital's database (a rebuild fans out over them).
const POOL_SIZE: u32 = 3;

/// A pool on hospital `code`'s database as its owner; close it when done.
pub(crate) async fn open(platform: &Platform, code: &str) -> Result<PgPool> {
    let record = platform.directory.get_ready(code).await?;
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(
            platform
                .servers
                .options(&record.db_server)
                .await?
                .database(&record.database_name),
        )
        .await?;
    Ok(pool)
}

/// Codes of every hospital whose provisioning finished, in code order.
pub(crate) async fn all_codes(platform: &Platform) -> Result<Vec<String>> {
    Ok(platform
        .directory
        .list()
        .await?
        .into_iter()
        .filter(|r| r.provisioning_step == ProvisioningStep::Ready)
        .map(|r| r.code)
        .collect())
}

/// `--hospital C` or `--all`.
pub(crate) async fn targets(
    platform: &Platform,
    hospital: Option<&str>,
    all: bool,
) -> Result<Vec<String>> {
    match hospital {
        Some(code) if !all => Ok(vec![code.to_owned()]),
        _ => all_codes(platform).await,
    }
}
