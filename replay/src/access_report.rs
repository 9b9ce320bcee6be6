//! `access-report`: every access to one patient's record in a window, built by the
//! application's own [`build_access_report`] (the server's `patientAccessReport` calls it
//! too), so the operator's copy and the API's agree entry for entry.
//!
//! The tool has no signed-in user: nothing here checks a permission, and running it is
//! not recorded in the patient's access log (the server records each reading of the
//! report by a user). Whoever can run it can already read the hospital's database.

use std::io::Write;

use chrono::Utc;
use hms_app::commands::{wait_for_log, READ_YOUR_WRITES_TIMEOUT};
use hms_app::error::AppError;
use hms_app::state::Platform;
use hms_app::usecases::access_report::{build_access_report, to_csv, AccessReport};
use serde::Serialize;

use crate::cli::{AccessReportArgs, AccessReportFormat};
use crate::{tenant, Outcome, ReplayError, Result};

/// The JSON document: the hospital, then the report's own fields.
#[derive(Serialize)]
struct HospitalReport<'a> {
    hospital: &'a str,
    #[serde(flatten)]
    report: &'a AccessReport,
}

pub async fn run(
    platform: &Platform,
    args: &AccessReportArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let report = report_of(platform, args).await?;
    let bytes = match args.format {
        AccessReportFormat::Csv => to_csv(&report).into_bytes(),
        AccessReportFormat::Json => {
            let mut bytes = serde_json::to_vec_pretty(&HospitalReport {
                hospital: &args.hospital,
                report: &report,
            })?;
            bytes.push(b'\n');
            bytes
        }
    };
    match &args.output {
        Some(path) => crate::output::write_file(path, &bytes)?,
        None => out.write_all(&bytes)?,
    }
    Ok(Outcome::Clean)
}

/// The report named by `args`, its window taken against the clock now.
pub async fn report_of(platform: &Platform, args: &AccessReportArgs) -> Result<AccessReport> {
    let tenant = tenant::open(platform, &args.hospital).await?;
    // Views are committed before a record is served, and the access log's read model
    // follows them (docs/adr/0011): it is brought up to the log's head first, so the
    // report holds every access committed before it was asked for.
    if let Err(e) = wait_for_log(&tenant, &platform.runner, READ_YOUR_WRITES_TIMEOUT).await {
        tenant.close().await;
        return Err(e.into());
    }
    let report = build_access_report(&tenant, args.patient, args.from, args.to, Utc::now()).await;
    tenant.close().await;
    report.map_err(|e| match e {
        AppError::NotFound => ReplayError::NotFound(format!(
            "patient {} is not registered in hospital {}",
            args.patient, args.hospital
        )),
        // The report's fields are the tool's flags (`from`, `to`).
        AppError::Validation { field, message } => ReplayError::InvalidArgument {
            flag: field,
            message,
        },
        other => ReplayError::App(other),
    })
}
