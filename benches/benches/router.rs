//! Router overhead, measured in one run against the same index-node and the
//! same queries, closed loop at concurrency 1, 16 and 64:
//!
//! (a) straight to the index-node (`IndexNode/SearchShard`);
//! (b) through `tandem-passthrough`, a bare gRPC hop that forwards bytes and
//!     decides nothing: the physical floor of any router; on hyper's pooled
//!     client, and (b2) with `--h2`, on the `h2` crate's client as the
//!     router is (the stricter floor);
//! (b') through `tandem-passthrough --decode`, a tonic server that decodes
//!     each call and re-sends it through a tonic client over hyper,
//!     deciding nothing: what reading the messages costs with tonic's codec;
//! (b'') through `tandem-passthrough --lean`, the same on bare hyper with
//!     the router's own wire code (`tandem_common::unary`): the floor of
//!     any router that reads the messages the way tandem's does;
//! (c) through `tandem-router` (`Search/Search`: auth, cache, dial, replica
//!     choice, fallback/hedging machinery, merge).
//!
//! Reports QPS, p50/p99, and the router's added latency as a ratio to the
//! bare hop's (`(c - a) / (b - a)` at p50), router QPS as a share of
//! direct QPS, and the CPU time per call of the hop and the router. Then
//! the same paths **open loop at the same fixed rates** (the load
//! generator's pacing: latency counted from each request's due time, so
//! queueing is not hidden), `BENCH_RATES=300,900` by default (`none`: no
//! open loop). Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench router`
//! (`BENCH_SECONDS=N` per path and concurrency, run as 10 interleaved
//! slices; default 5; `BENCH_CONCURRENCY=1` for one concurrency,
//! `BENCH_ONLY=router` (or `direct`, `hop`, `hop-h2`, `decode`, `lean`) to load one path alone, e.g. under a profiler;
//! `BENCH_CLIENT=h2` to call every path with the router's own client,
//! `tandem_common::unary` over `h2_channel`, instead of tonic's;
//! `BENCH_PIN=1` to run the client and the index-node on CPU 0 and every
//! process in the middle on CPU 1, see `tandem_benches::pinning`).
//!
//! Why the client is a knob: tonic's client (hyper's) writes a call's
//! headers and its body in two `writev`s, 10-20 µs apart. A byte forwarder
//! passes the headers on at once and so hides that gap; anything that
//! must read the whole request first (the lean hop, the router) waits it
//! out. With a client that sends each call in one write (`h2`, and gRPC's
//! C-core and Go clients) nothing is hidden, and the ratio shows what
//! the hop itself costs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tandem_benches::pinning::Pinning;
use tandem_benches::{
    closed_loop, example_queries, measure, run_load_with, sample_corpus, EventLog, LoadConfig,
    LoadMode, Measured, Outcome, RunStats, Server, Summary, DEFAULT_MAX_OUTSTANDING,
};
use tandem_common::h2_channel::{ChannelSettings, H2Channel};
use tandem_common::unary;
use tandem_index_node::corpus::{read_documents, Where};
use tandem_index_node::registry::ShardRegistry;
use tandem_index_node::shard::ShardKey;
use tandem_proto::paths;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{SearchRequest, SearchResponse, ShardSearchRequest, ShardSearchResponse};
use tonic::transport::Channel;

const API_KEY: &str = "bench-key";

/// Bound on one call made with `BENCH_CLIENT=h2` (tonic's calls have none).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls of `path` at `addr` with the router's own client
/// (`BENCH_CLIENT=h2`), each query's request framed by `frame`; true when
/// answered with a `Resp`.
fn h2_call<Resp: prost::Message + Default + 'static>(
    addr: std::net::SocketAddr,
    path: &'static str,
    metadata: &[(HeaderName, HeaderValue)],
    frame: fn(String) -> bytes::Bytes,
) -> Call {
    let channel = H2Channel::new(
        format!("http://{addr}").parse().expect("an address"),
        ChannelSettings::default(),
    )
    .expect("an http origin");
    let metadata: Arc<[(HeaderName, HeaderValue)]> = metadata.into();
    Arc::new(move |q: String| {
        let (channel, metadata) = (channel.clone(), metadata.clone());
        Box::pin(async move {
            unary::call::<Resp>(&channel, path, frame(q), CALL_TIMEOUT, &metadata)
                .await
                .is_ok()
        })
    })
}

