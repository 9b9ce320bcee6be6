//! `staff`: hospital accounts by role, department and state, and the login lookup.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::user::{User, UserEvent};
use hms_domain::Role;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::fold_rows;
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct StaffProjector;

/// A row of `staff` (field names are column names), as written here and read by login
/// and the API: the one spelling of a staff account.
#[derive(Serialize, Deserialize, sqlx::FromRow)]
pub struct StaffRow {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub full_name: String,
    /// The role's stored name (`HOSPITAL_ADMIN`).
    pub role: String,
    pub department_id: Option<Uuid>,
    pub active: bool,
    /// Needed by login; never exposed through the API.
    pub password_hash: String,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    pub version: i64,
}

/// The columns of [`StaffRow`], for `SELECT`s of `staff`.
pub const STAFF_COLUMNS: &str = "id, username, email, full_name, role, department_id, active, \
     password_hash, password_changed_at, created_at, updated_at, version";

/// Which accounts a listing shows; `None` is any.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaffFilter {
    pub role: Option<Role>,
    pub department_id: Option<Uuid>,
    pub active: Option<bool>,
}

impl StaffRow {
    /// The account with this id.
    pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await
    }

    /// The account with this username, ignoring case (login).
    pub async fn find_by_username<'e>(
        db: impl PgExecutor<'e>,
        username: &str,
    ) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(db)
        .await
    }

    /// Up to `limit` accounts matching `filter`, by lower-case username then id, after
    /// the keyset `after`.
    pub async fn list<'e>(
        db: impl PgExecutor<'e>,
        filter: &StaffFilter,
        after: (&str, Uuid),
        limit: i64,
    ) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff \
              WHERE (lower(username), id) > ($1, $2) \
                AND ($3::text IS NULL OR role = $3) \
                AND ($4::uuid IS NULL OR department_id = $4) \
                AND ($5::boolean IS NULL OR active = $5) \
              ORDER BY lower(username), id LIMIT $6"
        ))
        .bind(after.0)
        .bind(after.1)
        .bind(filter.role.map(Role::as_str))
        .bind(filter.department_id)
        .bind(filter.active)
        .bind(limit)
        .fetch_all(db)
        .await
    }
}

super::stream_row!(StaffRow);

#[async_trait]
impl Projector for StaffProjector {
    fn name(&self) -> &'static str {
        "staff"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["staff"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One read of the accounts the batch changes, one write of their last state.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        fold_rows::<User, StaffRow>(
            tx,
            self.name(),
            "staff",
            events,
            |e| matches!(e, UserEvent::UserCreated { .. }),
            fold,
        )
        .await
    }
}

fn fold(staff: &mut RowSet<Uuid, StaffRow>, id: Uuid, stored: &StoredEvent, event: UserEvent) {
    let recorded_at = stored.recorded_at;
    if let UserEvent::UserCreated {
        user_id,
        username,
        email,
        full_name,
        role,
        department_id,
        password_hash,
        created_at,
    } = event
    {
        let row = StaffRow {
            id: user_id,
            username,
            email,
            full_name,
            role: role.as_str().to_owned(),
            department_id,
            active: true,
            password_hash,
            password_changed_at: created_at,
            created_at,
            updated_at: created_at,
            version: 0,
        };
        staff.insert(user_id, row);
        return;
    }
    let Some(row) = staff.get_mut(&id) else {
        return;
    };
    match event {
        UserEvent::UserCreated { .. } => {}
        UserEvent::PasswordChanged {
            password_hash,
            changed_at,
        } => {
            row.password_hash = password_hash;
            row.password_changed_at = changed_at;
            row.updated_at = recorded_at;
        }
        UserEvent::UserRoleChanged { role, at, .. } => {
            row.role = role.as_str().to_owned();
            row.updated_at = at;
        }
        UserEvent::UserDepartmentChanged { department_id, at } => {
            row.department_id = department_id;
            row.updated_at = at;
        }
        UserEvent::UserProfileUpdated {
            full_name,
            email,
            at,
        } => {
            row.full_name = full_name;
            row.email = email;
            row.updated_at = at;
        }
        UserEvent::UserDeactivated { .. } => {
            row.active = false;
            row.updated_at = recorded_at;
        }
        UserEvent::UserReactivated { .. } => {
            row.active = true;
            row.updated_at = recorded_at;
        }
    }
}
