//! The index-node's configuration: a TOML file (`--config`) whose values
//! command-line flags override.
//!
//! ```toml
//! node_id = "use1-index-1"
//! region = "us-east-1"            # a label for logs; the node does not route
//! listen = "127.0.0.1:7101"
//! metrics_listen = "127.0.0.1:9101"
//! data_dir = "/var/lib/tandem/index"
//! search_workers = 3              # default: number of CPUs + 1
//! search_queue = 256
//! search_queue_timeout_ms = 50    # a search waiting longer for a worker is shed
//! max_open_shards = 256
//! enable_faults = false
//! drain_grace_ms = 500
//! catalog = "/etc/tandem/catalog.toml"  # leaders and followers; none: all standalone
//! catalog_poll_ms = 1000
//! commit_interval_ms = 250        # longest an acknowledged write waits to be searchable
//! max_lag_ms = 5000               # a follower further behind stops serving searches
//! request_id_window_secs = 3600   # how long a request_id is remembered
//! log_retention_secs = 3600       # how long log records are kept once indexed
//! snapshot_store = "s3://bucket/tandem"   # default: file://<data_dir>/snapshots
//! snapshot_interval_secs = 3600   # leaders snapshot (back up) their shards; 0: never
//! snapshot_keep = 3               # snapshots kept per shard
//! [snapshot_store_options]        # object_store options, e.g. for an S3-compatible server
//! aws_endpoint = "http://127.0.0.1:9000"
//! aws_allow_http = "true"
//! ```
//! S3 credentials come from the standard `AWS_*` environment variables.
//! The admin token (needed with `enable_faults`) comes from
//! `--admin-token-file` or the `TANDEM_ADMIN_TOKEN` environment variable,
//! never from this file or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// See the module documentation.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Id reported in responses and logs.
    pub node_id: String,
    /// Region label (logs only).
    pub region: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus listen address.
    pub metrics_listen: SocketAddr,
    /// A plaintext listener serving `grpc.health.v1` alone, for kubelet
    /// probes (none: health is only on `listen`).
    pub health_listen: Option<SocketAddr>,
    /// Root of the shards' directories.
    pub data_dir: PathBuf,
    /// Searches running at once (0 = number of CPUs + 1).
    pub search_workers: usize,
    /// Searches waiting beyond the running ones before load is shed.
    pub search_queue: usize,
    /// Longest a search waits for a worker before it is shed instead of run.
    pub search_queue_timeout_ms: u64,
    /// Emulated round trip added to each replication pull from a leader in
    /// another region (0: off; for clusters on one machine).
    pub inter_region_latency_ms: u64,
    /// Up to this much more or less per pull.
    pub inter_region_jitter_ms: u64,
    /// Shards kept open at once.
    pub max_open_shards: u64,
    /// Serve the fault-injection admin API.
    pub enable_faults: bool,
    /// Between NOT_SERVING and closing the listener on shutdown.
    pub drain_grace_ms: u64,
    /// JSON log lines.
    pub json_logs: bool,
    /// The catalog file naming shard leaders and followers.
    pub catalog: Option<PathBuf>,
    /// How often the catalog file is re-read.
    pub catalog_poll_ms: u64,
    /// Longest an acknowledged write waits to become searchable.
    pub commit_interval_ms: u64,
    /// A follower further behind than this reports NOT_SERVING.
    pub max_lag_ms: u64,
    /// How long a write's request_id is remembered.
    pub request_id_window_secs: u64,
    /// How long operation-log records are kept once in the index.
    pub log_retention_secs: u64,
    /// Where snapshots go (an `object_store` URL); "" = `file://<data_dir>/snapshots`.
    pub snapshot_store: String,
    /// Options of the snapshot store (`aws_endpoint`, `aws_allow_http`, ...).
    pub snapshot_store_options: std::collections::BTreeMap<String, String>,
    /// How often a leader snapshots each of its shards (0: only on demand).
    pub snapshot_interval_secs: u64,
    /// Snapshots kept per shard.
    pub snapshot_keep: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "index-1".to_string(),
            region: "local".to_string(),
            listen: ([127, 0, 0, 1], 7101).into(),
            metrics_listen: ([127, 0, 0, 1], 9101).into(),
            health_listen: None,
            data_dir: PathBuf::from("./data/index"),
            search_workers: 0,
            search_queue: 256,
            search_queue_timeout_ms: 50,
            inter_region_latency_ms: 0,
            inter_region_jitter_ms: 0,
            max_open_shards: 256,
            enable_faults: false,
            drain_grace_ms: 500,
            json_logs: false,
            catalog: None,
            catalog_poll_ms: 1000,
            commit_interval_ms: 250,
            max_lag_ms: 5000,
            request_id_window_secs: 3600,
            log_retention_secs: 3600,
            snapshot_store: String::new(),
            snapshot_store_options: Default::default(),
            snapshot_interval_secs: 3600,
            snapshot_keep: 3,
        }
    }
}

impl NodeConfig {
    /// The snapshot store's URL, resolving "" to the data directory's.
    pub fn snapshot_url(&self) -> anyhow::Result<String> {
        if !self.snapshot_store.is_empty() {
            return Ok(self.snapshot_store.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let dir = self.data_dir.canonicalize()?.join("snapshots");
        Ok(format!("file://{}", dir.display()))
    }

    /// Search workers, resolving 0 to one more than the number of CPUs
    /// (one tenant may hold all but one worker: alone, it still keeps
    /// every CPU busy; see `pool`).
    pub fn workers(&self) -> usize {
        if self.search_workers > 0 {
            self.search_workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
        }
    }
}
