//! The platform database: connecting, creating it on first use, and the embedded
//! migrations of both kinds of database.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

use super::names::quote_ident;
use super::{Result, TenancyError};

pub static CONTROL_MIGRATOR: Migrator = sqlx::migrate!("../migrations/control");
pub static TENANT_MIGRATOR: Migrator = sqlx::migrate!("../migrations/tenant");

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a connection goes, for error messages: host, port and database, never the
/// user or password.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

fn unreachable(options: &PgConnectOptions, error: &sqlx::Error) -> TenancyError {
    // The innermost cause is the useful part ("Connection refused", "database … does
    // not exist"); sqlx repeats it in every layer above.
    let mut reason: &dyn std::error::Error = error;
    while let Some(inner) = reason.source() {
        reason = inner;
    }
    TenancyError::Unreachable {
        target: describe(options),
        reason: reason.to_string(),
    }
}

/// Whether `error` says the database could not be reached or talked to (the server is
/// down, restarting, refusing connections, or the link broke), as opposed to a statement
/// it refused.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08…), shutdown and start-up (57P01-57P03), too many
        // connections (53300), a database not accepting connections (55000 on connect),
        // a hospital's database holding writes while it moves to another server (the
        // directory names the new one within a bound; see `moving`).
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "55000"
                )
                || code == super::moving::WRITES_HELD
        }),
        _ => false,
    }
}

/// The options of a `postgres://` URL. Every address of a database server passes
/// through here, so this is where the TLS policy is applied: see [`with_tls_policy`].
pub fn parse_url(url: &str) -> Result<PgConnectOptions> {
    let invalid = || TenancyError::Config("DATABASE_URL is not a valid postgres:// URL".into());
    let url = url::Url::parse(url).map_err(|_| invalid())?;
    let options = PgConnectOptions::from_url(&url)
        .map_err(|_| invalid())?
        .log_statements(tracing::log::LevelFilter::Debug);
    let mode_named = url
        .query_pairs()
        .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        || std::env::var_os("PGSSLMODE").is_some();
    Ok(with_tls_policy(options, mode_named))
}

/// TLS to a database server (ADR 0009, "TLS"): a mode the operator named (`sslmode` in
/// the URL, or `PGSSLMODE`) is kept. Otherwise a server on this machine (a loopback
/// address, `localhost` or a Unix socket) is reached without TLS, which would only add
/// a handshake to every new connection (about 5 ms, both sides), and any other server
/// with `verify-full`: patient data never crosses a network in clear text, nor to a
/// server that cannot prove its name. libpq's own default, `prefer`, would silently
/// fall back to clear text and accepts any certificate.
pub fn with_tls_policy(options: PgConnectOptions, mode_named: bool) -> PgConnectOptions {
    if mode_named {
        return options;
    }
    let mode = if on_this_machine(&options) {
        PgSslMode::Disable
    } else {
        PgSslMode::VerifyFull
    };
    options.ssl_mode(mode)
}

