//! Audit history read from the event log itself: the `auditTrail` query and the
//! `history` field of every record type. Entries come in commit order; the audit index
//! (a read model) finds them, the payload comes from `events`.
//!
//! Password hashes never leave the server: they are removed from every payload.

use async_graphql::{Json, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequest, PageRequestExt};

/// Who did it.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditActor {
    pub id: Option<Uuid>,
    pub username: Option<String>,
    pub role: Option<String>,
}

/// One event of the log, as an auditor reads it.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEntry {
    /// Global position in the hospital's log.
    pub position: i64,
    /// When the database recorded the event.
    pub recorded_at: DateTime<Utc>,
    pub actor: AuditActor,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The record's version after this event.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event's data (password hashes removed).
    pub payload: Json<Value>,
    /// Request id, client address and the other facts recorded with the event.
    pub metadata: Json<Value>,
    #[graphql(skip)]
    pub transaction_id: i64,
}

/// Filters of `auditTrail`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Removes secrets from an event payload with the one rule `hms-replay` also uses.
pub fn redact(mut value: Value) -> Value {
    hms_app::redact::redact(&mut value);
    value
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    transaction_id: i64,
    recorded_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_username: Option<String>,
    actor_role: Option<String>,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

/// A page of the log matching `filter`, in commit order.
pub async fn trail(
    pool: &PgPool,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>, ApiError> {
    // The cursor is (transaction id, position), the commit order.
    let (after_tx, after_pos) = match &page.after {
        Some(k) => (
            k.key
                .parse::<i64>()
                .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))?,
            k.id.parse::<i64>()
                .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))?,
        ),
        None => (-1, -1),
    };
    // One record's trail is found through the events table's primary key, and each of
    // its audit rows through the audit index's (transaction_id, position) key; the other
    // filters go through the audit index's own indexes.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.position, a.transaction_id, a.recorded_at, a.actor_id, a.actor_username, a.actor_role, \
                a.aggregate_type, a.aggregate_id, a.sequence, a.event_type, a.event_version, e.payload, e.metadata \
           FROM audit_index a \
           JOIN events e ON e.aggregate_type = a.aggregate_type AND e.aggregate_id = a.aggregate_id \
                        AND e.sequence = a.sequence \
                        AND a.transaction_id = e.transaction_id::text::bigint AND a.position = e.position \
          WHERE (a.transaction_id, a.position) > ($1, $2) \
            AND ($3::text IS NULL OR e.aggregate_type = $3) \
            AND ($4::text IS NULL OR e.aggregate_id = $4) \
            AND ($5::uuid IS NULL OR a.actor_id = $5) \
            AND ($6::text IS NULL OR a.event_type = $6) \
            AND ($7::timestamptz IS NULL OR a.recorded_at >= $7) \
            AND ($8::timestamptz IS NULL OR a.recorded_at < $8) \
          ORDER BY a.transaction_id, a.position \
          LIMIT $9",
    )
    .bind(after_tx)
    .bind(after_pos)
    .bind(&filter.aggregate_type)
    .bind(&filter.aggregate_id)
    .bind(filter.actor_id)
    .bind(&filter.event_type)
    .bind(filter.from)
    .bind(filter.to)
    .bind(page.fetch_limit())
    .fetch_all(pool)
    .await
    .map_err(ApiError::internal)?;
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            position: r.position,
            recorded_at: r.recorded_at,
            actor: AuditActor {
                id: r.actor_id,
                username: r.actor_username,
                role: r.actor_role,
            },
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: Json(redact(r.payload)),
            metadata: Json(r.metadata),
            transaction_id: r.transaction_id,
        })
        .collect();
    Ok(page.connection(entries, |e| Keyset {
        key: e.transaction_id.to_string(),
        id: e.position.to_string(),
    }))
}

/// The history of one record (the `history` field of record types).
pub async fn history(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Page<AuditEntry>, ApiError> {
    let filter = AuditFilter {
        aggregate_type: Some(aggregate_type.to_owned()),
        aggregate_id: Some(aggregate_id.to_owned()),
        ..AuditFilter::default()
    };
    trail(pool, &filter, &page_request(first, after)?).await
}
