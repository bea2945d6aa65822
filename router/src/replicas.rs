//! A tenant's resolved replica map as seen from one region, and the order in
//! which to try a shard's replicas.
//!
//! [`ReplicaMap::resolve`] turns the catalog's unordered replica lists into
//! per-shard lists grouped by [`Tier`]: the preferred region's replicas (the
//! local region for an active-active tenant, the home region otherwise), then
//! the preferred region's pair, then any others, each group in catalog order.
//! It is static and cheap to cache (the serving layer keeps
//! `Arc<ReplicaMap>`s in its moka cache and attaches channels by node id); it
//! holds no channels and no statistics.
//!
//! [`try_order`] is the per-query decision. Given a [`StatsView`] (health,
//! in-flight and latency per replica) it returns the replicas in the order to
//! try them:
//!
//! 1. per tier, preferred first: a replica on probation whose trial is free
//!    (so an ejected replica gets its one trial request and can come back),
//!    then the healthy replicas, least loaded first: the first is chosen by
//!    power of two choices on cost = latency EWMA x (in-flight + 1), the rest
//!    follow by ascending cost;
//! 2. then every ejected replica (and probation replicas whose trial is
//!    taken) of all tiers, as a last resort, soonest-to-recover first within
//!    a tier.
//!
//! Ejected local replicas go after the paired region's healthy ones, not
//! before: an ejected replica is expected to fail or hang, and a sure
//! cross-region hop (a few ms) beats a likely per-try timeout plus a retry
//! token. They stay in the list so that a query still has somewhere to go
//! when everything is ejected.
//!
//! A replica without a fresh EWMA (new, or idle for a while) is costed at the
//! median EWMA of its healthy peers in the same tier: neither favoured (it
//! would be flooded before its first answer came back) nor shunned (it would
//! never get the traffic that measures it). Its in-flight count still grows
//! with every call sent, which raises its cost like anyone else's. When no
//! peer has an estimate, in-flight counts alone decide.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, RngExt};

use crate::catalog::{Catalog, Node, Tenant};
use crate::endpoint_stats::StatsRegistry;
use crate::outlier::{Health, OutlierDetector, ShardKey};

/// Where a replica sits relative to the region the query is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// In the preferred region (local for active-active tenants, else home).
    Preferred,
    /// In the preferred region's pair.
    Paired,
    /// Anywhere else (only with more than two regions).
    Other,
}

/// One replica of a shard (or of the tenant's model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The node, shared with the catalog.
    pub node: Arc<Node>,
    /// Its tier for this map.
    pub tier: Tier,
}

impl Replica {
    /// The node id: the key of statistics, ejections and channels.
    pub fn id(&self) -> &Arc<str> {
        &self.node.id
    }
}

/// A shard's replicas, grouped by tier (preferred first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReplicas {
    /// Shard number.
    pub shard: u32,
    /// Replicas, tiers in order, catalog order within a tier.
    pub replicas: Vec<Replica>,
}

/// A tenant's replicas as seen from one region.
#[derive(Debug, Clone)]
pub struct ReplicaMap {
    /// The tenant (shared with the catalog).
    pub tenant: Arc<Tenant>,
    /// The region of the router that resolved this map.
    pub local_region: Arc<str>,
    /// The region whose replicas come first.
    pub preferred_region: Arc<str>,
    /// Version of the catalog this map was resolved from (cache entries of an
    /// older version are stale).
    pub catalog_version: Arc<str>,
    /// One entry per shard, in shard-number order.
    pub shards: Vec<ShardReplicas>,
    /// The tenant's model replicas, ordered like shard replicas.
    pub models: Vec<Replica>,
    /// For a tenant with a migration ramp: the same replicas preferring
    /// the home's pair (see [`crate::ramp`]).
    pub ramped: Option<Arc<ReplicaMap>>,
}

/// Why a replica map could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such tenant in the catalog (cache this as a negative entry).
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// The router's own region is not in the catalog (a configuration error).
    #[error("region {0:?} is not in the catalog")]
    UnknownRegion(String),
}

impl ReplicaMap {
    /// Resolves `tenant` as seen from `local_region`.
    pub fn resolve(
        catalog: &Catalog,
        tenant: &str,
        local_region: &str,
    ) -> Result<ReplicaMap, ResolveError> {
        let t = catalog
            .tenant(tenant)
            .ok_or_else(|| ResolveError::UnknownTenant(tenant.to_string()))?;
        ReplicaMap::for_tenant(catalog, t, local_region)
    }

