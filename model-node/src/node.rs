//! Wiring one model-node process together: store, reloader and watcher,
//! services, server. The shared plumbing (`tandem_common::server::serve`:
//! health, reflection, gRPC metrics, readiness line, graceful drain; fault
//! injection; admin auth) is the index-node's, not a copy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_common::faults::{add_fault_service, admin_token_for_faults, FaultRegistry};
use tandem_common::internal::InternalToken;
use tandem_common::server::{serve, shutdown_signal, ServeOptions};
use tandem_common::tls::Tls;
use tandem_proto::v1::model_node_server::ModelNodeServer;
use tonic::service::interceptor::InterceptedService;
use tonic::service::RoutesBuilder;

use crate::config::NodeConfig;
use crate::health::TenantHealth;
use crate::reload::{Reloader, Trigger};
use crate::service::ModelService;
use crate::store::ModelStore;

/// Runs the node until SIGTERM / Ctrl-C, then drains. Models are loaded
/// before the readiness line is printed, so "ready" means "serving the
/// models found in the model directory".
pub async fn run(
    config: NodeConfig,
    admin_token: Option<String>,
    internal: InternalToken,
    tls: Option<Tls>,
) -> anyhow::Result<()> {
    // Installed first so that start-up (loading shards, models) is measured.
    tandem_common::telemetry::recorder()?;
    let admin_token = admin_token_for_faults(config.enable_faults, admin_token)?;
    std::fs::create_dir_all(&config.model_dir)
        .with_context(|| format!("cannot create model dir {}", config.model_dir.display()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let store = Arc::new(ModelStore::new(&config.model_dir));
    let reloader = Arc::new(Reloader::new(store, TenantHealth::new(health.clone())));
    let store = match &config.model_store {
        Some(url) => Some(tandem_common::store::Store::open(
            url,
            &config.model_store_options,
        )?),
        None => None,
    };
    if let Some(store) = &store {
        // Pull before loading, so that "ready" includes published versions.
        crate::sync::pull_at_start(store, &reloader).await;
    }
    let started = std::time::Instant::now();
    let summary = reloader
        .load_all(Trigger::Startup)
        .await
        .with_context(|| format!("cannot load models from {}", config.model_dir.display()))?;
    tracing::info!(
        tenants = summary.tried,
        loaded = summary.loaded,
        failed = summary.failed,
        model_dir = %config.model_dir.display(),
        region = %config.region,
        ms = started.elapsed().as_millis() as u64,
        "models loaded"
    );

    let faults = FaultRegistry::new();
    let service = ModelService::new(config.node_id.clone(), reloader.clone(), faults.clone());
    let mut routes = RoutesBuilder::default();
    routes.add_service(InterceptedService::new(
        ModelNodeServer::new(service),
        internal.require(),
    ));
    add_fault_service(&mut routes, faults, admin_token, &internal);
    let watcher = config.watch_interval().map(|every| {
        tracing::info!(every_ms = config.watch_ms, "watching the model directory");
        tokio::spawn(reloader.clone().watch(every))
    });
    let syncer = store.map(|store| {
        let every = Duration::from_millis(config.store_poll_ms.max(10));
        tracing::info!(
            store = store.url(),
            every_ms = config.store_poll_ms,
            "pulling models"
        );
        tokio::spawn(crate::sync::sync_forever(store, reloader.clone(), every))
    });
    let options = ServeOptions {
        listen: config.listen,
        metrics_listen: config.metrics_listen,
        health_listen: config.health_listen,
        admin: None,
        tls,
        drain_grace: Duration::from_millis(config.drain_grace_ms),
        drain_timeout: Duration::from_secs(10),
        kind: "model",
        id: config.node_id.clone(),
        services: (
            &[
                tandem_proto::v1::model_node_server::SERVICE_NAME,
                tandem_proto::v1::fault_injection_server::SERVICE_NAME,
            ],
            &[],
        ),
        web: None,
    };
    let signal = shutdown_signal();
    let shutdown = async move {
        signal.await;
        for task in [watcher, syncer].into_iter().flatten() {
            task.abort();
        }
        reloader.health().report_all_not_serving().await;
    };
    serve(options, routes, (health, health_service), shutdown).await
}