/// Whether `options` reach a server on this machine: a Unix socket, `localhost` or a
/// loopback address.
pub fn on_this_machine(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How `options` use TLS, as `hms servers list` shows it.
pub fn tls_mode(options: &PgConnectOptions) -> &'static str {
    match options.get_ssl_mode() {
        PgSslMode::Disable => "off",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// The libpq environment that reaches the server of `options` as sqlx does (for
/// `pg_dump` and `pg_restore`): host, port, user, database, password, and the TLS mode
/// and root certificate. Handed over in the environment, never on a command line.
pub fn libpq_environment(options: &PgConnectOptions) -> Vec<(&'static str, String)> {
    let host = match options.get_socket() {
        Some(directory) => directory.to_string_lossy().into_owned(),
        None => options.get_host().to_owned(),
    };
    let mut env = vec![
        ("PGHOST", host),
        ("PGPORT", options.get_port().to_string()),
        ("PGUSER", options.get_username().to_owned()),
        (
            "PGDATABASE",
            options.get_database().unwrap_or("postgres").to_owned(),
        ),
    ];
    // sqlx keeps the password and root certificate private; its URL carries them.
    let url = options.to_url_lossy();
    if let Some(password) = url.password() {
        let password = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        env.push(("PGPASSWORD", password.into_owned()));
    }
    for (key, value) in url.query_pairs() {
        match &*key {
            "sslmode" => env.push(("PGSSLMODE", value.into_owned())),
            // A file is shown as "file: PATH"; a certificate given inline (PEM) has no
            // path to hand over, and libpq then reads its own default root file.
            "sslrootcert" => {
                if let Some(path) = value.strip_prefix("file: ") {
                    env.push(("PGSSLROOTCERT", path.to_owned()));
                }
            }
            _ => {}
        }
    }
    env
}

/// One short-lived connection, e.g. to migrate a database or run `CREATE DATABASE`.
pub async fn connect_once(options: &PgConnectOptions) -> Result<PgConnection> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(unreachable(options, &source)),
        Err(_) => Err(TenancyError::Unreachable {
            target: describe(options),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// Creates the platform database if it does not exist yet, migrates it, and returns
/// a pool on it.
pub async fn open_platform(options: &PgConnectOptions, pool_size: u32) -> Result<PgPool> {
    let database = options
        .get_database()
        .ok_or_else(|| TenancyError::Config("DATABASE_URL must name the platform database".into()))?
        .to_owned();
    let maintenance = options.clone().database("postgres");
    let mut conn = connect_once(&maintenance).await?;
    create_database_if_missing(&mut conn, &database, None).await?;
    conn.close().await?;

    let pool = super::pools::serving_pool_options()
        .max_connections(pool_size.max(1))
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(options.clone())
        .await
        .map_err(|source| unreachable(options, &source))?;
    CONTROL_MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub async fn database_exists(conn: &mut PgConnection, name: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(conn)
            .await?,
    )
}

/// `CREATE DATABASE` (optionally from a template) unless it exists. It cannot run in a
/// transaction, and two processes may race to create the same database: losing that
/// race is success.
pub async fn create_database_if_missing(
    conn: &mut PgConnection,
    name: &str,
    template: Option<&str>,
) -> Result<bool> {
    if database_exists(conn, name).await? {
        return Ok(false);
    }
    let sql = match template {
        Some(t) => format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(name),
            quote_ident(t)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(name)),
    };
    // `Executor::execute(&str)` runs the statement with the simple protocol (outside any
    // transaction, as CREATE DATABASE needs); `raw_sql` would too, but its future is not
    // `Send` for every lifetime.
    match conn.execute(sql.as_str()).await {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What `CREATE DATABASE name TEMPLATE template` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    Created,
    /// `name` exists already (an earlier, interrupted run made it, or a race was lost).
    Existed,
    /// The template does not exist.
    NoTemplate,
}

/// Copies `template` to a new database `name` in one statement (no existence check
/// first: the server's own answer says whether it existed).
pub async fn copy_database(
    conn: &mut PgConnection,
    name: &str,
    template: &str,
) -> Result<CopyOutcome> {
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote_ident(name),
        quote_ident(template)
    );
    match conn.execute(sql.as_str()).await {
        Ok(_) => Ok(CopyOutcome::Created),
        Err(sqlx::Error::Database(e)) => match e.code().as_deref() {
            // duplicate_database
            Some("42P04") => Ok(CopyOutcome::Existed),
            // invalid_catalog_name: the template is missing
            Some("3D000") => Ok(CopyOutcome::NoTemplate),
            _ => Err(sqlx::Error::Database(e).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Applies pending tenant migrations to one database over a short-lived connection
/// (a pool left open on the template would block `CREATE DATABASE … TEMPLATE`), then
/// grants the tenant writer role `writer` its rights there ([`super::writer::grant`]).
/// Returns how many migrations were applied.
pub async fn migrate_tenant_database(options: &PgConnectOptions, writer: &str) -> Result<usize> {
    let mut conn = connect_once(options).await?;
    let before = applied_count(&mut conn).await?;
    TENANT_MIGRATOR.run_direct(&mut conn).await?;
    super::writer::grant(&mut conn, writer).await?;
    let after = applied_count(&mut conn).await?;
    conn.close().await?;
    Ok(after.saturating_sub(before))
}

async fn applied_count(conn: &mut PgConnection) -> Result<usize> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The newest tenant migration this binary knows.
pub fn latest_tenant_migration() -> i64 {
    TENANT_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Records that `template` on database server `server` has every tenant migration of
/// this binary.
pub async fn record_template_version(control: &PgPool, server: &str, template: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_templates (db_server, database_name, migration_version) VALUES ($1, $2, $3) \
         ON CONFLICT (db_server, database_name) DO UPDATE SET migration_version = $3, updated_at = now()",
    )
    .bind(server)
    .bind(template)
    .bind(latest_tenant_migration())
    .execute(control)
    .await?;
    Ok(())
}

/// Whether `template` on `server` is known to have every tenant migration of this binary.
pub async fn template_is_current(control: &PgPool, server: &str, template: &str) -> Result<bool> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT migration_version FROM tenant_templates WHERE db_server = $1 AND database_name = $2",
    )
    .bind(server)
    .bind(template)
    .fetch_optional(control)
    .await?;
    Ok(version == Some(latest_tenant_migration()))
}
