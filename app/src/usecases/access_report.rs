//! The patient's access report: every access to one patient's record in a window, in a
//! form a hospital can hand to the patient — who (id, username, full name, role,
//! department), when, through which operation, what kind of access, from where, and
//! the request — grouped per UTC calendar day.
//!
//! - Reads come from the access log (`patient_access_log`, the `record_access` events
//!   projected per patient). A read under break-glass is recorded with the purpose
//!   `break-glass:<REASON>:<purpose>` and is reported as [`AccessKind::BreakGlass`].
//! - Writes come from the event log itself (the system of record, so they never lag a
//!   read model): the events of the patient's own stream, of the records of the patient
//!   (appointments, invoices, lab orders) and of the patient's day schedules. Doctors'
//!   schedules name appointments, not patients, and are left out; so are the
//!   `record_access` events, which are the reads.
//!
//! Roles are those at the time of the access; full names and departments are the staff
//! register's now. [`build_access_report`] takes a pool and no caller, so the server's
//! use case ([`patient_access_report`]: permission and the access-log record) and the
//! operator's `hms-replay access-report` build the same report.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use hms_domain::appointment::Appointment;
use hms_domain::billing::Invoice;
use hms_domain::lab::LabOrder;
use hms_domain::patient::Patient;
use hms_domain::permissions::Operation;
use hms_domain::schedule::PatientSchedule;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AppError, Result};
use crate::scope::Authorized;

/// The longest window one report covers, to bound its work.
pub const MAX_REPORT_DAYS: i64 = 366;
/// The most entries one report lists; a window holding more is refused (never cut short,
/// which would hide accesses from the patient).
pub const MAX_REPORT_ENTRIES: usize = 10_000;
/// How a break-glass read's purpose starts: `break-glass:<REASON>:<purpose>`.
pub const BREAK_GLASS_PREFIX: &str = "break-glass:";
/// The purpose under which reading a report is itself recorded.
pub const REPORT_PURPOSE: &str = "access report";

/// What kind of access an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessKind {
    Read,
    Write,
    /// A read of a record outside its care team, under a stated reason.
    BreakGlass,
}

impl AccessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Read => "READ",
            AccessKind::Write => "WRITE",
            AccessKind::BreakGlass => "BREAK_GLASS",
        }
    }
}

/// Who accessed the record. Every field is optional: an event written outside the
/// command path may lack its actor, and an account may have left the staff register.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accessor {
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    /// From the staff register now.
    pub full_name: Option<String>,
    /// At the time of the access.
    pub role: Option<String>,
    /// The department's name, from the staff register now.
    pub department: Option<String>,
}

/// One access to the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessReportEntry {
    /// When: the read's time, or when the database recorded the write.
    pub at: DateTime<Utc>,
    pub who: Accessor,
    /// For reads the access log's purpose (`patient`, `lab results`, …); for writes the
    /// event type (`PatientRegistered`, `ResultEntered`, …).
    pub operation: String,
    pub kind: AccessKind,
    /// The reason stated for a break-glass access.
    pub break_glass_reason: Option<String>,
    /// The client address the request came from, if known.
    pub client_addr: Option<String>,
    /// The request id, to find the request in the server log.
    pub request_id: Option<String>,
}

/// The accesses of one UTC calendar day, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessDay {
    pub date: NaiveDate,
    pub entries: Vec<AccessReportEntry>,
}

/// Every access to one patient's record in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessReport {
    pub patient_id: Uuid,
    pub mrn: String,
    /// Given, middle and family names.
    pub patient_name: String,
    /// The window's start (included).
    pub from: DateTime<Utc>,
    /// The window's end (excluded).
    pub to: DateTime<Utc>,
    /// Days with at least one access, oldest first.
    pub days: Vec<AccessDay>,
}

