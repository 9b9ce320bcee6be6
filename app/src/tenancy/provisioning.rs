//! Onboarding a hospital: reserve its code in the directory, create its database from
//! the migrated template, migrate, append its registration and first administrator to
//! its own event store, mark it ready.
//!
//! Every step is idempotent and the directory records the last one finished (while the
//! next one already runs), so a run interrupted anywhere (even between `CREATE DATABASE`
//! and recording it) is completed by the next run for the same code. Provisioning is serialized per platform by an
//! advisory lock: `CREATE DATABASE … TEMPLATE` fails while anyone else is connected to
//! the template, and the template is migrated in between.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use hms_domain::common::{BoundedText, Email, HospitalCode, Username};
use hms_domain::hospital::{
    Hospital, HospitalCommand, HospitalError, DEFAULT_DEPARTMENTS, MAX_NAME_CHARS,
};
use hms_domain::plan::Plan;
use hms_domain::user::{user_id_for, User, UserCommand, UserError, MAX_FULL_NAME_CHARS};
use hms_domain::{Actor, EventMetadata};
use hms_projections::ProjectionRunner;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres};
use tokio::sync::Notify;
use uuid::Uuid;

use super::directory::{self, ProvisioningStep, TenantRecord};
use super::names::TenantNaming;
use super::platform;
use super::servers::{self, ServerDirectory, DEFAULT_SERVER};
use super::{Result, TenancyError};
use crate::commands::{self, CommandError};

/// How long provisioning waits for the new hospital's read models (its administrator's
/// account) before giving up on this run.
const REGISTRATION_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(60);

/// A validated request to onboard a hospital.
#[derive(Debug, Clone)]
pub struct NewHospital {
    pub code: HospitalCode,
    pub name: BoundedText,
    pub plan: Plan,
    pub admin: NewAdmin,
    /// The database server the operator chose; `None`: by placement
    /// ([`super::servers::place`]).
    pub server: Option<String>,
}

/// The first hospital administrator. Kept in the directory until provisioning is done,
/// so that only a hash is ever stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAdmin {
    pub username: Username,
    pub email: Email,
    pub full_name: BoundedText,
    pub password_hash: String,
}

impl NewHospital {
    /// Validates raw input; nothing touches a database before this passes.
    pub fn parse(
        code: &str,
        name: &str,
        plan: &str,
        admin_username: &str,
        admin_email: &str,
        admin_name: &str,
        admin_password_hash: String,
    ) -> Result<Self> {
        Ok(Self {
            code: HospitalCode::parse(code)?,
            name: BoundedText::parse("name", name, MAX_NAME_CHARS)?,
            plan: Plan::parse(plan)?,
            admin: NewAdmin {
                username: Username::parse(admin_username)?,
                email: Email::parse(admin_email)?,
                full_name: BoundedText::parse("admin_name", admin_name, MAX_FULL_NAME_CHARS)?,
                password_hash: admin_password_hash,
            },
            server: None,
        })
    }

    /// The same request, on database server `server` (checked when provisioning).
    pub fn on_server(mut self, server: Option<String>) -> Result<Self> {
        if let Some(name) = &server {
            servers::check_name(name)?;
        }
        self.server = server;
        Ok(self)
    }
}

