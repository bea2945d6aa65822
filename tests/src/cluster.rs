//! A small two-region fleet of real processes for end-to-end tests:
//! index-nodes (and model-nodes) per region, one router per region, a
//! catalog file naming them, and helpers to load documents and query.
//!
//! Routers must be in the catalog (for forwarding) but learn their port only
//! once started, so the catalog is written twice: first with the routers at
//! an unreachable placeholder, then with their real addresses, which the
//! routers pick up through catalog hot reload.

use std::path::PathBuf;
use std::time::Duration;

use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::router_admin_client::RouterAdminClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{
    Document, IngestRequest, SearchRequest, SearchResponse, ShardRef, StatusRequest,
};
use tonic::transport::Channel;

use crate::{sample_docs, start_index_node, start_node_on, with_bearer, Proc, ADMIN_TOKEN};

/// The two regions every test cluster has.
pub const REGIONS: [&str; 2] = ["r1", "r2"];

/// A tenant of the test catalog.
#[derive(Clone, Debug)]
pub struct TenantSpec {
    /// Tenant id.
    pub id: &'static str,
    /// Home region.
    pub home: &'static str,
    /// Served in both regions.
    pub active_active: bool,
    /// Index-node ids of each shard.
    pub shards: Vec<Vec<&'static str>>,
    /// Model-node ids.
    pub models: Vec<&'static str>,
}

impl TenantSpec {
    /// The API key the cluster gives this tenant.
    pub fn key(&self) -> String {
        format!("key-of-{}", self.id)
    }

    /// The write key the cluster gives this tenant.
    pub fn write_key(&self) -> String {
        format!("write-key-of-{}", self.id)
    }

    /// The leader of shard `n` (the catalog's default: the first replica).
    pub fn leader(&self, n: usize) -> &'static str {
        self.shards[n][0]
    }
}

/// A node the cluster started.
pub struct NodeProc {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// "index" or "model".
    pub kind: &'static str,
    /// The process.
    pub proc: Proc,
    /// Its data directory (to restart it with its data).
    pub data_dir: PathBuf,
}

/// See the module documentation.
pub struct Cluster {
    /// Index and model nodes.
    pub nodes: Vec<NodeProc>,
    /// One router per region, in [`REGIONS`] order.
    pub routers: Vec<Proc>,
    /// Tenants of the catalog.
    pub tenants: Vec<TenantSpec>,
    /// The catalog file the routers watch.
    pub catalog_path: PathBuf,
    /// Extra flags of every index-node.
    pub index_flags: Vec<String>,
    /// Keeps every data directory alive; declared last so that it is
    /// removed after the processes using it are gone.
    pub dir: tempfile::TempDir,
}

/// Router flags for tests: quick failure handling (with
/// [`SLOW_HEDGE_FLAGS`] added).
pub const FAST_ROUTER_FLAGS: &[&str] = &[
    "--probe-interval-ms",
    "100",
    "--per-try-timeout-ms",
    "400",
    "--catalog-poll-ms",
    "100",
    "--drain-grace-ms",
    "50",
];

/// The regions of a test cluster are 10 ms apart, as neighbouring cloud
/// regions are (emulated: see `tandem_common::latency`), for routers and
/// index-nodes alike.
pub const INTER_REGION_FLAGS: &[&str] = &["--inter-region-latency-ms", "10"];

/// Hedging delays well above what a debug-build search takes on a busy
/// 2-core machine, so that a healthy replica is not hedged by accident and
/// answers from the paired region mean failover, not a hedge won by luck.
pub const SLOW_HEDGE_FLAGS: &[&str] = &[
    "--hedge-floor-ms",
    "100",
    "--hedge-default-ms",
    "100",
    "--hedge-ceiling-ms",
    "150",
];

impl Cluster {
    /// Starts index-nodes `index_nodes` (id, region), routers for both
    /// regions, and loads `docs_per_shard` sample pages into every replica of
    /// every tenant shard.
    pub async fn start(
        index_nodes: &[(&str, &str)],
        tenants: Vec<TenantSpec>,
        docs_per_shard: usize,
    ) -> Cluster {
        Self::start_with_models(index_nodes, &[], tenants, docs_per_shard).await
    }

