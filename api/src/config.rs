//! Command line and environment. Every flag can also be set from the environment, and
//! secrets are never printed (their `Debug` is redacted).

use std::fmt;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hms",
    version,
    about = "HMS: multi-tenant hospital management server"
)]
pub struct Cli {
    #[command(flatten)]
    pub platform: PlatformConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (the default).
    Serve(ServeConfig),
    /// Bring the platform database and every tenant database to the latest migrations.
    Migrate {
        /// How many tenant databases to migrate at once.
        #[arg(long, env = "HMS_MIGRATE_CONCURRENCY", default_value_t = 4)]
        concurrency: usize,
    },
    /// Create a platform super administrator.
    CreateSuperadmin {
        #[arg(long, env = "HMS_SUPERADMIN_USERNAME")]
        username: String,
        #[arg(long, env = "HMS_SUPERADMIN_EMAIL")]
        email: String,
        /// The password; also from HMS_SUPERADMIN_PASSWORD, or `-` to read one line from stdin.
        #[arg(long, env = "HMS_SUPERADMIN_PASSWORD", hide_env_values = true)]
        password: Secret,
    },
    /// Onboard a hospital: create and migrate its database, register it, create its admin.
    SetupHospital(SetupHospitalArgs),
    /// List the hospitals with status, plan and database.
    Tenants,
    /// Print the GraphQL schema (SDL), as committed in api/schema.graphql.
    PrintSchema,
}

#[derive(Debug, Args)]
pub struct SetupHospitalArgs {
    #[arg(long)]
    pub name: String,
    /// Hospital code, e.g. DMC001: an upper-case letter, then 2-15 upper-case letters or digits.
    #[arg(long)]
    pub code: String,
    #[arg(long, default_value = "TRIAL")]
    pub plan: String,
    #[arg(long)]
    pub admin_username: String,
    #[arg(long)]
    pub admin_email: String,
    /// Full name of the first administrator.
    #[arg(long, default_value = "Hospital Administrator")]
    pub admin_name: String,
    /// The password; also from HMS_ADMIN_PASSWORD, or `-` to read one line from stdin.
    #[arg(long, env = "HMS_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Secret,
}

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

/// Parses the serve settings alone (from the environment), for `hms` without a subcommand.
#[derive(Debug, Parser)]
struct ServeOnly {
    #[command(flatten)]
    serve: ServeConfig,
}

impl ServeConfig {
    pub fn from_env() -> Self {
        ServeOnly::parse_from(["hms"]).serve
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[arg(long, env = "HMS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Secret that signs access tokens (at least 32 bytes). Required in production.
    #[arg(long, env = "HMS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in minutes.
    #[arg(long, env = "HMS_TOKEN_TTL_MINUTES", default_value_t = 60)]
    pub token_ttl_minutes: i64,
    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://app.example.org`. None by default: only same-origin and non-browser clients.
    #[arg(long, env = "HMS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve GraphiQL on GET /graphql (always off in production).
    #[arg(long, env = "HMS_GRAPHIQL", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphiql: bool,
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
