//! `audit`: the trail of one hospital, in commit order, as a table, JSON lines, CSV or
//! FHIR R4 AuditEvent resources.
//!
//! Streaming: a producer task reads the log in batches by keyset pagination on
//! `(transaction_id, position)` (the index the log is kept in) and hands them over a
//! channel of one batch, so one batch is formatted while the next is fetched and memory
//! stays flat for any log size. No transaction stays open during the export (a long one
//! would hold back the hospital's projections, see `hms_projections::log::HORIZON`).
//!
//! Repeatability: the export stops at the log's readable horizon when it starts
//! ([`hms_projections::log::HORIZON`]), so it never skips an event committing behind it and never
//! includes one that commits during the export; and the output contains nothing but the
//! events (no clock, no host), with object keys in a fixed order. The same query on the
//! same log gives the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::SecondsFormat;
use hms_app::state::Platform;
use hms_projections::log::{self, LogCursor, LogFilter};
use hms_projections::StoredEvent;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::cli::{AuditArgs, AuditFormat};
use crate::redact::{is_secret_key, redact};
use crate::{tenant, Outcome, Result};

/// Events per fetch. With the channel holding one batch, at most three batches are in
/// memory (being fetched, waiting, being written): a few megabytes.
const BATCH: i64 = 1000;

/// Longest summary, in characters.
const SUMMARY_CHARS: usize = 240;

pub async fn run(
    platform: &Platform,
    args: &AuditArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let tenant = tenant::open(platform, &args.hospital).await?;
    let result = match &args.output {
        Some(path) => export_to_file(&tenant, args, path).await,
        None => export(&tenant, args, out).await.map(drop),
    };
    tenant.close().await;
    result.map(|()| Outcome::Clean)
}

/// Writes to `FILE.partial`, then renames it to `FILE`: a file with the final name is
/// always a complete export.
async fn export_to_file(pool: &PgPool, args: &AuditArgs, path: &Path) -> Result<()> {
    let partial = crate::output::partial_path(path);
    let mut file = BufWriter::with_capacity(1 << 18, File::create(&partial)?);
    let result = async {
        export(pool, args, &mut file).await?;
        file.flush()?;
        Ok(())
    }
    .await;
    drop(file);
    match result {
        Ok(()) => Ok(std::fs::rename(&partial, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Streams the events `args` selects to `out`; returns how many were written.
pub async fn export(pool: &PgPool, args: &AuditArgs, out: &mut (dyn Write + Send)) -> Result<u64> {
    let filter = log_filter(args);
    let horizon = log::read_horizon(&mut *pool.acquire().await?).await?;
    let (tx, mut rx) = mpsc::channel(1);
    let producer = tokio::spawn(produce(pool.clone(), filter, horizon, tx));
    let mut buf = Vec::with_capacity(4096);
    header(args.format, &mut buf);
    out.write_all(&buf)?;
    let mut count = 0u64;
    while let Some(batch) = rx.recv().await {
        for event in batch? {
            buf.clear();
            line(args.format, &args.hospital, event, &mut buf)?;
            out.write_all(&buf)?;
            count += 1;
        }
    }
    // The producer ends by closing the channel; a panic in it is a bug worth surfacing.
    if let Err(e) = producer.await {
        return Err(std::io::Error::other(format!("the log reader failed: {e}")).into());
    }
    if args.format == AuditFormat::Table {
        writeln!(out, "{count} events")?;
    }
    Ok(count)
}

async fn produce(
    pool: PgPool,
    filter: LogFilter,
    horizon: i64,
    tx: mpsc::Sender<Result<Vec<StoredEvent>>>,
) {
    let mut after = LogCursor::START;
    loop {
        let batch = fetch(&pool, &filter, after, horizon).await;
        let (done, next) = match &batch {
            Ok(events) => (
                (events.len() as i64) < BATCH,
                events.last().map(StoredEvent::cursor),
            ),
            Err(_) => (true, None),
        };
        if tx.send(batch).await.is_err() {
            return; // the consumer stopped (an output error)
        }
        match next {
            Some(cursor) if !done => after = cursor,
            _ => return,
        }
    }
}

/// One batch through the log reader, on a connection held only for it.
async fn fetch(
    pool: &PgPool,
    filter: &LogFilter,
    after: LogCursor,
    horizon: i64,
) -> Result<Vec<StoredEvent>> {
    let mut conn = pool.acquire().await?;
    Ok(log::read_filtered_batch(&mut conn, filter, after, horizon, BATCH).await?)
}

/// The log reader's filter for the command line's options.
fn log_filter(args: &AuditArgs) -> LogFilter {
    LogFilter {
        aggregate: args
            .aggregate
            .as_ref()
            .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone())),
        actor: args.actor.clone(),
        since: args.since,
        until: args.until,
        event_type: args.event_type.clone(),
    }
}

fn header(format: AuditFormat, buf: &mut Vec<u8>) {
    match format {
        AuditFormat::Table => {
            let mut s = String::new();
            table_row(
                &mut s,
                [
                    "POSITION",
                    "RECORDED (UTC)",
                    "ACTOR",
                    "ROLE",
                    "RECORD",
                    "SEQ",
                    "EVENT",
                ],
                "SUMMARY",
            );
            buf.extend_from_slice(s.as_bytes());
        }
        AuditFormat::Csv => buf.extend_from_slice(
            b"position,recorded_at,hospital,aggregate_type,aggregate_id,sequence,event_type,\
event_version,actor_id,actor_username,actor_role,request_id,client_addr,summary,payload\r\n",
        ),
        AuditFormat::Jsonl | AuditFormat::Fhir => {}
    }
}

/// One JSON line; field order is the struct's.
#[derive(Serialize)]
struct JsonLine<'a> {
    position: i64,
    recorded_at: &'a str,
    hospital: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    actor: JsonActor<'a>,
    request_id: Option<&'a str>,
    client_addr: Option<&'a str>,
    summary: &'a str,
    payload: &'a Value,
}

#[derive(Serialize)]
struct JsonActor<'a> {
    id: Option<&'a str>,
    username: Option<&'a str>,
    role: Option<&'a str>,
}

