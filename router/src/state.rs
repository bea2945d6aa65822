//! Everything a router shares between calls: the catalog in force, the
//! replica-map cache, the failure-handling state, dials and probe results.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tandem_common::internal::InternalToken;
use tandem_common::latency::{InterRegion, Network};
use tandem_common::tls::Tls;

use crate::budget::{RetryBudget, RetryBudgetConfig};
use crate::cache::ReplicaMapCache;
use crate::catalog::{Catalog, CatalogHandle};
use crate::channels::Channels;
use crate::config::{ms, RouterConfig};
use crate::dial::Dials;
use crate::endpoint_stats::{StatsConfig, StatsRegistry};
use crate::fallback::Resilience;
use crate::hedge::HedgePolicy;
use crate::outlier::escalation::Escalation;
use crate::outlier::{OutlierConfig, OutlierDetector};
use crate::probe::RouterHealth;

/// See the module documentation.
pub struct RouterState {
    /// Configuration in force.
    pub config: RouterConfig,
    /// This router's region (validated against the catalog at start).
    pub region: Arc<str>,
    /// The catalog in force (hot-swapped on reload).
    pub catalog: CatalogHandle,
    /// Why the last catalog reload was refused ("" if it was not).
    pub catalog_error: ArcSwap<String>,
    /// Resolved replica maps.
    pub cache: ReplicaMapCache,
    /// Statistics, outlier detection, budget, hedging, channels.
    pub resilience: Resilience,
    /// Traffic dials of every region.
    pub dials: Dials,
    /// Search ids, usage events and clicks.
    pub events: crate::events::Events,
    /// Usage per tenant (in memory, for `tandem usage`).
    pub usage: crate::usage::Usage,
    /// Counters of the migration ramps in force.
    pub ramps: crate::ramp::RampStats,
    /// The health-driven dial of this router's region, when it is on.
    pub auto_dial: Option<Arc<crate::auto_dial::AutoDial>>,
    /// Probe results of routers.
    pub routers: RouterHealth,
    /// Keys, quotas and the admission limit, checked before a body is read.
    pub admission: crate::admission::Admission,
    /// Injected faults on the public API (drills; empty unless
    /// `--enable-faults`).
    pub faults: tandem_common::faults::FaultRegistry,
    /// The cluster's internal token (carried by every call to a node or to
    /// the paired router).
    pub internal: InternalToken,
}

impl RouterState {
    /// Builds the state from a config and a validated catalog.
    pub fn new(
        config: RouterConfig,
        catalog: Catalog,
        (internal, tls): (InternalToken, Option<Tls>),
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            catalog.region(&config.region).is_some(),
            "region {:?} is not in the catalog (regions: {})",
            config.region,
            catalog
                .regions()
                .iter()
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let hedge = HedgePolicy::new(
            ms(config.hedge_floor_ms),
            ms(config.hedge_default_ms),
            ms(config.hedge_ceiling_ms),
        )
        .map_err(|e| anyhow::anyhow!("invalid hedging delays: {e:?}"))?;
        let outlier = OutlierConfig {
            consecutive_failures: config.eject_after_failures.max(1),
            base_ejection: ms(config.eject_base_ms),
            max_ejection: ms(config.eject_max_ms.max(config.eject_base_ms)),
            readmit_successes: config.readmit_after_successes,
            trial_spacing: ms(config.trial_spacing_ms),
            ..OutlierConfig::default()
        };
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio_percent: config.retry_budget_percent,
            min_per_sec: config.retry_budget_min_per_sec,
            window: Duration::from_secs(10),
        });
        let faults = tandem_common::faults::FaultRegistry::shedding_as(tandem_proto::shed::ROUTER);
        let network = Network::new(
            config.region.as_str(),
            InterRegion::from_ms(
                config.inter_region_latency_ms,
                config.inter_region_jitter_ms,
            ),
            faults.clone(),
        );
        Ok(Self {
            region: Arc::from(config.region.as_str()),
            dials: Dials::from_catalog(&catalog),
            ramps: Default::default(),
            usage: Default::default(),
            faults,
            admission: crate::admission::Admission::new(crate::admission::limit::LimitConfig {
                min: config.min_concurrent_searches,
                max: config.max_concurrent_searches,
                initial: 4 * config.min_concurrent_searches,
                tolerance: config.admission_tolerance,
                ..Default::default()
            }),
            events: crate::events::Events::start(&config)?,
            auto_dial: config
                .auto_dial()
                .map(|c| Arc::new(crate::auto_dial::AutoDial::new(c))),
            cache: ReplicaMapCache::new(
                config.cache_max_tenants,
                ms(config.cache_ttl_ms),
                ms(config.negative_ttl_ms),
            ),
            resilience: Resilience {
                stats: StatsRegistry::new(StatsConfig::default()),
                nodes: OutlierDetector::new(outlier),
                shards: OutlierDetector::new(OutlierConfig {
                    probe_ends_ejection: false,
                    ..outlier
                }),
                escalation: Escalation::new(
                    ms(config.escalation_window_ms),
                    config.escalate_after_pairs,
                ),
                budget,
                hedge,
                channels: Channels::new(tls),
                network,
            },
            catalog: CatalogHandle::new(catalog),
            catalog_error: ArcSwap::from_pointee(String::new()),
            routers: RouterHealth::default(),
            internal,
            config,
        })
    }

    /// After a catalog change: drop what refers to nodes that are gone and
    /// resolve tenants afresh.
    pub fn catalog_changed(&self) {
        let catalog = self.catalog.current();
        self.cache.invalidate_all();
        self.dials.sync(&catalog);
        let known = |id: &str| catalog.node(id).is_some();
        self.resilience.stats.retain(known);
        self.resilience.channels.retain(known);
        self.resilience.nodes.retain(|id| known(id));
        self.resilience.escalation.retain(known);
        self.resilience
            .shards
            .retain(|k| known(&k.node) && catalog.tenant(&k.tenant).is_some());
    }

    /// Whether some router of the paired region answered its last probe.
    pub fn paired_router_up(&self) -> Option<Arc<crate::catalog::Node>> {
        let catalog = self.catalog.current();
        let pair = catalog.pair_of(&self.region)?.clone();
        let routers = catalog.routers_of(&pair);
        routers.iter().find(|r| self.routers.is_up(&r.id)).cloned()
    }
}
