//! `event_seals`: a tamper-evident hash chain over the event log, and its head in the
//! platform database.
//!
//! The [`LogSealer`] is an ordinary projector, so it sees the log in commit order and its
//! rows move with its checkpoint in one transaction: every event is sealed exactly once.
//! Seal `i` holds `SHA-256(seal_{i-1} || canonical bytes of event i)`, starting from
//! [`GENESIS`]. Anyone who changes, deletes, inserts or reorders an event row behind the
//! system's back breaks the link at that row ([`chain_hash`] recomputed from the row no
//! longer matches its seal), unless they also rewrite every later seal; that is why the
//! newest seal (the head) is also copied to the platform database by [`record_head`], a
//! different database with different access, where it can be compared with a chain
//! recomputed from the events alone.
//!
//! There is no secret key: the chain proves the log is unchanged *since the head was
//! recorded*, not who wrote it. `hms-replay verify` does the checking.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::{Projector, Result, StoredEvent};

/// The hash "before" the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// How an event's row is turned into the bytes its link hashes. Each encoding's tag is
/// hashed with every event, so two encodings never produce the same bytes. Seals keep the
/// encoding they were made with ([`SealEncodings`]), so a change of encoding never makes
/// an intact log look altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealEncoding {
    /// JSON re-serialised with sorted keys and no whitespace (seals made before v2).
    V1,
    /// JSON as PostgreSQL renders the stored `jsonb`, hashed as read.
    V2,
}

impl SealEncoding {
    /// The encoding of every seal the sealer makes now.
    pub const CURRENT: SealEncoding = SealEncoding::V2;

    fn tag(self) -> &'static [u8] {
        match self {
            SealEncoding::V1 => b"hms.event-seal.v1\0",
            SealEncoding::V2 => b"hms.event-seal.v2\0",
        }
    }

    fn from_number(n: i16) -> Option<Self> {
        match n {
            1 => Some(SealEncoding::V1),
            2 => Some(SealEncoding::V2),
            _ => None,
        }
    }
}

/// Which stretch of a tenant's chain uses which encoding (`event_seal_encodings`): each
/// entry holds from its chain index on. A chain begun under the current encoding has one
/// entry; the migration that introduced v2 recorded where an older chain switched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealEncodings(Vec<(i64, SealEncoding)>);

impl SealEncodings {
    pub async fn load(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let rows: Vec<(i64, i16)> = sqlx::query_as(
            "SELECT from_chain_index, encoding FROM public.event_seal_encodings ORDER BY from_chain_index",
        )
        .fetch_all(conn)
        .await?;
        // The table's CHECK admits only known encodings.
        Ok(Self(
            rows.into_iter()
                .filter_map(|(from, n)| SealEncoding::from_number(n).map(|e| (from, e)))
                .collect(),
        ))
    }

    /// The encoding of seal number `chain_index` (the current one where none is recorded).
    pub fn at(&self, chain_index: i64) -> SealEncoding {
        self.0
            .iter()
            .rev()
            .find(|(from, _)| *from <= chain_index)
            .map_or(SealEncoding::CURRENT, |(_, encoding)| *encoding)
    }
}

/// Seals every event of the log, in commit order, into `event_seals`.
pub struct LogSealer;

