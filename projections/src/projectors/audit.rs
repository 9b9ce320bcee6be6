//! `audit_index`: one row per event (who, when, which record, what) for fast audit
//! queries; payloads stay in `events`. Also `patient_access_log`, from the
//! `record_access` stream: who opened which patient record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::record_access::{RecordAccess, RecordAccessEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode_batch;
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct AuditIndexProjector;

#[async_trait]
impl Projector for AuditIndexProjector {
    fn name(&self) -> &'static str {
        "audit_index"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_index"]
    }

    /// One INSERT for the whole batch.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let column =
            |f: fn(&StoredEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO audit_index (position, transaction_id, recorded_at, actor_id, actor_username, actor_role, \
                 aggregate_type, aggregate_id, sequence, event_type, event_version, request_id) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::uuid[], $5::text[], $6::text[], \
                                  $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[])",
        )
        .bind(events.iter().map(|e| e.position).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.transaction_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.meta("actor_id").and_then(|s| Uuid::parse_str(s).ok()))
                .collect::<Vec<_>>(),
        )
        .bind(column(|e| e.meta("actor_username").map(str::to_owned)))
        .bind(column(|e| e.meta("actor_role").map(str::to_owned)))
        .bind(events.iter().map(|e| e.aggregate_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.aggregate_id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_version.clone()).collect::<Vec<_>>())
        .bind(column(|e| e.meta("request_id").map(str::to_owned)))
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        let actor_id = event.meta("actor_id").and_then(|s| Uuid::parse_str(s).ok());
        sqlx::query(
            "INSERT INTO audit_index (position, transaction_id, recorded_at, actor_id, actor_username, actor_role, \
                 aggregate_type, aggregate_id, sequence, event_type, event_version, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(event.position)
        .bind(event.transaction_id)
        .bind(event.recorded_at)
        .bind(actor_id)
        .bind(event.meta("actor_username"))
        .bind(event.meta("actor_role"))
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(event.meta("request_id"))
        .execute(tx)
        .await?;
        Ok(())
    }
}

pub struct AccessLogProjector;

/// A row of `patient_access_log` (field names are column names).
#[derive(Serialize, Deserialize)]
struct AccessRow {
    id: Uuid,
    patient_id: Uuid,
    viewer_id: Uuid,
    viewer_username: String,
    viewer_role: String,
    purpose: String,
    client_addr: Option<String>,
    request_id: Option<String>,
    viewed_at: DateTime<Utc>,
}

#[async_trait]
impl Projector for AccessLogProjector {
    fn name(&self) -> &'static str {
        "patient_access_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["patient_access_log"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One INSERT for the whole batch.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let mut log = RowSet::new("patient_access_log", "id");
        for (id, stored, event) in decode_batch::<RecordAccess>(self.name(), events)? {
            let RecordAccessEvent::PatientRecordViewed {
                patient_id,
                viewer_id,
                viewer_username,
                viewer_role,
                purpose,
                at,
            } = event;
            let row = AccessRow {
                id,
                patient_id,
                viewer_id,
                viewer_username,
                viewer_role: viewer_role.as_str().to_owned(),
                purpose,
                client_addr: stored.meta("client_addr").map(str::to_owned),
                request_id: stored.meta("request_id").map(str::to_owned),
                viewed_at: at,
            };
            log.insert(id, row);
        }
        log.store(tx).await
    }
}
