//! `audit_index`: one row per event (who, when, which record, what) for fast audit
//! queries; payloads stay in `events`. Also `patient_access_log`, from the
//! `record_access` stream: who opened which patient record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hms_domain::record_access::{RecordAccess, RecordAccessEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode_batch;
use crate::{ProjectionError, Projector, Result, StoredEvent};

pub struct AuditIndexProjector;

#[async_trait]
impl Projector for AuditIndexProjector {
    fn name(&self) -> &'static str {
        "audit_index"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_index"]
    }

    /// The index copies columns of the log, never a payload.
    fn reads_personal_data(&self) -> bool {
        false
    }

    /// The trail's readers catch it up first; no command's answer reads it.
    fn answers_commands(&self) -> bool {
        false
    }

    /// The index is a column mapping of the log and its metadata, so PostgreSQL copies
    /// the batch's rows itself, from the events it has just served: nothing travels
    /// back. The runner hands over a contiguous run of the log, so the run is named by
    /// its ends; the row count proves it.
    ///
    /// The actor id is cast to `uuid` directly. The command path always writes a uuid;
    /// an event written some other way with a malformed one fails the cast, and then the
    /// batch is copied again with each actor id checked first (a regular expression per
    /// row, too slow for every batch), storing no actor id where it is malformed. A
    /// short run (a command's own catch-up) is copied checked at once: the regular
    /// expression costs less there than the savepoint's two round trips.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        if events.len() <= CHECKED_RUN {
            let copied = copy_log_run(tx, first, last, events.len(), ACTOR_ID_CHECKED).await?;
            return self.ensure_whole(events, copied);
        }
        let mut attempt = sqlx::Connection::begin(&mut *tx).await?;
        let copied =
            match copy_log_run(&mut attempt, first, last, events.len(), ACTOR_ID_CAST).await {
                Ok(copied) => {
                    attempt.commit().await?;
                    copied
                }
                // 22P02: a text that is no uuid. Any other failure is the batch's own.
                Err(ProjectionError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("22P02") =>
                {
                    attempt.rollback().await?;
                    copy_log_run(tx, first, last, events.len(), ACTOR_ID_CHECKED).await?
                }
                Err(e) => return Err(e),
            };
        self.ensure_whole(events, copied)
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }
}

impl AuditIndexProjector {
    /// The run of the log must have held exactly the batch's events.
    fn ensure_whole(&self, events: &[StoredEvent], copied: u64) -> Result<()> {
        let first = &events[0];
        let last = &events[events.len() - 1];
        if copied != events.len() as u64 {
            return Err(ProjectionError::ProjectorFailed {
                projector: self.name(),
                position: first.position,
                message: format!(
                    "the log between positions {} and {} holds {copied} events, the batch {}",
                    first.position,
                    last.position,
                    events.len()
                ),
            });
        }
        Ok(())
    }
}

/// Runs of at most this many events are copied with the actor id checked at once.
const CHECKED_RUN: usize = 16;

/// The actor id of an event's metadata as a `uuid`, trusting the command path.
const ACTOR_ID_CAST: &str = "(metadata->>'actor_id')::uuid";
/// The same, or NULL where it is not a uuid.
const ACTOR_ID_CHECKED: &str = "CASE WHEN metadata->>'actor_id' \
     ~ '^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$' THEN (metadata->>'actor_id')::uuid END";