#[async_trait]
impl Projector for LogSealer {
    fn name(&self) -> &'static str {
        "seal"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_seals"]
    }

    /// Never: the seals are the evidence a rebuild from a tampered log would erase.
    fn rebuildable(&self) -> bool {
        false
    }

    /// The chain for the whole batch is computed here and written with one INSERT: one
    /// read of the head and of what is sealed already, one write.
    /// The chain covers the stored bytes, sealed personal data included.
    fn reads_personal_data(&self) -> bool {
        false
    }

    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        // Events already sealed (a replay after a checkpoint reset) are a prefix of the
        // log, since the chain follows the log: the batch's ends settle the usual cases
        // (none or all sealed), and only a batch that straddles the head looks at each.
        let probe = |positions: Vec<i64>| {
            sqlx::query_scalar::<_, i64>(
                "SELECT position FROM event_seals WHERE position = ANY($1)",
            )
            .bind(positions)
        };
        // The batch's ends and the chain's head in one statement.
        let (ends, head_index, head_position, head_hash): (
            Vec<i64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
        ) = sqlx::query_as(
            "SELECT ARRAY(SELECT position FROM event_seals WHERE position = ANY($1)), \
                    h.chain_index, h.position, h.chain_hash \
               FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
                    SELECT chain_index, position, chain_hash FROM event_seals \
                     ORDER BY chain_index DESC LIMIT 1) AS h ON true",
        )
        .bind(vec![first.position, last.position])
        .fetch_one(&mut *tx)
        .await?;
        let sealed: std::collections::HashSet<i64> = match ends.len() {
            0 => Default::default(),
            _ if ends.len() == 2 || events.len() == 1 => {
                events.iter().map(|e| e.position).collect()
            }
            _ => probe(events.iter().map(|e| e.position).collect())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect(),
        };
        let head = match (head_index, head_position, head_hash) {
            (Some(i), Some(p), Some(h)) => Some((i, p, h)),
            _ => None,
        };
        let (mut index, mut prev_position, mut prev) = match head {
            Some((i, p, h)) => (i, Some(p), to_digest(&h)),
            None => (0, None, GENESIS),
        };
        let (mut indexes, mut new_positions, mut prev_positions, mut hashes) =
            (vec![], vec![], vec![], vec![]);
        for event in events.iter().filter(|e| !sealed.contains(&e.position)) {
            let hash = chain_hash(&prev, event, SealEncoding::CURRENT);
            index += 1;
            indexes.push(index);
            new_positions.push(event.position);
            prev_positions.push(prev_position);
            hashes.push(hash.to_vec());
            prev_position = Some(event.position);
            prev = hash;
        }
        if indexes.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO event_seals (chain_index, position, prev_position, chain_hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])",
        )
        .bind(indexes)
        .bind(new_positions)
        .bind(prev_positions)
        .bind(hashes)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        // One round trip for "already sealed?" and "what is the head?": the runner may
        // replay an event after its checkpoint was reset (a restore), and a replay must
        // not change anything.
        let (already, head_index, head_position, head_hash): (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
        ) = sqlx::query_as(
            "SELECT (SELECT chain_index FROM event_seals WHERE position = $1), \
                    h.chain_index, h.position, h.chain_hash \
               FROM (SELECT 1) AS one \
               LEFT JOIN LATERAL (SELECT chain_index, position, chain_hash FROM event_seals \
                                   ORDER BY chain_index DESC LIMIT 1) AS h ON true",
        )
        .bind(event.position)
        .fetch_one(&mut *tx)
        .await?;
        if already.is_some() {
            return Ok(());
        }
        let prev = match head_hash.as_deref() {
            Some(bytes) => to_digest(bytes),
            None => GENESIS,
        };
        let hash = chain_hash(&prev, event, SealEncoding::CURRENT);
        sqlx::query(
            "INSERT INTO event_seals (chain_index, position, prev_position, chain_hash) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(head_index.unwrap_or(0) + 1)
        .bind(event.position)
        .bind(head_position)
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// A stored hash as a digest; a wrongly sized value (the table's CHECK prevents it)
/// becomes all ones, which matches nothing.
pub fn to_digest(bytes: &[u8]) -> [u8; 32] {
    <[u8; 32]>::try_from(bytes).unwrap_or([0xff; 32])
}

/// Lower-case hex, the form an auditor copies.
pub fn hex_digest(hash: &[u8]) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The link of the chain: `SHA-256(prev || canonical_bytes(event, encoding))`.
pub fn chain_hash(prev: &[u8; 32], event: &StoredEvent, encoding: SealEncoding) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical_bytes(event, encoding));
    hasher.finalize().into()
}

