//! The router's configuration: a TOML file (`--config`) whose values
//! command-line flags override.
//!
//! ```toml
//! router_id = "use1-router-1"
//! region = "us-east-1"
//! listen = "127.0.0.1:7000"
//! metrics_listen = "127.0.0.1:9000"
//! catalog = "/etc/tandem/catalog.toml"   # required (here or --catalog)
//! catalog_keys = "/etc/tandem/keys/keys.toml"  # optional: key hashes apart
//! default_timeout_ms = 2000              # when the caller sends no grpc-timeout
//! per_try_timeout_ms = 500
//! model_timeout_ms = 50                  # boosts/suggestions wait at most this
//! probe_interval_ms = 200
//! auto_dial_after_ms = 0                 # health-driven dial; 0 = off
//! ```
//! The admin token comes from `--admin-token-file` or `TANDEM_ADMIN_TOKEN`,
//! never from this file or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// See the module documentation.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// This router's node id (as in the catalog, if it is listed there).
    pub router_id: String,
    /// The region this router serves; must be in the catalog.
    pub region: String,
    /// gRPC listen address of the public and admin APIs.
    pub listen: SocketAddr,
    /// Prometheus listen address.
    pub metrics_listen: SocketAddr,
    /// A plaintext listener serving `grpc.health.v1` alone, for kubelet
    /// probes (none: health is only on `listen`).
    pub health_listen: Option<SocketAddr>,
    /// The admin API's own listener (none: the admin API is off; it is
    /// never served on the public `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// Catalog file (watched); required: a router without one refuses to
    /// start.
    pub catalog: Option<PathBuf>,
    /// A keys file of `[keys.<tenant>]` tables that goes with the catalog
    /// (watched too): key hashes kept in a secret store, apart from the
    /// catalog's plain configuration.
    pub catalog_keys: Option<PathBuf>,
    /// How often the catalog file is checked for changes.
    pub catalog_poll_ms: u64,
    /// Deadline for callers that send no `grpc-timeout`.
    pub default_timeout_ms: u64,
    /// Longest deadline honoured (a caller asking for an hour gets this).
    pub max_timeout_ms: u64,
    /// Longest a single attempt on one replica may take before the next
    /// replica is tried.
    pub per_try_timeout_ms: u64,
    /// Longest a search waits for the model's boosts (then: degraded).
    pub model_timeout_ms: u64,
    /// Active health-probe period.
    pub probe_interval_ms: u64,
    /// How often the nodes' DNS names are resolved again while their
    /// connections stay up (a rescheduled pod is found; 0: never).
    pub dns_recheck_ms: u64,
    /// Active health-probe timeout.
    pub probe_timeout_ms: u64,
    /// Replica maps kept in the cache.
    pub cache_max_tenants: u64,
    /// Time to live of a cached replica map.
    pub cache_ttl_ms: u64,
    /// Time to live of a cached "unknown tenant".
    pub negative_ttl_ms: u64,
    /// Retries + hedges allowed, in percent of calls.
    pub retry_budget_percent: u32,
    /// Retries + hedges always allowed per second.
    pub retry_budget_min_per_sec: u32,
    /// Hedging delay bounds.
    pub hedge_floor_ms: u64,
    /// See `hedge_floor_ms`.
    pub hedge_ceiling_ms: u64,
    /// Hedging delay before a replica has enough history.
    pub hedge_default_ms: u64,
    /// Consecutive failures that eject an endpoint.
    pub eject_after_failures: u32,
    /// First ejection's length.
    pub eject_base_ms: u64,
    /// Longest ejection.
    pub eject_max_ms: u64,
    /// Successes in a row on probation that re-admit an endpoint.
    pub readmit_after_successes: u32,
    /// Least time between two probation trials' starts.
    pub trial_spacing_ms: u64,
    /// A node is blamed for its pairs' timeouts when this many of its
    /// node x tenant-shard pairs time out within `escalation_window_ms`.
    pub escalate_after_pairs: usize,
    /// See `escalate_after_pairs`.
    pub escalation_window_ms: u64,
    /// Health-driven dial (see `auto_dial`): this region's traffic shifts
    /// to the paired region after its index-nodes fail health this long (0:
    /// off, the default).
    pub auto_dial_after_ms: u64,
    /// ... and comes back after they are healthy again this long.
    pub auto_dial_back_after_ms: u64,
    /// Share of the region's index-nodes unhealthy that counts as failing.
    pub auto_dial_threshold: f64,
    /// A public call taking this long is logged (WARN, with its request
    /// id).
    pub slow_call_ms: u64,
    /// Emulated round trip added to each call to another region's node or
    /// router (0: off; for clusters on one machine, see
    /// `tandem_common::latency`).
    pub inter_region_latency_ms: u64,
    /// Up to this much more or less per call.
    pub inter_region_jitter_ms: u64,
    /// Serve the fault-injection API on the admin listener (drills; needs
    /// the admin token).
    pub enable_faults: bool,
    /// The admission limit (searches in flight) never goes below this.
    pub min_concurrent_searches: usize,
    /// ... nor above this.
    pub max_concurrent_searches: usize,
    /// How many times its unhurried latency the router lets searches take
    /// before its admission limit shrinks.
    pub admission_tolerance: f64,
    /// The search-id signing keys, one per line, the signing key first
    /// (none: searches carry no search id and clicks are refused). Every
    /// router of both regions needs the same file.
    pub search_id_key_file: Option<PathBuf>,
    /// Where usage events are written before they are shipped (none: no
    /// events are recorded).
    pub events_dir: Option<PathBuf>,
    /// The object store events are shipped to (`file:///dir`,
    /// `s3://bucket/prefix`; the index-nodes' snapshot store).
    pub events_store: Option<String>,
    /// Options of that store (e.g. `aws_endpoint`).
    pub events_store_options: std::collections::BTreeMap<String, String>,
    /// Events held in memory on their way to disk; more are dropped.
    pub events_buffer: usize,
    /// How long an events file stays open before it is readied to ship.
    pub events_rotate_ms: u64,
    /// How often ready events files are shipped.
    pub events_ship_ms: u64,
    /// Clicks per second taken per tenant (by this router).
    pub click_rate_per_sec: u32,
    /// How long after a search its clicks count.
    pub click_window_secs: u64,
    /// Between NOT_SERVING and closing the listener on shutdown.
    pub drain_grace_ms: u64,
    /// JSON log lines.
    pub json_logs: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            router_id: "router-1".to_string(),
            region: "us-east".to_string(),
            listen: ([127, 0, 0, 1], 7000).into(),
            metrics_listen: ([127, 0, 0, 1], 9000).into(),
            health_listen: None,
            admin_listen: None,
            catalog: None,
            catalog_keys: None,
            catalog_poll_ms: 500,
            default_timeout_ms: 2000,
            max_timeout_ms: 30_000,
            per_try_timeout_ms: 500,
            model_timeout_ms: 50,
            probe_interval_ms: 200,
            dns_recheck_ms: 10_000,
            probe_timeout_ms: 250,
            cache_max_tenants: 100_000,
            cache_ttl_ms: 60_000,
            negative_ttl_ms: 5_000,
            retry_budget_percent: 20,
            retry_budget_min_per_sec: 10,
            hedge_floor_ms: 2,
            hedge_ceiling_ms: 50,
            hedge_default_ms: 10,
            eject_after_failures: 3,
            eject_base_ms: 1000,
            eject_max_ms: 30_000,
            readmit_after_successes: 3,
            trial_spacing_ms: 25,
            escalate_after_pairs: 2,
            escalation_window_ms: 1000,
            search_id_key_file: None,
            events_dir: None,
            events_store: None,
            events_store_options: Default::default(),
            events_buffer: 100_000,
            events_rotate_ms: 60_000,
            events_ship_ms: 10_000,
            click_rate_per_sec: 100,
            click_window_secs: 3600,
            auto_dial_after_ms: 0,
            auto_dial_back_after_ms: 30_000,
            auto_dial_threshold: 0.5,
            slow_call_ms: 1000,
            inter_region_latency_ms: 0,
            inter_region_jitter_ms: 0,
            enable_faults: false,
            min_concurrent_searches: 16,
            max_concurrent_searches: 1000,
            admission_tolerance: 2.0,
            drain_grace_ms: 500,
            json_logs: false,
        }
    }
}

impl RouterConfig {
    /// The health-driven dial's settings, if it is on.
    pub fn auto_dial(&self) -> Option<crate::auto_dial::AutoDialConfig> {
        (self.auto_dial_after_ms > 0).then(|| crate::auto_dial::AutoDialConfig {
            after: ms(self.auto_dial_after_ms),
            back_after: ms(self.auto_dial_back_after_ms),
            threshold: self.auto_dial_threshold.clamp(0.01, 1.0),
        })
    }
}

/// Milliseconds as a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
