//! The role the tenant side runs under: `<prefix>writer`. The server's tenant pools
//! (commands, reads, the read models' catch-up, the sealer) connect as this role, which
//! may append to the event log, its seals and their encodings but never change or delete
//! them, may not alter or drop any table (it owns none), and has no rights in the
//! platform database, where the log heads are recorded under the platform's own role.
//! So a statement injected through a tenant connection, or a leaked tenant credential,
//! cannot rewrite evidence and then record a matching head; the database refuses it,
//! whatever the session sets (`hms.log_repair` included).
//!
//! The platform's role (the owner of every database it creates) creates the writer when
//! missing (this needs CREATEROLE) and grants it, in each tenant database it migrates,
//! exactly what the server needs. Migrations, provisioning and `hms-replay` (rebuilds
//! swap tables, which only an owner may) keep running as the owner.

use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;

use super::{Result, TenancyError};
use crate::config::Secret;

/// The tables whose rows the writer may add but never change, delete or truncate.
const APPEND_ONLY: &str = "events, event_seals, event_seal_encodings";

/// Creates the writer role `role` if it does not exist yet (with `password`, when the
/// server's authentication needs one), able to see every session's activity (the log
/// reader's horizon reads the sessions `pg_stat_activity` lists; see
/// `hms_projections::log::HORIZON`).
pub async fn ensure_role(
    conn: &mut PgConnection,
    role: &str,
    password: Option<&Secret>,
) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        let password = match password {
            Some(p) => format!(" PASSWORD {}", literal(p.expose())),
            None => String::new(),
        };
        // The name comes from the validated prefix; quoted anyway.
        let created = sqlx::query(&format!(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION{password}",
            ident(role)
        ))
        .execute(&mut *conn)
        .await;
        match created {
            Ok(_) => {}
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                return Err(TenancyError::Config(format!(
                    "the tenant role {role} does not exist and the platform's database role may not \
                     create it: create it (CREATE ROLE {role} LOGIN PASSWORD '…'; GRANT pg_read_all_stats \
                     TO {role}) or give the platform role CREATEROLE"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, 'pg_read_all_stats', 'MEMBER')")
        .bind(role)
        .fetch_one(&mut *conn)
        .await?;
    if !member {
        sqlx::query(&format!("GRANT pg_read_all_stats TO {}", ident(role)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Grants the writer `role`, in the tenant database behind `conn` (connected as its
/// owner), what the server needs there and nothing more, now and for the tables the owner
/// creates later (a rebuild's fresh tables, new read models). Idempotent.
pub async fn grant(conn: &mut PgConnection, role: &str) -> Result<()> {
    let role = ident(role);
    for statement in [
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!(
            "ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
        ),
        format!("ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}"),
        format!("REVOKE UPDATE, DELETE, TRUNCATE ON {APPEND_ONLY} FROM {role}"),
        format!("REVOKE ALL ON _sqlx_migrations FROM {role}"),
    ] {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The writer role's name and password (when the servers' authentication needs one).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub role: String,
    pub password: Option<Secret>,
}

impl Credentials {
    pub fn new(role: String, password: Option<Secret>) -> Self {
        Self { role, password }
    }

    /// How tenant pools connect to `server`: as the writer.
    pub fn on(&self, server: &PgConnectOptions) -> PgConnectOptions {
        connect_options(server, &self.role, self.password.as_ref())
    }
}

/// How the tenant pools connect: as the writer, to the server of `server`.
pub fn connect_options(
    server: &PgConnectOptions,
    role: &str,
    password: Option<&Secret>,
) -> PgConnectOptions {
    let options = server.clone().username(role);
    match password {
        Some(p) => options.password(p.expose()),
        None => options,
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal (standard-conforming: only quotes are doubled).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
