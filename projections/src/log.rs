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
///
/// Two details make that hold everywhere the expression is evaluated:
///
/// - PostgreSQL reads `pg_stat_activity` once per transaction and keeps that copy until
///   the transaction ends. A reader inside a long transaction (a catch-up batch, a
///   rebuild) would otherwise place transactions by a stale list, and count every
///   transaction started since in another database. `pg_stat_clear_snapshot()` drops the
///   copy first: the `CASE` evaluates its condition before its result, so the activity
///   is read afresh, after the clear, in the same statement (no extra round trip).
/// - On a hot standby, `pg_current_snapshot()` lists no in-flight transactions (the
///   primary's are kept elsewhere in a recovery snapshot) and `pg_stat_activity` shows
///   none of the primary's sessions, so the rule above would read up to `xmax`, past
///   transactions still running on the primary. There the plain `pg_snapshot_xmin` rule
///   holds instead (the oldest transaction the standby knows to be running).
///
/// The activity is read from `pg_stat_get_activity(NULL)`, the function under the
/// `pg_stat_activity` view, not from the view: the view's two joins (database and role
/// names, unused here) have to be expanded and planned on every new backend, which
/// measured 3.4 ms of PostgreSQL's time on a fresh connection against 1.5 ms for the
/// function (`pgbench -C`), and this expression runs in every catch-up round, the first
/// command to a hospital whose pool was cold included. The rows are the same.
pub const HORIZON: &str = "(SELECT CASE \
       WHEN pg_catalog.pg_stat_clear_snapshot() IS NULL THEN NULL::xid8 \
       WHEN pg_catalog.pg_is_in_recovery() THEN pg_snapshot_xmin(s) \
       ELSE least(pg_snapshot_xmax(s), \
       (SELECT min(x) FROM pg_snapshot_xip(s) AS x \
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(NULL) a \
                            WHERE a.backend_xid::text::bigint = x::text::bigint % 4294967296 \
                              AND a.datid <> (SELECT oid FROM pg_catalog.pg_database \
                                               WHERE datname = current_database())))) \
       END \
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
    // The cursor and the limit are read through sub-selects, whose values the planner
    // does not look into. Given as plain parameters, the estimate of "events after this
    // cursor" depended on the cursor, the cached generic plan always looked dearer than a
    // plan for the values at hand, and every round was planned afresh (0.07 ms; measured
    // in a commands bench). Now both estimates are the same and the generic plan, an
    // index scan in log order, is kept.
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM public.events \
          WHERE (transaction_id, position) > (SELECT $1::text::xid8, $2::bigint) \
            AND transaction_id < {HORIZON} \
          ORDER BY events.transaction_id, events.position \
          LIMIT (SELECT $3::bigint)"
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

/// The log cursor of the newest committed event, whether or not readers may see it yet.
/// A reader that must see everything committed before it started waits for it.
pub async fn log_head(conn: &mut PgConnection) -> Result<Option<LogCursor>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM public.events \
          ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(transaction_id, position)| LogCursor {
        transaction_id,
        position,
    }))
}

/// Every event of one aggregate stream in sequence order (for history and as-of views),
/// with sealed personal data opened (or erased).
pub async fn read_stream(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM public.events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    let mut events = sqlx::query_as::<_, StoredEvent>(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&mut *conn)
        .await?;
    crate::personal::unseal_stored(conn, &mut events).await?;
    Ok(events)
}

/// The readable horizon ([`HORIZON`]) now, as a transaction id: a reader that stops
/// there repeats itself exactly, whatever commits meanwhile.
pub async fn read_horizon(conn: &mut PgConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar(&format!("SELECT {HORIZON}::text::bigint"))
            .fetch_one(conn)
            .await?,
    )
}

/// What an export of the log selects; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// One record: its aggregate type and id.
    pub aggregate: Option<(String, String)>,
    /// A user id or a username (any case).
    pub actor: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
}

