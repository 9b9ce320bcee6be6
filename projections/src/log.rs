//! Reading the event log of one tenant in commit order.
//!
//! `position` values are handed out when a row is inserted but become visible when the
//! transaction commits, so they commit out of order: a reader that remembered "the
//! largest position seen" would skip a slower transaction's events forever. Instead the
//! log is read in `(transaction_id, position)` order and only up to the oldest
//! transaction still in flight that could write to this database (see [`HORIZON`]):
//! everything below it has either committed or rolled back, so nothing can appear behind
//! the cursor later.

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use std::sync::OnceLock;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, Row};

use crate::{ProjectionError, Result};

/// A place in the log: the last event read. The start of the log is `LogCursor::START`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogCursor {
    pub transaction_id: i64,
    pub position: i64,
}

impl LogCursor {
    pub const START: LogCursor = LogCursor {
        transaction_id: 0,
        position: 0,
    };
}

/// One row of the `events` table, as the read side sees it.
///
/// `payload` and `metadata` are kept as the JSON text PostgreSQL renders for the stored
/// `jsonb` (object keys sorted and unique, fixed separators): each reader parses only
/// what it needs, straight into its own types, and the sealer hashes the text as it is.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
    /// `metadata` parsed, on first use of [`StoredEvent::meta`].
    parsed_metadata: OnceLock<Map<String, Value>>,
}

impl<'r> FromRow<'r, PgRow> for StoredEvent {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let Json(payload) = row.try_get("payload")?;
        let Json(metadata) = row.try_get("metadata")?;
        Ok(Self {
            position: row.try_get("position")?,
            transaction_id: row.try_get("transaction_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload,
            metadata,
            recorded_at: row.try_get("recorded_at")?,
            parsed_metadata: OnceLock::new(),
        })
    }
}

impl StoredEvent {
    /// An event built in memory, for unit tests.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        position: i64,
        transaction_id: i64,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        sequence: i64,
        event_type: impl Into<String>,
        event_version: impl Into<String>,
        payload: &Value,
        metadata: &Value,
        recorded_at: DateTime<Utc>,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            position,
            transaction_id,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence,
            event_type: event_type.into(),
            event_version: event_version.into(),
            payload: serde_json::value::to_raw_value(payload)?,
            metadata: serde_json::value::to_raw_value(metadata)?,
            recorded_at,
            parsed_metadata: OnceLock::new(),
        })
    }

    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    /// The payload as a JSON value (for tools that show or redact it).
    pub fn payload_value(&self) -> Result<Value> {
        serde_json::from_str(self.payload.get()).map_err(|source| self.decode_error(source))
    }

    /// Decodes the payload as an event of aggregate `A`, upcasting older versions first.
    pub fn decode<A: Aggregate>(&self, upcasters: &[Box<dyn EventUpcaster>]) -> Result<A::Event> {
        if !upcasters
            .iter()
            .any(|u| u.can_upcast(&self.event_type, &self.event_version))
        {
            // The common case: the current version, parsed straight into the event type.
            return serde_json::from_str(self.payload.get())
                .map_err(|source| self.decode_error(source));
        }
        let mut serialized = SerializedEvent::new(
            self.aggregate_id.clone(),
            usize::try_from(self.sequence).unwrap_or_default(),
            self.aggregate_type.clone(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.payload_value()?,
            Value::Null,
        );
        for upcaster in upcasters {
            if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
                serialized = upcaster.upcast(serialized);
            }
        }
        serde_json::from_value(serialized.payload).map_err(|source| self.decode_error(source))
    }

    fn decode_error(&self, source: serde_json::Error) -> ProjectionError {
        ProjectionError::Decode {
            position: self.position,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            source,
        }
    }

    /// A metadata value written by the command path (see `hms_domain::EventMetadata`).
    /// Metadata that is not a JSON object has no values.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.parsed_metadata
            .get_or_init(|| serde_json::from_str(self.metadata.get()).unwrap_or_default())
            .get(key)
            .and_then(Value::as_str)
    }
}

/// The readable horizon of this tenant's log, as an SQL expression of type `xid8`: no
/// event with a smaller `transaction_id` can still appear.
///
/// Transaction ids are cluster-wide, so the plain `pg_snapshot_xmin` would let any long
/// transaction on the server (another tenant's rebuild, a migration, a `CREATE DATABASE`)
/// stall every tenant's read side. A transaction can only write to the database it is
/// connected to, so the in-flight transactions `pg_stat_activity` shows in *other*
/// databases are left out. One it cannot place (a prepared transaction, a session whose
/// row is hidden from this role, one that ended between the two looks) still counts, so
/// the horizon is never later than it may be. Transactions that start after the snapshot
/// get ids at or above its `xmax`.
pub const HORIZON: &str = "(SELECT least(pg_snapshot_xmax(s), \
       (SELECT min(x) FROM pg_snapshot_xip(s) AS x \
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
                            WHERE a.backend_xid::text::bigint = x::text::bigint % 4294967296 \
                              AND a.datid <> (SELECT oid FROM pg_catalog.pg_database \
                                               WHERE datname = current_database())))) \
     FROM pg_current_snapshot() AS s)";

// xid8 has no sqlx mapping; it travels as text and is compared in SQL. A 64-bit
// transaction id will not pass i64::MAX in the lifetime of any cluster.
const SELECT_COLUMNS: &str = "position, transaction_id::text::bigint AS transaction_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at";

/// Up to `limit` events after `after`, in commit order, none from a transaction that may
/// still be in flight.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM public.events \
          WHERE (transaction_id, position) > ($1::text::xid8, $2) \
            AND transaction_id < {HORIZON} \
          ORDER BY events.transaction_id, events.position \
          LIMIT $3"
    );
    Ok(sqlx::query_as::<_, StoredEvent>(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// The log cursor of the newest event of one aggregate stream, whether or not readers
/// may see it yet. The command path uses it to wait for its own write (read-your-writes).
pub async fn stream_head(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<LogCursor>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM public.events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 \
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(transaction_id, position)| LogCursor {
        transaction_id,
        position,
    }))
}

/// Every event of one aggregate stream in sequence order (for history and as-of views).
pub async fn read_stream(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM public.events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    Ok(sqlx::query_as::<_, StoredEvent>(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(conn)
        .await?)
}
