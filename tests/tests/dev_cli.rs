//! `tandem dev` and the `tandem` client commands, end to end: the cluster
//! starts (every process answers health), the topology file has the
//! documented names, both routers answer both tenants, the CLI commands
//! work as processes (output and exit codes; keys and tenants created and
//! deleted), shutdown stops every
//! process (those a drill restarted too), and a second start on the same
//! data directory starts cleanly and reuses the data.
//!
//! Build the binaries first: `cargo build --workspace --bins`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tandem_cli::dev::{start_cluster, Cluster, DevOptions};
use tandem_cli::procfs::{self, Signal};
use tandem_client::Topology;
use tandem_common::internal::InternalToken;
use tandem_e2e::cli::{assert_key_lifecycle, fails, ok, tandem};
use tandem_e2e::cluster::SLOW_HEDGE_FLAGS;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{SearchRequest, ShardRef};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One cluster at a time (a 2-core machine; see tests/tests/drills.rs).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A small cluster; hedging delays above what a cold debug-build search
/// takes, so "served by the local region" does not depend on luck.
fn options(data_dir: &Path) -> DevOptions {
    let mut opts = DevOptions::new(data_dir, tandem_e2e::repo_root());
    opts.docs_limit = Some(200);
    opts.bin_dir = Some(tandem_e2e::target_dir());
    opts.router_args = SLOW_HEDGE_FLAGS.iter().map(|a| a.to_string()).collect();
    opts
}

async fn health(addr: &str) -> ServingStatus {
    let Ok(endpoint) = tonic::transport::Channel::from_shared(format!("http://{addr}")) else {
        return ServingStatus::Unknown;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return ServingStatus::Unknown;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .and_then(|r| ServingStatus::try_from(r.into_inner().status).ok())
        .unwrap_or(ServingStatus::Unknown)
}

async fn assert_all_serving(topology: &Topology) {
    assert_eq!(topology.nodes.len(), 8);
    for node in &topology.nodes {
        assert_eq!(
            health(&node.addr).await,
            ServingStatus::Serving,
            "{} does not answer health",
            node.id
        );
    }
}

/// Checks the documented names of the topology file, from its raw JSON.
fn assert_documented_format(path: &Path) {
    let text = std::fs::read_to_string(path).expect("topology file");
    let json: Value = serde_json::from_str(&text).expect("topology JSON");
    let str_of = |v: &Value, key: &str| -> String {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
            .to_string()
    };
    let regions = json["regions"].as_array().expect("regions");
    let names: Vec<String> = regions.iter().map(|r| str_of(r, "name")).collect();
    assert_eq!(names, ["us-east-1", "us-east-2"]);
    assert_eq!(str_of(&regions[0], "paired"), "us-east-2");
    assert_eq!(str_of(&regions[1], "paired"), "us-east-1");
    for r in regions {
        assert!(str_of(r, "router").starts_with("127.0.0.1:"));
        assert!(str_of(r, "metrics").starts_with("127.0.0.1:"));
        assert!(str_of(r, "admin").starts_with("127.0.0.1:"));
        assert_ne!(str_of(r, "admin"), str_of(r, "router"));
        let console = format!("http://{}/console", str_of(r, "admin"));
        assert_eq!(str_of(r, "console"), console);
    }
    let nodes = json["nodes"].as_array().expect("nodes");
    let mut ids: Vec<String> = nodes.iter().map(|n| str_of(n, "id")).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "use1-index-1",
            "use1-index-2",
            "use1-model-1",
            "use1-router",
            "use2-index-1",
            "use2-index-2",
            "use2-model-1",
            "use2-router"
        ]
    );
    for n in nodes {
        let kind = str_of(n, "kind");
        assert!(["index", "model", "router"].contains(&kind.as_str()));
        assert!(str_of(n, "region").starts_with("us-east-"));
        assert!(str_of(n, "addr").starts_with("127.0.0.1:"));
        assert!(str_of(n, "metrics").starts_with("127.0.0.1:"));
        assert!(n["pid"].as_u64().is_some_and(|p| p > 0));
        if kind == "router" {
            let region = regions
                .iter()
                .find(|r| r["name"] == n["region"])
                .expect("router's region");
            assert_eq!(region["router"], n["addr"]);
        }
    }
    let tenants = json["tenants"].as_array().expect("tenants");
    let ids: Vec<String> = tenants.iter().map(|t| str_of(t, "id")).collect();
    assert_eq!(ids, ["tldr-en", "tldr-es"]);
    assert_eq!(tenants[0]["active_active"], true);
    assert_eq!(tenants[1]["active_active"], false);
    for t in tenants {
        assert!(!str_of(t, "api_key").is_empty());
        assert_eq!(str_of(t, "home"), "us-east-1");
        assert!(t["sample_queries"]
            .as_array()
            .is_some_and(|q| !q.is_empty()));
    }
    assert!(!str_of(&json, "admin_token").is_empty());
}