enum Reservation {
    /// This run reserved the code.
    New(TenantRecord),
    /// The code was reserved before: a hospital that exists, or an interrupted run.
    Existing(TenantRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionOutcome {
    /// The hospital is ready. `resumed` says an earlier, interrupted run was completed.
    Ready {
        database_name: String,
        resumed: bool,
    },
    /// Stopped on request after `step` (used to exercise recovery).
    StoppedAfter(ProvisioningStep),
}

#[derive(Clone)]
pub struct Provisioner {
    pub(super) control: PgPool,
    pub(super) servers: ServerDirectory,
    pub(super) naming: TenantNaming,
    pub(super) runner: ProjectionRunner,
    /// The servers whose template this process has seen at this binary's migrations, so
    /// later provisionings skip the look-up (a template only ever moves forward).
    pub(super) templates_current: Arc<Mutex<HashSet<String>>>,
    /// Spare databases to keep ready (see [`super::spares`]); 0: none are used.
    pub(super) spares_to_keep: u32,
    /// This process's onboardings wait here for their turn, so that at most one of its
    /// platform connections waits on (or holds) the provisioning lock: twenty
    /// concurrent onboardings would otherwise hold twenty connections of a pool of five
    /// while they wait, and starve the work of the one holding the lock.
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the spare refiller after a spare was used.
    pub(super) spare_taken: Arc<Notify>,
}

impl Provisioner {
    /// Tenant databases are created on the servers of `servers`, as their owner role.
    pub fn new(
        control: PgPool,
        servers: ServerDirectory,
        naming: TenantNaming,
        runner: ProjectionRunner,
    ) -> Self {
        Self {
            control,
            servers,
            naming,
            runner,
            templates_current: Arc::default(),
            spares_to_keep: 0,
            spare_taken: Arc::new(Notify::new()),
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The same provisioner, keeping `spares` spare databases ready (0: none are used).
    pub fn with_spares(mut self, spares: u32) -> Self {
        self.spares_to_keep = spares;
        self
    }

    pub async fn provision(&self, request: &NewHospital) -> Result<ProvisionOutcome> {
        self.provision_until(request, ProvisioningStep::Ready).await
    }

    /// Runs provisioning but stops after `stop_after`, as a crash there would.
    pub async fn provision_until(
        &self,
        request: &NewHospital,
        stop_after: ProvisioningStep,
    ) -> Result<ProvisionOutcome> {
        let started = std::time::Instant::now();
        // Boxed: every step's future is in it, and it would otherwise be copied whole
        // into each caller's.
        let outcome = self
            .locked(Box::pin(self.provision_locked(request, stop_after)))
            .await;
        let label = match &outcome {
            Ok(ProvisionOutcome::Ready { resumed: false, .. }) => "ready",
            Ok(ProvisionOutcome::Ready { resumed: true, .. }) => "resumed",
            Ok(ProvisionOutcome::StoppedAfter(_)) => "stopped",
            Err(TenancyError::AlreadyExists(_)) => "refused",
            Err(_) => "failed",
        };
        crate::telemetry::provisioned(label, started.elapsed());
        outcome
    }

    /// Runs `work` holding the platform's provisioning lock: a session-level lock on a
    /// dedicated connection (provisioning is rare, and the lock must span statements
    /// that cannot share one transaction). Every change to tenant databases' existence
    /// or names, and to the spare databases, happens under it.
    pub(super) async fn locked<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        // Other processes wait on the advisory lock; this one's queue here first.
        let _turn = self.turn.lock().await;
        let mut lock = LockSession(Some(self.control.acquire().await?));
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('hms.provisioning', 0))")
            .execute(lock.conn())
            .await?;
        let result = work.await;
        let unlocked =
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended('hms.provisioning', 0))")
                .execute(lock.conn())
                .await;
        if unlocked.is_ok() {
            lock.release();
        }
        // Otherwise the connection is broken, and dropping `lock` closes it.
        result
    }

    async fn provision_locked(
        &self,
        request: &NewHospital,
        stop_after: ProvisioningStep,
    ) -> Result<ProvisionOutcome> {
        let code = request.code.as_str();
        let (record, resumed) = match self.reserve(request).await? {
            Reservation::New(r) => (r, false),
            Reservation::Existing(r) if r.provisioning_step == ProvisioningStep::Ready => {
                return Err(TenancyError::AlreadyExists(code.to_owned()))
            }
            Reservation::Existing(r) => (r, true),
        };
        if resumed {
            tracing::warn!(
                code,
                step = record.provisioning_step.as_str(),
                "resuming interrupted provisioning"
            );
        }
        // A resumed run completes what was first asked for, not the new request.
        let admin: NewAdmin = match &record.pending_admin {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                TenancyError::Command(format!("stored provisioning request is unreadable: {e}"))
            })?,
            None => request.admin.clone(),
        };
        let hospital = NewHospital {
            code: request.code.clone(),
            name: BoundedText::parse("name", &record.name, MAX_NAME_CHARS)?,
            plan: Plan::parse(&record.plan)?,
            admin,
            server: Some(record.db_server.clone()),
        };