/// The bytes of an event row that the chain covers: every column but `transaction_id`
/// (an artefact of the cluster, not of the fact), each length-prefixed so that no two
/// rows encode alike, and `recorded_at` in microseconds (PostgreSQL's precision).
///
/// The JSON columns, under [`SealEncoding::V2`], are the text PostgreSQL renders for the
/// stored `jsonb` (`payload::text`). That text is canonical: `jsonb` keeps no formatting,
/// key order or duplicate keys, so equal values print alike, and an auditor can
/// reproduce the bytes with SQL alone; hashing it as read spares parsing every payload.
/// Under [`SealEncoding::V1`] they were re-serialised with sorted keys ([`canonical_json`]).
pub fn canonical_bytes(event: &StoredEvent, encoding: SealEncoding) -> Vec<u8> {
    let (payload, metadata) = match encoding {
        SealEncoding::V2 => (
            std::borrow::Cow::Borrowed(event.payload.get()),
            std::borrow::Cow::Borrowed(event.metadata.get()),
        ),
        SealEncoding::V1 => (
            std::borrow::Cow::Owned(reserialised(event.payload.get())),
            std::borrow::Cow::Owned(reserialised(event.metadata.get())),
        ),
    };
    let mut out = Vec::with_capacity(160 + payload.len() + metadata.len());
    out.extend_from_slice(encoding.tag());
    field(&mut out, &event.position.to_be_bytes());
    field(&mut out, event.aggregate_type.as_bytes());
    field(&mut out, event.aggregate_id.as_bytes());
    field(&mut out, &event.sequence.to_be_bytes());
    field(&mut out, event.event_type.as_bytes());
    field(&mut out, event.event_version.as_bytes());
    field(&mut out, payload.as_bytes());
    field(&mut out, metadata.as_bytes());
    field(
        &mut out,
        &event.recorded_at.timestamp_micros().to_be_bytes(),
    );
    out
}

/// JSON text in the v1 form. The text comes from PostgreSQL, so it parses; were it not
/// to, its raw form is hashed, which matches no v1 seal.
fn reserialised(json: &str) -> String {
    serde_json::from_str::<Value>(json).map_or_else(|_| json.to_owned(), |v| canonical_json(&v))
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// JSON text with object keys sorted by their UTF-8 bytes and no insignificant
/// whitespace, whatever map ordering serde_json was built with.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The newest seal of a log (or of the platform's record of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealHead {
    /// How many events are sealed: the head's place in the chain.
    pub chain_index: i64,
    pub position: i64,
    pub chain_hash: [u8; 32],
}

impl SealHead {
    /// The digest an auditor keeps: `<chain_index>:<position>:<sha256 hex>`.
    pub fn digest(&self) -> String {
        format!(
            "{}:{}:{}",
            self.chain_index,
            self.position,
            hex_digest(&self.chain_hash)
        )
    }
}

/// A head as recorded in the platform database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedHead {
    pub head: SealHead,
    pub sealed_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The tenant's seals no longer contain the head recorded earlier: its log or its
    /// seals were rewritten. The recorded head is left as it was, as evidence.
    #[error(
        "the event seals of {code} no longer contain the recorded head {recorded}; \
         found {found} (run `hms-replay verify --hospital {code}`)"
    )]
    HeadDiverged {
        code: String,
        recorded: String,
        found: String,
    },
    /// The tenant has sealed events but the platform database holds no head for it: the
    /// head row was removed (or never recorded). Recording the tenant's newest seal now
    /// would bless whatever its seals say, a rewritten chain included, so nothing is
    /// written unless an operator accepts it ([`MissingHead::Accept`]).
    #[error(
        "{code} has sealed events (newest seal {found}) but no head recorded in the platform \
         database; refusing to record one over a chain nobody can check (run `hms-replay \
         verify --hospital {code}`, then `hms-replay seal --hospital {code} \
         --accept-missing-head` if the log is known to be good)"
    )]
    HeadMissing { code: String, found: String },
}

