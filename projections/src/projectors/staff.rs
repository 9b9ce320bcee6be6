//! `staff`: hospital accounts by role, department and state, and the login lookup.

use async_trait::async_trait;
use hms_domain::user::{User, UserEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ProjectionError, Projector, Result, StoredEvent};

pub struct StaffProjector;

#[async_trait]
impl Projector for StaffProjector {
    fn name(&self) -> &'static str {
        "staff"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["staff"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <User as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let id =
            Uuid::parse_str(&event.aggregate_id).map_err(|e| ProjectionError::ProjectorFailed {
                projector: self.name(),
                position: event.position,
                message: format!("user aggregate id is not a uuid: {e}"),
            })?;
        let at = event.recorded_at;
        match event.decode::<User>(&hms_domain::upcasters())? {
            UserEvent::UserCreated {
                user_id,
                username,
                email,
                full_name,
                role,
                department_id,
                password_hash,
                created_at,
            } => {
                sqlx::query(
                    "INSERT INTO staff (id, username, email, full_name, role, department_id, active, \
                                        password_hash, password_changed_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8, $8, $8)",
                )
                .bind(user_id)
                .bind(&username)
                .bind(&email)
                .bind(&full_name)
                .bind(role.as_str())
                .bind(department_id)
                .bind(&password_hash)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
            }
            UserEvent::PasswordChanged {
                password_hash,
                changed_at,
            } => {
                sqlx::query(
                    "UPDATE staff SET password_hash = $2, password_changed_at = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(&password_hash)
                .bind(changed_at)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            UserEvent::UserRoleChanged { role, at, .. } => {
                sqlx::query("UPDATE staff SET role = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(role.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            UserEvent::UserDepartmentChanged { department_id, at } => {
                sqlx::query("UPDATE staff SET department_id = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(department_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            UserEvent::UserProfileUpdated {
                full_name,
                email,
                at,
            } => {
                sqlx::query(
                    "UPDATE staff SET full_name = $2, email = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(&full_name)
                .bind(&email)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            UserEvent::UserDeactivated { .. } => set_active(tx, id, false, at).await?,
            UserEvent::UserReactivated { .. } => set_active(tx, id, true, at).await?,
        }
        Ok(())
    }
}

async fn set_active(
    tx: &mut PgConnection,
    id: Uuid,
    active: bool,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    sqlx::query("UPDATE staff SET active = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(active)
        .bind(at)
        .execute(tx)
        .await?;
    Ok(())
}