        let database = record.database_name.clone();
        let server = record.db_server.clone();
        let tenant_options = self.servers.options(&server).await?.database(&database);
        // `step` is how far the work got, `recorded` what the directory says. A finished
        // step is recorded while the next one runs (the record is only a shortcut for a
        // resumed run: every step is idempotent, so a run that finds an older step
        // recorded redoes nothing harmful), and the last one before returning.
        let mut step = record.provisioning_step;
        let mut recorded = step;
        while step < stop_after {
            let started = std::time::Instant::now();
            // The step reached, and whether the work recorded it itself.
            let work = async {
                Ok::<_, TenancyError>(match step {
                    ProvisioningStep::Reserved
                        if stop_after >= ProvisioningStep::Migrated
                            && server == DEFAULT_SERVER
                            && self.take_spare(code, &database).await? =>
                    {
                        // Renamed in the same transaction that recorded MIGRATED.
                        (ProvisioningStep::Migrated, true)
                    }
                    ProvisioningStep::Reserved => {
                        if self.create_database(&server, &database).await? {
                            // A fresh copy of a current template has every migration.
                            (ProvisioningStep::Migrated, false)
                        } else {
                            (ProvisioningStep::DatabaseCreated, false)
                        }
                    }
                    ProvisioningStep::DatabaseCreated => {
                        platform::migrate_tenant_database(
                            &tenant_options,
                            &self.naming.writer_role(),
                        )
                        .await?;
                        (ProvisioningStep::Migrated, false)
                    }
                    ProvisioningStep::Migrated => {
                        self.register(&tenant_options, &hospital).await?;
                        // Nothing is left to do between REGISTERED and READY.
                        (ProvisioningStep::Ready, false)
                    }
                    ProvisioningStep::Registered | ProvisioningStep::Ready => {
                        (ProvisioningStep::Ready, false)
                    }
                })
            };
            let (next, recorded_by_work) = if recorded < step {
                let (was_recorded, next) = tokio::join!(self.record_step(code, step), work);
                was_recorded?;
                recorded = step;
                next?
            } else {
                work.await?
            };
            if recorded_by_work {
                recorded = next;
            }
            let next = next.min(stop_after);
            tracing::debug!(
                code,
                from = step.as_str(),
                to = next.as_str(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "provisioning step"
            );
            step = next;
        }
        if recorded < step {
            self.record_step(code, step).await?;
        }
        Ok(if step == ProvisioningStep::Ready {
            ProvisionOutcome::Ready {
                database_name: database,
                resumed,
            }
        } else {
            ProvisionOutcome::StoppedAfter(step)
        })
    }

    /// Reserves the code in the directory (one statement for a new hospital), or finds
    /// the reservation of an earlier run.
    async fn reserve(&self, request: &NewHospital) -> Result<Reservation> {
        let database = self.naming.database_for(&request.code);
        let admin = serde_json::to_value(&request.admin)
            .map_err(|e| TenancyError::Command(e.to_string()))?;
        let existing = directory::get(&self.control, request.code.as_str()).await?;
        if let Some(record) = existing {
            return Ok(Reservation::Existing(record));
        }
        let server = servers::place(&self.control, request.server.as_deref()).await?;
        let inserted = directory::insert_reserved(
            &self.control,
            request.code.as_str(),
            request.name.as_str(),
            &database,
            &server,
            request.plan.as_str(),
            admin,
        )
        .await?;
        if let Some(record) = inserted {
            return Ok(Reservation::New(record));
        }
        directory::get(&self.control, request.code.as_str())
            .await?
            .map(Reservation::Existing)
            .ok_or_else(|| TenancyError::NotFound(request.code.to_string()))
    }

    async fn record_step(&self, code: &str, step: ProvisioningStep) -> Result<()> {
        record_step(&self.control, code, step).await
    }

    /// Copies the migrated template on `server` (the fast path). Returns whether this
    /// call made a fresh copy of a current template (so it needs no migration); `false`
    /// when the database existed already (a resumed run).
    async fn create_database(&self, server: &str, database: &str) -> Result<bool> {
        if server == DEFAULT_SERVER {
            let mut conn = self.control.acquire().await?;
            return self.copy_template(&mut conn, server, database).await;
        }
        let options = self.servers.options(server).await?;
        let mut conn = platform::connect_once(&options.database("postgres")).await?;
        let copied = self.copy_template(&mut conn, server, database).await;
        let _ = sqlx::Connection::close(conn).await;
        copied
    }

    fn template_known_current(&self, server: &str) -> bool {
        self.templates_current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(server)
    }

    fn set_template_current(&self, server: &str, current: bool) {
        let mut known = self
            .templates_current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if current {
            known.insert(server.to_owned());
        } else {
            known.remove(server);
        }
    }

