//! What the router path costs, against the paths an operator could put in
//! front of the same index-node instead, in one run on the same machine:
//!
//! - **direct**: `IndexNode/SearchShard` straight to the index-node;
//! - **nginx**: the same call through nginx's `grpc_pass` (skipped, with a
//!   note, when `nginx` is not installed: `apt-get install nginx`);
//! - **router**: `Search/Search` through `tandem-router`: authentication,
//!   the replica-map cache, the dial, the model's boosts (a real
//!   model-node, trained on the sample event log), the shard call with
//!   fallback and hedging machinery, the route;
//! - **router, no model**: the same for a tenant without a model (a copy
//!   of the same shard), to tell the router's own cost from the model's.
//!
//! The realistic case: the English tldr pages as one shard, the tenant has
//! a model, the queries are natural-language questions
//! (`data/nq_open_queries`), and every path returns the top 10 with
//! snippets. Closed loop at concurrency 16 and 64 (`BENCH_CONCURRENCY`),
//! each path run in short slices interleaved with the others so that noise
//! hits all alike. Reports QPS, p50/p99, errors, CPU per call of the
//! process in the middle, and router QPS as a share of nginx's and of
//! direct. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench router`
//! (`BENCH_SECONDS=N` per path and concurrency, default 5;
//! `BENCH_OTHER_ROUTER=PATH` adds another `tandem-router` binary on the
//! same nodes, to compare two builds in one run).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_benches::{closed_loop, measure, repo_root, Call, Measured, Server};
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::ShardSearchRequest;
use tonic::transport::Channel;

/// Each tenant's key is this and its id (a key belongs to one tenant).
const API_KEY: &str = "bench-key";

/// One way to the index-node.
struct Route_ {
    name: &'static str,
    /// The processes besides the client and the index-node (and their
    /// children), for their CPU time.
    middle: Vec<u32>,
    call: Call,
}

impl Route_ {
    fn caller(
        &self,
    ) -> impl Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + Sync + 'static
    {
        let call = self.call.clone();
        move |q| call(q)
    }

    fn cpu_time(&self) -> Duration {
        self.middle.iter().copied().map(cpu_time_of).sum()
    }
}

/// CPU time of process `pid` and its children so far, all threads
/// (`/proc/<pid>/task/*/schedstat`): nginx's work is in its workers.
fn cpu_time_of(pid: u32) -> Duration {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: the parent is the second field after `)`.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        });
    std::iter::once(pid)
        .chain(children)
        .map(tandem_benches::cpu_time_of_process)
        .sum()
}