/// Copies the events from `first` to `last` (log order, both included; `expected` of
/// them) into the audit index; returns how many rows it wrote.
async fn copy_log_run(
    tx: &mut PgConnection,
    first: &StoredEvent,
    last: &StoredEvent,
    expected: usize,
    actor_id: &str,
) -> Result<u64> {
    let copied = sqlx::query(&format!(
        "INSERT INTO audit_index (position, transaction_id, recorded_at, actor_id, actor_username, \
             actor_role, aggregate_type, aggregate_id, sequence, event_type, event_version, request_id) \
         SELECT position, transaction_id::text::bigint, recorded_at, {actor_id}, \
                metadata->>'actor_username', metadata->>'actor_role', aggregate_type, aggregate_id, \
                sequence, event_type, event_version, metadata->>'request_id' \
           FROM public.events \
          WHERE (transaction_id, position) >= (SELECT $1::text::xid8, $2::bigint) \
            AND (transaction_id, position) <= (SELECT $3::text::xid8, $4::bigint) \
          ORDER BY events.transaction_id, events.position LIMIT (SELECT $5::bigint)"
    ))
    .bind(first.transaction_id.to_string())
    .bind(first.position)
    .bind(last.transaction_id.to_string())
    .bind(last.position)
    // The order (of the table's columns, not the output's) and the limit steer the planner
    // to the log-order index: its estimate for a row range goes by the transaction id
    // alone, and one large transaction (an import) would make it scan the whole table
    // for every batch. The bounds and the limit are sub-selects, as in
    // `log::read_batch`, so that the generic plan is kept rather than planned per call.
    // One more than expected, so that an extra row shows.
    .bind(i64::try_from(expected).unwrap_or(i64::MAX).saturating_add(1))
    .execute(tx)
    .await?
    .rows_affected();
    Ok(copied)
}

pub struct AccessLogProjector;

#[async_trait]
impl Projector for AccessLogProjector {
    fn name(&self) -> &'static str {
        "patient_access_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["patient_access_log"]
    }

    /// The log's readers catch it up first; no command's answer reads it.
    fn answers_commands(&self) -> bool {
        false
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One INSERT for the whole batch, its columns as typed arrays: the log only grows,
    /// so there is nothing to load or fold.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let views = decode_batch::<RecordAccess>(self.name(), events)?;
        if views.is_empty() {
            return Ok(());
        }
        let mut rows = AccessColumns::default();
        for (id, stored, event) in views {
            // A view of many patients is a row for each: the log is read per patient.
            let (patients, viewer_id, viewer_username, viewer_role, purpose, at) = match event {
                RecordAccessEvent::PatientRecordViewed {
                    patient_id,
                    viewer_id,
                    viewer_username,
                    viewer_role,
                    purpose,
                    at,
                } => (
                    vec![patient_id],
                    viewer_id,
                    viewer_username,
                    viewer_role,
                    purpose,
                    at,
                ),
                RecordAccessEvent::PatientRecordsViewed {
                    patient_ids,
                    viewer_id,
                    viewer_username,
                    viewer_role,
                    purpose,
                    at,
                } => (
                    patient_ids,
                    viewer_id,
                    viewer_username,
                    viewer_role,
                    purpose,
                    at,
                ),
            };
            let client_addr = stored.meta("client_addr").map(str::to_owned);
            let request_id = stored.meta("request_id").map(str::to_owned);
            for patient_id in patients {
                rows.id.push(id);
                rows.patient_id.push(patient_id);
                rows.viewer_id.push(viewer_id);
                rows.viewer_username.push(viewer_username.clone());
                rows.viewer_role.push(viewer_role.as_str().to_owned());
                rows.purpose.push(purpose.clone());
                rows.client_addr.push(client_addr.clone());
                rows.request_id.push(request_id.clone());
                rows.viewed_at.push(at);
            }
        }
        sqlx::query(
            "INSERT INTO patient_access_log (id, patient_id, viewer_id, viewer_username, viewer_role, \
                 purpose, client_addr, request_id, viewed_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                                  $6::text[], $7::text[], $8::text[], $9::timestamptz[])",
        )
        .bind(rows.id)
        .bind(rows.patient_id)
        .bind(rows.viewer_id)
        .bind(rows.viewer_username)
        .bind(rows.viewer_role)
        .bind(rows.purpose)
        .bind(rows.client_addr)
        .bind(rows.request_id)
        .bind(rows.viewed_at)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// The columns of the `patient_access_log` rows a batch adds.
#[derive(Default)]
struct AccessColumns {
    id: Vec<Uuid>,
    patient_id: Vec<Uuid>,
    viewer_id: Vec<Uuid>,
    viewer_username: Vec<String>,
    viewer_role: Vec<String>,
    purpose: Vec<String>,
    client_addr: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    viewed_at: Vec<DateTime<Utc>>,
}