    /// `CREATE DATABASE database TEMPLATE <template>` on `server` (`conn` is a
    /// connection there); `false` when `database` exists. The template is created or
    /// brought up to date first when the platform database says it is behind (looked up
    /// once per process and server) or it is missing. The caller holds the provisioning
    /// lock.
    pub(super) async fn copy_template(
        &self,
        conn: &mut PgConnection,
        server: &str,
        database: &str,
    ) -> Result<bool> {
        let template = self.naming.template_database();
        if !self.template_known_current(server) {
            self.prepare_template(conn, server, &template).await?;
        }
        let outcome = match platform::copy_database(conn, database, &template).await? {
            platform::CopyOutcome::NoTemplate => {
                // Dropped behind this process's back: make it again, once.
                self.set_template_current(server, false);
                self.prepare_template(conn, server, &template).await?;
                platform::copy_database(conn, database, &template).await?
            }
            other => other,
        };
        match outcome {
            platform::CopyOutcome::Created => Ok(true),
            platform::CopyOutcome::Existed => Ok(false),
            platform::CopyOutcome::NoTemplate => Err(TenancyError::Command(format!(
                "the template database {template} disappeared while provisioning"
            ))),
        }
    }

    /// Makes sure the template exists and has every tenant migration of this binary.
    async fn prepare_template(
        &self,
        conn: &mut PgConnection,
        server: &str,
        template: &str,
    ) -> Result<()> {
        let current = platform::template_is_current(&self.control, server, template).await?
            && platform::database_exists(conn, template).await?;
        if !current {
            platform::create_database_if_missing(conn, template, None).await?;
            platform::migrate_tenant_database(
                &self.servers.options(server).await?.database(template),
                &self.naming.writer_role(),
            )
            .await?;
            platform::record_template_version(&self.control, server, template).await?;
        }
        self.set_template_current(server, true);
        Ok(())
    }

