//! The fleet of PostgreSQL servers hospitals' databases live on (`database_servers` in
//! the platform database; `hms servers …`).
//!
//! - `default` is the platform database's own server, reached with DATABASE_URL's
//!   address and credentials; every other server is added with a URL of its own whose
//!   credentials may create databases there. A URL is never printed or logged: what is
//!   shown is [`redacted`].
//! - A server's address never changes once added (a server is removed only when no
//!   hospital is on it), so each process keeps the addresses it has read.
//! - Placement ([`ServerDirectory::place`]): a new hospital goes to the server that is
//!   not draining, has room, and holds the fewest hospitals for its capacity (ties by
//!   name), unless the operator names one. It runs under the provisioning lock, so two
//!   onboardings never both take a server's last place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{FromRow, PgExecutor, PgPool};

use super::platform;
use super::{Result, TenancyError};

/// The platform database's own server.
pub const DEFAULT_SERVER: &str = "default";

/// One server as `hms servers list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ServerSummary {
    pub name: String,
    /// Host, port and user; never the password ([`redacted`]).
    #[sqlx(skip)]
    pub address: String,
    /// The TLS mode it is reached with ([`platform::tls_mode`]).
    #[sqlx(skip)]
    pub tls: &'static str,
    pub capacity: i32,
    pub connection_budget: Option<i32>,
    pub draining: bool,
    /// Hospitals whose databases are on it (in any state).
    pub hospitals: i64,
}

/// What `hms servers add` asks for.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub name: String,
    pub url: String,
    pub capacity: u32,
    pub connection_budget: Option<u32>,
}

/// The servers, with the addresses this process has read.
#[derive(Clone)]
pub struct ServerDirectory {
    control: PgPool,
    /// DATABASE_URL's server (any database): `default`'s address.
    platform_server: PgConnectOptions,
    known: Arc<Mutex<HashMap<String, PgConnectOptions>>>,
}

impl ServerDirectory {
    pub fn new(control: PgPool, platform_server: PgConnectOptions) -> Self {
        Self {
            control,
            platform_server,
            known: Arc::default(),
        }
    }

