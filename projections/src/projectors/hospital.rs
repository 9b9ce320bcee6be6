//! `hospital_profile` (one row) and `departments`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::hospital::{Hospital, HospitalEvent, HospitalSettings, SubscriptionStatus};
use hms_domain::plan::Module;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{enum_name, json};
use crate::{Projector, Result, StoredEvent};

pub struct HospitalProjector;

/// The row of `hospital_profile` (there is one), as read by the API. The value objects
/// (`profile`, `branding`, `settings`) are the JSON the events carry.
#[derive(Debug, sqlx::FromRow)]
pub struct HospitalProfileRow {
    pub code: String,
    pub name: String,
    pub plan: String,
    pub billing_cycle: Option<String>,
    pub subscription_status: String,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_ends_at: Option<DateTime<Utc>>,
    pub status_reason: Option<String>,
    /// Stored module names, in the order they were enabled.
    pub modules: Vec<String>,
    pub profile: Option<Value>,
    pub branding: Value,
    pub settings: Option<Value>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HospitalProfileRow {
    /// The hospital's row; `None` before its registration is projected.
    pub async fn load<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(
            "SELECT code, name, plan, billing_cycle, subscription_status, trial_ends_at, \
                    period_ends_at, status_reason, modules, profile, branding, settings, \
                    registered_at, updated_at \
               FROM hospital_profile LIMIT 1",
        )
        .fetch_optional(db)
        .await
    }
}

/// A row of `departments`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepartmentRow {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEPARTMENT_COLUMNS: &str = "id, name, active, created_at, updated_at";

impl DepartmentRow {
    /// Every department, active or not, by name ignoring case.
    pub async fn all<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(&format!(
            "SELECT {DEPARTMENT_COLUMNS} FROM departments ORDER BY lower(name), id"
        ))
        .fetch_all(db)
        .await
    }

    /// The department with this id.
    pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }
}

fn module_names(modules: &[Module]) -> Vec<String> {
    modules.iter().map(enum_name).collect()
}

#[async_trait]
impl Projector for HospitalProjector {
    fn name(&self) -> &'static str {
        "hospital"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["hospital_profile", "departments"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <Hospital as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        match event.decode::<Hospital>(&hms_domain::upcasters())? {
            HospitalEvent::HospitalRegistered {
                code,
                name,
                plan,
                trial_ends_at,
                departments,
                modules,
                registered_at,
            } => {
                let status = if trial_ends_at.is_some() {
                    SubscriptionStatus::Trial
                } else {
                    SubscriptionStatus::Active
                };
                sqlx::query(
                    "INSERT INTO hospital_profile (code, name, plan, subscription_status, trial_ends_at, \
                         modules, settings, registered_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&code)
                .bind(&name)
                .bind(plan.as_str())
                .bind(enum_name(&status))
                .bind(trial_ends_at)
                .bind(module_names(&modules))
                .bind(json(&HospitalSettings::default()))
                .bind(registered_at)
                .execute(&mut *tx)
                .await?;
                for dept in departments {
                    insert_department(tx, dept.id, &dept.name, dept.active, registered_at).await?;
                }
            }
            HospitalEvent::HospitalProfileUpdated { profile, at } => {
                sqlx::query("UPDATE hospital_profile SET name = $1, profile = $2, updated_at = $3")
                    .bind(profile.name.as_str())
                    .bind(json(&profile))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            HospitalEvent::BrandingUpdated { branding, at } => {
                update_profile(tx, "branding = $1", json(&branding), at).await?;
            }
            HospitalEvent::SettingsUpdated { settings, at } => {
                update_profile(tx, "settings = $1", json(&settings), at).await?;
            }
            HospitalEvent::DepartmentAdded { department, at } => {
                insert_department(tx, department.id, &department.name, department.active, at)
                    .await?;
            }
            HospitalEvent::DepartmentRenamed {
                department_id,
                name,
                at,
            } => {
                sqlx::query("UPDATE departments SET name = $2, updated_at = $3 WHERE id = $1")
                    .bind(department_id)
                    .bind(&name)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            HospitalEvent::DepartmentDeactivated { department_id, at } => {
                set_department_active(tx, department_id, false, at).await?;
            }
            HospitalEvent::DepartmentReactivated { department_id, at } => {
                set_department_active(tx, department_id, true, at).await?;
            }
            HospitalEvent::ModuleEnabled { module, at } => {
                sqlx::query(
                    "UPDATE hospital_profile SET modules = array_append(array_remove(modules, $1), $1), updated_at = $2",
                )
                .bind(enum_name(&module))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            HospitalEvent::ModuleDisabled { module, at } => {
                sqlx::query("UPDATE hospital_profile SET modules = array_remove(modules, $1), updated_at = $2")
                    .bind(enum_name(&module))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            HospitalEvent::PlanChanged {
                plan,
                cycle,
                period_ends_at,
                modules,
                at,
            }
            | HospitalEvent::SubscriptionReactivated {
                plan,
                cycle,
                period_ends_at,
                modules,
                at,
            } => {
                sqlx::query(
                    "UPDATE hospital_profile SET plan = $1, billing_cycle = $2, period_ends_at = $3, \
                         modules = $4, subscription_status = 'ACTIVE', status_reason = NULL, updated_at = $5",
                )
                .bind(plan.as_str())
                .bind(enum_name(&cycle))
                .bind(period_ends_at)
                .bind(module_names(&modules))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            HospitalEvent::SubscriptionPastDue { at } => {
                set_status(tx, SubscriptionStatus::PastDue, None, at).await?;
            }
            HospitalEvent::SubscriptionRenewed { period_ends_at, at } => {
                sqlx::query(
                    "UPDATE hospital_profile SET period_ends_at = $1, subscription_status = 'ACTIVE', \
                         status_reason = NULL, updated_at = $2",
                )
                .bind(period_ends_at)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            HospitalEvent::SubscriptionSuspended { reason, at } => {
                set_status(tx, SubscriptionStatus::Suspended, Some(&reason), at).await?;
            }
            HospitalEvent::SubscriptionCancelled { reason, at } => {
                set_status(tx, SubscriptionStatus::Cancelled, Some(&reason), at).await?;
            }
        }
        Ok(())
    }
}

async fn update_profile(
    tx: &mut PgConnection,
    assignment: &'static str,
    value: Value,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(&format!(
        "UPDATE hospital_profile SET {assignment}, updated_at = $2"
    ))
    .bind(value)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut PgConnection,
    status: SubscriptionStatus,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE hospital_profile SET subscription_status = $1, status_reason = $2, updated_at = $3",
    )
    .bind(enum_name(&status))
    .bind(reason)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn insert_department(
    tx: &mut PgConnection,
    id: Uuid,
    name: &str,
    active: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO departments (id, name, active, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(id)
        .bind(name)
        .bind(active)
        .bind(at)
        .execute(tx)
        .await?;
    Ok(())
}

async fn set_department_active(
    tx: &mut PgConnection,
    id: Uuid,
    active: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE departments SET active = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(active)
        .bind(at)
        .execute(tx)
        .await?;
    Ok(())
}
