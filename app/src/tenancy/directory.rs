//! The directory of hospitals in the platform database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor, PgPool};

use super::{Result, TenancyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantStatus {
    Provisioning,
    Active,
    Suspended,
    Cancelled,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "PROVISIONING",
            TenantStatus::Active => "ACTIVE",
            TenantStatus::Suspended => "SUSPENDED",
            TenantStatus::Cancelled => "CANCELLED",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "ACTIVE" => TenantStatus::Active,
            "SUSPENDED" => TenantStatus::Suspended,
            "CANCELLED" => TenantStatus::Cancelled,
            _ => TenantStatus::Provisioning,
        }
    }
}

/// How far provisioning got; steps only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisioningStep {
    Reserved,
    DatabaseCreated,
    Migrated,
    Registered,
    Ready,
}

impl ProvisioningStep {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningStep::Reserved => "RESERVED",
            ProvisioningStep::DatabaseCreated => "DATABASE_CREATED",
            ProvisioningStep::Migrated => "MIGRATED",
            ProvisioningStep::Registered => "REGISTERED",
            ProvisioningStep::Ready => "READY",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "DATABASE_CREATED" => ProvisioningStep::DatabaseCreated,
            "MIGRATED" => ProvisioningStep::Migrated,
            "REGISTERED" => ProvisioningStep::Registered,
            "READY" => ProvisioningStep::Ready,
            _ => ProvisioningStep::Reserved,
        }
    }
}

#[derive(Debug, Clone, FromRow)]
struct TenantRow {
    code: String,
    name: String,
    database_name: String,
    db_server: String,
    status: String,
    plan: String,
    provisioning_step: String,
    pending_admin: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    tokens_not_before: Option<DateTime<Utc>>,
    log_code: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub code: String,
    pub name: String,
    pub database_name: String,
    pub db_server: String,
    pub status: TenantStatus,
    pub plan: String,
    pub provisioning_step: ProvisioningStep,
    pub pending_admin: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Access tokens issued before this instant are refused (set when the hospital is
    /// closed, so reopening it revives none of them).
    pub tokens_not_before: Option<DateTime<Utc>>,
    /// The code the hospital's event log knows it by, where it differs from `code` (a
    /// hospital restored under another code); see [`TenantRecord::log_identity`].
    pub log_code: Option<String>,
}

impl TenantRecord {
    /// The hospital's code inside its own database: the id of its hospital aggregate
    /// and the `tenant` of its events' metadata.
    pub fn log_identity(&self) -> &str {
        self.log_code.as_deref().unwrap_or(&self.code)
    }

    /// Staff of this hospital may sign in and work. A hospital the platform operator
    /// suspended or cancelled is closed; subscription states that only forbid writes
    /// (an expired trial, a past-due bill) are decided by the domain, not here.
    pub fn is_open(&self) -> bool {
        self.status == TenantStatus::Active && self.provisioning_step == ProvisioningStep::Ready
    }
}

impl From<TenantRow> for TenantRecord {
    fn from(r: TenantRow) -> Self {
        Self {
            code: r.code,
            name: r.name,
            database_name: r.database_name,
            db_server: r.db_server,
            status: TenantStatus::parse(&r.status),
            plan: r.plan,
            provisioning_step: ProvisioningStep::parse(&r.provisioning_step),
            pending_admin: r.pending_admin,
            created_at: r.created_at,
            updated_at: r.updated_at,
            tokens_not_before: r.tokens_not_before,
            log_code: r.log_code,
        }
    }
}

const COLUMNS: &str = "code, name, database_name, db_server, status, plan, provisioning_step, \
                       pending_admin, created_at, updated_at, tokens_not_before, log_code";

#[derive(Clone)]
pub struct TenantDirectory {
    pool: PgPool,
}

impl TenantDirectory {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, code: &str) -> Result<Option<TenantRecord>> {
        get(&self.pool, code).await
    }

    /// The hospital `code`, fully provisioned: `NotFound` for an unknown code, `NotReady`
    /// for one whose provisioning has not finished (for tools that work on its database).
    pub async fn get_ready(&self, code: &str) -> Result<TenantRecord> {
        let record = self
            .get(code)
            .await?
            .ok_or_else(|| TenancyError::NotFound(code.to_owned()))?;
        if record.provisioning_step != ProvisioningStep::Ready {
            return Err(TenancyError::NotReady(code.to_owned()));
        }
        Ok(record)
    }

    pub async fn list(&self) -> Result<Vec<TenantRecord>> {
        let rows: Vec<TenantRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants ORDER BY code"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Sets a hospital's directory status unconditionally (operators and tests).
    pub async fn set_status(&self, code: &str, status: TenantStatus) -> Result<bool> {
        let all = [
            TenantStatus::Provisioning,
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Cancelled,
        ];
        self.change_status(code, &all, status, None, None, false)
            .await
    }

    /// Closes an open, provisioned hospital (status SUSPENDED, with the reason and who
    /// closed it); `false` when it is not open.
    pub async fn close(&self, code: &str, reason: &str, by: &str) -> Result<bool> {
        self.change_status(
            code,
            &[TenantStatus::Active],
            TenantStatus::Suspended,
            Some(reason),
            Some(by),
            true,
        )
        .await
    }

    /// Reopens a closed, provisioned hospital; `false` when it is not closed.
    pub async fn reopen(&self, code: &str, by: &str) -> Result<bool> {
        self.change_status(
            code,
            &[TenantStatus::Suspended, TenantStatus::Cancelled],
            TenantStatus::Active,
            None,
            Some(by),
            true,
        )
        .await
    }

    /// The one place a directory status is written: only from one of `from`, and, when
    /// `require_ready`, only once provisioning is done.
    async fn change_status(
        &self,
        code: &str,
        from: &[TenantStatus],
        to: TenantStatus,
        reason: Option<&str>,
        by: Option<&str>,
        require_ready: bool,
    ) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let done = sqlx::query(
            "UPDATE tenants SET status = $2, status_reason = $3, \
                    status_changed_by = coalesce($4, status_changed_by), updated_at = now(), \
                    tokens_not_before = CASE WHEN $2 <> 'ACTIVE' THEN now() \
                                             ELSE tokens_not_before END \
              WHERE code = $1 AND status = ANY($5) \
                AND (NOT $6 OR provisioning_step = 'READY')",
        )
        .bind(code)
        .bind(to.as_str())
        .bind(reason)
        .bind(by)
        .bind(&from)
        .bind(require_ready)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

pub(crate) async fn get<'e>(db: impl PgExecutor<'e>, code: &str) -> Result<Option<TenantRecord>> {
    let row: Option<TenantRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE code = $1"))
            .bind(code)
            .fetch_optional(db)
            .await?;
    Ok(row.map(Into::into))
}

/// Reserves `code` for a new hospital; `None` when the code (or its database name) is
/// taken. Returns the new row, so no second look-up is needed.
pub(crate) async fn insert_reserved<'e>(
    db: impl PgExecutor<'e>,
    code: &str,
    name: &str,
    database_name: &str,
    db_server: &str,
    plan: &str,
    pending_admin: serde_json::Value,
) -> Result<Option<TenantRecord>> {
    let row: Option<TenantRow> = sqlx::query_as(&format!(
        "INSERT INTO tenants (code, name, database_name, db_server, plan, pending_admin) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(code)
    .bind(name)
    .bind(database_name)
    .bind(db_server)
    .bind(plan)
    .bind(pending_admin)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}
