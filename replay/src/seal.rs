//! `seal`: bring a hospital's seal up to date and record its head in the platform
//! database. The server does the same after its catch-ups (see
//! `hms_projections::projectors::seal::record_head`); this is for operators, scripts
//! and hospitals with no traffic.

use std::io::Write;

use hms_app::state::Platform;
use hms_projections::projectors::seal::{self, MissingHead, SealHead};
use hms_projections::projectors::LogSealer;
use hms_projections::ProjectionRunner;

use crate::cli::SealArgs;
use crate::{tenant, Outcome, Result};

pub async fn run(
    platform: &Platform,
    args: &SealArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let missing = if args.accept_missing_head {
        MissingHead::Accept
    } else {
        MissingHead::Refuse
    };
    for code in tenant::targets(platform, args.hospital.as_deref(), args.all).await? {
        if args.accept_missing_head
            && seal::recorded_head(&platform.control, &code)
                .await?
                .is_none()
        {
            writeln!(
                out,
                "{code}: WARNING: no head was recorded; the newest seal becomes the head on the \
                 operator's word (--accept-missing-head), unchecked against anything kept \
                 outside the hospital's database"
            )?;
        }
        let (sealed, head) = seal_tenant(platform, &code, missing).await?;
        match head {
            Some(head) => writeln!(
                out,
                "{code}: {sealed} events sealed now; head digest {}",
                head.digest()
            )?,
            None => writeln!(out, "{code}: the log is empty")?,
        }
    }
    Ok(Outcome::Clean)
}

/// Runs the sealer alone over the hospital's log (the server's runner takes the same
/// per-projector lock, so the two never seal concurrently), then records the head.
/// Returns how many events were sealed now and the head recorded. Where events are
/// sealed but no head is recorded, `missing` decides (see [`MissingHead`]).
pub async fn seal_tenant(
    platform: &Platform,
    code: &str,
    missing: MissingHead,
) -> Result<(u64, Option<SealHead>)> {
    let tenant = tenant::open(platform, code).await?;
    let result = async {
        let runner = ProjectionRunner::new(vec![Box::new(LogSealer)]);
        let progress = runner.catch_up(&tenant).await?;
        let sealed = progress.iter().map(|p| p.applied).sum();
        let head = seal::record_head(&platform.control, code, &tenant, missing).await?;
        Ok((sealed, head))
    }
    .await;
    tenant.close().await;
    result
}
