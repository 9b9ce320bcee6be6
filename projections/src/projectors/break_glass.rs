//! `break_glass_accesses`: every break-glass grant with its review, the privacy officer's
//! queue (unreviewed first-come) and a patient's break-glass history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::break_glass::{BreakGlass, BreakGlassEvent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{decode_batch, enum_name};
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct BreakGlassProjector;

/// A row of `break_glass_accesses`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct BreakGlassRow {
    pub grant_id: Uuid,
    pub patient_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub role: String,
    pub reason: String,
    pub note: String,
    pub opened_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub outcome: Option<String>,
    pub review_note: Option<String>,
    pub reviewer_id: Option<Uuid>,
    pub reviewer_username: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

impl BreakGlassRow {
    pub const COLUMNS: &'static str = "grant_id, patient_id, user_id, username, role, reason, \
        note, opened_at, expires_at, outcome, review_note, reviewer_id, reviewer_username, \
        reviewed_at";

    pub async fn find(db: impl PgExecutor<'_>, grant_id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM break_glass_accesses WHERE grant_id = $1",
            Self::COLUMNS
        ))
        .bind(grant_id)
        .fetch_optional(db)
        .await
    }
}

#[async_trait]
impl Projector for BreakGlassProjector {
    fn name(&self) -> &'static str {
        "break_glass"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["break_glass_accesses"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let events = decode_batch::<BreakGlass>(self.name(), events)?;
        if events.is_empty() {
            return Ok(());
        }
        let mut rows = RowSet::new("break_glass_accesses", "grant_id");
        let reviewed = events
            .iter()
            .filter_map(|(_, _, e)| match e {
                BreakGlassEvent::BreakGlassReviewed { grant_id, .. } => Some(*grant_id),
                _ => None,
            })
            .collect();
        rows.load(tx, reviewed).await?;
        for (_, _, event) in events {
            match event {
                BreakGlassEvent::GlassBroken {
                    grant_id,
                    patient_id,
                    user_id,
                    username,
                    role,
                    reason,
                    note,
                    expires_at,
                    at,
                } => rows.insert(
                    grant_id,
                    BreakGlassRow {
                        grant_id,
                        patient_id,
                        user_id,
                        username,
                        role: role.as_str().to_owned(),
                        reason: enum_name(&reason),
                        note,
                        opened_at: at,
                        expires_at,
                        outcome: None,
                        review_note: None,
                        reviewer_id: None,
                        reviewer_username: None,
                        reviewed_at: None,
                    },
                ),
                BreakGlassEvent::BreakGlassReviewed {
                    grant_id,
                    outcome,
                    note,
                    reviewer_id,
                    reviewer_username,
                    at,
                } => {
                    if let Some(row) = rows.get_mut(&grant_id) {
                        row.outcome = Some(enum_name(&outcome));
                        row.review_note = note;
                        row.reviewer_id = Some(reviewer_id);
                        row.reviewer_username = Some(reviewer_username);
                        row.reviewed_at = Some(at);
                    }
                }
            }
        }
        rows.store(tx).await
    }
}