/// What [`record_head`] does when the platform database holds no head for a tenant
/// whose events are sealed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingHead {
    /// Refuse ([`SealError::HeadMissing`]): the server, after its catch-ups.
    Refuse,
    /// Record the tenant's newest seal as the first head: provisioning (the hospital was
    /// just created, its first events sealed by this process) and an operator who says so
    /// (`hms-replay seal --accept-missing-head`).
    Accept,
}

/// The newest row of `event_seals` in a tenant database.
pub async fn sealed_head(conn: &mut PgConnection) -> Result<Option<SealHead>, sqlx::Error> {
    let row: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT chain_index, position, chain_hash FROM public.event_seals \
          ORDER BY chain_index DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(chain_index, position, hash)| SealHead {
        chain_index,
        position,
        chain_hash: to_digest(&hash),
    }))
}

/// The chain recomputed from the events alone, in commit order, at each of `indexes`
/// (the chain indexes wanted, any order): what the seals there must hold if no event was
/// changed. `None` where the log holds fewer events. Reads no further than the largest.
pub async fn recompute_chain_at(
    conn: &mut PgConnection,
    indexes: &[i64],
) -> Result<Vec<Option<SealHead>>> {
    let Some(&last) = indexes.iter().max() else {
        return Ok(Vec::new());
    };
    let encodings = SealEncodings::load(conn).await?;
    let mut found = vec![None; indexes.len()];
    let mut after = crate::LogCursor::START;
    let mut chain_index = 0i64;
    let mut hash = GENESIS;
    while chain_index < last {
        let batch = crate::log::read_batch(conn, after, 2_000).await?;
        let Some(tail) = batch.last() else {
            break;
        };
        after = crate::LogCursor {
            transaction_id: tail.transaction_id,
            position: tail.position,
        };
        for event in &batch {
            chain_index += 1;
            hash = chain_hash(&hash, event, encodings.at(chain_index));
            for (slot, wanted) in found.iter_mut().zip(indexes) {
                if *wanted == chain_index {
                    *slot = Some(SealHead {
                        chain_index,
                        position: event.position,
                        chain_hash: hash,
                    });
                }
            }
            if chain_index == last {
                break;
            }
        }
    }
    Ok(found)
}

/// Parses a digest as [`SealHead::digest`] writes it (`<chain_index>:<position>:<hex>`).
pub fn parse_digest(digest: &str) -> Option<SealHead> {
    let mut parts = digest.split(':');
    let chain_index = parts.next()?.parse().ok()?;
    let position = parts.next()?.parse().ok()?;
    let hex = parts.next()?;
    if parts.next().is_some() || hex.len() != 64 {
        return None;
    }
    let mut chain_hash = [0u8; 32];
    for (i, byte) in chain_hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SealHead {
        chain_index,
        position,
        chain_hash,
    })
}

/// The head the platform database holds for hospital `code`, if any was recorded.
pub async fn recorded_head(
    control: &PgPool,
    code: &str,
) -> Result<Option<RecordedHead>, sqlx::Error> {
    let row: Option<(i64, i64, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT chain_index, position, chain_hash, sealed_at FROM tenant_log_heads WHERE code = $1",
    )
    .bind(code)
    .fetch_optional(control)
    .await?;
    Ok(
        row.map(|(chain_index, position, hash, sealed_at)| RecordedHead {
            head: SealHead {
                chain_index,
                position,
                chain_hash: to_digest(&hash),
            },
            sealed_at,
        }),
    )
}

