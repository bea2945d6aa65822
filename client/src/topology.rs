//! The topology file `tandem dev --topology FILE` writes: where each
//! region's router and every node listen, and the sample tenants with
//! their keys. One type here so the CLI, the load generator and the tests
//! read and write the same format.
//!
//! Addresses are plain `host:port`; when the file names a CA (`ca_cert`),
//! every process of the cluster serves TLS and its addresses are dialled
//! as `https://`. Unknown fields are ignored and most
//! known ones are optional, so the writer can add fields without breaking
//! older readers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ClientConfig, RegionEndpoint};

/// A running cluster, as written to the topology file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// The regions, each with its router's address.
    pub regions: Vec<RegionInfo>,
    /// Every process (routers too, with kind `router`).
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
    /// Sample tenants; the active-active one is listed first.
    #[serde(default)]
    pub tenants: Vec<TenantInfo>,
    /// Token for the routers' admin API.
    #[serde(default)]
    pub admin_token: String,
    /// The cluster's internal token, which node APIs require: for the
    /// operator's commands (`tandem verify`, `promote`, `replica`, drills).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub internal_token: String,
    /// The catalog file routers and index-nodes read (the control-plane
    /// source `tandem promote` and `tandem verify` use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// The CA certificate (PEM file) every process's certificate chains
    /// to, when the cluster serves TLS (`tandem dev --tls`); absent:
    /// plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The object store of the cluster (snapshots, usage events, model
    /// versions), for `tandem train` and `tandem events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The hosts file the cluster's routers and index-nodes resolve their
    /// peers' names through (`--hosts-file`), which `tandem drill
    /// dns-failure` empties for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<String>,
}

/// One region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionInfo {
    /// Region name, e.g. `us-east-1`.
    pub name: String,
    /// The paired region's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<String>,
    /// The region's (first) router gRPC address, `host:port`.
    pub router: String,
    /// Every router of the region, `host:port`, the first one first (absent
    /// in files of a single-router cluster: then `router` alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<String>,
    /// The router's Prometheus metrics address, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The router's admin API address, `host:port` (its own listener,
    /// never the public one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The web console of the region's (first) router, a URL on its admin
    /// listener (`http://host:port/console`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
}

impl RegionInfo {
    /// Every router of the region (`routers`, or `router` alone in a file
    /// that has no list).
    pub fn all_routers(&self) -> Vec<String> {
        if self.routers.is_empty() {
            vec![self.router.clone()]
        } else {
            self.routers.clone()
        }
    }
}

/// One process of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id, e.g. `use1-index-1`.
    pub id: String,
    /// `router`, `index` or `model` (see the `KIND_*` constants).
    pub kind: String,
    /// Region the node lives in.
    pub region: String,
    /// gRPC address, `host:port`.
    pub addr: String,
    /// Prometheus metrics address, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// A router's admin API address, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// OS process id, so a drill can kill or freeze it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl NodeInfo {
    /// `kind` of a router.
    pub const KIND_ROUTER: &'static str = "router";
    /// `kind` of an index-node.
    pub const KIND_INDEX: &'static str = "index";
    /// `kind` of a model-node.
    pub const KIND_MODEL: &'static str = "model";
}

/// One sample tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// Tenant id.
    pub id: String,
    /// A search key of the tenant (plain text: this is a dev cluster).
    pub api_key: String,
    /// A write key of the tenant (`Documents.Write`).
    #[serde(default)]
    pub write_key: String,
    /// Served from both regions.
    #[serde(default)]
    pub active_active: bool,
    /// Home region.
    #[serde(default)]
    pub home: String,
    /// Queries that find something in the tenant's documents.
    #[serde(default)]
    pub sample_queries: Vec<String>,
}

/// Why a topology could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read or written.
    // The cause is the error's source, not part of its message, so chains
    // (`{:#}` in anyhow) print it once.
    #[error("cannot read or write topology file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA certificate the topology names could not be read.
    #[error("cannot read the cluster's CA certificate {}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a valid topology.
    #[error("not a valid topology file")]
    Parse(#[from] serde_json::Error),
    /// The topology lists no region.
    #[error("the topology lists no regions")]
    NoRegions,
    /// A named region is not in the topology.
    #[error("region {0:?} is not in the topology")]
    UnknownRegion(String),
    /// A named tenant is not in the topology.
    #[error("tenant {0:?} is not in the topology")]
    UnknownTenant(String),
}