/// Up to `limit` events after `after` and below `horizon` (from [`read_horizon`], taken
/// once when the reading starts) that match `filter`, in commit order. Only fixed SQL
/// fragments are concatenated; every value is a bind parameter, and only the filters
/// given appear, so each shape of query keeps its own plan.
pub async fn read_filtered_batch(
    conn: &mut PgConnection,
    filter: &LogFilter,
    after: LogCursor,
    horizon: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    enum Bind<'a> {
        Text(&'a str),
        Time(DateTime<Utc>),
    }
    let mut sql = format!(
        "SELECT {SELECT_COLUMNS} FROM public.events \
          WHERE (transaction_id, position) > ($1::text::xid8, $2) \
            AND transaction_id < $3::text::xid8"
    );
    /// Appends `fragment` with its `?` numbered after the fixed parameters.
    fn add<'a>(sql: &mut String, binds: &mut Vec<Bind<'a>>, fragment: &str, bind: Bind<'a>) {
        binds.push(bind);
        sql.push_str(&fragment.replace('?', &format!("${}", binds.len() + 4)));
    }
    let mut binds = Vec::new();
    let binds = &mut binds;
    if let Some((aggregate_type, aggregate_id)) = &filter.aggregate {
        add(
            &mut sql,
            binds,
            " AND aggregate_type = ?",
            Bind::Text(aggregate_type),
        );
        add(
            &mut sql,
            binds,
            " AND aggregate_id = ?",
            Bind::Text(aggregate_id),
        );
    }
    if let Some(actor) = &filter.actor {
        add(
            &mut sql,
            binds,
            " AND (metadata->>'actor_id' = ? OR lower(metadata->>'actor_username') = lower(?))",
            Bind::Text(actor),
        );
    }
    if let Some(since) = filter.since {
        add(&mut sql, binds, " AND recorded_at >= ?", Bind::Time(since));
    }
    if let Some(until) = filter.until {
        add(&mut sql, binds, " AND recorded_at < ?", Bind::Time(until));
    }
    if let Some(event_type) = &filter.event_type {
        add(
            &mut sql,
            binds,
            " AND event_type = ?",
            Bind::Text(event_type),
        );
    }
    // Qualified: a bare `transaction_id` would name the bigint output column, and
    // sorting by that cannot use the log's index (every batch would sort the rest of
    // the log).
    sql.push_str(" ORDER BY events.transaction_id, events.position LIMIT $4");
    let mut query = sqlx::query_as::<_, StoredEvent>(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(horizon.to_string())
        .bind(limit);
    for bind in binds.drain(..) {
        query = match bind {
            Bind::Text(s) => query.bind(s),
            Bind::Time(t) => query.bind(t),
        };
    }
    let mut events = query.fetch_all(&mut *conn).await?;
    crate::personal::unseal_stored(conn, &mut events).await?;
    Ok(events)
}

/// Filters of the audit trail (the audit index joined with the log); all optional,
/// combined with AND.
#[derive(Debug, Clone, Default)]
pub struct TrailFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub actor_id: Option<uuid::Uuid>,
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// One event of the audit trail: the audit index's columns with the payload and
/// metadata from the log.
#[derive(Debug, Clone, FromRow)]
pub struct TrailEvent {
    pub position: i64,
    pub transaction_id: i64,
    pub recorded_at: DateTime<Utc>,
    pub actor_id: Option<uuid::Uuid>,
    pub actor_username: Option<String>,
    pub actor_role: Option<String>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// Up to `limit` events of the audit trail after `after` (the start when `None`) that
/// match `filter`, in commit order. It reads what the audit index has indexed, so it
/// needs no horizon of its own.
///
/// One record's trail is found through the events table's primary key, and each of its
/// audit rows through the audit index's (transaction_id, position) key; the other
/// filters go through the audit index's own indexes.
pub async fn read_audit_trail(
    conn: &mut PgConnection,
    filter: &TrailFilter,
    after: Option<LogCursor>,
    limit: i64,
) -> Result<Vec<TrailEvent>> {
    let after = after.unwrap_or(LogCursor {
        transaction_id: -1,
        position: -1,
    });
    let mut rows: Vec<TrailEvent> = sqlx::query_as(
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
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(&filter.aggregate_type)
    .bind(&filter.aggregate_id)
    .bind(filter.actor_id)
    .bind(&filter.event_type)
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    open_trail(conn, &mut rows).await?;
    Ok(rows)
}

/// Opens the sealed personal data of trail events (one key query for the page).
async fn open_trail(conn: &mut PgConnection, rows: &mut [TrailEvent]) -> Result<()> {
    let mut patients = Vec::new();
    for row in rows.iter_mut() {
        patients.extend(crate::personal::sealed_patients(&mut row.payload));
    }
    if patients.is_empty() {
        return Ok(());
    }
    let keys = crate::personal::Keys::load(conn, patients).await?;
    for row in rows.iter_mut() {
        let record = crate::personal::Record {
            aggregate_type: &row.aggregate_type,
            aggregate_id: &row.aggregate_id,
            sequence: row.sequence,
            event_type: &row.event_type,
        };
        keys.unseal(record, &mut row.payload)?;
    }
    Ok(())
}

/// The version of one aggregate stream: the sequence of its newest event, 0 for none.
pub async fn stream_version(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM public.events \
          WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(conn)
    .await?)
}

/// How many events the log holds (a progress bar's total).
pub async fn event_count(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(conn)
        .await?)
}

/// When the newest event in commit order was recorded (the log's last activity), if any.
pub async fn last_recorded_at(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT recorded_at FROM public.events \
          ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?)
}

/// An event whose sequence does not follow its stream's previous one.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SequenceGap {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    /// The stream's previous sequence; `None` for its first event.
    pub prev: Option<i64>,
}

/// Every event whose sequence breaks its stream's 1, 2, 3… run, in position order; the
/// database walks the primary key and returns only the offenders.
pub async fn sequence_gaps(conn: &mut PgConnection) -> Result<Vec<SequenceGap>> {
    Ok(sqlx::query_as(
        "SELECT position, aggregate_type, aggregate_id, sequence, prev FROM ( \
            SELECT position, aggregate_type, aggregate_id, sequence, \
                   lag(sequence) OVER (PARTITION BY aggregate_type, aggregate_id \
                                       ORDER BY sequence) AS prev \
              FROM public.events) AS s \
          WHERE (prev IS NULL AND sequence <> 1) OR (prev IS NOT NULL AND sequence <> prev + 1) \
          ORDER BY position",
    )
    .fetch_all(conn)
    .await?)
}