/// nginx in front of the index-node with `grpc_pass`; killed on drop.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Nginx {
    /// Starts nginx from `PATH` (or `/usr/sbin`), if installed.
    fn start(dir: &Path, upstream: std::net::SocketAddr) -> anyhow::Result<Option<Nginx>> {
        let Some(bin) = ["nginx", "/usr/sbin/nginx"].into_iter().find(|b| {
            Command::new(b)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }) else {
            return Ok(None);
        };
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let d = dir.display();
        let config = format!(
            "daemon off; master_process on; worker_processes auto; user root; pid {d}/nginx.pid; error_log {d}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               keepalive_requests 10000000; keepalive_timeout 600s;\n\
               upstream index {{ server {upstream}; keepalive 64; keepalive_requests 10000000; }}\n\
               server {{ listen {addr} http2; location / {{ grpc_pass grpc://index; }} }} }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Some(Nginx { child, addr }));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("nginx did not listen on {addr}; see {d}/nginx-error.log")
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: nginx's master stops its workers on the way
    /// out, which a killed master cannot.
    fn drop(&mut self) {
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn shard_call(channel: Channel) -> Call {
    let client = IndexNodeClient::with_interceptor(channel, tandem_benches::internal());
    Arc::new(move |q: String| {
        let mut client = client.clone();
        Box::pin(async move {
            let request = ShardSearchRequest {
                tenant: "en".into(),
                shard: 0,
                query: q,
                top_k: 10,
                ..Default::default()
            };
            client.search_shard(request).await.is_ok()
        })
    })
}

fn router_call(channel: Channel, tenant: &'static str) -> Call {
    tandem_benches::search_call(channel, tenant, &format!("{API_KEY}-{tenant}"))
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// The index-node, model-node and router of the measured cluster.
struct Cluster {
    node: Server,
    model: Server,
    router: Server,
    /// Another router binary on the same nodes (`BENCH_OTHER_ROUTER`), to
    /// compare two builds in one run.
    other: Option<Server>,
}

fn start_cluster(dir: &Path) -> anyhow::Result<Cluster> {
    tandem_benches::write_english_shard(&dir.join("index"), "en")?;
    // The same shard again for a tenant without a model.
    let shards = dir.join("index/shards");
    tandem_benches::copy_dir(&shards.join("en"), &shards.join("plain"))?;
    let node = Server::start(
        "tandem-index-node",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.join("index").display().to_string(),
        ],
    )?;

    let models = dir.join("models").display().to_string();
    let events = repo_root()
        .join("data/events/en.jsonl.gz")
        .display()
        .to_string();
    let trained = Command::new(repo_root().join("target/release/tandem-model-node"))
        .args([
            "train",
            "--tenant",
            "en",
            "--events",
            &events,
            "--model-dir",
            &models,
        ])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(trained.success(), "training the model failed");
    let model = Server::start(
        "tandem-model-node",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--model-dir",
            &models,
        ],
    )?;

    let catalog = format!(
        "[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n\
         [[nodes]]\nid = \"idx\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"http://{}\"\n\n\
         [[nodes]]\nid = \"mdl\"\nregion = \"r1\"\nkind = \"model\"\naddr = \"http://{}\"\n\n\
         [[tenants]]\nid = \"en\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
         api_key_sha256 = [\"{en_key}\"]\nmodel_replicas = [\"mdl\"]\n\n[tenants.shards]\n0 = [\"idx\"]\n\n\
         [[tenants]]\nid = \"plain\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
         api_key_sha256 = [\"{plain_key}\"]\nmodel_replicas = []\n\n[tenants.shards]\n0 = [\"idx\"]\n",
        node.grpc,
        model.grpc,
        en_key = tandem_catalog::hash_key(&format!("{API_KEY}-en")),
        plain_key = tandem_catalog::hash_key(&format!("{API_KEY}-plain"))
    );
    let catalog_path = dir.join("catalog.toml");
    std::fs::write(&catalog_path, catalog)?;
    let catalog_path = catalog_path.display().to_string();
    let args = [
        "--region",
        "r1",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--catalog",
        &catalog_path,
    ];
    let router = Server::start("tandem-router", &args)?;
    let other = match std::env::var_os("BENCH_OTHER_ROUTER") {
        Some(path) => Some(Server::start_path(Path::new(&path), &args)?),
        None => None,
    };
    Ok(Cluster {
        node,
        model,
        router,
        other,
    })
}

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let queries = Arc::new(tandem_loadgen::natural_language_queries());
        let cluster = start_cluster(dir.path())?;
        let nginx = Nginx::start(dir.path(), cluster.node.grpc)?;
        println!("corpus: English tldr pages, one shard; {} natural-language queries; top 10 with snippets; {seconds} s per path and concurrency", queries.len());

        let mut paths = vec![Route_ { name: "direct", middle: vec![], call: shard_call(connect(cluster.node.grpc).await?) }];
        match &nginx {
            Some(nginx) => paths.push(Route_ { name: "nginx grpc_pass", middle: vec![nginx.child.id()], call: shard_call(connect(nginx.addr).await?) }),
            None => println!("nginx not found (apt-get install nginx): its path is left out"),
        }
        let router = connect(cluster.router.grpc).await?;
        let (router_pid, model_pid) = (cluster.router.pid(), cluster.model.pid());
        paths.push(Route_ { name: "tandem-router", middle: vec![router_pid, model_pid], call: router_call(router.clone(), "en") });
        paths.push(Route_ { name: "tandem-router, no model", middle: vec![router_pid], call: router_call(router, "plain") });
        if let Some(other) = &cluster.other {
            let channel = connect(other.grpc).await?;
            paths.push(Route_ { name: "other router", middle: vec![other.pid(), model_pid], call: router_call(channel.clone(), "en") });
            paths.push(Route_ { name: "other router, no model", middle: vec![other.pid()], call: router_call(channel, "plain") });
        }
        for path in &paths {
            closed_loop(4, Duration::from_millis(500), queries.clone(), path.caller()).await;
        }

        let rounds = 10u32;
        let slice = duration / rounds;
        println!("\n| concurrency | path | QPS | p50 µs | p99 µs | errors | CPU µs per call beside the index-node |");
        println!("|---|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        for concurrency in tandem_benches::env_list("BENCH_CONCURRENCY", &[16, 64]) {
            let mut measured: Vec<(Measured, Duration)> = paths.iter().map(|_| Default::default()).collect();
            for _ in 0..rounds {
                for (path, (m, cpu)) in paths.iter().zip(measured.iter_mut()) {
                    let before = path.cpu_time();
                    m.merge(measure(concurrency, slice, queries.clone(), path.caller()).await);
                    *cpu += path.cpu_time().saturating_sub(before);
                }
            }
            let mut qps = Vec::new();
            for (path, (m, cpu)) in paths.iter().zip(&measured) {
                let s = m.stats();
                let per_call = cpu.as_secs_f64() * 1e6 / m.calls().max(1) as f64;
                println!("| {concurrency} | {} | {:.0} | {} | {} | {} | {per_call:.0} |", path.name, s.qps, s.p50_us, s.p99_us, s.errors);
                qps.push((path.name, s.qps));
            }
            ratios.push((concurrency, qps));
        }
        println!();
        for (concurrency, qps) in ratios {
            let of = |name: &str| qps.iter().find(|(n, _)| *n == name).map(|(_, q)| *q);
            let router = of("tandem-router").unwrap_or(0.0);
            let plain = of("tandem-router, no model").unwrap_or(0.0);
            let direct = of("direct").unwrap_or(f64::NAN);
            match of("nginx grpc_pass") {
                Some(nginx) => println!(
                    "concurrency {concurrency}: router QPS / nginx QPS {:.2} (no model {:.2}); router / direct {:.2} (no model {:.2}); nginx / direct {:.2}",
                    router / nginx, plain / nginx, router / direct, plain / direct, nginx / direct
                ),
                None => println!("concurrency {concurrency}: router QPS / direct {:.2}", router / direct),
            }
            if let (Some(other), Some(other_plain)) = (of("other router"), of("other router, no model")) {
                println!(
                    "concurrency {concurrency}: this router / other router QPS {:.2} (no model {:.2})",
                    router / other,
                    plain / other_plain
                );
            }
        }
        Ok(())
    })
}
