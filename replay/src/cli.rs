//! The command line. Platform settings (`DATABASE_URL`, `HMS_TENANT_DB_PREFIX`, …) are
//! the server's own [`PlatformConfig`], so both tools find the same hospitals.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use hms_app::config::PlatformConfig;
use sqlx::types::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "hms-replay",
    version,
    about = "HMS audit-trail tool: export the trail, rebuild a record as it was, verify the log"
)]
pub struct Cli {
    #[command(flatten)]
    pub platform: PlatformConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export a hospital's audit trail (who did what, when, to which record) in commit
    /// order. Streams: memory stays flat however long the log is, and the same query
    /// gives byte-identical output. Password hashes are redacted.
    Audit(AuditArgs),
    /// Rebuild one record (aggregate) as it was at an instant or after a given event,
    /// through the domain's own upcasters and apply, and print it as JSON.
    State(StateArgs),
    /// Check a hospital's log: every event decodes with today's code, each record's
    /// sequence runs 1, 2, 3 … without gaps, metadata is present, and the hash chain
    /// matches the events and the head recorded in the platform database. Exits with 1
    /// when anything is wrong, naming each problem's position.
    Verify(VerifyArgs),
    /// Seal events not sealed yet and record the log's head in the platform database,
    /// then print the head digest (normally the server does this after each catch-up).
    Seal(SealArgs),
    /// Rebuild read models from the log with the projectors' own code, online: fresh
    /// tables fill up while the server keeps reading the old ones, then replace them in
    /// one transaction. Interrupted (Ctrl-C), it resumes where it stopped on the next run.
    Rebuild(RebuildArgs),
    /// Export one patient's verified lab results as FHIR R4 resources (Patient,
    /// ServiceRequest, Specimen, Observation, DiagnosticReport), read from the log rather
    /// than the read models, which may lag or be rebuilding. The same log gives the same
    /// bytes; a patient with no verified result gives an empty bundle.
    FhirExport(FhirExportArgs),
    /// Every access to one patient's record in a window (at most 366 days; by default
    /// the 366 days before now), for the patient: who, when, through which operation,
    /// what kind (READ, WRITE, BREAK_GLASS), from where and the request, per UTC day. The
    /// server's `patientAccessReport` builds the same report. Run by the operator, it is
    /// not recorded in the patient's access log.
    AccessReport(AccessReportArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["hospital", "all"])))]
pub struct RebuildArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: Option<String>,
    /// Every provisioned hospital of the platform.
    #[arg(long)]
    pub all: bool,
    /// Only this read model (projector), e.g. `patients`; default: all of them.
    #[arg(long)]
    pub projection: Option<String>,
    /// Discard an unfinished earlier rebuild instead of resuming it.
    #[arg(long)]
    pub restart: bool,
    /// No progress bar (e.g. in logs).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: String,
    /// Only this record, as TYPE/ID (e.g. patient/0b6f…, user/…, hospital/DMC001).
    #[arg(long, value_parser = parse_aggregate)]
    pub aggregate: Option<AggregateRef>,
    /// Only what this user did: a user id or a username (any case).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events recorded at or after this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Only events of this type, e.g. UserCreated.
    #[arg(long = "type", value_name = "EVENT")]
    pub event_type: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
    pub format: AuditFormat,
    /// Write to this file instead of stdout (written under FILE.partial and renamed at
    /// the end, so an interrupted export never looks complete).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per event, with the (redacted) payload.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// FHIR R4 AuditEvent resources, one JSON object per line.
    Fhir,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("point").required(true).args(["as_of", "at_sequence"])))]
pub struct StateArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: String,
    /// The record, as TYPE/ID (e.g. patient/0b6f…, user/…, hospital/DMC001).
    #[arg(long, value_parser = parse_aggregate)]
    pub aggregate: AggregateRef,
    /// The record as it was at this instant: every event recorded at or before it
    /// (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<DateTime<Utc>>,
    /// The record as it was right after its event number N (1 = as created).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub at_sequence: Option<i64>,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["hospital", "all"])))]
pub struct VerifyArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: Option<String>,
    /// Every provisioned hospital of the platform.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["hospital", "all"])))]
pub struct SealArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: Option<String>,
    /// Every provisioned hospital of the platform.
    #[arg(long)]
    pub all: bool,
    /// Record the newest seal as the head of a hospital whose events are sealed but
    /// whose head is missing from the platform database (`verify` reports `head-missing`).
    /// Without it `seal` refuses: recording then would bless a rewritten chain. Use it
    /// only once the log is known to be good (e.g. against an auditor's kept digest), or
    /// once for hospitals onboarded before heads were recorded at provisioning.
    #[arg(long)]
    pub accept_missing_head: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FhirExportArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: String,
    /// The patient's id.
    #[arg(long, value_name = "UUID")]
    pub patient: Uuid,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FhirFormat::Bundle)]
    pub format: FhirFormat,
    /// Write to this file instead of stdout (written under FILE.partial and renamed at
    /// the end, so an interrupted export never looks complete).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FhirFormat {
    /// One Bundle of type `collection`.
    Bundle,
    /// One resource per line (FHIR bulk data's NDJSON), no Bundle.
    Ndjson,
}