    /// Resolves an already looked-up tenant (e.g. the one auth returned).
    pub fn for_tenant(
        catalog: &Catalog,
        tenant: &Arc<Tenant>,
        local_region: &str,
    ) -> Result<ReplicaMap, ResolveError> {
        let local = catalog
            .region(local_region)
            .ok_or_else(|| ResolveError::UnknownRegion(local_region.to_string()))?;
        let preferred = tenant.preferred_region(&local.id);
        let mut map = ReplicaMap::preferring(catalog, tenant, &local.id, preferred);
        if tenant.ramp > 0 && !tenant.active_active {
            if let Some(pair) = catalog.pair_of(preferred) {
                let ramped = ReplicaMap::preferring(catalog, tenant, &local.id, pair);
                map.ramped = Some(Arc::new(ramped));
            }
        }
        Ok(map)
    }

    /// `tenant`'s replicas as seen from `local`, `preferred`'s first.
    fn preferring(
        catalog: &Catalog,
        tenant: &Arc<Tenant>,
        local: &Arc<str>,
        preferred: &str,
    ) -> ReplicaMap {
        let paired = catalog.pair_of(preferred).map(|p| &**p);
        let order = |nodes: &[Arc<Node>]| tiered(nodes, preferred, paired);
        ReplicaMap {
            tenant: Arc::clone(tenant),
            local_region: Arc::clone(local),
            preferred_region: preferred.into(),
            catalog_version: catalog.version().into(),
            shards: tenant
                .shards
                .iter()
                .map(|s| ShardReplicas {
                    shard: s.number,
                    replicas: order(&s.replicas),
                })
                .collect(),
            models: order(&tenant.model_replicas),
            ramped: None,
        }
    }

    /// The replicas of shard `n`.
    pub fn shard(&self, n: u32) -> Option<&ShardReplicas> {
        self.shards.get(usize::try_from(n).ok()?)
    }
}

fn tiered(nodes: &[Arc<Node>], preferred: &str, paired: Option<&str>) -> Vec<Replica> {
    let tier_of = |n: &Node| {
        if &*n.region == preferred {
            Tier::Preferred
        } else if Some(&*n.region) == paired {
            Tier::Paired
        } else {
            Tier::Other
        }
    };
    let mut out: Vec<Replica> = nodes
        .iter()
        .map(|n| Replica {
            node: Arc::clone(n),
            tier: tier_of(n),
        })
        .collect();
    // Stable: catalog order survives within a tier.
    out.sort_by_key(|r| r.tier);
    out
}

/// What replica choice needs to know about one replica right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaState {
    /// Worst of the node's and the (node, tenant-shard) pair's health.
    pub health: Health,
    /// Calls in flight to the node.
    pub in_flight: u32,
    /// Fresh latency estimate, if any.
    pub ewma: Option<Duration>,
}

impl Default for ReplicaState {
    /// Healthy, idle, no statistics: a replica nobody has heard of yet.
    fn default() -> Self {
        ReplicaState {
            health: Health::Healthy,
            in_flight: 0,
            ewma: None,
        }
    }
}

/// Source of per-replica state for [`try_order`]. Implemented by closures
/// (handy in tests) and by [`LiveView`] (the router's real state).
pub trait StatsView {
    /// The state of `replica` now.
    fn state(&self, replica: &Replica) -> ReplicaState;
}

impl<F: Fn(&Replica) -> ReplicaState> StatsView for F {
    fn state(&self, replica: &Replica) -> ReplicaState {
        self(replica)
    }
}

/// Shard number used in [`ShardKey`]s for a tenant's model replicas, so a
/// model node failing for one tenant only is ejected for that tenant only.
pub const MODEL_SCOPE: u32 = u32::MAX;

/// The router's live state for one tenant shard (or the tenant's models with
/// `shard = MODEL_SCOPE`): statistics from the registry, health as the worst
/// of the node-level and the (node, tenant, shard) detectors.
#[derive(Debug, Clone, Copy)]
pub struct LiveView<'a> {
    /// Endpoint statistics.
    pub stats: &'a StatsRegistry,
    /// Node-level outlier detector.
    pub nodes: &'a OutlierDetector<Arc<str>>,
    /// (node, tenant, shard)-level outlier detector.
    pub shards: &'a OutlierDetector<ShardKey>,
    /// The tenant.
    pub tenant: &'a Arc<str>,
    /// The shard, or [`MODEL_SCOPE`].
    pub shard: u32,
}

impl LiveView<'_> {
    /// The pair key of `replica` in this view, for recording shard-scoped
    /// failures and claiming shard-scoped trials.
    pub fn shard_key(&self, replica: &Replica) -> ShardKey {
        ShardKey {
            node: Arc::clone(replica.id()),
            tenant: Arc::clone(self.tenant),
            shard: self.shard,
        }
    }
}