/// Searches `tenant` through the router of `region` directly.
async fn search_via(topology: &Topology, region: &str, tenant: &str) -> (String, String, u64) {
    let router = &topology.region(region).expect("region").router;
    let info = topology.tenant(tenant).expect("tenant");
    let mut client = SearchClient::connect(format!("http://{router}"))
        .await
        .expect("router");
    let mut request = tonic::Request::new(SearchRequest {
        tenant: tenant.into(),
        query: info.sample_queries[1].clone(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", info.api_key).parse().expect("key"),
    );
    let response = client
        .search(request)
        .await
        .unwrap_or_else(|s| panic!("search {tenant} via {region}: {s:?}"))
        .into_inner();
    let route = response.route.expect("route");
    (route.entry_region, route.served_region, response.total_hits)
}

/// Node APIs need the cluster's internal token even in `tandem dev`; the
/// files that hold it and the keys are readable by their owner only.
async fn assert_node_apis_closed(cluster: &Cluster, topology: &Topology) {
    let index = topology
        .nodes
        .iter()
        .find(|n| n.kind == "index")
        .expect("an index-node");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", index.addr))
        .expect("address")
        .connect()
        .await
        .expect("index node");
    let refused = IndexNodeClient::new(channel)
        .list_shards(tandem_proto::v1::ListShardsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(InternalToken::new(&topology.internal_token).is_ok());
    use std::os::unix::fs::PermissionsExt;
    for file in ["topology.json", "secrets.json", "internal-token"] {
        let path = cluster.data_dir.join(file);
        let mode = std::fs::metadata(&path)
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

async fn shard_info(topology: &Topology, node: &str, tenant: &str) -> (u64, u64) {
    let addr = &topology.node(node).expect("node").addr;
    let token =
        InternalToken::new(&topology.internal_token).expect("the topology's internal token");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect()
        .await
        .expect("index node");
    let mut client = IndexNodeClient::with_interceptor(channel, token);
    let info = client
        .get_shard_info(ShardRef {
            tenant: tenant.into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .expect("shard info")
        .into_inner();
    (info.num_docs, info.applied_seq)
}

/// Model versions of the sample tenants in the cluster's object store.
fn artifacts(dir: &Path) -> usize {
    ["tldr-en", "tldr-es"]
        .iter()
        .map(|t| {
            std::fs::read_dir(dir.join("snapshots").join(t).join("models"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Stops the cluster and checks that none of its processes is left.
async fn stop_and_check(cluster: Cluster) {
    let topology = cluster.current_topology();
    cluster.stop(Duration::from_secs(5)).await;
    for node in &topology.nodes {
        let pid = node.pid.expect("pid");
        assert!(
            procfs::wait_gone(pid, Duration::from_secs(2)).await,
            "{} (pid {pid}) still runs after stop",
            node.id
        );
        assert_ne!(health(&node.addr).await, ServingStatus::Serving);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_serves_the_cli_stops_and_restarts_on_its_data() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let cluster = start_cluster(&options(&data)).await.expect("cluster");
    let topology = cluster.current_topology();
    assert_eq!(topology, cluster.topology);
    assert_all_serving(&topology).await;
    assert_documented_format(&cluster.topology_path());
    assert_node_apis_closed(&cluster, &topology).await;
    tandem_e2e::exposition::assert_exposition(&topology);
    tandem_e2e::web::assert_grpc_web(&topology);

    // Both routers answer both tenants: tldr-en from local replicas,
    // tldr-es (single-region) from its home region's.
    for region in ["us-east-1", "us-east-2"] {
        let (entry, served, hits) = search_via(&topology, region, "tldr-en").await;
        assert_eq!((entry.as_str(), served.as_str()), (region, region));
        assert!(hits > 0);
        let (entry, served, hits) = search_via(&topology, region, "tldr-es").await;
        assert_eq!((entry.as_str(), served.as_str()), (region, "us-east-1"));
        assert!(hits > 0);
    }

    // The CLI, as a process, from a directory without a default topology.
    let t = cluster.topology_path();
    let t = t.to_str().expect("utf-8 path");
    let cwd = dir.path();
    let out = ok(
        cwd,
        &[
            "search",
            "--topology",
            t,
            "--tenant",
            "tldr-en",
            "list files",
        ],
    );
    assert!(out.contains("hits for \"list files\" (tenant tldr-en, via us-east-1 router)"));
    assert!(
        out.contains("route: entry us-east-1 -> served us-east-1"),
        "{out}"
    );
    let out = ok(
        cwd,
        &[
            "search",
            "--topology",
            t,
            "--region",
            "us-east-2",
            "--tenant",
            "tldr-es",
            "--json",
            "listar",
        ],
    );
    let json: Value = serde_json::from_str(out.trim()).expect("search --json");
    assert_eq!(json["client_region"], "us-east-2");
    assert_eq!(json["route"]["served_region"], "us-east-1");
    assert!(json["hits"].as_array().is_some_and(|h| !h.is_empty()));
    let out = ok(
        cwd,
        &["suggest", "--topology", t, "--tenant", "tldr-en", "ext"],
    );
    assert!(out.contains("suggestions for \"ext\""), "{out}");
    assert!(out.contains("extract"), "{out}");
    let out = ok(
        cwd,
        &[
            "suggest",
            "--json",
            "--topology",
            t,
            "--tenant",
            "tldr-en",
            "ext",
        ],
    );
    let json: Value = serde_json::from_str(out.trim()).expect("suggest --json");
    assert!(json["suggestions"][0]["text"]
        .as_str()
        .is_some_and(|s| s.contains("ext")));
    assert!(json["route"]["entry_region"].is_string(), "{json}");
    let version = ok(cwd, &["--version"]);
    assert!(
        version.starts_with("tandem 0.") && version.contains("(commit "),
        "{version}"
    );
    let completions = ok(cwd, &["completions", "bash"]);
    assert!(completions.contains("migrate") && completions.contains("--tenant"));
    let out = ok(cwd, &["status", "--topology", t]);
    assert!(out.contains("router use1-router (us-east-1)"), "{out}");
    assert!(out.contains("router use2-router (us-east-2)"), "{out}");
    assert!(out.contains("use1-index-1"), "{out}");
    let out = ok(cwd, &["dial", "us-east-1", "50", "--topology", t]);
    assert_eq!(
        out.matches("dial of us-east-1 set to 50%").count(),
        2,
        "{out}"
    );
    let out = ok(cwd, &["status", "--json", "--topology", t]);
    let views: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("status --json line"))
        .filter(|v| v.get("router_id").is_some())
        .collect();
    assert_eq!(views.len(), 2);
    for view in &views {
        let dial = view["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "us-east-1"))
            .map(|r| r["dial_percent"].clone());
        assert_eq!(dial, Some(Value::from(50)), "{view}");
    }
    let out = ok(
        cwd,
        &["dial", "us-east-1", "100", "--json", "--topology", t],
    );
    let json: Value = serde_json::from_str(out.trim()).expect("dial --json");
    assert_eq!(json["percent"], 100);
    assert_eq!(json["routers"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(
        json["routers"][0]["ok"].as_bool().unwrap_or(false),
        "{json}"
    );
    let out = ok(
        cwd,
        &["verify", "--tenant", "tldr-en", "--json", "--topology", t],
    );
    let verified: Value = serde_json::from_str(out.trim()).expect("verify --json");
    assert_eq!(verified["equal"], true, "{verified}");
    assert_eq!(
        verified["shards"][0]["replicas"].as_array().map(Vec::len),
        Some(2)
    );
    assert_key_lifecycle(cwd, t);
    tandem_e2e::cli::assert_usage(cwd, t, &topology).await;
    tandem_e2e::tenants::assert_tenant_lifecycle(cwd, t, &cluster.data_dir).await;
    tandem_e2e::learning::assert_learning_loop(cwd, t, &topology).await;
    // Errors: a non-zero exit and a message, never a panic.
    let err = fails(cwd, &["search", "--topology", t, "--tenant", "nobody", "x"]);
    assert!(err.starts_with("tandem: "), "{err}");
    let err = fails(cwd, &["status", "--topology", "/nonexistent/topology.json"]);
    assert!(err.contains("cannot read topology"), "{err}");
    let err = fails(cwd, &["search", "--tenant", "tldr-en", "x"]);
    assert!(err.contains("no router"), "{err}");
    let err = fails(cwd, &["drill", "no-such-outage", "--topology", t]);
    assert!(err.contains("index-killed"), "lists the scenarios: {err}");

    let before = (
        shard_info(&topology, "use1-index-1", "tldr-en").await,
        shard_info(&topology, "use2-index-1", "tldr-en").await,
        artifacts(&cluster.data_dir),
    );
    assert_eq!(before.0 .0, 200);
    assert_eq!(before.2, 2, "one version per tenant after the rollback");
    stop_and_check(cluster).await;

    // A second start on the same directory: same keys, data reused (no
    // reload, no retraining), everything serving.
    let again = start_cluster(&options(&data)).await.expect("second start");
    let second = again.current_topology();
    assert_all_serving(&second).await;
    assert_eq!(second.admin_token, topology.admin_token);
    assert_eq!(second.tenants, topology.tenants);
    let after = (
        shard_info(&second, "use1-index-1", "tldr-en").await,
        shard_info(&second, "use2-index-1", "tldr-en").await,
        artifacts(&again.data_dir),
    );
    assert_eq!(after, before);
    let (_, served, _) = search_via(&second, "us-east-1", "tldr-en").await;
    assert_eq!(served, "us-east-1");
    stop_and_check(again).await;
}

/// Reads `tandem dev`'s stdout until it says it serves.
fn wait_until_serving(child: &mut std::process::Child) {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Ctrl-C stops every process") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("tandem dev serves");
}

/// Starts `tandem dev` on `data` as a process and waits until it serves.
fn spawn_dev(data: &Path, extra: &[&str]) -> std::process::Child {
    let mut dev = Command::new(tandem())
        .args(["dev", "--docs-limit", "100", "--data-dir"])
        .arg(data)
        .args(extra)
        .current_dir(tandem_e2e::repo_root())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tandem dev");
    wait_until_serving(&mut dev);
    dev
}

async fn assert_all_gone(topology: &Topology, after: &str) {
    for node in &topology.nodes {
        let pid = node.pid.expect("pid");
        assert!(
            procfs::wait_gone(pid, Duration::from_secs(6)).await,
            "{} (pid {pid}) survived {after}",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_command_stops_what_drills_restarted_and_what_a_crash_left() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let copy = dir.path().join("copy.json");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let mut dev = spawn_dev(&data, &["--write-topology", copy_arg]);
    let original = Topology::load(&copy).expect("topology copy");
    assert_eq!(
        original,
        Topology::load(data.join("topology.json")).expect("topology")
    );

    // A drill through the copy restarts use1-index-1 and keeps both files
    // current.
    let out = ok(
        dir.path(),
        &[
            "drill",
            "index-killed",
            "--duration",
            "1.5",
            "--rate",
            "20",
            "--topology",
            copy_arg,
        ],
    );
    assert!(out.contains("healed: use1-index-1 restarted"), "{out}");
    let restarted = Topology::load(&copy).expect("copy");
    let old_pid = original.node("use1-index-1").and_then(|n| n.pid);
    let new_pid = restarted.node("use1-index-1").and_then(|n| n.pid);
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        Topology::load(data.join("topology.json")).expect("topology"),
        restarted
    );
    assert!(procfs::is_alive(new_pid.expect("pid")));

    // A drill refuses a cluster that is already broken.
    let frozen = restarted
        .node("use2-index-2")
        .and_then(|n| n.pid)
        .expect("pid");
    assert!(procfs::send(frozen, Signal::Stop));
    let err = fails(
        dir.path(),
        &["drill", "model-errors", "--topology", copy_arg],
    );
    assert!(err.contains("frozen"), "{err}");
    assert!(procfs::send(frozen, Signal::Cont));

    // `tandem dev` itself crashes: its nodes live on. The next start on
    // the directory stops them and starts cleanly.
    assert!(procfs::send(dev.id(), Signal::Kill));
    let _ = dev.wait();
    assert!(procfs::is_alive(frozen));
    let mut dev = spawn_dev(&data, &[]);
    assert_all_gone(&restarted, "the next start on its data directory").await;
    let topology_file = data.join("topology.json");
    let second = Topology::load(&topology_file).expect("topology");
    assert_eq!(second.tenants, restarted.tenants);
    assert_all_serving(&second).await;

    // SIGTERM stops everything, a router a drill restarted too.
    let t = topology_file.to_str().expect("utf-8 path");
    let out = ok(
        dir.path(),
        &[
            "drill",
            "router-down",
            "--duration",
            "1.5",
            "--rate",
            "20",
            "--topology",
            t,
        ],
    );
    assert!(out.contains("healed: use1-router restarted"), "{out}");
    let last = Topology::load(&topology_file).expect("topology");
    assert_ne!(
        last.node("use1-router").and_then(|n| n.pid),
        second.node("use1-router").and_then(|n| n.pid)
    );
    assert!(procfs::send(dev.id(), Signal::Term));
    let status = tokio::task::spawn_blocking(move || dev.wait())
        .await
        .expect("wait task")
        .expect("tandem dev exits");
    assert!(status.success(), "tandem dev exited with {status}");
    assert_all_gone(&last, "tandem dev's shutdown").await;
}

/// `--routers-per-region 2`: the topology lists every router, the CLI
/// reaches all of them, and a dial set once is in force on both routers of
/// the region, recorded in the catalog, and survives a SIGKILL and restart
/// of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_per_region_share_a_dial_that_survives_restarts() {
    use tandem_cli::drill::restart;
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let mut opts = options(&data);
    opts.docs_limit = Some(50);
    opts.routers_per_region = 2;
    let cluster = start_cluster(&opts).await.expect("cluster");
    let topology = cluster.current_topology();
    for region in &topology.regions {
        assert_eq!(region.routers.len(), 2, "{region:?}");
        assert_eq!(region.routers[0], region.router);
    }
    let t = cluster.topology_path();
    let t = t.to_str().expect("utf-8 path");
    let cwd = dir.path();
    let out = ok(cwd, &["dial", "us-east-1", "40", "--topology", t]);
    assert_eq!(
        out.matches("dial of us-east-1 set to 40%").count(),
        4,
        "every router of both regions: {out}"
    );
    let catalog = std::fs::read_to_string(data.join("catalog.toml")).expect("catalog");
    assert!(catalog.contains("dial = 40"), "{catalog}");
    for region in ["us-east-1", "us-east-2"] {
        let args = ["search", "--topology", t, "--region", region];
        ok(
            cwd,
            &[&args[..], &["--tenant", "tldr-en", "list files"]].concat(),
        );
    }

    // Both routers of us-east-1 die and come back on the same ports.
    let routers: Vec<_> = topology.nodes_of("router", "us-east-1").cloned().collect();
    let snapshots: Vec<_> = routers
        .iter()
        .map(|n| restart::snapshot(n, n.admin.clone(), &data.join("logs")).expect("snapshot"))
        .collect();
    for s in &snapshots {
        procfs::send(s.pid, Signal::Kill);
    }
    for s in &snapshots {
        restart::kill(s).await.expect("killed");
    }
    for s in &snapshots {
        let pid = restart::restart(s).await.expect("restarted");
        restart::update_topology(&[cluster.topology_path()], &s.id, pid).expect("topology");
    }
    let out = ok(cwd, &["status", "--json", "--topology", t]);
    let views: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("status --json line"))
        .filter(|v| v.get("router_id").is_some())
        .collect();
    assert_eq!(views.len(), 4, "{out}");
    for view in &views {
        let dial = view["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "us-east-1"))
            .map(|r| r["dial_percent"].clone());
        assert_eq!(dial, Some(Value::from(40)), "{view}");
    }
    ok(cwd, &["dial", "us-east-1", "100", "--topology", t]);
    stop_and_check(cluster).await;
}
