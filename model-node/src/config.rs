//! The model-node's serving configuration: a TOML file (`--config`) whose
//! values command-line flags override.
//!
//! ```toml
//! node_id = "use1-model-1"
//! region = "us-east-1"            # a label for logs; the node does not route
//! listen = "127.0.0.1:7201"
//! metrics_listen = "127.0.0.1:9201"
//! model_dir = "/var/lib/tandem/models"
//! watch_ms = 1000                 # poll the model dir for new versions; 0 = off
//! model_store = "s3://bucket/tandem"  # pull published versions (tandem train)
//! store_poll_ms = 5000
//! enable_faults = false
//! drain_grace_ms = 500
//! json_logs = false
//! ```
//! The admin token (needed with `enable_faults`) comes from
//! `--admin-token-file` or the `TANDEM_ADMIN_TOKEN` environment variable,
//! never from this file or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Id reported in responses, logs and the readiness line.
    pub node_id: String,
    /// Region label (logs only).
    pub region: String,
    /// gRPC listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Prometheus listen address (port 0: any free port).
    pub metrics_listen: SocketAddr,
    /// A plaintext listener serving `grpc.health.v1` alone, for kubelet
    /// probes (none: health is only on `listen`).
    pub health_listen: Option<SocketAddr>,
    /// Root of the tenants' artifact directories
    /// (`<model_dir>/<tenant>/v<n>.tmodel`).
    pub model_dir: PathBuf,
    /// How often to look for newer artifacts and load them, in ms; 0 turns
    /// the watcher off (then only `LoadModel` reloads).
    pub watch_ms: u64,
    /// The object store `tandem train` publishes versions to (none: the
    /// model directory is filled by hand or by `tandem-model-node train`).
    /// With a store the model directory is a cache that follows it.
    pub model_store: Option<String>,
    /// Options of that store (e.g. `aws_endpoint`).
    pub model_store_options: std::collections::BTreeMap<String, String>,
    /// How often the store is polled for new versions, in ms.
    pub store_poll_ms: u64,
    /// Serve the fault-injection admin API.
    pub enable_faults: bool,
    /// Between NOT_SERVING and closing the listener on shutdown, in ms.
    pub drain_grace_ms: u64,
    /// JSON log lines.
    pub json_logs: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "model-1".to_string(),
            region: "local".to_string(),
            listen: ([127, 0, 0, 1], 7201).into(),
            metrics_listen: ([127, 0, 0, 1], 9201).into(),
            health_listen: None,
            model_dir: PathBuf::from("./data/models"),
            watch_ms: 1000,
            model_store: None,
            model_store_options: Default::default(),
            store_poll_ms: 5000,
            enable_faults: false,
            drain_grace_ms: 500,
            json_logs: false,
        }
    }
}

impl NodeConfig {
    /// The watcher's poll interval, `None` when it is off.
    pub fn watch_interval(&self) -> Option<Duration> {
        (self.watch_ms > 0).then(|| Duration::from_millis(self.watch_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::config::parse_toml;

    #[test]
    fn file_values_and_defaults() {
        let c: NodeConfig =
            parse_toml("node_id = \"m7\"\nmodel_dir = \"/m\"\nwatch_ms = 0").expect("parse");
        assert_eq!(c.node_id, "m7");
        assert_eq!(c.model_dir, PathBuf::from("/m"));
        assert_eq!(c.watch_interval(), None);
        assert_eq!(c.listen, NodeConfig::default().listen);
        assert_eq!(
            NodeConfig::default().watch_interval(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn unknown_keys_and_secrets_in_the_file_are_refused() {
        assert!(parse_toml::<NodeConfig>("modeldir = \"/m\"").is_err());
        assert!(parse_toml::<NodeConfig>("admin_token = \"s\"").is_err());
        assert!(parse_toml::<NodeConfig>("listen = \"not an address\"").is_err());
    }
}