/// Copies the tenant's newest seal into the platform database (`tenant_log_heads`), so
/// that a later rewrite of the tenant database, seals included, is detected.
///
/// Call it after the sealer has caught up. It only moves the head forward, and only if
/// the tenant's seals still contain the previously recorded head at the same place with
/// the same hash (one indexed lookup): otherwise nothing is written and
/// [`SealError::HeadDiverged`] is returned. Where no head is recorded but events are
/// sealed, `missing` decides ([`MissingHead`]). Returns the head now recorded.
pub async fn record_head(
    control: &PgPool,
    code: &str,
    tenant: &PgPool,
    missing: MissingHead,
) -> Result<Option<SealHead>, SealError> {
    // Three statements at most: the recorded head (platform), the newest seal and the
    // seal at the recorded head's place (tenant, one read), the move (platform).
    let recorded = recorded_head(control, code).await?;
    let (head, at_recorded) = {
        let mut conn = tenant.acquire().await?;
        newest_seal_and_seal_at(&mut conn, recorded.as_ref().map(|r| r.head.chain_index)).await?
    };
    if let (None, Some(head), MissingHead::Refuse) = (&recorded, &head, missing) {
        return Err(SealError::HeadMissing {
            code: code.to_owned(),
            found: head.digest(),
        });
    }
    if let Some(recorded) = recorded {
        let intact = matches!(&at_recorded, Some((position, hash))
            if *position == recorded.head.position && hash.as_slice() == recorded.head.chain_hash);
        if !intact {
            let found = match at_recorded {
                Some((position, hash)) => format!(
                    "{}:{}:{}",
                    recorded.head.chain_index,
                    position,
                    hex_digest(&hash)
                ),
                None => format!("no seal number {}", recorded.head.chain_index),
            };
            return Err(SealError::HeadDiverged {
                code: code.to_owned(),
                recorded: recorded.head.digest(),
                found,
            });
        }
        // Nothing sealed since: no write (an upsert that changes nothing still locks the
        // row and waits for its commit to reach the disk, on every idle catch-up).
        if head.is_none_or(|h| h.chain_index <= recorded.head.chain_index) {
            return Ok(Some(recorded.head));
        }
    }
    let Some(head) = head else {
        return Ok(None);
    };
    let moved: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "INSERT INTO tenant_log_heads (code, chain_index, position, chain_hash, sealed_at) \
         VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT (code) DO UPDATE \
            SET chain_index = EXCLUDED.chain_index, position = EXCLUDED.position, \
                chain_hash = EXCLUDED.chain_hash, sealed_at = EXCLUDED.sealed_at \
          WHERE tenant_log_heads.chain_index < EXCLUDED.chain_index \
         RETURNING chain_index, position, chain_hash",
    )
    .bind(code)
    .bind(head.chain_index)
    .bind(head.position)
    .bind(head.chain_hash.as_slice())
    .fetch_optional(control)
    .await?;
    match moved {
        Some((chain_index, position, hash)) => Ok(Some(SealHead {
            chain_index,
            position,
            chain_hash: to_digest(&hash),
        })),
        // Another process recorded a head at least as far meanwhile: that one stands.
        None => Ok(recorded_head(control, code).await?.map(|r| r.head)),
    }
}

