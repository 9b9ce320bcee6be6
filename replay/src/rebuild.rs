//! `hms-replay rebuild`: rebuilds read models through the projections library (the
//! projectors' own code, into fresh tables, then an atomic swap), with a progress bar
//! and a summary. Resumable: an interrupted rebuild keeps its fresh tables and
//! checkpoint, and the next run continues from there.

use std::io::Write;
use std::time::{Duration, Instant};

use hms_app::state::Platform;
use hms_projections::rebuild::{self, RebuildProgress};
use hms_projections::{ProjectionError, Projector};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::RebuildArgs;
use crate::{tenant, Outcome, Result};

pub async fn run(
    platform: &Platform,
    args: &RebuildArgs,
    out: &mut (dyn Write + Send),
) -> Result<Outcome> {
    let codes = match &args.hospital {
        Some(code) => vec![code.clone()],
        None => tenant::all_codes(platform).await?,
    };
    let projectors: Vec<&dyn Projector> = match &args.projection {
        Some(name) => {
            let p = platform
                .runner
                .projector(name)
                .ok_or_else(|| ProjectionError::UnknownProjector(name.clone()))?;
            vec![p]
        }
        None => platform.runner.rebuildable(),
    };
    let started = Instant::now();
    let mut total = 0u64;
    for code in &codes {
        let tenant = tenant::open(platform, code).await?;
        let events = {
            let mut conn = tenant.acquire().await?;
            hms_projections::log::event_count(&mut conn).await?
        };
        for projector in &projectors {
            let bar = progress_bar(
                args.quiet,
                u64::try_from(events).unwrap_or(0),
                code,
                projector.name(),
            );
            let mut on_progress = |p: RebuildProgress| bar.set_position(p.applied);
            let report =
                rebuild::rebuild(&tenant, *projector, args.restart, &mut on_progress).await;
            bar.finish_and_clear();
            let report = report?;
            total += report.applied;
            writeln!(
                out,
                "{code} {}: {} event(s) applied{}, tables swapped",
                report.projector,
                report.applied,
                if report.resumed { " (resumed)" } else { "" }
            )?;
        }
        tenant.close().await;
    }
    let elapsed = started.elapsed();
    writeln!(
        out,
        "rebuilt {} read model(s) in {} hospital(s): {total} event(s) in {:.1}s ({:.0} events/s)",
        projectors.len(),
        codes.len(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    Ok(Outcome::Clean)
}

fn progress_bar(quiet: bool, len: u64, code: &str, projector: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} events {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{code} {projector}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
