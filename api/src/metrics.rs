//! `GET /metrics` in the Prometheus text format: one recorder per process (the `metrics`
//! facade's global one), the figures named in [`hms_app::telemetry`]. Gauges that
//! describe the present (connections, spares, lag) are measured at scrape time.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use hms_app::state::{AppState, Platform};
use hms_app::telemetry;

/// Request latencies, in seconds: from a cached read to a request at its timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Onboarding takes seconds (a database is copied and migrated).
const PROVISIONING_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// A gauge not set for this long is dropped: a hospital whose pool closed here stops
/// being reported (its lag is measured where it is served).
const STALE_GAUGE: Duration = Duration::from_secs(300);

/// The process's recorder, installed on first use. `None` if another recorder was
/// installed first (then nothing is exported, and the server says so once).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(telemetry::REQUEST_DURATION.to_owned()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(telemetry::PROVISIONING_DURATION.to_owned()),
                        PROVISIONING_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(telemetry::SPARE_DURATION.to_owned()),
                        PROVISIONING_BUCKETS,
                    )
                })
                .map(|b| b.idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE)))
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    telemetry::describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are not exported");
                    None
                }
            }
        })
        .as_ref()
}

/// A router with only `/metrics`, for a listener of its own (`--metrics-listen`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let Some(handle) = recorder() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            "metrics are not exported by this process\n".to_owned(),
        );
    };
    sample(&state.platform).await;
    handle.run_upkeep();
    (
        axum::http::StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
}

/// Lag queries run at once during a scrape.
const LAG_CONCURRENCY: usize = 8;

/// Brings the gauges that describe the present up to date, just before a scrape reads
/// them: connections per pool, spare databases, and the lag of every hospital whose pool
/// is open here (one query each; a hospital that cannot be reached keeps its last
/// figures, which the exporter drops once they are stale).
async fn sample(platform: &Platform) {
    let control = &platform.control;
    let idle = u32::try_from(control.num_idle()).unwrap_or(u32::MAX);
    telemetry::connections(
        "platform",
        control.size(),
        control.size().saturating_sub(idle),
        control.options().get_max_connections(),
    );
    let tenants = platform.registry.usage();
    telemetry::connections(
        "tenants",
        tenants.connections,
        tenants.in_use,
        tenants.budget,
    );
    telemetry::tenant_pools_open(tenants.pools);
    for (server, usage) in platform.registry.usage_by_server() {
        telemetry::server_connections(&server, usage.connections, usage.in_use, usage.budget);
    }
    match platform.provisioner().spare_databases().await {
        Ok(spares) => telemetry::spare_databases(spares.len()),
        Err(e) => tracing::warn!(error = %e, "could not count the spare databases"),
    }
    futures::stream::iter(platform.registry.open_codes())
        .for_each_concurrent(LAG_CONCURRENCY, |code| async move {
            let Ok(lease) = platform.registry.get(&code).await else {
                return;
            };
            match platform.runner.lag(&lease.pool).await {
                Ok(lags) => lags
                    .iter()
                    .for_each(|lag| telemetry::projection_lag(&code, lag)),
                Err(e) => tracing::warn!(code, error = %e, "could not measure the projection lag"),
            }
        })
        .await;
}