fn line(format: AuditFormat, hospital: &str, event: StoredEvent, buf: &mut Vec<u8>) -> Result<()> {
    let mut payload = event.payload_value()?;
    redact(&mut payload);
    let e = &event;
    let recorded_at = e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let summary = summarize(&e.event_type, &payload);
    match format {
        AuditFormat::Jsonl => {
            serde_json::to_writer(
                &mut *buf,
                &JsonLine {
                    position: e.position,
                    recorded_at: &recorded_at,
                    hospital,
                    aggregate_type: &e.aggregate_type,
                    aggregate_id: &e.aggregate_id,
                    sequence: e.sequence,
                    event_type: &e.event_type,
                    event_version: &e.event_version,
                    actor: JsonActor {
                        id: e.meta("actor_id"),
                        username: e.meta("actor_username"),
                        role: e.meta("actor_role"),
                    },
                    request_id: e.meta("request_id"),
                    client_addr: e.meta("client_addr"),
                    summary: &summary,
                    payload: &payload,
                },
            )?;
            buf.push(b'\n');
        }
        AuditFormat::Csv => {
            let payload = serde_json::to_string(&payload)?;
            let fields = [
                &e.position.to_string(),
                &recorded_at,
                hospital,
                &e.aggregate_type,
                &e.aggregate_id,
                &e.sequence.to_string(),
                &e.event_type,
                &e.event_version,
                e.meta("actor_id").unwrap_or_default(),
                e.meta("actor_username").unwrap_or_default(),
                e.meta("actor_role").unwrap_or_default(),
                e.meta("request_id").unwrap_or_default(),
                e.meta("client_addr").unwrap_or_default(),
                &summary,
                &payload,
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                csv_field(buf, field);
            }
            buf.extend_from_slice(b"\r\n");
        }
        AuditFormat::Table => {
            let mut s = String::with_capacity(256);
            let time = e.recorded_at.format("%Y-%m-%d %H:%M:%S").to_string();
            let record = format!("{}/{}", e.aggregate_type, e.aggregate_id);
            table_row(
                &mut s,
                [
                    &e.position.to_string(),
                    &time,
                    e.meta("actor_username").unwrap_or("?"),
                    e.meta("actor_role").unwrap_or("?"),
                    &record,
                    &e.sequence.to_string(),
                    &e.event_type,
                ],
                &summary,
            );
            buf.extend_from_slice(s.as_bytes());
        }
        AuditFormat::Fhir => {
            // `resourceType` first, as FHIR tools print it; the rest in key order.
            let rest = serde_json::to_vec(&fhir_audit_event(
                hospital,
                e,
                &payload,
                &recorded_at,
                &summary,
            ))?;
            buf.extend_from_slice(br#"{"resourceType":"AuditEvent","#);
            buf.extend_from_slice(rest.get(1..).unwrap_or_default());
            buf.push(b'\n');
        }
    }
    Ok(())
}

const TABLE_WIDTHS: [usize; 7] = [8, 19, 20, 14, 46, 4, 28];

fn table_row(out: &mut String, cells: [&str; 7], summary: &str) {
    for (i, (cell, width)) in cells.iter().zip(TABLE_WIDTHS).enumerate() {
        let cell = clip(cell, width);
        if i == 0 || i == 5 {
            out.push_str(&format!("{cell:>width$}  "));
        } else {
            out.push_str(&format!("{cell:<width$}  "));
        }
    }
    out.push_str(summary);
    out.push('\n');
}

/// RFC 4180: quote a field that holds a comma, quote or line break; double its quotes.
fn csv_field(buf: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        buf.push(b'"');
        buf.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        buf.push(b'"');
    } else {
        buf.extend_from_slice(field.as_bytes());
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A one-line, human summary: the event type in words, then the payload's simple
/// fields (nested objects one level deep, as `a.b=`), in key order; secrets and the
/// timestamps of the change itself (`at`, `created_at`, …: the recorded time is shown
/// anyway) are left out.
pub fn summarize(event_type: &str, payload: &Value) -> String {
    let mut summary = humanize(event_type);
    let body = match payload {
        Value::Object(map) if map.len() == 1 => map.values().next(),
        other => Some(other),
    };
    let mut parts = Vec::new();
    if let Some(Value::Object(fields)) = body {
        collect_fields(fields, "", 0, &mut parts);
    }
    if !parts.is_empty() {
        summary.push_str(": ");
        summary.push_str(&parts.join(", "));
    }
    clip(&summary, SUMMARY_CHARS)
}

fn collect_fields(map: &Map<String, Value>, prefix: &str, depth: usize, parts: &mut Vec<String>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        // The time of the change is the recorded time, shown anyway.
        let when = key == "at" || key.ends_with("ed_at");
        if is_secret_key(key) || (depth == 0 && when) {
            continue;
        }
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match &map[key] {
            Value::Null => {}
            Value::String(s) => parts.push(format!("{name}={}", clip(s, 60))),
            v @ (Value::Number(_) | Value::Bool(_)) => parts.push(format!("{name}={v}")),
            Value::Array(items) if items.is_empty() => {}
            Value::Array(items) => {
                let simple: Vec<String> = items
                    .iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                if simple.len() == items.len() && items.len() <= 6 {
                    parts.push(format!("{name}=[{}]", simple.join(" ")));
                } else {
                    parts.push(format!("{name}=[{} items]", items.len()));
                }
            }
            Value::Object(inner) if depth == 0 => collect_fields(inner, &name, 1, parts),
            Value::Object(_) => parts.push(format!("{name}={{…}}")),
        }
    }
}

/// `UserCreated` → `User created`.
fn humanize(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len() + 4);
    for (i, c) in event_type.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The FHIR AuditEvent `action`: `R` for a recorded read (`…Viewed`, `…Accessed`), `C`
/// for the first event of a record (it creates it), `D` for what retires a record
/// (`…Deleted`, `…Voided`, `…MergedInto`), `U` for every other change. (`E`, execute,
/// has no event in HMS today.)
pub fn fhir_action(sequence: i64, event_type: &str) -> &'static str {
    if event_type.ends_with("Viewed") || event_type.ends_with("Accessed") {
        "R"
    } else if sequence == 1 {
        "C"
    } else if ["Deleted", "Voided", "MergedInto"]
        .iter()
        .any(|s| event_type.ends_with(s))
    {
        "D"
    } else {
        "U"
    }
}

