//! Command line and environment. Every flag can also be set from the environment, and
//! secrets are never printed (their `Debug` is redacted).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
pub use hms_app::config::{Environment, PlatformConfig, Secret};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "hms",
    version,
    about = "HMS: multi-tenant hospital management server"
)]
pub struct Cli {
    #[command(flatten)]
    pub platform: PlatformConfig,
    /// Log lines as readable text, or one JSON object per line.
    #[arg(long, env = "HMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
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
    /// List the hospitals with status, plan, database and database server.
    Tenants,
    /// Write a consistent backup of one hospital's database (pg_dump) with a manifest.
    BackupHospital {
        /// The hospital's code.
        code: String,
        /// The backup file to write (must not exist).
        #[arg(long)]
        output: std::path::PathBuf,
    },
    /// Restore a hospital backup into a new database, verified against its manifest's
    /// head digest before the hospital is entered in the directory.
    RestoreHospital {
        /// A file written by `hms backup-hospital`.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Restore under this code instead of the backup's (which must then be free).
        #[arg(long = "as", value_name = "NEWCODE")]
        as_code: Option<String>,
        /// The database server to restore onto (`default`, the platform's own, when left
        /// out).
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
    },
    /// Move a hospital's database to another database server while it keeps serving:
    /// copied while served, then writes held (commands answer UNAVAILABLE, retry) for
    /// the last of the log, verified against the source's head digest, switched. Run it
    /// again to resume an interrupted move.
    MoveHospital {
        /// The hospital's code.
        code: String,
        /// The database server to move it to (may be left out when resuming).
        #[arg(long, value_name = "NAME", conflicts_with = "abort")]
        to: Option<String>,
        /// Abort the move in progress (before its switch): drop the copy, lift the hold.
        #[arg(long)]
        abort: bool,
        /// Pause once this step is recorded: `copied`, `held` (writes stay held until the
        /// move is resumed or aborted) or `switched` (the source is kept until resumed).
        #[arg(long, value_name = "STEP", value_parser = ["copied", "held", "switched"], conflicts_with = "abort")]
        stop_after: Option<String>,
    },
    /// The PostgreSQL servers hospitals' databases are placed on.
    #[command(subcommand)]
    Servers(ServersCommand),
    /// Rewrap every hospital's patient data keys under the current master key
    /// (HMS_MASTER_KEY), unwrapping with any of HMS_MASTER_KEY_PREVIOUS. Run after every
    /// server has the new key as current and the old one as previous.
    RotateMasterKey,
    /// Print the GraphQL schema (SDL), as committed in api/schema.graphql.
    PrintSchema,
}

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// Add a server; new hospitals may be placed on it at once.
    Add {
        /// A lower-case name, e.g. `pg-2`.
        name: String,
        /// postgres://USER:PASSWORD@HOST:PORT/postgres, a role that may create databases
        /// (never printed); also from HMS_SERVER_URL.
        #[arg(env = "HMS_SERVER_URL", hide_env_values = true)]
        url: Secret,
        /// Hospitals placement may put on it.
        #[arg(long, default_value_t = 1000)]
        capacity: u32,
        /// Connections each server process may hold to its hospital databases (default:
        /// HMS_TENANT_CONNECTION_BUDGET).
        #[arg(long)]
        budget: Option<u32>,
    },
    /// The servers, their hospitals, capacity and budget (addresses without passwords).
    List,
    /// Place no new hospitals on this server (`--undo` to place them again).
    Drain {
        name: String,
        #[arg(long)]
        undo: bool,
    },
    /// Forget a server that holds no hospital.
    Remove { name: String },
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
    /// The database server to place it on (`hms servers list`); by default the one with
    /// the most room for its capacity that is not draining.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
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
    /// Serve `/metrics` (Prometheus) on this address instead of on the API's listener,
    /// e.g. `127.0.0.1:9090`, so that it is reachable from the monitoring network only.
    #[arg(long, env = "HMS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
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
    /// Reverse proxies whose `X-Forwarded-For` names the client, comma-separated CIDRs
    /// or addresses, e.g. `10.0.0.0/8,192.0.2.7`. None by default: the connection's peer
    /// is the client (and its address is what sign-in throttling and audit record).
    #[arg(long, env = "HMS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Password hashes (argon2id, ~19 MiB each) computed at once; sign-ins beyond it are
    /// refused with RATE_LIMITED. Default: twice the cores, between 4 and 32.
    #[arg(long, env = "HMS_MAX_CONCURRENT_PASSWORD_HASHES")]
    pub max_concurrent_password_hashes: Option<usize>,
    /// Query-cost units (GraphQL complexity: about one per field of each record shown)
    /// each signed-in user may spend per minute, all replicas together; beyond it,
    /// RATE_LIMITED until the next minute. Default 300000; 0 turns the budget off.
    #[arg(long, env = "HMS_REQUEST_BUDGET_PER_MINUTE")]
    pub request_budget_per_minute: Option<u64>,
    /// On SIGTERM or Ctrl-C: seconds `/readyz` answers 503 "draining" while requests are
    /// still served, so a load balancer takes this replica out of rotation first.
    #[arg(long, env = "HMS_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Then: seconds the requests in flight get to finish before the process stops.
    #[arg(long, env = "HMS_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30)]
    pub shutdown_timeout_seconds: u64,
    /// Run the background work (sealing and catch-up after other processes' writes,
    /// reservation sweeps, spare refills). With `false` this replica only serves
    /// requests; at least one replica of the platform must run it.
    #[arg(long, env = "HMS_BACKGROUND_WORK", default_value_t = true, action = clap::ArgAction::Set)]
    pub background_work: bool,
}