/// The newest seal, and the position and hash of seal number `index` (if asked and
/// present), in one read.
async fn newest_seal_and_seal_at(
    conn: &mut PgConnection,
    index: Option<i64>,
) -> Result<(Option<SealHead>, Option<(i64, Vec<u8>)>), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Found {
        newest_index: Option<i64>,
        newest_position: Option<i64>,
        newest_hash: Option<Vec<u8>>,
        at_position: Option<i64>,
        at_hash: Option<Vec<u8>>,
    }
    let found: Found = sqlx::query_as(
        "SELECT newest.chain_index AS newest_index, newest.position AS newest_position, \
                newest.chain_hash AS newest_hash, at.position AS at_position, \
                at.chain_hash AS at_hash \
           FROM (SELECT 1) AS one \
           LEFT JOIN LATERAL (SELECT chain_index, position, chain_hash FROM public.event_seals \
                               ORDER BY chain_index DESC LIMIT 1) AS newest ON true \
           LEFT JOIN public.event_seals AS at ON at.chain_index = $1",
    )
    .bind(index)
    .fetch_one(conn)
    .await?;
    let newest = match (found.newest_index, found.newest_position, found.newest_hash) {
        (Some(chain_index), Some(position), Some(hash)) => Some(SealHead {
            chain_index,
            position,
            chain_hash: to_digest(&hash),
        }),
        _ => None,
    };
    let at = found.at_position.zip(found.at_hash);
    Ok((newest, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reads_back_as_the_head_it_was_written_from() {
        let head = SealHead {
            chain_index: 42,
            position: 4711,
            chain_hash: [0xab; 32],
        };
        assert_eq!(parse_digest(&head.digest()), Some(head));
        assert_eq!(parse_digest("42:4711:abab"), None);
        assert_eq!(parse_digest("x:1:00"), None);
        assert_eq!(parse_digest(&format!("{}:extra", head.digest())), None);
    }
    use serde_json::json;
    use SealEncoding::{V1, V2};

    fn event(payload: Value) -> StoredEvent {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap_or_default();
        let metadata = json!({"actor_id": "a", "tenant": "DMC001"});
        StoredEvent::new(
            7,
            1234,
            "user",
            "u1",
            2,
            "UserDeactivated",
            "1.0",
            &payload,
            &metadata,
            at,
        )
        .expect("JSON")
    }

    #[test]
    fn any_change_to_a_row_changes_its_link_but_transaction_id_does_not() {
        let base = event(json!({"UserDeactivated": {"at": "2026-01-01T00:00:00Z"}}));
        let h = chain_hash(&GENESIS, &base, V2);
        let mut moved = base.clone();
        moved.transaction_id = 99;
        assert_eq!(chain_hash(&GENESIS, &moved, V2), h);
        let changed = event(json!({"UserDeactivated": {"at": "2026-01-02T00:00:00Z"}}));
        assert_ne!(chain_hash(&GENESIS, &changed, V2), h);
        let mut renumbered = base.clone();
        renumbered.sequence = 3;
        assert_ne!(chain_hash(&GENESIS, &renumbered, V2), h);
        assert_ne!(
            chain_hash(&h, &base, V2),
            h,
            "the link depends on the previous hash"
        );
    }

    #[test]
    fn length_prefixes_keep_adjacent_fields_apart() {
        let mut a = event(json!({}));
        a.aggregate_type = "ab".into();
        a.aggregate_id = "c".into();
        let mut b = a.clone();
        b.aggregate_type = "a".into();
        b.aggregate_id = "bc".into();
        assert_ne!(canonical_bytes(&a, V2), canonical_bytes(&b, V2));
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes() {
        let value = json!({"b": [1, "x\"\n"], "a": {"d": null, "c": true}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":true,"d":null},"b":[1,"x\"\n"]}"#
        );
    }

    #[test]
    fn each_encoding_gives_its_own_link_and_v1_ignores_how_the_json_was_written() {
        let base = event(json!({"UserDeactivated": {"at": "2026-01-01T00:00:00Z", "by": "a"}}));
        assert_ne!(
            chain_hash(&GENESIS, &base, V1),
            chain_hash(&GENESIS, &base, V2)
        );
        let mut respaced = base.clone();
        respaced.payload = serde_json::value::RawValue::from_string(
            r#"{"UserDeactivated": {"by": "a",  "at": "2026-01-01T00:00:00Z"}}"#.to_owned(),
        )
        .expect("JSON");
        assert_eq!(canonical_bytes(&base, V1), canonical_bytes(&respaced, V1));
        assert_ne!(canonical_bytes(&base, V2), canonical_bytes(&respaced, V2));
    }

    #[test]
    fn a_chain_switches_encoding_where_recorded() {
        assert_eq!(SealEncodings(vec![]).at(1), SealEncoding::CURRENT);
        let upgraded = SealEncodings(vec![(1, V1), (8, V2)]);
        assert_eq!(
            [
                upgraded.at(1),
                upgraded.at(7),
                upgraded.at(8),
                upgraded.at(100)
            ],
            [V1, V1, V2, V2]
        );
    }
}
