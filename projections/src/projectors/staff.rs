//! `staff`: hospital accounts by role, department and state, and the login lookup.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::user::{User, UserEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::fold_rows;
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct StaffProjector;

/// A row of `staff` (field names are column names).
#[derive(Serialize, Deserialize)]
struct StaffRow {
    id: Uuid,
    username: String,
    email: String,
    full_name: String,
    role: String,
    department_id: Option<Uuid>,
    active: bool,
    /// Needed by login; never exposed through the API.
    password_hash: String,
    password_changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    version: i64,
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