impl Topology {
    /// Parses topology JSON.
    pub fn from_json(text: &str) -> Result<Self, TopologyError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Writes the topology as pretty JSON, through a temporary file and a
    /// rename so a reader polling for the file never sees half of it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TopologyError> {
        let path = path.as_ref();
        let io = |source| TopologyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let _ = std::fs::remove_file(&tmp);
        // It holds keys and tokens: readable by its owner only.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&RegionInfo> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The tenant with id `id`.
    pub fn tenant(&self, id: &str) -> Option<&TenantInfo> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// The node with id `id`.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes of `kind` (see `NodeInfo::KIND_*`) in `region`.
    pub fn nodes_of<'a>(
        &'a self,
        kind: &'a str,
        region: &'a str,
    ) -> impl Iterator<Item = &'a NodeInfo> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.kind == kind && n.region == region)
    }

    /// Every region's router, in file order (`https://` when the cluster
    /// serves TLS).
    pub fn region_endpoints(&self) -> Vec<RegionEndpoint> {
        self.regions
            .iter()
            .map(|r| {
                let addrs = r.all_routers().iter().map(|a| self.uri(a)).collect();
                RegionEndpoint::with_routers(&r.name, addrs)
            })
            .collect()
    }

    /// `addr` (a `host:port` of this file) as a URI: `https://` when the
    /// cluster serves TLS, `http://` otherwise; a full URI is kept.
    pub fn uri(&self, addr: &str) -> String {
        crate::config::uri_of(addr, self.ca_cert.is_some())
    }

    /// The cluster's CA certificate (PEM), when it serves TLS.
    pub fn ca_cert_pem(&self) -> Result<Option<Vec<u8>>, TopologyError> {
        let Some(path) = &self.ca_cert else {
            return Ok(None);
        };
        std::fs::read(path)
            .map(Some)
            .map_err(|source| TopologyError::CaCert {
                path: PathBuf::from(path),
                source,
            })
    }

    /// A client configuration for this cluster: every region's router,
    /// `home_region` (default: the first region) as home, and the API key
    /// of `tenant` (default: the first tenant, if any).
    pub fn client_config(
        &self,
        home_region: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<ClientConfig, TopologyError> {
        let first = self.regions.first().ok_or(TopologyError::NoRegions)?;
        let home = match home_region {
            Some(name) => self
                .region(name)
                .ok_or_else(|| TopologyError::UnknownRegion(name.to_string()))?,
            None => first,
        };
        let tenant = match tenant {
            Some(id) => Some(
                self.tenant(id)
                    .ok_or_else(|| TopologyError::UnknownTenant(id.to_string()))?,
            ),
            None => self.tenants.first(),
        };
        let mut config = ClientConfig::new(self.region_endpoints()).with_home_region(&home.name);
        config.api_key = tenant.map(|t| t.api_key.clone());
        config.ca_cert = self.ca_cert_pem()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"regions":[
        {"name":"us-east-1","paired":"us-east-2","router":"127.0.0.1:7001","metrics":"127.0.0.1:9001"},
        {"name":"us-east-2","paired":"us-east-1","router":"127.0.0.1:7002","metrics":"127.0.0.1:9002"}],
      "nodes":[{"id":"use1-index-1","kind":"index","region":"us-east-1","addr":"127.0.0.1:7101","metrics":"127.0.0.1:9101","pid":1234},
               {"id":"use1-router","kind":"router","region":"us-east-1","addr":"127.0.0.1:7001","pid":1200}],
      "tenants":[{"id":"en","api_key":"k-en","active_active":true,"home":"us-east-1","sample_queries":["tar"]},
                 {"id":"de","api_key":"k-de","active_active":false,"home":"us-east-1"}],
      "admin_token":"secret","extra_field_from_a_newer_writer":1}"#;

    #[test]
    fn parses_the_documented_format() {
        let t = Topology::from_json(SAMPLE).unwrap();
        assert_eq!(t.regions.len(), 2);
        assert_eq!(t.regions[0].paired.as_deref(), Some("us-east-2"));
        assert_eq!(t.node("use1-index-1").and_then(|n| n.pid), Some(1234));
        assert_eq!(t.nodes_of(NodeInfo::KIND_ROUTER, "us-east-1").count(), 1);
        assert_eq!(t.tenant("de").map(|t| t.active_active), Some(false));
        assert_eq!(t.admin_token, "secret");
    }

    #[test]
    fn builds_a_client_config() {
        let t = Topology::from_json(SAMPLE).unwrap();
        let c = t.client_config(None, None).unwrap();
        assert_eq!(c.home_region, "us-east-1");
        assert_eq!(c.api_key.as_deref(), Some("k-en"));
        assert_eq!(c.regions[1].uri(), "http://127.0.0.1:7002");
        let c = t.client_config(Some("us-east-2"), Some("de")).unwrap();
        assert_eq!(c.home_region, "us-east-2");
        assert_eq!(c.api_key.as_deref(), Some("k-de"));
        assert!(matches!(
            t.client_config(Some("eu-west-1"), None),
            Err(TopologyError::UnknownRegion(_))
        ));
        assert!(matches!(
            t.client_config(None, Some("fr")),
            Err(TopologyError::UnknownTenant(_))
        ));
        assert!(matches!(
            Topology::default().client_config(None, None),
            Err(TopologyError::NoRegions)
        ));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        let t = Topology::from_json(SAMPLE).unwrap();
        t.save(&path).unwrap();
        assert_eq!(Topology::load(&path).unwrap(), t);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            Topology::from_json("{"),
            Err(TopologyError::Parse(_))
        ));
        assert!(matches!(
            Topology::from_json(r#"{"regions":[{"name":1}]}"#),
            Err(TopologyError::Parse(_))
        ));
        assert!(matches!(
            Topology::load("/nonexistent/topology.json"),
            Err(TopologyError::Io { .. })
        ));
    }
}
