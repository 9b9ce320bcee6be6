//! Platform settings shared by every process (`hms` and `hms-replay`). Every flag can
//! also be set from the environment, and secrets are never printed (their `Debug` is
//! redacted).

use std::fmt;

use clap::{Args, ValueEnum};

/// Settings every subcommand needs: where the platform lives.
#[derive(Debug, Clone, Args)]
pub struct PlatformConfig {
    /// The platform database. Its server also holds the tenant databases by default.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/hms_control",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Prefix of tenant database names, so several platforms (or test runs) can share
    /// one PostgreSQL server. Lower-case letters, digits and '_'.
    #[arg(
        long,
        env = "HMS_TENANT_DB_PREFIX",
        global = true,
        default_value = "hms_t_"
    )]
    pub tenant_db_prefix: String,
    /// Connections all tenant pools of this process may hold together.
    #[arg(
        long,
        env = "HMS_TENANT_CONNECTION_BUDGET",
        global = true,
        default_value_t = 60
    )]
    pub tenant_connection_budget: u32,
    /// Connections of one tenant's pool.
    #[arg(long, env = "HMS_TENANT_POOL_SIZE", global = true, default_value_t = 3)]
    pub tenant_pool_size: u32,
    /// Spare tenant databases to keep ready (copies of the template made ahead of time,
    /// renamed when a hospital is onboarded, so onboarding does not wait for
    /// `CREATE DATABASE`). `hms serve` refills them in the background; 0 turns them off
    /// (and the server drops any left over). Use the same value in every process of a
    /// platform.
    #[arg(long, env = "HMS_SPARE_DATABASES", global = true, default_value_t = 2)]
    pub spare_databases: u32,
    /// Connections of the platform database's pool.
    #[arg(
        long,
        env = "HMS_CONTROL_POOL_SIZE",
        global = true,
        default_value_t = 5
    )]
    pub control_pool_size: u32,
    #[arg(long, env = "HMS_ENV", global = true, value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