    /// How to reach server `name` as the platform's owner role (database to be chosen).
    pub async fn options(&self, name: &str) -> Result<PgConnectOptions> {
        if name == DEFAULT_SERVER {
            return Ok(self.platform_server.clone());
        }
        if let Some(options) = self.lock().get(name) {
            return Ok(options.clone());
        }
        let url: Option<String> =
            sqlx::query_scalar("SELECT url FROM database_servers WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.control)
                .await?
                .flatten();
        let url = url.ok_or_else(|| unknown(name))?;
        let options = parse_server_url(&url)?;
        self.lock().insert(name.to_owned(), options.clone());
        Ok(options)
    }

    /// The per-process connection budget of server `name` (`None`: the configured one).
    pub async fn connection_budget(&self, name: &str) -> Result<Option<u32>> {
        let budget: Option<Option<i32>> =
            sqlx::query_scalar("SELECT connection_budget FROM database_servers WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.control)
                .await?;
        let budget = budget.ok_or_else(|| unknown(name))?;
        Ok(budget.and_then(|b| u32::try_from(b).ok()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PgConnectOptions>> {
        // Only inserts of immutable values: a poisoned map is still consistent.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn list(&self) -> Result<Vec<ServerSummary>> {
        let rows: Vec<ServerRow> = sqlx::query_as(
            "SELECT s.name, s.url, s.capacity, s.connection_budget, s.draining, \
                    (SELECT count(*) FROM tenants t WHERE t.db_server = s.name) AS hospitals \
               FROM database_servers s ORDER BY s.name",
        )
        .fetch_all(&self.control)
        .await?;
        Ok(rows
            .into_iter()
            .map(|ServerRow { mut summary, url }| {
                let options = match url {
                    Some(url) => parse_server_url(&url).ok(),
                    None => Some(self.platform_server.clone()),
                };
                (summary.address, summary.tls) = match options {
                    Some(options) => (redacted(&options), platform::tls_mode(&options)),
                    None => ("(unreadable URL)".into(), "?"),
                };
                summary
            })
            .collect())
    }

    /// Names of every server, `default` first.
    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT name FROM database_servers ORDER BY name <> 'default', name",
            )
            .fetch_all(&self.control)
            .await?,
        )
    }

    /// Adds a server after checking that it answers with `new.url` and may create
    /// databases; the tenant writer role `writer` is made there as on the platform's.
    /// Returns a warning for the operator when a server on another machine is reached
    /// without a verified certificate (a mode the URL named; see
    /// [`platform::with_tls_policy`]).
    pub async fn add(
        &self,
        new: &NewServer,
        writer: &str,
        writer_password: Option<&crate::config::Secret>,
    ) -> Result<Option<String>> {
        check_name(&new.name)?;
        if new.name == DEFAULT_SERVER {
            return Err(TenancyError::Config(format!(
                "{DEFAULT_SERVER:?} is the platform's own server and exists already"
            )));
        }
        if new.capacity == 0 || new.connection_budget == Some(0) {
            return Err(TenancyError::Config(
                "capacity and connection budget must be at least 1".into(),
            ));
        }
        let options = parse_server_url(&new.url)?;
        let warning = tls_warning(&new.name, &options);
        let mut conn = platform::connect_once(&options.clone().database("postgres")).await?;
        let may_create: bool = sqlx::query_scalar(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await?;
        if !may_create {
            return Err(TenancyError::Config(format!(
                "the role of the URL for server {} may not create databases there",
                new.name
            )));
        }
        super::writer::ensure_role(&mut conn, writer, writer_password).await?;
        let _ = sqlx::Connection::close(conn).await;
        let inserted = sqlx::query(
            "INSERT INTO database_servers (name, url, capacity, connection_budget) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&new.name)
        .bind(&new.url)
        .bind(i32::try_from(new.capacity).unwrap_or(i32::MAX))
        .bind(
            new.connection_budget
                .map(|b| i32::try_from(b).unwrap_or(i32::MAX)),
        )
        .execute(&self.control)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(TenancyError::Config(format!(
                "a database server named {} exists already",
                new.name
            )));
        }
        Ok(warning)
    }

    /// Stops (or, with `false`, resumes) placing new hospitals on `name`.
    pub async fn set_draining(&self, name: &str, draining: bool) -> Result<()> {
        let updated = sqlx::query("UPDATE database_servers SET draining = $2 WHERE name = $1")
            .bind(name)
            .bind(draining)
            .execute(&self.control)
            .await?
            .rows_affected();
        if updated == 0 {
            return Err(unknown(name));
        }
        Ok(())
    }

    /// Forgets a server no hospital is on (its template database is left to the
    /// operator). `default` is never removed.
    pub async fn remove(&self, name: &str) -> Result<()> {
        if name == DEFAULT_SERVER {
            return Err(TenancyError::Config(
                "the platform's own server cannot be removed".into(),
            ));
        }
        let mut tx = self.control.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM database_servers WHERE name = $1 FOR UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(unknown(name));
        }
        let hospitals: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenants WHERE db_server = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if hospitals > 0 {
            return Err(TenancyError::Config(format!(
                "server {name} still holds {hospitals} hospital(s): move them first"
            )));
        }
        sqlx::query("DELETE FROM database_servers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.lock().remove(name);
        Ok(())
    }
}

/// The server for a new hospital: `requested` if it exists and is not draining, else by
/// the placement policy (see the module). The caller holds the provisioning lock.
pub async fn place<'e>(db: impl PgExecutor<'e>, requested: Option<&str>) -> Result<String> {
    #[derive(FromRow)]
    struct Candidate {
        name: String,
        capacity: i32,
        draining: bool,
        hospitals: i64,
    }
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT s.name, s.capacity, s.draining, \
                (SELECT count(*) FROM tenants t WHERE t.db_server = s.name) AS hospitals \
           FROM database_servers s ORDER BY s.name",
    )
    .fetch_all(db)
    .await?;
    if let Some(name) = requested {
        let server = candidates
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| TenancyError::Placement(format!("unknown database server {name:?}")))?;
        if server.draining {
            return Err(TenancyError::Placement(format!(
                "database server {name} is draining: it receives no new hospitals"
            )));
        }
        return Ok(server.name.clone());
    }
    candidates
        .iter()
        .filter(|c| !c.draining && c.hospitals < i64::from(c.capacity))
        .min_by(|a, b| {
            // hospitals / capacity, compared without division.
            (a.hospitals * i64::from(b.capacity))
                .cmp(&(b.hospitals * i64::from(a.capacity)))
                .then_with(|| a.name.cmp(&b.name))
        })
        .map(|c| c.name.clone())
        .ok_or_else(|| {
            TenancyError::Placement(
                "no database server has room for another hospital: add one (hms servers add) \
                 or raise a capacity"
                    .into(),
            )
        })
}

#[derive(FromRow)]
struct ServerRow {
    #[sqlx(flatten)]
    summary: ServerSummary,
    url: Option<String>,
}

fn unknown(name: &str) -> TenancyError {
    TenancyError::Config(format!("unknown database server {name:?}"))
}

/// Server names: a lower-case letter, then up to 31 lower-case letters, digits or `-`.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(TenancyError::Config(format!(
            "{name:?} is not a server name: a lower-case letter, then up to 31 lower-case letters, digits or '-'"
        )))
    }
}

/// A server URL's options; the message never repeats the URL (it may hold a password).
fn parse_server_url(url: &str) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(TenancyError::Config(
            "a database server URL starts with postgres://".into(),
        ));
    }
    platform::parse_url(url).map_err(|_| {
        TenancyError::Config("the database server URL is not a valid postgres:// URL".into())
    })
}

