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
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use hms_app::state::AppState;
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
    telemetry::sample(&state.platform).await;
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
