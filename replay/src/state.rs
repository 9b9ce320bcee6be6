//! `state`: one record as it was at an instant (`--as-of`, by the database's
//! `recorded_at`) or right after its event number N (`--at-sequence`). The stream is
//! decoded through the domain's upcasters and folded with the aggregate's own `apply`,
//! so the answer is what the system itself believed then. Streams are short by design
//! (see DESIGN.md), so the stream is read whole.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use hms_app::state::Platform;
use hms_app::usecases::audit::{state_as_of, AsOf, StateAsOf};
use serde::Serialize;
use serde_json::Value;

use crate::cli::StateArgs;
use crate::redact::redact;
use crate::{kinds, tenant, Outcome, ReplayError, Result};

/// The printed document; field order is fixed so output is stable.
#[derive(Debug, Serialize)]
pub struct StateView {
    pub hospital: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The last event applied.
    pub sequence: i64,
    pub position: i64,
    pub recorded_at: String,
    /// The instant asked for, if any.
    pub as_of: Option<String>,
    /// The aggregate's state as the domain serializes it, secrets redacted.
    pub state: Value,
}

pub async fn run(
    platform: &Platform,
    args: &StateArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let view = state_of(platform, args).await?;
    serde_json::to_writer_pretty(&mut *out, &view)?;
    writeln!(out)?;
    Ok(Outcome::Clean)
}

/// Rebuilds the record named by `args`, with the application's one "state as of"
/// ([`hms_app::usecases::audit::state_as_of`], which the API's `patientAsOf` uses too).
pub async fn state_of(platform: &Platform, args: &StateArgs) -> Result<StateView> {
    let aggregate = &args.aggregate;
    let kind = kinds::find_or_err(&aggregate.aggregate_type)?;
    let point = match (args.as_of, args.at_sequence) {
        (_, Some(n)) => AsOf::Sequence(n),
        (Some(t), None) => AsOf::Instant(t),
        (None, None) => AsOf::Latest,
    };
    let tenant = tenant::open(platform, &args.hospital).await?;
    let outcome = state_as_of(
        &tenant,
        &aggregate.aggregate_type,
        &aggregate.aggregate_id,
        point,
        |events| (kind.fold)(events, &hms_domain::upcasters()),
    )
    .await;
    tenant.close().await;
    let found = match outcome? {
        StateAsOf::Unknown => {
            return Err(ReplayError::NotFound(format!(
                "{} has no events in hospital {}",
                aggregate, args.hospital
            )))
        }
        StateAsOf::NotYet => {
            return Err(ReplayError::NotFound(match args.as_of {
                Some(t) => format!("{aggregate} did not exist yet at {}", rfc3339(t)),
                None => format!("{aggregate} has no event number {:?}", args.at_sequence),
            }))
        }
        StateAsOf::Found(found) => found,
    };
    let mut state = found.state;
    redact(&mut state);
    Ok(StateView {
        hospital: args.hospital.clone(),
        aggregate_type: aggregate.aggregate_type.clone(),
        aggregate_id: aggregate.aggregate_id.clone(),
        sequence: found.sequence,
        position: found.position,
        recorded_at: rfc3339(found.recorded_at),
        as_of: args.as_of.map(rfc3339),
        state,
    })
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
