//! A `tandem dev --tls` cluster end to end: every listener and channel is
//! TLS (mutual between the processes), and
//!
//! - the CLI and the client library search over TLS in both regions, and a
//!   client without the cluster's CA is refused;
//! - a node API called without internal credentials (the CA but no client
//!   certificate and no internal token) gets UNAUTHENTICATED;
//! - a certificate rotated on disk is served by every process without a
//!   restart, while searches go on without one failure;
//! - a revoked key stops working in both regions.
//!
//! One cluster for all of it (cluster start-up dominates the cost). Build
//! the binaries first: `cargo build --workspace --bins`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_cli::dev::tls::DevTls;
use tandem_cli::dev::{start_cluster, Cluster, DevOptions};
use tandem_client::{TandemClient, Topology};
use tandem_common::tls::{Tls, TlsFiles};
use tandem_e2e::cli::{assert_key_lifecycle, fails, ok};
use tandem_e2e::cluster::SLOW_HEDGE_FLAGS;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{ListShardsRequest, SearchRequest};

async fn tls_cluster(dir: &std::path::Path) -> Cluster {
    let mut opts = DevOptions::new(dir.join("dev"), tandem_e2e::repo_root());
    opts.docs_limit = Some(200);
    opts.bin_dir = Some(tandem_e2e::target_dir());
    opts.router_args = SLOW_HEDGE_FLAGS.iter().map(|a| a.to_string()).collect();
    opts.tls = true;
    start_cluster(&opts)
        .await
        .expect("a TLS dev cluster starts")
}

fn search(tenant: &str) -> SearchRequest {
    SearchRequest {
        tenant: tenant.into(),
        query: "list files".into(),
        top_k: 5,
        ..Default::default()
    }
}

/// Searches through `client` until `stop`, counting successes and failures.
async fn steady_load(client: TandemClient, stop: Arc<AtomicU64>, counts: Arc<[AtomicU64; 2]>) {
    while stop.load(Ordering::Relaxed) == 0 {
        let outcome = client.search(search("tldr-en")).await;
        counts[usize::from(outcome.is_err())].fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every process of `topology` serves the certificate in `files` to new
/// handshakes, within `within`.
async fn wait_until_served(topology: &Topology, files: &TlsFiles, within: Duration) {
    let tls = Tls::load(files.clone()).expect("the rotated files load");
    let expected = tls.current_leaf();
    let deadline = tokio::time::Instant::now() + within;
    for node in &topology.nodes {
        let addr: SocketAddr = node.addr.parse().expect("host:port");
        while tls.peer_leaf(addr, "localhost").await.expect("handshake") != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still serves the old certificate",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_rotates_and_stays_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = tls_cluster(dir.path()).await;
    let topology = cluster.current_topology();
    let t = cluster.topology_path().display().to_string();
    let cwd = dir.path();
    assert!(topology.ca_cert.is_some(), "the topology names the CA");

    // The CLI over TLS, through each region's router.
    for region in ["us-east-1", "us-east-2"] {
        let out = ok(
            cwd,
            &[
                "search",
                "--topology",
                &t,
                "--region",
                region,
                "--tenant",
                "tldr-en",
                "tar",
            ],
        );
        assert!(out.contains(&format!("via {region} router")), "{out}");
    }

    // The client library over TLS; without the CA it is refused.
    let config = topology
        .client_config(None, Some("tldr-en"))
        .expect("config");
    let client = TandemClient::connect(config.clone()).await.expect("client");
    let hits = client
        .search(search("tldr-en"))
        .await
        .expect("search over TLS");
    assert!(hits.0.total_hits > 0);
    let mut no_ca = config.clone();
    no_ca.ca_cert = None;
    let refused = TandemClient::connect(no_ca)
        .await
        .expect("client")
        .search(search("tldr-en"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // A plaintext client cannot talk to a TLS router either, and an
    // unreadable CA file is an error that names it.
    let router = topology.regions[0].router.as_str();
    fails(
        cwd,
        &["search", "--router", router, "--tenant", "tldr-en", "x"],
    );
    let err = fails(
        cwd,
        &[
            "search",
            "--router",
            router,
            "--ca-cert",
            "/nonexistent.pem",
            "--tenant",
            "tldr-en",
            "x",
        ],
    );
    assert!(err.contains("CA certificate"), "{err}");

    // A node API without internal credentials: UNAUTHENTICATED.
    let index = topology
        .nodes
        .iter()
        .find(|n| n.kind == "index")
        .expect("index");
    let channel = tandem_cli::operator::endpoint(&index.addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("TLS to the index-node");
    let refused = IndexNodeClient::new(channel)
        .list_shards(ListShardsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Rotation under load: a new certificate on disk, served by every
    // process within a few reload periods; no search fails.
    let stop = Arc::new(AtomicU64::new(0));
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut load = Vec::new();
    for home in ["us-east-1", "us-east-2"] {
        let config = topology
            .client_config(Some(home), Some("tldr-en"))
            .expect("config");
        let client = TandemClient::connect(config).await.expect("client");
        load.push(tokio::spawn(steady_load(
            client,
            stop.clone(),
            counts.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dev_tls = DevTls::ensure(&cluster.data_dir).expect("the cluster's TLS files");
    dev_tls.issue().expect("a new certificate");
    let files = TlsFiles {
        cert: dev_tls.cert.clone(),
        key: dev_tls.key.clone(),
        ca: dev_tls.ca.clone(),
    };
    wait_until_served(&topology, &files, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(1, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let (done, failed) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    assert!(done > 10, "only {done} searches ran");
    assert_eq!(
        failed,
        0,
        "{failed} of {} searches failed during the rotation",
        done + failed
    );
    // New connections (a fresh CLI) work with the rotated certificates.
    ok(
        cwd,
        &["search", "--topology", &t, "--tenant", "tldr-en", "tar"],
    );

    // Keys: revoked, a key stops working in both regions (over TLS).
    assert_key_lifecycle(cwd, &t);

    cluster.stop(Duration::from_secs(5)).await;
}