/// Concurrencies to measure: `BENCH_CONCURRENCY=1,16` picks some; default
/// 1, 16 and 64.
fn concurrencies() -> Vec<usize> {
    tandem_benches::env_list("BENCH_CONCURRENCY", &[1, 16, 64])
}

/// One query through one path, as the load functions take it.
type Call = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// One way to the index-node.
struct Path<'a> {
    /// `BENCH_ONLY` name.
    key: &'static str,
    /// Table name.
    name: &'static str,
    /// The process in the middle, if any.
    server: Option<&'a Server>,
    call: Call,
}

impl Path<'_> {
    fn caller(
        &self,
    ) -> impl Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + Sync + 'static
    {
        let call = self.call.clone();
        move |q| call(q)
    }

    fn cpu_time(&self) -> Duration {
        self.server.map_or(Duration::ZERO, Server::cpu_time)
    }
}

/// Whether to measure `path` (`direct`, `hop`, `hop-h2`, `decode`, `lean`
/// or `router`): all of them
/// unless `BENCH_ONLY` names one (to profile one path alone).
fn runs(path: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only == path)
}

/// `added / floor` to two places, or `n/a` when the floor's added latency
/// is not positive (a hop measured faster than direct: noise, at 16 and 64
/// where the p50 is queueing), which no ratio describes.
fn ratio(added: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}", added / floor)
    } else {
        "n/a".to_string()
    }
}

/// Open-loop rates: `BENCH_RATES=300,900` (the default); `BENCH_RATES=none`
/// skips the open-loop part (`benches/repeat-c1.sh` wants only the closed
/// loop, and the open loop takes as long again).
fn rates() -> Vec<f64> {
    if std::env::var("BENCH_RATES").is_ok_and(|v| v == "none") {
        return Vec::new();
    }
    tandem_benches::env_list("BENCH_RATES", &[300.0, 900.0])
}