impl StatsView for LiveView<'_> {
    fn state(&self, replica: &Replica) -> ReplicaState {
        let node = self.nodes.health(replica.id());
        let pair = self.shards.health(&self.shard_key(replica));
        let (in_flight, ewma) = match self.stats.get(replica.id()) {
            Some(s) => (s.in_flight(), s.ewma()),
            None => (0, None),
        };
        ReplicaState {
            health: node.worst(pair),
            in_flight,
            ewma,
        }
    }
}

/// One entry of a try order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick<'a> {
    /// The replica to try.
    pub replica: &'a Replica,
    /// Its state when the order was computed. If `health` is `Probation`,
    /// claim the trial (`OutlierDetector::try_begin_trial` on the key(s) that
    /// are on probation) before sending; if the claim fails, skip to the next
    /// pick without counting an attempt. An `Ejected` pick is a last resort:
    /// send without a claim.
    pub state: ReplicaState,
}

/// The order in which to try `replicas` (see the module docs). Deterministic
/// for a given `rng` state; never panics, returns every replica exactly once.
pub fn try_order<'a, V, R>(replicas: &'a [Replica], view: &V, rng: &mut R) -> Vec<Pick<'a>>
where
    V: StatsView + ?Sized,
    R: Rng + ?Sized,
{
    let picks: Vec<Pick<'a>> = replicas
        .iter()
        .map(|replica| Pick {
            replica,
            state: view.state(replica),
        })
        .collect();
    let mut order = Vec::with_capacity(picks.len());
    let mut last_resort: Vec<Pick<'a>> = Vec::new();
    for tier in [Tier::Preferred, Tier::Paired, Tier::Other] {
        let mut healthy = Vec::new();
        for pick in picks.iter().filter(|p| p.replica.tier == tier) {
            match pick.state.health {
                Health::Probation {
                    trial_available: true,
                } => order.push(*pick),
                Health::Healthy => healthy.push(*pick),
                Health::Probation {
                    trial_available: false,
                }
                | Health::Ejected { .. } => last_resort.push(*pick),
            }
        }
        rank_healthy(&mut healthy, rng);
        order.extend(healthy);
    }
    // Stable sort keeps tier order; within a tier, soonest recovery first
    // (a probation replica with its trial taken recovers "now").
    last_resort.sort_by_key(|p| {
        let until = match p.state.health {
            Health::Ejected { until } => Some(until),
            _ => None,
        };
        (p.replica.tier, until)
    });
    order.extend(last_resort);
    order
}

/// Orders healthy replicas of one tier: power-of-two-choices winner first,
/// the rest by ascending cost.
fn rank_healthy<R: Rng + ?Sized>(picks: &mut Vec<Pick<'_>>, rng: &mut R) {
    let n = picks.len();
    if n < 2 {
        return;
    }
    let fallback = median_ewma_nanos(picks);
    let costs: Vec<f64> = picks.iter().map(|p| cost(&p.state, fallback)).collect();
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    // Ties go to the first draw, which is uniformly random.
    let winner = if costs[b] < costs[a] { b } else { a };
    let mut rest: Vec<(f64, Pick<'_>)> = costs
        .iter()
        .zip(picks.iter())
        .enumerate()
        .filter(|(i, _)| *i != winner)
        .map(|(_, (c, p))| (*c, *p))
        .collect();
    rest.sort_by(|x, y| x.0.total_cmp(&y.0));
    let first = picks[winner];
    picks.clear();
    picks.push(first);
    picks.extend(rest.into_iter().map(|(_, p)| p));
}

/// Median EWMA (ns) of the picks that have one; 1.0 when none has, so that
/// costs degrade to in-flight counts.
fn median_ewma_nanos(picks: &[Pick<'_>]) -> f64 {
    let mut known: Vec<f64> = picks
        .iter()
        .filter_map(|p| p.state.ewma)
        .map(|d| d.as_nanos() as f64)
        .collect();
    if known.is_empty() {
        return 1.0;
    }
    known.sort_by(f64::total_cmp);
    let mid = known.len() / 2;
    if known.len() % 2 == 1 {
        known[mid]
    } else {
        (known[mid - 1] + known[mid]) / 2.0
    }
}

fn cost(state: &ReplicaState, fallback_nanos: f64) -> f64 {
    let latency = state
        .ewma
        .map_or(fallback_nanos, |d| d.as_nanos() as f64)
        .max(1.0);
    latency * (f64::from(state.in_flight) + 1.0)
}

#[cfg(test)]
mod tests;