    /// Tenant `t`, one active-active shard: leader a1 in r1, follower b1
    /// in r2, 10 pages.
    pub async fn leader_and_follower() -> Cluster {
        let spec = TenantSpec {
            id: "t",
            home: "r1",
            active_active: true,
            shards: vec![vec!["a1", "b1"]],
            models: vec![],
        };
        Self::start(&[("a1", "r1"), ("b1", "r2")], vec![spec], 10).await
    }

    /// Like [`Cluster::start`], plus model-nodes `model_nodes` (id, region)
    /// serving models trained from the English sample event log for every
    /// tenant that lists model replicas.
    pub async fn start_with_models(
        index_nodes: &[(&str, &str)],
        model_nodes: &[(&str, &str)],
        tenants: Vec<TenantSpec>,
        docs_per_shard: usize,
    ) -> Cluster {
        Self::start_full(index_nodes, model_nodes, tenants, docs_per_shard, &[]).await
    }

    /// Like [`Cluster::start_with_models`], with `index_flags` added to
    /// every index-node's command line (kept for restarts).
    pub async fn start_full(
        index_nodes: &[(&str, &str)],
        model_nodes: &[(&str, &str)],
        tenants: Vec<TenantSpec>,
        docs_per_shard: usize,
        index_flags: &[String],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // One snapshot store for all nodes (as `tandem dev` has), unless
        // the flags bring their own configuration.
        let shared_store = format!("file://{}", dir.path().join("snapshots").display());
        let index_flags: Vec<String> = match index_flags {
            [] => vec!["--snapshot-store".into(), shared_store],
            given => given.to_vec(),
        };
        let index_flags = index_flags.as_slice();
        let catalog_path = dir.path().join("catalog.toml");
        let flags = index_node_flags(&catalog_path, index_flags);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut nodes = Vec::new();
        for (id, region) in index_nodes {
            let data_dir = dir.path().join(id);
            let proc = start_index_node(id, &data_dir, &flags).expect("index node");
            nodes.push(NodeProc {
                id: id.to_string(),
                region: region.to_string(),
                kind: "index",
                proc,
                data_dir,
            });
        }
        if !model_nodes.is_empty() {
            let model_dir = dir.path().join("models");
            for tenant in tenants.iter().filter(|t| !t.models.is_empty()) {
                train_model(tenant.id, &model_dir);
            }
            for (id, region) in model_nodes {
                let proc = start_model_node(id, &model_dir).expect("model node");
                nodes.push(NodeProc {
                    id: id.to_string(),
                    region: region.to_string(),
                    kind: "model",
                    proc,
                    data_dir: model_dir.clone(),
                });
            }
        }
        let mut cluster = Cluster {
            index_flags: index_flags.to_vec(),
            nodes,
            routers: Vec::new(),
            tenants,
            catalog_path,
            dir,
        };
        std::fs::write(&cluster.catalog_path, cluster.catalog_toml(&[])).expect("write catalog");
        for region in REGIONS {
            let mut args: Vec<String> = vec![
                "--router-id".into(),
                format!("{region}-router"),
                "--region".into(),
                region.into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--metrics-listen".into(),
                "127.0.0.1:0".into(),
                "--catalog".into(),
                cluster.catalog_path.display().to_string(),
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
            ];
            args.extend(
                FAST_ROUTER_FLAGS
                    .iter()
                    .chain(SLOW_HEDGE_FLAGS)
                    .chain(INTER_REGION_FLAGS)
                    .map(|s| s.to_string()),
            );
            cluster
                .routers
                .push(Proc::spawn("tandem-router", &args).expect("router"));
        }
        let addrs: Vec<String> = cluster.routers.iter().map(|r| r.url()).collect();
        std::fs::write(&cluster.catalog_path, cluster.catalog_toml(&addrs)).expect("write catalog");
        cluster.wait_for_catalog().await;
        cluster.load(docs_per_shard).await;
        cluster
    }

