//! The HTTP port of `produce` and `consume` (`--http-listen`): Prometheus metrics on
//! `/metrics`, `/healthz` and `/readyz` for probes, and on the consumer the status page (`/`,
//! [`page`]).
//!
//! The metrics go through the `metrics` facade into `metrics-exporter-prometheus`'s recorder,
//! installed once per process; its text is rendered on each scrape.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub mod access;
pub mod page;
pub mod status;

/// Seconds: from a fast cloud call to a slow end-to-end wait.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Events per detector round.
const CHANGE_BUCKETS: &[f64] = &[0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

/// The process's Prometheus recorder, installed on first use. A gauge not set for a minute is
/// dropped, so an account that left the ten furthest behind stops being shown; every other
/// gauge is set again at least that often (the consumer's every 2 s, the producer's at each
/// scrape).
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_per_cycle".into()), CHANGE_BUCKETS)?
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(60)),
        )
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        tandem_consumer::metrics::describe();
        tandem_producer::metrics::describe();
    }
    // A recorder installed by an earlier caller wins; its handle is the one to render.
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Says whether the process is ready: connected, and assigned or leasing.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Sets gauges that must not go stale, before each scrape.
pub type Upkeep = Arc<dyn Fn() + Send + Sync>;

/// `/metrics`, `/healthz` and `/readyz`; `upkeep` runs before each scrape is rendered.
pub fn routes(metrics: PrometheusHandle, ready: Readiness, upkeep: Option<Upkeep>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (metrics, upkeep) = (metrics.clone(), upkeep.clone());
                async move {
                    if let Some(upkeep) = upkeep {
                        upkeep();
                    }
                    metrics.run_upkeep();
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                    }
                }
            }),
        )
}

/// Serves `app` on `listen` until `stop`; the address actually bound (port 0 picks one) is
/// logged with `what` and returned. `flag` names the option that asked for the port.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    stop: CancellationToken,
    (flag, what): (&str, &str),
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ({flag})"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::info!(address = %bound, "{flag} is reachable from other machines");
    }
    tracing::info!(address = %bound, "serving {what}");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP port stopped");
        }
    });
    Ok(bound)
}