/// One event as a FHIR R4 AuditEvent, without its `resourceType` (added by the caller);
/// see the README for the mapping. Only successful changes are stored as events, so
/// `outcome` is always `0` (success).
fn fhir_audit_event(
    hospital: &str,
    e: &StoredEvent,
    payload: &Value,
    recorded: &str,
    summary: &str,
) -> Value {
    let role = e.meta("actor_role").unwrap_or("UNKNOWN");
    let mut agent = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": "humanuser",
            "display": "human user"
        }]},
        "role": [{"coding": [{"system": "urn:hms:role", "code": role}], "text": role}],
        "who": {
            "identifier": {"system": format!("urn:hms:{hospital}:user"), "value": e.meta("actor_id").unwrap_or("unknown")},
            "display": e.meta("actor_username").unwrap_or("unknown")
        },
        "requestor": true
    });
    if let Some(addr) = e.meta("client_addr") {
        agent["network"] = json!({"address": addr, "type": "2"});
    }
    let patient_entity = |id: &str| {
        json!({
            "what": {"identifier": {"system": format!("urn:hms:{hospital}:patient"), "value": id}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
            "name": format!("patient/{id}")
        })
    };
    let mut detail = vec![
        json!({"type": "event_type", "valueString": e.event_type}),
        json!({"type": "event_version", "valueString": e.event_version}),
        json!({"type": "sequence", "valueString": e.sequence.to_string()}),
        json!({"type": "position", "valueString": e.position.to_string()}),
    ];
    if let Some(request_id) = e.meta("request_id") {
        detail.push(json!({"type": "request_id", "valueString": request_id}));
    }
    // The record the event belongs to; a patient's own record is a Person/Patient.
    let mut record = if e.aggregate_type == "patient" {
        patient_entity(&e.aggregate_id)
    } else {
        json!({
            "what": {"identifier": {
                "system": format!("urn:hms:{hospital}:{}", e.aggregate_type),
                "value": e.aggregate_id
            }},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"},
            "name": format!("{}/{}", e.aggregate_type, e.aggregate_id)
        })
    };
    record["detail"] = Value::Array(detail);
    let mut entities = vec![record];
    // An event about a patient kept in another record (a view of the patient's chart,
    // an appointment, an invoice) names the patient as a second entity.
    let patient_id = payload
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|body| body.get("patient_id"))
        .and_then(Value::as_str);
    if let (Some(id), false) = (patient_id, e.aggregate_type == "patient") {
        entities.push(patient_entity(id));
    }
    json!({
        "id": format!("{}-{}", hospital.to_ascii_lowercase(), e.position),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation"
        },
        "subtype": [{"system": "urn:hms:event-type", "code": e.event_type}],
        "action": fhir_action(e.sequence, &e.event_type),
        "recorded": recorded,
        "outcome": "0",
        "outcomeDesc": summary,
        "agent": [agent],
        "source": {
            "site": hospital,
            "observer": {"display": "HMS event store"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server"
            }]
        },
        "entity": entities
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_readable_and_leave_secrets_out() {
        let payload = json!({"UserCreated": {
            "username": "alice", "role": "DOCTOR", "password_hash": "$argon2id$x",
            "department_id": null, "created_at": "2026-01-01T00:00:00Z"
        }});
        assert_eq!(
            summarize("UserCreated", &payload),
            "User created: role=DOCTOR, username=alice"
        );
        let nested =
            json!({"HospitalProfileUpdated": {"profile": {"phone": "+1555", "tags": ["a", "b"]}}});
        assert_eq!(
            summarize("HospitalProfileUpdated", &nested),
            "Hospital profile updated: profile.phone=+1555, profile.tags=[a b]"
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut buf = Vec::new();
        csv_field(&mut buf, "plain");
        buf.push(b',');
        csv_field(&mut buf, "a \"b\", c");
        assert_eq!(String::from_utf8_lossy(&buf), "plain,\"a \"\"b\"\", c\"");
    }

    #[test]
    fn fhir_actions_follow_the_documented_rule() {
        assert_eq!(fhir_action(1, "UserCreated"), "C");
        assert_eq!(fhir_action(2, "PasswordChanged"), "U");
        assert_eq!(fhir_action(4, "InvoiceVoided"), "D");
        assert_eq!(fhir_action(3, "PatientRecordViewed"), "R");
    }
}