    /// The catalog; routers at `router_addrs` (placeholders if empty).
    pub fn catalog_toml(&self, router_addrs: &[String]) -> String {
        let mut t = String::from("format = 2\n\n[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n");
        for (i, region) in REGIONS.iter().enumerate() {
            let addr = router_addrs
                .get(i)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:1".into());
            t += &format!("[[nodes]]\nid = \"{region}-router\"\nregion = \"{region}\"\nkind = \"router\"\naddr = \"{addr}\"\n\n");
        }
        for n in &self.nodes {
            t += &format!(
                "[[nodes]]\nid = \"{}\"\nregion = \"{}\"\nkind = \"{}\"\naddr = \"{}\"\n\n",
                n.id,
                n.region,
                n.kind,
                n.proc.url()
            );
        }
        for tenant in &self.tenants {
            let models = tenant
                .models
                .iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ");
            t += &format!(
                "[[tenants]]\nid = \"{}\"\nhome = \"{}\"\nactive_active = {}\nlanguage = \"en\"\napi_key_sha256 = [\"{}\"]\n\
                 write_key_sha256 = [\"{}\"]\nmodel_replicas = [{models}]\n\n[tenants.shards]\n",
                tenant.id,
                tenant.home,
                tenant.active_active,
                tandem_common::auth::sha256_hex(&tenant.key()),
                tandem_common::auth::sha256_hex(&tenant.write_key()),
            );
            for (n, replicas) in tenant.shards.iter().enumerate() {
                let ids = replicas
                    .iter()
                    .map(|r| format!("\"{r}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                t += &format!("{n} = [{ids}]\n");
            }
            t += "\n";
        }
        t
    }

    /// Waits until both routers run the catalog now on disk.
    pub async fn wait_for_catalog(&self) {
        for _ in 0..200 {
            let mut versions = Vec::new();
            for r in 0..self.routers.len() {
                versions.push(self.status(r).await.catalog_version);
            }
            let mut errors = Vec::new();
            for r in 0..self.routers.len() {
                errors.push(self.status(r).await.catalog_error);
            }
            let bytes = std::fs::read(&self.catalog_path).expect("catalog");
            let wanted = catalog_version(&bytes);
            if versions.iter().all(|v| *v == wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("routers did not pick up the catalog");
    }

    /// Writes sample pages to every shard's leader (shards hold different
    /// pages, like a real tenant's would) and waits until every replica has
    /// applied them.
    async fn load(&self, docs_per_shard: usize) {
        let docs = sample_docs("en", docs_per_shard * 4);
        for tenant in &self.tenants {
            for (shard, replicas) in tenant.shards.iter().enumerate() {
                let slice: Vec<Document> = docs
                    .iter()
                    .skip(shard * docs_per_shard)
                    .take(docs_per_shard)
                    .cloned()
                    .collect();
                let seq = self.write_to_leader(tenant, shard as u32, slice).await;
                for node_id in replicas {
                    self.wait_applied(node_id, tenant.id, shard as u32, seq)
                        .await;
                }
            }
        }
    }

    /// Writes `docs` to the leader of `tenant`'s `shard` (retrying until the
    /// node has read the catalog); returns the batch's sequence number.
    pub async fn write_to_leader(
        &self,
        tenant: &TenantSpec,
        shard: u32,
        docs: Vec<Document>,
    ) -> u64 {
        let leader = tenant.leader(shard as usize);
        let mut c = IndexNodeClient::with_interceptor(
            self.node(leader).proc.channel().await,
            crate::internal(),
        );
        for _ in 0..300 {
            let request = IngestRequest {
                tenant: tenant.id.into(),
                shard,
                upserts: docs.clone(),
                epoch: 1,
                request_id: format!("load-{}-{shard}", tenant.id),
                ..Default::default()
            };
            match c.ingest(request).await {
                Ok(ack) => return ack.into_inner().applied_seq,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!(
            "leader {leader} of {}/{shard} never took the write",
            tenant.id
        );
    }

    /// Waits until `node` shows `seq` applied for the shard.
    pub async fn wait_applied(&self, node: &str, tenant: &str, shard: u32, seq: u64) {
        let mut c = IndexNodeClient::with_interceptor(
            self.node(node).proc.channel().await,
            crate::internal(),
        );
        for _ in 0..600 {
            let info = c
                .get_shard_info(ShardRef {
                    tenant: tenant.into(),
                    shard,
                    digest: false,
                    digest_at_seq: 0,
                })
                .await;
            if info.is_ok_and(|i| i.into_inner().applied_seq >= seq) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{node} never applied {tenant}/{shard} seq {seq}");
    }

    /// Restarts index-node `id` on its old address and data (after a
    /// SIGKILL, or killing it now), reading the catalog as before.
    pub fn restart_index_node(&mut self, id: &str) {
        let catalog = self.catalog_path.clone();
        self.restart_index_node_with(id, &catalog);
    }

    /// [`Cluster::restart_index_node`] reading the catalog at `catalog`
    /// (e.g. a stale copy).
    pub fn restart_index_node_with(&mut self, id: &str, catalog: &std::path::Path) {
        let flags = index_node_flags(catalog, &self.index_flags);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let node = self.node_mut(id);
        // Quietly: it may be dead already.
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(node.proc.pid.to_string())
            .status();
        node.proc.wait();
        let listen = node.proc.grpc.to_string();
        node.proc = start_node_on(
            "tandem-index-node",
            id,
            &listen,
            "--data-dir",
            &node.data_dir,
            &flags,
        )
        .expect("restart index node");
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &NodeProc {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    /// The node with this id, mutably.
    pub fn node_mut(&mut self, id: &str) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> &TenantSpec {
        self.tenants.iter().find(|t| t.id == id).expect("tenant id")
    }

    /// A Search client to the router of region index `r`.
    pub async fn search_client(&self, r: usize) -> SearchClient<Channel> {
        SearchClient::new(self.routers[r].channel().await)
    }

    /// Searches `tenant` for `query` through router `r` with the tenant's key.
    pub async fn search(
        &self,
        r: usize,
        tenant: &str,
        query: &str,
    ) -> Result<SearchResponse, tonic::Status> {
        let req = SearchRequest {
            tenant: tenant.into(),
            query: query.into(),
            top_k: 5,
            ..Default::default()
        };
        self.search_with(r, req, &self.tenant(tenant).key()).await
    }

    /// Sends `req` through router `r` with `key`, deadline 2 s.
    pub async fn search_with(
        &self,
        r: usize,
        req: SearchRequest,
        key: &str,
    ) -> Result<SearchResponse, tonic::Status> {
        let mut request = with_bearer(req, key);
        request.set_timeout(Duration::from_secs(2));
        self.search_client(r)
            .await
            .search(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Router `r`'s admin status.
    pub async fn status(&self, r: usize) -> tandem_proto::v1::StatusResponse {
        RouterAdminClient::new(self.routers[r].admin_channel().await)
            .status(with_bearer(StatusRequest {}, ADMIN_TOKEN))
            .await
            .expect("status")
            .into_inner()
    }
}

/// Trains `tenant`'s model from the English sample event log into `model_dir`.
pub fn train_model(tenant: &str, model_dir: &std::path::Path) {
    let events = crate::repo_root().join("data/events/en.jsonl.gz");
    let status = std::process::Command::new(crate::bin_path("tandem-model-node"))
        .args(["train", "--tenant", tenant, "--events"])
        .arg(&events)
        .arg("--model-dir")
        .arg(model_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run tandem-model-node train");
    assert!(status.success(), "training {tenant} failed");
}

/// Starts a model-node over `model_dir`, faults enabled.
pub fn start_model_node(id: &str, model_dir: &std::path::Path) -> anyhow::Result<Proc> {
    crate::start_node("tandem-model-node", id, "--model-dir", model_dir, &[])
}

/// The catalog version routers report: first 12 hex digits of SHA-256.
pub fn catalog_version(bytes: &[u8]) -> String {
    let hex = tandem_common::auth::sha256_hex_bytes(bytes);
    hex[..12].to_string()
}

/// Every index-node's flags beyond [`start_node`]'s: the catalog it reads,
/// polled quickly, and the cluster's extra flags.
fn index_node_flags(catalog: &std::path::Path, extra: &[String]) -> Vec<String> {
    let mut flags = vec![
        "--catalog".to_string(),
        catalog.display().to_string(),
        "--catalog-poll-ms".to_string(),
        "100".to_string(),
    ];
    flags.extend(INTER_REGION_FLAGS.iter().map(|s| s.to_string()));
    flags.extend(extra.iter().cloned());
    flags
}