/// The window of a report: `to` defaults to now, `from` to [`MAX_REPORT_DAYS`] before
/// `to`. VALIDATION on `to` unless `from < to`, and on `from` for a window longer than
/// [`MAX_REPORT_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl ReportWindow {
    pub fn new(
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let longest = Duration::days(MAX_REPORT_DAYS);
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - longest);
        if from >= to {
            return Err(AppError::validation(
                "to",
                "must be after `from` (by default `to` is now)",
            ));
        }
        if to - from > longest {
            return Err(AppError::validation(
                "from",
                format!("the window must be at most {MAX_REPORT_DAYS} days"),
            ));
        }
        Ok(Self { from, to })
    }
}

/// Every access to patient `patient_id`'s record in `[from, to)` (see [`ReportWindow`]),
/// grouped per UTC day. NOT_FOUND for a patient not registered in this hospital;
/// VALIDATION for a bad window or one holding more than [`MAX_REPORT_ENTRIES`]
/// accesses. The caller is responsible for permission; the use case
/// ([`patient_access_report`]) also records the reading.
pub async fn build_access_report(
    pool: &PgPool,
    patient_id: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<AccessReport> {
    let window = ReportWindow::new(from, to, now)?;
    let patient = super::patients::find_patient(pool, patient_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut entries = reads(pool, patient_id, window).await?;
    entries.extend(writes(pool, patient_id, window).await?);
    if entries.len() > MAX_REPORT_ENTRIES {
        return Err(AppError::validation(
            "from",
            format!(
                "the window holds more than {MAX_REPORT_ENTRIES} accesses; ask for a narrower one"
            ),
        ));
    }
    name_accessors(pool, &mut entries).await?;
    // Stable: at the same instant, reads stay before writes.
    entries.sort_by_key(|e| e.at);
    Ok(AccessReport {
        patient_id,
        mrn: patient.mrn.clone(),
        patient_name: patient.full_name(),
        from: window.from,
        to: window.to,
        days: group_by_day(entries),
    })
}

/// The report on patient `patient_id` (ViewPatientAccessReport; see
/// [`build_access_report`]). Reading it is recorded in the access log under
/// [`REPORT_PURPOSE`] once it is built, so it does not list itself.
pub async fn patient_access_report(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<AccessReport> {
    auth.require(Operation::ViewPatientAccessReport)?;
    auth.derived_views_current().await;
    let report = build_access_report(auth.pool(), patient_id, from, to, auth.now).await?;
    super::patients::record_patients_viewed(auth, [patient_id], REPORT_PURPOSE).await?;
    Ok(report)
}

/// How a read's purpose is reported: its kind, the break-glass reason, the operation.
fn classify(purpose: &str) -> (AccessKind, Option<&str>, &str) {
    match purpose.strip_prefix(BREAK_GLASS_PREFIX) {
        Some(rest) => match rest.split_once(':') {
            Some((reason, operation)) => (AccessKind::BreakGlass, Some(reason), operation),
            // No operation after the reason: the purpose is kept whole.
            None => (AccessKind::BreakGlass, Some(rest), purpose),
        },
        None => (AccessKind::Read, None, purpose),
    }
}

#[derive(sqlx::FromRow)]
struct ReadRow {
    viewer_id: Uuid,
    viewer_username: String,
    viewer_role: String,
    purpose: String,
    client_addr: Option<String>,
    request_id: Option<String>,
    viewed_at: DateTime<Utc>,
}

/// The reads of the window, at most one more than [`MAX_REPORT_ENTRIES`] (enough to
/// tell that there are too many), through the access log's key.
async fn reads(
    pool: &PgPool,
    patient_id: Uuid,
    window: ReportWindow,
) -> Result<Vec<AccessReportEntry>> {
    let rows: Vec<ReadRow> = sqlx::query_as(
        "SELECT viewer_id, viewer_username, viewer_role, purpose, client_addr, request_id, \
                viewed_at \
           FROM patient_access_log \
          WHERE patient_id = $1 AND viewed_at >= $2 AND viewed_at < $3 \
          ORDER BY viewed_at, id \
          LIMIT $4",
    )
    .bind(patient_id)
    .bind(window.from)
    .bind(window.to)
    .bind(entry_limit())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (kind, reason, operation) = classify(&r.purpose);
            AccessReportEntry {
                at: r.viewed_at,
                who: Accessor {
                    user_id: Some(r.viewer_id),
                    username: Some(r.viewer_username),
                    role: Some(r.viewer_role),
                    ..Accessor::default()
                },
                operation: operation.to_owned(),
                kind,
                break_glass_reason: reason.map(str::to_owned),
                client_addr: r.client_addr,
                request_id: r.request_id,
            }
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct WriteRow {
    recorded_at: DateTime<Utc>,
    event_type: String,
    actor_id: Option<String>,
    actor_username: Option<String>,
    actor_role: Option<String>,
    client_addr: Option<String>,
    request_id: Option<String>,
}

/// The writes of the window, at most one more than [`MAX_REPORT_ENTRIES`], from the
/// event log: the patient's stream, the streams of its appointments, invoices and lab
/// orders (found through their read models), and its day schedules (`<patient>/<day>`,
/// found through the log's primary key: every such id lies between the two bounds, and
/// the prefix test keeps exactly the patient's).
async fn writes(
    pool: &PgPool,
    patient_id: Uuid,
    window: ReportWindow,
) -> Result<Vec<AccessReportEntry>> {
    let schedule_prefix = format!("{patient_id}/");
    let rows: Vec<WriteRow> = sqlx::query_as(
        "WITH streams (aggregate_type, aggregate_id) AS ( \
              SELECT $5::text, $1::uuid::text \
              UNION ALL SELECT $6, id::text FROM appointments WHERE patient_id = $1 \
              UNION ALL SELECT $7, id::text FROM invoices WHERE patient_id = $1 \
              UNION ALL SELECT $8, id::text FROM lab_orders WHERE patient_id = $1), \
         found AS ( \
              SELECT e.* FROM streams s \
                JOIN events e ON e.aggregate_type = s.aggregate_type \
                             AND e.aggregate_id = s.aggregate_id \
               WHERE e.recorded_at >= $2 AND e.recorded_at < $3 \
              UNION ALL \
              SELECT e.* FROM events e \
               WHERE e.aggregate_type = $9 \
                 AND e.aggregate_id BETWEEN $10 || '0000-00-00' AND $10 || '9999-99-99' \
                 AND starts_with(e.aggregate_id, $10) \
                 AND e.recorded_at >= $2 AND e.recorded_at < $3) \
         SELECT recorded_at, event_type, metadata->>'actor_id' AS actor_id, \
                metadata->>'actor_username' AS actor_username, \
                metadata->>'actor_role' AS actor_role, \
                metadata->>'client_addr' AS client_addr, \
                metadata->>'request_id' AS request_id \
           FROM found \
          ORDER BY recorded_at, transaction_id, position \
          LIMIT $4",
    )
    .bind(patient_id)
    .bind(window.from)
    .bind(window.to)
    .bind(entry_limit())
    .bind(Patient::TYPE)
    .bind(Appointment::TYPE)
    .bind(Invoice::TYPE)
    .bind(LabOrder::TYPE)
    .bind(PatientSchedule::TYPE)
    .bind(schedule_prefix)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AccessReportEntry {
            at: r.recorded_at,
            who: Accessor {
                user_id: r.actor_id.and_then(|id| id.parse().ok()),
                username: r.actor_username,
                role: r.actor_role,
                ..Accessor::default()
            },
            operation: r.event_type,
            kind: AccessKind::Write,
            break_glass_reason: None,
            client_addr: r.client_addr,
            request_id: r.request_id,
        })
        .collect())
}

fn entry_limit() -> i64 {
    i64::try_from(MAX_REPORT_ENTRIES).unwrap_or(i64::MAX) + 1
}

/// Fills in full names and departments from the staff register, one query for all.
async fn name_accessors(pool: &PgPool, entries: &mut [AccessReportEntry]) -> Result<()> {
    let ids: Vec<Uuid> = entries
        .iter()
        .filter_map(|e| e.who.user_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT s.id, s.full_name, d.name \
           FROM staff s LEFT JOIN departments d ON d.id = s.department_id \
          WHERE s.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let staff: HashMap<Uuid, (String, Option<String>)> = rows
        .into_iter()
        .map(|(id, name, department)| (id, (name, department)))
        .collect();
    for entry in entries {
        if let Some((name, department)) = entry.who.user_id.and_then(|id| staff.get(&id)) {
            entry.who.full_name = Some(name.clone());
            entry.who.department = department.clone();
        }
    }
    Ok(())
}

/// Entries in time order, grouped per UTC calendar day.
fn group_by_day(entries: Vec<AccessReportEntry>) -> Vec<AccessDay> {
    let mut days: Vec<AccessDay> = Vec::new();
    for entry in entries {
        let date = entry.at.date_naive();
        match days.last_mut() {
            Some(day) if day.date == date => day.entries.push(entry),
            _ => days.push(AccessDay {
                date,
                entries: vec![entry],
            }),
        }
    }
    days
}

/// The CSV header of [`to_csv`].
pub const CSV_HEADER: &str = "date,at,user_id,username,full_name,role,department,operation,\
     kind,break_glass_reason,client_addr,request_id";

/// The report as RFC 4180 CSV: a header row, then one row per entry with its day (UTC),
/// lines ending in CRLF.
pub fn to_csv(report: &AccessReport) -> String {
    let mut out = String::with_capacity(128 * (report.days.len() + 1));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for day in &report.days {
        let date = day.date.to_string();
        for e in &day.entries {
            let user_id = e.who.user_id.map(|id| id.to_string());
            let fields = [
                Some(date.as_str()),
                Some(&*e.at.to_rfc3339_opts(SecondsFormat::Micros, true)),
                user_id.as_deref(),
                e.who.username.as_deref(),
                e.who.full_name.as_deref(),
                e.who.role.as_deref(),
                e.who.department.as_deref(),
                Some(e.operation.as_str()),
                Some(e.kind.as_str()),
                e.break_glass_reason.as_deref(),
                e.client_addr.as_deref(),
                e.request_id.as_deref(),
            ];
            for (i, field) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(&mut out, field.unwrap_or_default());
            }
            out.push_str("\r\n");
        }
    }
    out
}

/// RFC 4180: quote a field that holds a comma, quote or line break; double its quotes.
fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        let _ = write!(out, "\"{}\"", field.replace('"', "\"\""));
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an RFC 3339 instant")
            .with_timezone(&Utc)
    }

    fn entry(when: &str, operation: &str, kind: AccessKind) -> AccessReportEntry {
        AccessReportEntry {
            at: at(when),
            who: Accessor {
                user_id: Some(Uuid::nil()),
                username: Some("dr.otieno".into()),
                full_name: Some("Otieno, \"Jim\"\nMD".into()),
                role: Some("DOCTOR".into()),
                department: None,
            },
            operation: operation.into(),
            kind,
            break_glass_reason: None,
            client_addr: Some("192.0.2.7".into()),
            request_id: Some("req-1".into()),
        }
    }

    fn csv_of(value: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, value);
        out
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_of("plain"), "plain");
        assert_eq!(csv_of(""), "");
        assert_eq!(csv_of("a,b"), "\"a,b\"");
        assert_eq!(csv_of("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_of("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_of("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_of("patients:summary"), "patients:summary");
    }

    #[test]
    fn the_csv_has_a_header_and_a_row_per_entry_with_its_day() {
        let mut reason = entry("2026-03-02T08:00:00Z", "patient", AccessKind::BreakGlass);
        reason.break_glass_reason = Some("EMERGENCY_TREATMENT".into());
        reason.who = Accessor::default();
        let report = AccessReport {
            patient_id: Uuid::nil(),
            mrn: "DMC001-000001".into(),
            patient_name: "Amina Wanjiru".into(),
            from: at("2026-03-01T00:00:00Z"),
            to: at("2026-03-03T00:00:00Z"),
            days: group_by_day(vec![
                entry("2026-03-01T23:59:59Z", "lab results", AccessKind::Read),
                reason,
            ]),
        };
        let csv = to_csv(&report);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        // The name's quotes are doubled and its line break stays inside the quoted field.
        assert_eq!(
            lines[1],
            "2026-03-01,2026-03-01T23:59:59.000000Z,00000000-0000-0000-0000-000000000000,\
             dr.otieno,\"Otieno, \"\"Jim\"\"\nMD\",DOCTOR,,lab results,READ,,192.0.2.7,req-1"
        );
        assert_eq!(
            lines[2],
            "2026-03-02,2026-03-02T08:00:00.000000Z,,,,,,patient,BREAK_GLASS,\
             EMERGENCY_TREATMENT,192.0.2.7,req-1"
        );
        assert_eq!(lines[3], "", "the last row ends in CRLF too");
        assert_eq!(lines.len(), 4);
        assert_eq!(CSV_HEADER.split(',').count(), 12);
    }

    #[test]
    fn break_glass_purposes_name_their_reason_and_operation() {
        assert_eq!(
            classify("break-glass:EMERGENCY_TREATMENT:patient"),
            (
                AccessKind::BreakGlass,
                Some("EMERGENCY_TREATMENT"),
                "patient"
            )
        );
        assert_eq!(
            classify("break-glass:CONSULT:patients:summary"),
            (AccessKind::BreakGlass, Some("CONSULT"), "patients:summary")
        );
        assert_eq!(
            classify("break-glass:CONSULT"),
            (
                AccessKind::BreakGlass,
                Some("CONSULT"),
                "break-glass:CONSULT"
            )
        );
        assert_eq!(
            classify("patients:summary"),
            (AccessKind::Read, None, "patients:summary")
        );
    }

    #[test]
    fn entries_are_grouped_per_utc_day_in_order() {
        let days = group_by_day(vec![
            entry("2026-03-01T00:00:00Z", "a", AccessKind::Read),
            entry("2026-03-01T23:59:59.999Z", "b", AccessKind::Write),
            entry("2026-03-04T10:00:00Z", "c", AccessKind::Read),
        ]);
        let shape: Vec<(String, Vec<&str>)> = days
            .iter()
            .map(|d| {
                (
                    d.date.to_string(),
                    d.entries.iter().map(|e| e.operation.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("2026-03-01".to_owned(), vec!["a", "b"]),
                ("2026-03-04".to_owned(), vec!["c"]),
            ]
        );
    }

    #[test]
    fn the_window_defaults_and_bounds() {
        let now = at("2026-06-01T12:00:00Z");
        let default = ReportWindow::new(None, None, now).expect("default window");
        assert_eq!(default.to, now);
        assert_eq!(default.from, now - Duration::days(MAX_REPORT_DAYS));
        let field = |r: Result<ReportWindow>| match r {
            Err(AppError::Validation { field, .. }) => field,
            other => panic!("expected VALIDATION, got {other:?}"),
        };
        assert_eq!(field(ReportWindow::new(Some(now), Some(now), now)), "to");
        assert_eq!(
            field(ReportWindow::new(
                Some(now + Duration::seconds(1)),
                None,
                now
            )),
            "to"
        );
        let too_long = now - Duration::days(MAX_REPORT_DAYS) - Duration::seconds(1);
        assert_eq!(field(ReportWindow::new(Some(too_long), None, now)), "from");
        let longest = now - Duration::days(MAX_REPORT_DAYS);
        assert!(ReportWindow::new(Some(longest), None, now).is_ok());
    }
}
