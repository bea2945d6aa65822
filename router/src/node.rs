//! Wiring one router process together: catalog, state, background tasks
//! (catalog watch, health probes), the public and admin services, server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_common::internal::InternalToken;
use tandem_common::server::{serve, shutdown_signal, ServeOptions};
use tandem_common::tls::Tls;
use tandem_proto::v1::documents_server::DocumentsServer;
use tandem_proto::v1::events_server::EventsServer;
use tandem_proto::v1::router_admin_server::RouterAdminServer;
use tandem_proto::v1::search_server::SearchServer;
use tonic::service::RoutesBuilder;

use crate::admin::AdminService;
use crate::admission::{Checks, Gate};
use crate::catalog::Catalog;
use crate::config::{ms, RouterConfig};
use crate::documents::DocumentsService;
use crate::events::service::EventsService;
use crate::probe::probe_round;
use crate::service::SearchService;
use crate::state::RouterState;
use crate::watch::watch_catalog;

/// Runs the router until SIGTERM / Ctrl-C, then drains.
pub async fn run(
    config: RouterConfig,
    admin_token: Option<String>,
    internal: InternalToken,
    tls: Option<Tls>,
) -> anyhow::Result<()> {
    // Installed first so that start-up (loading shards, models) is measured.
    tandem_common::telemetry::recorder()?;
    let catalog = match &config.catalog {
        Some(path) => Catalog::read_source(path, config.catalog_keys.as_deref())
            .and_then(|bytes| Catalog::parse(&bytes))
            .with_context(|| format!("cannot start with catalog {}", path.display()))?,
        None => anyhow::bail!(
            "no catalog: start the router with --catalog FILE (or `catalog = \"FILE\"` in \
             --config). `tandem dev` writes one for its cluster; catalog/catalog.example.toml \
             is a documented example to start from (docs/architecture.md, \"The catalog\")"
        ),
    };
    tracing::info!(version = %catalog.version(), tenants = catalog.tenant_count(), "catalog loaded");
    let state = Arc::new(RouterState::new(
        config.clone(),
        catalog,
        (internal, tls.clone()),
    )?);

    register_series(&state.catalog.current());
    tokio::spawn(watch_catalog(state.clone()));
    tokio::spawn(probe_loop(state.clone()));
    tokio::spawn(crate::events::Events::ship_forever(state.clone()));
    if let Some(auto) = state.auto_dial.clone() {
        tokio::spawn(crate::auto_dial::run(state.clone(), auto));
    }
    if config.dns_recheck_ms > 0 {
        let state = state.clone();
        tokio::spawn(async move {
            let every = ms(state.config.dns_recheck_ms);
            crate::channels::recheck_names_forever(&state.resilience.channels, every).await
        });
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut routes = RoutesBuilder::default();
    let gate = |checks| (state.clone(), checks);
    routes.add_service(Gate::new(
        SearchServer::new(SearchService::new(state.clone())),
        gate(Checks::Search),
    ));
    routes.add_service(Gate::new(
        DocumentsServer::new(DocumentsService::new(state.clone())),
        gate(Checks::Key),
    ));
    routes.add_service(Gate::new(
        EventsServer::new(EventsService::new(state.clone())),
        gate(Checks::Key),
    ));
    let admin = match (admin_token.filter(|t| !t.is_empty()), config.admin_listen) {
        (Some(token), Some(addr)) => {
            let faults = config.enable_faults.then(|| token.clone());
            let guard = Arc::new(tandem_common::admin_guard::AdminGuard::new(token));
            // The console's pages and JSON beside the admin API.
            let mut admin =
                RoutesBuilder::from(crate::console::router(state.clone(), guard.clone()));
            admin.add_service(RouterAdminServer::new(AdminService::new(
                state.clone(),
                guard,
            )));
            tandem_common::faults::add_fault_service(
                &mut admin,
                state.faults.clone(),
                faults,
                &state.internal,
            );
            Some((addr, admin))
        }
        (None, _) => {
            tracing::warn!("no admin token: the admin API is disabled");
            None
        }
        (Some(_), None) => {
            tracing::warn!("no --admin-listen: the admin API is disabled");
            None
        }
    };
    let options = ServeOptions {
        listen: config.listen,
        metrics_listen: config.metrics_listen,
        health_listen: config.health_listen,
        admin,
        tls,
        drain_grace: ms(config.drain_grace_ms),
        drain_timeout: Duration::from_secs(10),
        kind: "router",
        id: config.router_id.clone(),
        services: (
            &[
                tandem_proto::v1::search_server::SERVICE_NAME,
                tandem_proto::v1::documents_server::SERVICE_NAME,
                tandem_proto::v1::events_server::SERVICE_NAME,
            ],
            &[tandem_proto::v1::router_admin_server::SERVICE_NAME],
        ),
        // Browsers: a preflight is answered for any tenant's allowed
        // origin (the catalog in force); each call is then checked against
        // its own tenant's (`SearchService::authorize`).
        web: Some({
            let state = state.clone();
            tandem_common::web::OriginPolicy(Arc::new(move |origin| {
                state.catalog.current().any_tenant_allows_origin(origin)
            }))
        }),
    };
    let served = serve(options, routes, (health, health_service), shutdown_signal()).await;
    // Drained: what was recorded goes to the store before the process ends.
    crate::events::Events::finish(&state, Duration::from_secs(5)).await;
    served
}

/// Probes every node each `probe_interval`, forever.
async fn probe_loop(state: Arc<RouterState>) {
    let mut tick = tokio::time::interval(ms(state.config.probe_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = ms(state.config.probe_timeout_ms.max(10));
    loop {
        tick.tick().await;
        let catalog = state.catalog.current();
        probe_round(
            &catalog,
            &state.config.router_id,
            &state.resilience,
            &state.routers,
            timeout,
            &state.internal,
        )
        .await;
        crate::probe::publish_endpoint_states(&catalog, &state.resilience);
    }
}

/// Series that only move on rare events, made at start at zero so that
/// dashboards and alerts find them before the first event (hedges between
/// every pair of regions, model degradation, forwarding).
fn register_series(catalog: &Catalog) {
    for kind in ["index", "model"] {
        for from in catalog.regions() {
            for to in catalog.regions() {
                metrics::counter!("router_hedges_total", "kind" => kind,
                    "from_region" => from.id.to_string(), "to_region" => to.id.to_string())
                .increment(0);
            }
        }
    }
    metrics::counter!("router_degraded_total", "what" => "model").increment(0);
    metrics::counter!("router_forwarded_total", "reason" => "dial_forward").increment(0);
    metrics::counter!("router_forward_failures_total").increment(0);
    metrics::counter!("router_dns_changes_total").increment(0);
    metrics::counter!("router_dns_failures_total").increment(0);
    metrics::gauge!("router_auto_dial_shifted").set(0.0);
}