#[derive(Debug, Clone, Args)]
pub struct AccessReportArgs {
    /// Hospital code, e.g. DMC001.
    #[arg(long)]
    pub hospital: String,
    /// The patient's id.
    #[arg(long, value_name = "UUID")]
    pub patient: Uuid,
    /// Accesses at or after this time (RFC 3339, or YYYY-MM-DD for midnight UTC);
    /// default: 366 days before `--to`.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Accesses before this time (RFC 3339, or YYYY-MM-DD for midnight UTC); default: now.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = AccessReportFormat::Csv)]
    pub format: AccessReportFormat,
    /// Write to this file instead of stdout (written under FILE.partial and renamed at
    /// the end, so an interrupted export never looks complete).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessReportFormat {
    /// RFC 4180 CSV with a header row, one row per access with its day.
    Csv,
    /// The whole report as one JSON document: the patient, the window, the days.
    Json,
}

/// A record of the log: its aggregate type and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRef {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl std::fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

fn parse_aggregate(raw: &str) -> Result<AggregateRef, String> {
    match raw.split_once('/') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok(AggregateRef {
            aggregate_type: t.to_owned(),
            aggregate_id: id.to_owned(),
        }),
        _ => Err(format!(
            "expected TYPE/ID, e.g. user/6f1d2c3a-…, got '{raw}'"
        )),
    }
}

/// RFC 3339 (`2026-11-27T10:00:00Z`, any offset), a naive date-time taken as UTC, or a
/// date meaning its midnight UTC.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "'{raw}' is not a time: use RFC 3339 (2026-11-27T10:00:00Z) or a date (2026-11-27)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn times_parse_in_the_documented_forms() {
        let t = |s| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(t("2026-11-27"), Ok("2026-11-27T00:00:00+00:00".into()));
        assert_eq!(
            t("2026-11-27T10:00:00+02:00"),
            Ok("2026-11-27T08:00:00+00:00".into())
        );
        assert_eq!(
            t("2026-11-27T10:00:00"),
            Ok("2026-11-27T10:00:00+00:00".into())
        );
        assert!(t("yesterday").is_err());
    }

    #[test]
    fn aggregates_are_type_slash_id() {
        assert_eq!(
            parse_aggregate("user/abc").map(|a| a.to_string()),
            Ok("user/abc".into())
        );
        assert!(parse_aggregate("user").is_err());
        assert!(parse_aggregate("/x").is_err());
    }

    #[test]
    fn fhir_export_takes_a_patient_and_defaults_to_a_bundle() {
        let id = "0b6f2c3a-1d2e-4f50-8a9b-0c1d2e3f4a5b";
        let cli = Cli::try_parse_from([
            "hms-replay",
            "fhir-export",
            "--hospital",
            "DMC001",
            "--patient",
            id,
        ]);
        match cli.map(|c| c.command) {
            Ok(Command::FhirExport(args)) => {
                assert_eq!(args.patient.to_string(), id);
                assert_eq!(args.format, FhirFormat::Bundle);
                assert!(args.output.is_none());
            }
            other => panic!("unexpected parse: {other:?}"),
        }
        let bad = Cli::try_parse_from([
            "hms-replay",
            "fhir-export",
            "--hospital",
            "DMC001",
            "--patient",
            "not-a-uuid",
        ]);
        assert!(bad.is_err());
    }

    #[test]
    fn access_report_takes_a_patient_and_an_optional_window() {
        let id = "0b6f2c3a-1d2e-4f50-8a9b-0c1d2e3f4a5b";
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "hms-replay",
                "access-report",
                "--hospital",
                "DMC001",
                "--patient",
                id,
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.command)
        };
        match parse(&[]) {
            Ok(Command::AccessReport(args)) => {
                assert_eq!(args.patient.to_string(), id);
                assert_eq!((args.from, args.to), (None, None));
                assert_eq!(args.format, AccessReportFormat::Csv);
                assert!(args.output.is_none());
            }
            other => panic!("unexpected parse: {other:?}"),
        }
        match parse(&[
            "--from",
            "2026-01-01",
            "--to",
            "2026-02-01T00:00:00Z",
            "--format",
            "json",
        ]) {
            Ok(Command::AccessReport(args)) => {
                assert_eq!(
                    args.from.map(|t| t.to_rfc3339()),
                    Some("2026-01-01T00:00:00+00:00".into())
                );
                assert_eq!(
                    args.to.map(|t| t.to_rfc3339()),
                    Some("2026-02-01T00:00:00+00:00".into())
                );
                assert_eq!(args.format, AccessReportFormat::Json);
            }
            other => panic!("unexpected parse: {other:?}"),
        }
        assert!(parse(&["--format", "xml"]).is_err());
        assert!(parse(&["--from", "last week"]).is_err());
    }
}
