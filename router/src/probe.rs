//! Active health probing with `grpc.health.v1`.
//!
//! Passive outlier detection only learns from queries; probes add what
//! queries cannot tell:
//!
//! - every index and model node is checked each `interval` (service `""`):
//!   a node that does not answer within the probe timeout counts a failure
//!   (three in a row eject it, so a hung, SIGSTOPped node is ejected in
//!   about a second even with no traffic), one that says NOT_SERVING is
//!   ejected at once (a draining node), and an ejected node that answers
//!   SERVING is re-admitted at once;
//! - every ejected node x tenant-shard pair is checked on its own service
//!   name (`tandem.index/<tenant>/<shard>`, `tandem.model/<tenant>`), so a
//!   tenant whose index failed comes back as soon as it serves again;
//! - the paired region's routers are checked, so that the traffic dial only
//!   forwards to a router that answers;
//! - every index node is asked which of its shards are not serving
//!   (`ListShards` with `not_serving_only`: followers lagging beyond the
//!   node's bound, or bootstrapping), and those node x tenant-shard pairs are
//!   ejected before any search is sent there; the per-pair check above
//!   re-admits them once they serve again.

use std::sync::Arc;
use std::time::Duration;

use crate::IdMap;
use tandem_common::channel::resend_if_refused;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::ListShardsRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::catalog::{Catalog, NodeKind};
use crate::fallback::Resilience;
use crate::outlier::{self, ProbeResult, Scope, ShardKey};
use crate::replicas::MODEL_SCOPE;

/// Health service name of a tenant shard on an index-node.
pub fn index_service_name(tenant: &str, shard: u32) -> String {
    format!("tandem.index/{tenant}/{shard}")
}

/// Health service name of a tenant's model on a model-node.
pub fn model_service_name(tenant: &str) -> String {
    format!("tandem.model/{tenant}")
}

/// Last probe result of each router node (for the dial's "is the paired
/// region's router up?").
#[derive(Debug, Default)]
pub struct RouterHealth {
    up: IdMap<Arc<str>, bool>,
}

impl RouterHealth {
    /// Whether `router` answered its last probe (unknown: assumed up, so a
    /// freshly started router forwards as dialled).
    pub fn is_up(&self, router: &str) -> bool {
        self.up.get(router).is_none_or(|v| *v)
    }

    fn set(&self, router: &Arc<str>, up: bool) {
        self.up.insert(router.clone(), up);
    }
}

/// One round of probes over the catalog's nodes and every ejected pair.
pub async fn probe_round(
    catalog: &Catalog,
    own_id: &str,
    resilience: &Resilience,
    routers: &RouterHealth,
    timeout: Duration,
    internal: &InternalToken,
) {
    // (node, the pair being re-checked if any, its channel, service name)
    let mut targets = Vec::new();
    for node in catalog.nodes() {
        if &*node.id == own_id {
            continue;
        }
        if let Ok(channel) = resilience.channels.get(node) {
            targets.push((node.clone(), None::<ShardKey>, channel, String::new()));
        }
    }
    for snapshot in resilience.shards.snapshot() {
        if snapshot.health.is_healthy() {
            continue;
        }
        let key = snapshot.key;
        let Some(node) = catalog.node(&key.node).cloned() else {
            continue;
        };
        let Ok(channel) = resilience.channels.get(&node) else {
            continue;
        };
        let service = if key.shard == MODEL_SCOPE {
            model_service_name(&key.tenant)
        } else {
            index_service_name(&key.tenant, key.shard)
        };
        targets.push((node, Some(key), channel, service));
    }
    // A probe of the other region crosses the network as any call does:
    // a partition fails it, so it cannot re-admit what queries cannot reach.
    let network = &resilience.network;
    let reached = move |region: Arc<str>| async move {
        matches!(
            tokio::time::timeout(timeout, network.cross(&region)).await,
            Ok(Ok(()))
        )
    };
    let checks = targets
        .into_iter()
        .map(|(node, pair, channel, service)| async move {
            let result = match reached(node.region.clone()).await {
                true => check(channel, &service, timeout).await,
                false => ProbeResult::Error,
            };
            (node, pair, result)
        });
    let held_back = catalog
        .nodes()
        .filter(|n| n.kind == NodeKind::Index && &*n.id != own_id)
        .filter_map(|n| Some((n.clone(), resilience.channels.get(n).ok()?)))
        .map(|(node, channel)| async move {
            let shards = match reached(node.region.clone()).await {
                true => not_serving(channel, timeout, internal).await,
                false => Vec::new(),
            };
            (node, shards)
        });
    for (node, shards) in futures::future::join_all(held_back).await {
        for (tenant, shard) in shards {
            let key = ShardKey {
                node: node.id.clone(),
                tenant: tenant.as_str().into(),
                shard,
            };
            let t = resilience
                .shards
                .record_probe(&key, ProbeResult::NotServing);
            outlier::report(t, "probe", &node.id, (&key.tenant, key.shard), Scope::Shard);
        }
    }
    for (node, pair, result) in futures::future::join_all(checks).await {
        match (pair, node.kind) {
            (Some(key), _) => {
                let t = resilience.shards.record_probe(&key, result);
                outlier::report(t, "probe", &node.id, (&key.tenant, key.shard), Scope::Shard);
            }
            (None, NodeKind::Router) => routers.set(&node.id, result == ProbeResult::Serving),
            (None, _) => {
                let t = resilience.nodes.record_probe(&node.id, result);
                outlier::report(t, "probe", &node.id, ("", 0), Scope::Node);
            }
        }
    }
}

