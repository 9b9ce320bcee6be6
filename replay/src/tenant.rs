//! Reaching one hospital's database through the server's tenancy code.
//!
//! The pool registry serves open hospitals only (a suspended or cancelled hospital is
//! "not found" to the API). An auditor must still be able to read a closed hospital's
//! history, so for those the tool opens a one-connection pool to the database the
//! directory names; it never guesses a database name.

use hms_app::state::Platform;
use hms_app::tenancy::directory::ProvisioningStep;
use hms_app::tenancy::{TenancyError, TenantLease};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::Result;

pub(crate) enum Tenant {
    Leased(TenantLease),
    Closed(PgPool),
}

impl Tenant {
    pub(crate) fn pool(&self) -> &PgPool {
        match self {
            Tenant::Leased(lease) => &lease.pool,
            Tenant::Closed(pool) => pool,
        }
    }

    pub(crate) async fn close(self) {
        if let Tenant::Closed(pool) = self {
            pool.close().await;
        }
    }
}

pub(crate) async fn open(platform: &Platform, code: &str) -> Result<Tenant> {
    match platform.registry.get(code).await {
        Ok(lease) => Ok(Tenant::Leased(lease)),
        Err(TenancyError::NotFound(_)) => {
            let record = platform
                .directory
                .get(code)
                .await?
                .ok_or_else(|| TenancyError::NotFound(code.to_owned()))?;
            if record.provisioning_step != ProvisioningStep::Ready {
                return Err(TenancyError::NotReady(code.to_owned()).into());
            }
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(platform.server.clone().database(&record.database_name))
                .await?;
            Ok(Tenant::Closed(pool))
        }
        Err(e) => Err(e.into()),
    }
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