/// What to tell the operator when server `name` is on another machine and reached
/// without checking its certificate and name (a weaker mode the URL named).
fn tls_warning(name: &str, options: &PgConnectOptions) -> Option<String> {
    let verified = matches!(options.get_ssl_mode(), PgSslMode::VerifyFull);
    (!verified && !platform::on_this_machine(options)).then(|| {
        format!(
            "server {name} is on another machine and reached with sslmode={}: its traffic \
             can be read or altered on the network (verify-full, the default, checks the \
             server's certificate and name)",
            platform::tls_mode(options)
        )
    })
}

/// `user@host:port`: where a server is, without its password.
pub fn redacted(options: &PgConnectOptions) -> String {
    format!(
        "{}@{}:{}",
        options.get_username(),
        options.get_host(),
        options.get_port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lower_case_words() {
        assert!(check_name("pg-2").is_ok());
        assert!(check_name("eu-west-1a").is_ok());
        for bad in ["", "2pg", "PG", "pg_2", "pg 2", &"a".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_url_is_never_repeated_in_an_error_or_a_listing() {
        let e = parse_server_url("mysql://root:hunter2@db").expect_err("not postgres");
        assert!(!e.to_string().contains("hunter2"));
        let e = parse_server_url("postgres://root:hunter2@db:notaport/x").expect_err("bad port");
        assert!(!e.to_string().contains("hunter2"));
        let options = parse_server_url("postgres://root:hunter2@db.example:6432/x").expect("a URL");
        assert_eq!(redacted(&options), "root@db.example:6432");
    }

    #[test]
    fn a_server_elsewhere_is_reached_with_a_verified_certificate_unless_the_url_says_otherwise() {
        if std::env::var_os("PGSSLMODE").is_some() {
            // The operator's PGSSLMODE is a named mode: it wins over the policy.
            return;
        }
        let mode = |url: &str| parse_server_url(url).expect("a URL").get_ssl_mode();
        for elsewhere in [
            "postgres://u:pw@db.example/x",
            "postgres://u:pw@10.0.0.7:6432/x",
            "postgres://u:pw@[2001:db8::1]/x",
        ] {
            assert!(
                matches!(mode(elsewhere), PgSslMode::VerifyFull),
                "{elsewhere}"
            );
        }
        for here in [
            "postgres://u@127.0.0.1/x",
            "postgres://u@127.0.0.2:5433/x",
            "postgres://u@LOCALHOST/x",
            "postgres://u@[::1]/x",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres:///x?host=/var/run/postgresql",
        ] {
            assert!(matches!(mode(here), PgSslMode::Disable), "{here}");
        }
        // A mode the URL names is kept, here and elsewhere.
        assert!(matches!(
            mode("postgres://u@127.0.0.1/x?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@db.example/x?sslmode=require"),
            PgSslMode::Require
        ));
        // ... and a weaker one for a server elsewhere is worth a warning.
        let weak =
            parse_server_url("postgres://u:hunter2@db.example/x?sslmode=require").expect("a URL");
        let warning = tls_warning("pg-2", &weak).expect("a warning");
        assert!(warning.contains("sslmode=require") && !warning.contains("hunter2"));
        for fine in [
            "postgres://u@db.example/x",
            "postgres://u@127.0.0.1/x?sslmode=disable",
        ] {
            let options = parse_server_url(fine).expect("a URL");
            assert_eq!(tls_warning("pg-2", &options), None, "{fine}");
        }
    }

    #[test]
    fn client_programs_reach_a_server_with_its_own_credentials_and_tls_mode() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let options = parse_server_url(
            "postgres://owner:p%40ss%2Fw@db.example:6432/hms?sslrootcert=/etc/hms/ca.pem",
        )
        .expect("a URL");
        let env: HashMap<_, _> = platform::libpq_environment(&options).into_iter().collect();
        let get = |key: &str| env.get(key).map(String::as_str);
        assert_eq!(get("PGHOST"), Some("db.example"));
        assert_eq!(get("PGPORT"), Some("6432"));
        assert_eq!(get("PGUSER"), Some("owner"));
        assert_eq!(get("PGDATABASE"), Some("hms"));
        assert_eq!(get("PGPASSWORD"), Some("p@ss/w"));
        assert_eq!(get("PGSSLMODE"), Some("verify-full"));
        assert_eq!(get("PGSSLROOTCERT"), Some("/etc/hms/ca.pem"));
        let local = parse_server_url("postgres://owner@127.0.0.1/hms").expect("a URL");
        let env: HashMap<_, _> = platform::libpq_environment(&local).into_iter().collect();
        assert_eq!(env.get("PGSSLMODE").map(String::as_str), Some("disable"));
        assert!(!env.contains_key("PGPASSWORD"));
    }
}