/// The (tenant, shard) pairs an index node says are not serving; none if
/// it does not answer (its node-level probe deals with that).
async fn not_serving(
    channel: crate::channels::NodeChannel,
    timeout: Duration,
    internal: &InternalToken,
) -> Vec<(String, u32)> {
    let mut request = tonic::Request::new(ListShardsRequest {
        with_bytes: false,
        not_serving_only: true,
    });
    request.set_timeout(timeout);
    internal.attach(request.metadata_mut());
    let mut client = IndexNodeClient::new(channel);
    match tokio::time::timeout(timeout, client.list_shards(request)).await {
        Ok(Ok(response)) => response
            .into_inner()
            .shards
            .into_iter()
            .map(|s| (s.tenant, s.shard))
            .collect(),
        _ => Vec::new(),
    }
}

/// One `grpc.health.v1.Check` bounded by `timeout`.
async fn check(
    channel: crate::channels::NodeChannel,
    service: &str,
    timeout: Duration,
) -> ProbeResult {
    let check = resend_if_refused(|| {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        request.set_timeout(timeout);
        let mut client = HealthClient::new(channel.clone());
        async move { client.check(request).await }
    });
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => {
            ProbeResult::Serving
        }
        Ok(Ok(_)) => ProbeResult::NotServing,
        // An unknown service name means the node does not host the shard.
        Ok(Err(status)) if status.code() == tonic::Code::NotFound => ProbeResult::NotServing,
        _ => ProbeResult::Error,
    }
}
/// Sets `router_endpoints{kind, state}`: how many of the catalog's index
/// and model endpoints are healthy, on probation or ejected (every
/// combination, zeros included, so the series exist from start-up).
pub fn publish_endpoint_states(catalog: &Catalog, resilience: &Resilience) {
    for kind in [NodeKind::Index, NodeKind::Model] {
        let mut counts = [0u32; 3];
        for node in catalog.nodes().filter(|n| n.kind == kind) {
            let i = match resilience.nodes.health(&node.id) {
                outlier::Health::Healthy => 0,
                outlier::Health::Probation { .. } => 1,
                outlier::Health::Ejected { .. } => 2,
            };
            counts[i] += 1;
        }
        for (state, count) in ["healthy", "probation", "ejected"].into_iter().zip(counts) {
            metrics::gauge!("router_endpoints", "kind" => kind.as_str(), "state" => state)
                .set(f64::from(count));
        }
    }
}