    /// Appends the hospital's registration and its first administrator, then brings the
    /// read models up to date so the administrator can sign in at once.
    async fn register(&self, options: &PgConnectOptions, hospital: &NewHospital) -> Result<()> {
        // One connection: the first backend on a fresh database pays for loading its
        // catalog caches, and this work is sequential anyway. (A second backend warming
        // the read side while the events are appended was measured: no faster, as both
        // spend the time loading the same catalogs.)
        let started = std::time::Instant::now();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let elapsed_ms = |since: std::time::Instant| since.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(elapsed_ms = elapsed_ms(started), "registration: connected");
        let result = async {
            let step = std::time::Instant::now();
            let admin_id = self.append_registration(&pool, hospital).await?;
            tracing::debug!(elapsed_ms = elapsed_ms(step), "registration: appended");
            // The administrator must be able to sign in once provisioning reports READY
            // (this also covers a resumed run whose appends were done before). A timeout
            // leaves the step unfinished, and the next run completes it.
            let step = std::time::Instant::now();
            commands::wait_for_stream::<User>(
                &pool,
                &self.runner,
                &admin_id,
                REGISTRATION_CATCH_UP,
            )
            .await
            .map_err(|e| {
                TenancyError::Command(format!("projecting the registration failed: {e}"))
            })?;
            // The wait covers the read models; the seals come with a full catch-up. A
            // catch-up passes over a projector another one holds (the daemon, woken by
            // these appends, may be sealing them), so it runs until the whole log is
            // sealed: the first head recorded below must cover the registration, or none
            // is recorded and the server, which never records a first head, alerts.
            let deadline = tokio::time::Instant::now() + REGISTRATION_CATCH_UP;
            loop {
                self.runner.catch_up(&pool).await.map_err(|e| {
                    TenancyError::Command(format!("sealing the registration failed: {e}"))
                })?;
                if log_sealed(&pool).await.map_err(|e| {
                    TenancyError::Command(format!("reading the registration's seals failed: {e}"))
                })? {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(TenancyError::Command(
                        "the registration was not sealed in time".to_owned(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tracing::debug!(elapsed_ms = elapsed_ms(step), "registration: projected");
            // The first head: from now on a hospital with sealed events and no recorded
            // head is a finding (`hms-replay verify`), and the server never records one
            // where none exists. The hospital is not open yet and this process sealed its
            // events, so there is nothing to bless.
            hms_projections::projectors::seal::record_head(
                &self.control,
                hospital.code.as_str(),
                &pool,
                hms_projections::projectors::seal::MissingHead::Accept,
            )
            .await
            .map_err(|e| TenancyError::Command(format!("recording the log's head failed: {e}")))?;
            Ok(())
        }
        .await;
        pool.close().await;
        result
    }

    /// Appends the registration events (each is refused harmlessly when a resumed run
    /// finds it written already). Returns the administrator's stream id.
    async fn append_registration(&self, pool: &PgPool, hospital: &NewHospital) -> Result<String> {
        let now = Utc::now();
        let metadata = EventMetadata {
            actor: Actor::system(),
            tenant: hospital.code.to_string(),
            request_id: format!("provision-{}", Uuid::new_v4()),
            client_addr: None,
            at: now,
        };
        let departments = DEFAULT_DEPARTMENTS
            .iter()
            .map(|name| {
                BoundedText::parse("department", name, MAX_NAME_CHARS).map(|n| (Uuid::new_v4(), n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let register = HospitalCommand::RegisterHospital {
            code: hospital.code.clone(),
            name: hospital.name.clone(),
            plan: hospital.plan,
            departments,
            now,
        };
        match commands::append::<Hospital>(pool, hospital.code.as_str(), register, (), &metadata)
            .await
        {
            Ok(()) | Err(CommandError::Rejected(HospitalError::AlreadyRegistered)) => {}
            Err(e) => {
                return Err(TenancyError::Command(format!(
                    "registering the hospital failed: {e}"
                )))
            }
        }
        let admin = &hospital.admin;
        let create = UserCommand::CreateUser {
            username: admin.username.clone(),
            email: admin.email.clone(),
            full_name: admin.full_name.clone(),
            role: hms_domain::Role::HospitalAdmin,
            department_id: None,
            password_hash: admin.password_hash.clone(),
            now,
        };
        let admin_id = user_id_for(&admin.username).to_string();
        match commands::append::<User>(pool, &admin_id, create, (), &metadata).await {
            Ok(()) | Err(CommandError::Rejected(UserError::AlreadyExists)) => {}
            Err(e) => {
                return Err(TenancyError::Command(format!(
                    "creating the administrator failed: {e}"
                )))
            }
        }
        Ok(admin_id)
    }
}

/// The connection holding the provisioning lock. Unless released after unlocking, it
/// is closed when dropped (an error, or the future cancelled), which ends the session
/// and its lock; returned to the pool it would keep the lock.
struct LockSession(Option<PoolConnection<Postgres>>);

impl LockSession {
    fn conn(&mut self) -> &mut PgConnection {
        self.0
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("used only before release"))
    }

    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for LockSession {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Records how far provisioning of `code` got; READY also opens the hospital and
/// forgets the pending administrator.
pub(super) async fn record_step<'e>(
    db: impl PgExecutor<'e>,
    code: &str,
    step: ProvisioningStep,
) -> Result<()> {
    let ready = step == ProvisioningStep::Ready;
    sqlx::query(
        "UPDATE tenants SET provisioning_step = $2, updated_at = now(), last_error = NULL, \
                status = CASE WHEN $3 THEN 'ACTIVE' ELSE status END, \
                pending_admin = CASE WHEN $3 THEN NULL ELSE pending_admin END \
          WHERE code = $1",
    )
    .bind(code)
    .bind(step.as_str())
    .bind(ready)
    .execute(db)
    .await?;
    Ok(())
}

/// Closes every connection this process may still hold on `database` (e.g. before it is
/// dropped in tests).
pub async fn drop_database(conn: &mut PgConnection, database: &str) -> Result<()> {
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        super::names::quote_ident(database)
    );
    sqlx::Executor::execute(conn, sql.as_str()).await?;
    Ok(())
}

/// Whether every event of the tenant's log is sealed: its newest seal is at the log's last
/// event (the chain follows the log's order).
async fn log_sealed(pool: &PgPool) -> std::result::Result<bool, hms_projections::ProjectionError> {
    let mut conn = pool.acquire().await?;
    let Some(last) = hms_projections::log::log_head(&mut conn).await? else {
        return Ok(true);
    };
    let sealed = hms_projections::projectors::seal::sealed_head(&mut conn).await?;
    Ok(sealed.is_some_and(|seal| seal.position == last.position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<F: std::future::Future + Send>(_: F) {}

    /// async-graphql resolvers need provisioning to be `Send` for every borrow; sqlx's
    /// `raw_sql(..).execute(..)` future is not (see `platform::create_database_if_missing`).
    #[allow(dead_code)]
    fn provisioning_can_run_inside_a_resolver(provisioner: &Provisioner, request: &NewHospital) {
        assert_send(provisioner.provision(request));
    }
}