/// One open-loop run of `call` at `rate` through the load generator.
async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    queries: &Arc<Vec<String>>,
    call: F,
) -> anyhow::Result<Summary>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mode = LoadMode::OpenLoop {
        rate,
        max_outstanding: DEFAULT_MAX_OUTSTANDING,
    };
    let config = LoadConfig::new(mode, duration, "en", queries.to_vec());
    let report = run_load_with(&config, &EventLog::new(), move |q| {
        let answer = call(q);
        async move {
            if answer.await {
                Outcome::served_by("r1")
            } else {
                Outcome::Failed("error".to_string())
            }
        }
    })
    .await?;
    Ok(report.summary)
}

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    let pinning = Pinning::from_env()?;
    // Before the runtime: its threads inherit the client's CPU.
    pinning.pin_client()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let docs = read_documents(&sample_corpus(), &["lang=en".parse::<Where>().map_err(anyhow::Error::msg)?])?;
        let queries = Arc::new(example_queries("en", 2000));
        let (health, _server) = tonic_health::server::health_reporter();
        let registry = ShardRegistry::new(&dir.path().join("index"), 4, health);
        let shard = registry.create(&ShardKey { tenant: "en".into(), shard: 0 }, "en")?;
        shard.ingest(1, &docs, &[])?;
        drop(shard);
        drop(registry);

        let index_dir = dir.path().join("index").display().to_string();
        let node = Server::start_on("tandem-index-node", &["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", &index_dir], pinning.edge)?;
        let upstream = node.grpc.to_string();
        let middle = |args: &[&str]| Server::start_on("tandem-passthrough", args, pinning.middle);
        let hop = middle(&["--upstream", &upstream])?;
        let h2_hop = middle(&["--upstream", &upstream, "--h2"])?;
        let decode_hop = middle(&["--upstream", &upstream, "--decode"])?;
        let lean_hop = middle(&["--upstream", &upstream, "--lean"])?;
        let catalog = format!(
            "[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n\
             [[nodes]]\nid = \"idx\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"http://{upstream}\"\n\n\
             [[tenants]]\nid = \"en\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
             api_key_sha256 = [\"{}\"]\nmodel_replicas = []\n\n[tenants.shards]\n0 = [\"idx\"]\n",
            tandem_common::auth::sha256_hex(API_KEY)
        );
        let catalog_path = dir.path().join("catalog.toml");
        std::fs::write(&catalog_path, catalog)?;
        let router = Server::start_on(
            "tandem-router",
            &["--region", "r1", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--catalog", &catalog_path.display().to_string()],
            pinning.middle,
        )?;
        let connect = |addr: std::net::SocketAddr| async move {
            Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await.map_err(anyhow::Error::from)
        };
        println!("corpus: {} English pages; {} distinct queries; {seconds} s per run", docs.len(), queries.len());
        if let Some(pinned) = pinning.describe() {
            println!("{pinned} (QPS against direct means little pinned: direct never crosses cores)");
        }

        let h2_client = std::env::var("BENCH_CLIENT").is_ok_and(|c| c == "h2");
        if h2_client {
            println!("client: the router's own (unary over h2), one write per call");
        }
        let shard_call = |channel: Channel| -> Call {
            let client = IndexNodeClient::new(channel);
            Arc::new(move |q: String| {
                let mut client = client.clone();
                Box::pin(async move {
                    client
                        .search_shard(ShardSearchRequest { tenant: "en".into(), shard: 0, query: q, top_k: 10, ..Default::default() })
                        .await
                        .is_ok()
                })
            })
        };
        // The router's `authorization` header, made once for either client:
        // formatting and parsing it per call would charge the client's own
        // work to the router's path.
        let bearer = format!("Bearer {API_KEY}");
        let router_call = |channel: Channel| -> Call {
            let client = SearchClient::new(channel);
            let key: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = bearer.parse().expect("ascii");
            Arc::new(move |q: String| {
                let (mut client, key) = (client.clone(), key.clone());
                Box::pin(async move {
                    let mut request = tonic::Request::new(SearchRequest { tenant: "en".into(), query: q, top_k: 10, ..Default::default() });
                    request.metadata_mut().insert("authorization", key);
                    client.search(request).await.is_ok()
                })
            })
        };
        let to_shards = |addr| async move {
            Ok::<_, anyhow::Error>(if h2_client {
                h2_call::<ShardSearchResponse>(addr, paths::SEARCH_SHARD, &[], |q| {
                    unary::encode_frame(&ShardSearchRequest { tenant: "en".into(), shard: 0, query: q, top_k: 10, ..Default::default() })
                })
            } else {
                shard_call(connect(addr).await?)
            })
        };
        let to_router = if h2_client {
            let key = HeaderValue::from_str(&bearer).expect("ascii");
            h2_call::<SearchResponse>(router.grpc, paths::SEARCH, &[(http::header::AUTHORIZATION, key)], |q| {
                unary::encode_frame(&SearchRequest { tenant: "en".into(), query: q, top_k: 10, ..Default::default() })
            })
        } else {
            router_call(connect(router.grpc).await?)
        };
        let paths = [
            Path { key: "direct", name: "direct index-node", server: None, call: to_shards(node.grpc).await? },
            Path { key: "hop", name: "bare pass-through hop", server: Some(&hop), call: to_shards(hop.grpc).await? },
            Path { key: "hop-h2", name: "bare hop, h2 client", server: Some(&h2_hop), call: to_shards(h2_hop.grpc).await? },
            Path { key: "decode", name: "decoding hop", server: Some(&decode_hop), call: to_shards(decode_hop.grpc).await? },
            Path { key: "lean", name: "lean hop", server: Some(&lean_hop), call: to_shards(lean_hop.grpc).await? },
            Path { key: "router", name: "tandem-router", server: Some(&router), call: to_router },
        ];
        // Where each path's results are, by its `BENCH_ONLY` key.
        let at = |key: &str| paths.iter().position(|p| p.key == key).expect("a path of this benchmark");
        // Warm every path (connections, caches, the router's statistics).
        for path in &paths {
            closed_loop(4, Duration::from_millis(500), queries.clone(), path.caller()).await;
        }

        // Each path runs in short slices, interleaved with the others, so
        // that noise from anything else on the machine hits all alike.
        let rounds = 10u32;
        let slice = duration / rounds;
        // Per concurrency and path: latency, and the CPU time per call of
        // the process in the middle (to tell computation from waiting).
        let mut rows: Vec<(usize, Vec<(RunStats, f64)>)> = Vec::new();
        for concurrency in concurrencies() {
            let mut measured: Vec<(Measured, Duration)> = paths.iter().map(|_| Default::default()).collect();
            for _ in 0..rounds {
                for (path, (m, cpu)) in paths.iter().zip(measured.iter_mut()).filter(|(p, _)| runs(p.key)) {
                    let before = path.cpu_time();
                    m.merge(measure(concurrency, slice, queries.clone(), path.caller()).await);
                    *cpu += path.cpu_time().saturating_sub(before);
                }
            }
            let per_call = |cpu: &Duration, m: &Measured| cpu.as_secs_f64() * 1e6 / m.calls().max(1) as f64;
            rows.push((concurrency, measured.iter().map(|(m, cpu)| (m.stats(), per_call(cpu, m))).collect()));
        }
        println!("\n| concurrency | path | QPS | p50 µs | p99 µs | errors | CPU µs per call (middle process) |");
        println!("|---|---|---|---|---|---|---|");
        for (c, stats) in &rows {
            for (path, (s, cpu)) in paths.iter().zip(stats) {
                println!("| {c} | {} | {:.0} | {} | {} | {} | {cpu:.0} |", path.name, s.qps, s.p50_us, s.p99_us, s.errors);
            }
        }
        println!();
        for (c, stats) in &rows {
            let [direct, bare, bare_h2, decoding, lean, routed] =
                ["direct", "hop", "hop-h2", "decode", "lean", "router"].map(|key| &stats[at(key)].0);
            let added = |s: &RunStats| s.p50_us as f64 - direct.p50_us as f64;
            println!(
                "concurrency {c}: added p50 latency: bare hop {:.0} us, bare hop on h2 {:.0} us, decoding hop {:.0} us, lean hop {:.0} us, router {:.0} us; router / bare hop {}, router / bare hop on h2 {}, router / lean hop {}; QPS / direct: router {:.2}, bare hop {:.2}",
                added(bare),
                added(bare_h2),
                added(decoding),
                added(lean),
                added(routed),
                ratio(added(routed), added(bare)),
                ratio(added(routed), added(bare_h2)),
                ratio(added(routed), added(lean)),
                routed.qps / direct.qps,
                bare.qps / direct.qps
            );
        }

        // The same paths at the same fixed rates, three interleaved rounds
        // each; the table shows each percentile's median over the rounds.
        let rates = rates();
        if rates.is_empty() {
            return Ok(());
        }
        println!("\nopen loop, same rate ({seconds} s per path and rate, 3 interleaved rounds, median of rounds):");
        println!("\n| rate | path | p50 µs | p90 µs | p99 µs | failed |");
        println!("|---|---|---|---|---|---|");
        let mut added = Vec::new();
        for rate in rates {
            let mut rounds: Vec<Vec<Summary>> = paths.iter().map(|_| Vec::new()).collect();
            for _ in 0..3 {
                for (path, r) in paths.iter().zip(rounds.iter_mut()).filter(|(p, _)| runs(p.key)) {
                    r.push(open_loop(rate, duration / 3, &queries, path.caller()).await?);
                }
            }
            // A path left out by `BENCH_ONLY` has no rounds: its median is 0.
            let median = |runs: &[Summary], pick: fn(&Summary) -> u64| {
                let mut v: Vec<u64> = runs.iter().map(pick).collect();
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            };
            let mut p50 = Vec::new();
            for (path, r) in paths.iter().zip(&rounds) {
                p50.push(median(r, |s| s.latency_us.p50));
                if r.is_empty() {
                    continue;
                }
                println!(
                    "| {rate:.0} | {} | {} | {} | {} | {} |",
                    path.name,
                    median(r, |s| s.latency_us.p50),
                    median(r, |s| s.latency_us.p90),
                    median(r, |s| s.latency_us.p99),
                    r.iter().map(|s| s.failed).sum::<u64>()
                );
            }
            let [direct, hop, h2_hop, router] = ["direct", "hop", "hop-h2", "router"].map(|key| p50[at(key)]);
            if [direct, hop, h2_hop, router].iter().all(|&p| p > 0) {
                let add = |p: u64| p as f64 - direct as f64;
                added.push((rate, add(hop), add(h2_hop), add(router)));
            }
        }
        println!();
        for (rate, hop_added, h2_hop_added, router_added) in added {
            println!(
                "{rate:.0} QPS: added p50 latency: bare hop {hop_added:.0} us, bare hop on h2 {h2_hop_added:.0} us, router {router_added:.0} us; router / bare hop {}, router / bare hop on h2 {}",
                ratio(router_added, hop_added),
                ratio(router_added, h2_hop_added)
            );
        }
        Ok(())
    })
}
