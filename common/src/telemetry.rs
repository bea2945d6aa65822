//! Logs (`tracing`) and metrics (Prometheus text format on `GET /metrics`).
//!
//! The metrics endpoint is served with axum on a listener we bind ourselves
//! rather than with the exporter's built-in listener, because tests and the
//! local cluster bind port 0 and need to learn the port that was chosen.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Latency buckets (seconds) for every `*_seconds` histogram: fine-grained
/// below a millisecond because loopback searches take a few hundred µs.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the global `tracing` subscriber: log lines on stderr, filtered
/// with `RUST_LOG` (default `info`; `json`: one JSON object per line), and,
/// when an OTLP endpoint is configured, spans exported ([`crate::trace`]).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    // A second call (e.g. from tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(crate::trace::otlp_layer())
        .try_init();
}

/// The process's metrics recorder, installed on first call. Call it early
/// (inside the tokio runtime) so that metrics recorded during start-up, e.g.
/// while loading data, are not lost; [`serve_metrics`] calls it too.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    spawn_upkeep(handle.clone());
    crate::metric_help::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Serves the metrics recorder's output on `addr` at `/metrics`. Returns
/// the bound address (useful when `addr` has port 0).
///
/// Must be called inside the tokio runtime.
pub async fn serve_metrics(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let handle = recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind metrics listener on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

/// Histograms keep raw samples until upkeep folds them into buckets; without
/// it memory would grow between scrapes.
fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}
