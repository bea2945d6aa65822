//! The router's admin gRPC service (`tandem.v1.RouterAdmin`): status, traffic
//! dials, catalog reload, usage per tenant. Every call needs `authorization: Bearer <admin token>`.

use std::sync::Arc;

use tandem_common::admin_guard::AdminGuard;
use tandem_proto::v1::router_admin_server::RouterAdmin;
use tandem_proto::v1::{
    CacheStats, EndpointStatus, RegionStatus, ReloadCatalogRequest, ReloadCatalogResponse,
    SetDialRequest, SetDialResponse, StatusRequest, StatusResponse, UsageRequest, UsageResponse,
};
use tonic::{Request, Response, Status};

use crate::catalog::Reload;
use crate::outlier::Health;
use crate::state::RouterState;
use crate::watch::reload_now;

/// See the module documentation.
pub struct AdminService {
    state: Arc<RouterState>,
    guard: Arc<AdminGuard>,
}

impl AdminService {
    /// The admin API over a router's state, accepting the token `guard`
    /// checks (shared with the console, so they brake together).
    pub fn new(state: Arc<RouterState>, guard: Arc<AdminGuard>) -> Self {
        Self { state, guard }
    }
}

fn health_label(health: Health) -> &'static str {
    match health {
        Health::Healthy => "healthy",
        Health::Probation { .. } => "probation",
        Health::Ejected { .. } => "ejected",
    }
}

/// Sets this router's dial of `region` (the admin API's `SetDial` and the
/// console's), logged and exported.
pub fn set_dial(state: &RouterState, region: &str, percent: u32) -> Result<(), Status> {
    let previous = state
        .dials
        .set(region, percent)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    tracing::warn!(%region, from = previous, to = percent, "traffic dial set");
    metrics::gauge!("router_dial_percent", "region" => region.to_string()).set(f64::from(percent));
    Ok(())
}

/// Builds the status page from the router's state.
pub fn status(state: &RouterState) -> StatusResponse {
    let catalog = state.catalog.current();
    let regions = catalog
        .regions()
        .iter()
        .map(|r| RegionStatus {
            name: r.id.to_string(),
            paired: r.pair.to_string(),
            dial_percent: u32::from(state.dials.get(&r.id)),
            router_healthy: r.routers.iter().any(|n| state.routers.is_up(&n.id)),
            auto_shifted: r.id == state.region
                && state.auto_dial.as_ref().is_some_and(|a| a.shifted()),
        })
        .collect();
    let ejections: std::collections::HashMap<String, u32> = state
        .resilience
        .nodes
        .snapshot()
        .into_iter()
        .map(|s| (s.key.to_string(), s.ejections))
        .collect();
    let shard_snapshots = state.resilience.shards.snapshot();
    let mut nodes: Vec<_> = catalog.nodes().collect();
    nodes.sort_by(|a, b| {
        (&a.region, a.kind.as_str(), &a.id).cmp(&(&b.region, b.kind.as_str(), &b.id))
    });
    let endpoints = nodes
        .into_iter()
        .map(|node| {
            let stats = state.resilience.stats.get(&node.id).map(|s| s.snapshot());
            let p95 = state.resilience.stats.get(&node.id).and_then(|s| s.p95());
            EndpointStatus {
                node: node.id.to_string(),
                region: node.region.to_string(),
                kind: node.kind.as_str().to_string(),
                addr: node.addr.to_string(),
                state: if node.kind == crate::catalog::NodeKind::Router {
                    if state.routers.is_up(&node.id) {
                        "healthy"
                    } else {
                        "down"
                    }
                } else {
                    health_label(state.resilience.nodes.health(&node.id))
                }
                .to_string(),
                ejections: ejections.get(&*node.id).copied().unwrap_or(0),
                ewma_micros: stats
                    .as_ref()
                    .and_then(|s| s.ewma)
                    .map_or(0, |d| d.as_micros() as u64),
                p95_micros: p95.map_or(0, |d| d.as_micros() as u64),
                in_flight: stats.as_ref().map_or(0, |s| s.in_flight),
                successes: stats.as_ref().map_or(0, |s| s.successes),
                failures: stats.as_ref().map_or(0, |s| s.failures),
                ejected_shards: shard_snapshots
                    .iter()
                    .filter(|s| s.key.node == node.id && !s.health.is_healthy())
                    .map(|s| format!("{}/{}", s.key.tenant, s.key.shard))
                    .collect(),
            }
        })
        .collect();
    let cache = state.cache.stats();
    StatusResponse {
        region: state.region.to_string(),
        router_id: state.config.router_id.clone(),
        regions,
        catalog_version: catalog.version().to_string(),
        catalog_error: state.catalog_error.load().to_string(),
        endpoints,
        cache: Some(CacheStats {
            entries: cache.entries,
            hits: cache.hits,
            misses: cache.misses,
            negative_hits: cache.negative_hits,
        }),
        retry_budget_exhausted: state.resilience.budget.exhausted_total(),
        tenants: catalog.tenant_count() as u64,
        ramps: state.ramps.snapshot(&catalog),
    }
}

#[tonic::async_trait]
impl RouterAdmin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.guard.check(request.metadata())?;
        Ok(Response::new(status(&self.state)))
    }

    async fn set_dial(
        &self,
        request: Request<SetDialRequest>,
    ) -> Result<Response<SetDialResponse>, Status> {
        self.guard.check(request.metadata())?;
        let req = request.into_inner();
        set_dial(&self.state, &req.region, req.percent)?;
        Ok(Response::new(SetDialResponse {
            region: req.region,
            percent: req.percent,
        }))
    }

    async fn usage(
        &self,
        request: Request<UsageRequest>,
    ) -> Result<Response<UsageResponse>, Status> {
        self.guard.check(request.metadata())?;
        let tenant = request.into_inner().tenant;
        Ok(Response::new(UsageResponse {
            router_id: self.state.config.router_id.clone(),
            region: self.state.region.to_string(),
            tenants: self.state.usage.snapshot(&tenant),
        }))
    }

    async fn reload_catalog(
        &self,
        request: Request<ReloadCatalogRequest>,
    ) -> Result<Response<ReloadCatalogResponse>, Status> {
        self.guard.check(request.metadata())?;
        match reload_now(&self.state) {
            Ok(Reload::Unchanged { version }) => Ok(Response::new(ReloadCatalogResponse {
                version: version.to_string(),
                changed: false,
            })),
            Ok(Reload::Replaced { current, .. }) => Ok(Response::new(ReloadCatalogResponse {
                version: current.to_string(),
                changed: true,
            })),
            Err(e) => Err(Status::failed_precondition(format!(
                "catalog refused, the previous one stays in force: {e}"
            ))),
        }
    }
}
