//! Wiring one index-node process together: registry, pool, services, server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_common::faults::{add_fault_service, admin_token_for_faults, FaultRegistry};
use tandem_common::internal::InternalToken;
use tandem_common::server::{serve, shutdown_signal, ServeOptions};
use tandem_common::tls::Tls;
use tandem_proto::v1::index_node_server::IndexNodeServer;
use tonic::service::interceptor::InterceptedService;
use tonic::service::RoutesBuilder;

use crate::bootstrap;
use crate::config::NodeConfig;
use crate::pool::{PoolLimits, SearchPool, Shed};
use crate::registry::ShardRegistry;
use crate::roles::Roles;
use crate::service::{IndexService, Limits};
use crate::snapshot::SnapshotStore;
use crate::writer::WriterConfig;

/// Largest gRPC message accepted: above the batch limit, so that an
/// oversized batch gets our clear INVALID_ARGUMENT rather than a transport
/// error.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Runs the node until SIGTERM / Ctrl-C, then drains.
pub async fn run(
    config: NodeConfig,
    admin_token: Option<String>,
    internal: InternalToken,
    tls: Option<Tls>,
) -> anyhow::Result<()> {
    // Installed first so that start-up (loading shards, models) is measured.
    tandem_common::telemetry::recorder()?;
    // Made at zero so that dashboards find them before the first event.
    metrics::counter!("index_shards_quarantined_total").increment(0);
    for reason in [Shed::QueueFull, Shed::QueueTimeout] {
        metrics::counter!("index_search_shed_total", "reason" => reason.reason()).increment(0);
    }
    for cross_region in ["true", "false"] {
        for name in [
            "index_replication_shipped_ops_total",
            "index_replication_shipped_bytes_total",
        ] {
            metrics::counter!(name, "cross_region" => cross_region).increment(0);
        }
    }
    let admin_token = admin_token_for_faults(config.enable_faults, admin_token)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let registry = Arc::new(ShardRegistry::new(
        &config.data_dir,
        config.max_open_shards,
        health.clone(),
        WriterConfig {
            commit_interval: Duration::from_millis(config.commit_interval_ms.max(1)),
            request_id_window: Duration::from_secs(config.request_id_window_secs),
            log_retention: Duration::from_secs(config.log_retention_secs),
        },
    ));
    let found = tokio::task::spawn_blocking({
        let registry = registry.clone();
        move || registry.scan()
    })
    .await??;
    tracing::info!(shards = found, data_dir = %config.data_dir.display(), "shards found");
    let store = SnapshotStore::open(&config.snapshot_url()?, &config.snapshot_store_options)?;
    tracing::info!(store = %store.url(), "snapshot store");
    let faults = FaultRegistry::new();
    let roles = Roles::new(
        config.node_id.clone(),
        config.region.clone(),
        config.catalog.clone(),
        registry.clone(),
        Duration::from_millis(config.max_lag_ms),
        Some(store.clone()),
        (
            internal.clone(),
            tls.clone(),
            (
                tandem_common::latency::InterRegion::from_ms(
                    config.inter_region_latency_ms,
                    config.inter_region_jitter_ms,
                ),
                faults.clone(),
            ),
        ),
    )?;
    // Leaders replay their logs before the node listens.
    roles.clone().reconcile().await?;
    tokio::spawn(
        roles
            .clone()
            .run(Duration::from_millis(config.catalog_poll_ms.max(10))),
    );
    if config.snapshot_interval_secs > 0 {
        tokio::spawn(bootstrap::schedule(
            roles.clone(),
            registry.clone(),
            store.clone(),
            Duration::from_secs(config.snapshot_interval_secs),
            config.snapshot_keep,
        ));
    }

    let service = IndexService::new(
        config.node_id.clone(),
        registry.clone(),
        roles,
        Some((store, config.snapshot_keep)),
        SearchPool::new(PoolLimits {
            workers: config.workers(),
            queue: config.search_queue,
            max_wait: Duration::from_millis(config.search_queue_timeout_ms),
        }),
        faults.clone(),
        Limits::default(),
    );
    let mut routes = RoutesBuilder::default();
    routes.add_service(InterceptedService::new(
        IndexNodeServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        internal.require(),
    ));
    add_fault_service(&mut routes, faults, admin_token, &internal);
    let options = ServeOptions {
        listen: config.listen,
        metrics_listen: config.metrics_listen,
        health_listen: config.health_listen,
        admin: None,
        tls,
        drain_grace: Duration::from_millis(config.drain_grace_ms),
        drain_timeout: Duration::from_secs(10),
        kind: "index",
        id: config.node_id.clone(),
        services: (
            &[
                tandem_proto::v1::index_node_server::SERVICE_NAME,
                tandem_proto::v1::fault_injection_server::SERVICE_NAME,
            ],
            &[],
        ),
        web: None,
    };
    let signal = shutdown_signal();
    let shutdown = async move {
        signal.await;
        registry.report_all_not_serving().await;
    };
    serve(options, routes, (health, health_service), shutdown).await
}
