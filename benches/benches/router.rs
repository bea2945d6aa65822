//! Router overhead, measured in one run against the same index-node and the
//! same queries, closed loop at concurrency 1, 16 and 64:
//!
//! (a) straight to the index-node (`IndexNode/SearchShard`);
//! (b) through `tandem-passthrough`, a bare gRPC hop that forwards bytes and
//!     decides nothing: the physical floor of any router;
//! (c) through `tandem-router` (`Search/Search`: auth, cache, dial, replica
//!     choice, fallback/hedging machinery, merge).
//!
//! Reports QPS, p50/p99, and the router's added latency as a ratio to the
//! bare hop's (`(c - a) / (b - a)` at p50), router QPS as a share of
//! direct QPS, and the CPU time per call of the hop and the router. Then
//! the same three paths **open loop at the same fixed rates** (the load
//! generator's pacing: latency counted from each request's due time, so
//! queueing is not hidden), `BENCH_RATES=300,900` by default. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench router`
//! (`BENCH_SECONDS=N` per path and concurrency, run as 10 interleaved
//! slices; default 5; `BENCH_CONCURRENCY=1` for one concurrency).

use std::sync::Arc;
use std::time::Duration;

use tandem_benches::{
    closed_loop, example_queries, measure, run_load_with, sample_corpus, EventLog, LoadConfig,
    LoadMode, Measured, Outcome, RunStats, Server, Summary, DEFAULT_MAX_OUTSTANDING,
};
use tandem_index_node::corpus::{read_documents, Where};
use tandem_index_node::registry::ShardRegistry;
use tandem_index_node::shard::ShardKey;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{SearchRequest, ShardSearchRequest};
use tonic::transport::Channel;

const API_KEY: &str = "bench-key";

/// Concurrencies to measure: `BENCH_CONCURRENCY=1,16` picks some; default
/// 1, 16 and 64.
fn concurrencies() -> Vec<usize> {
    std::env::var("BENCH_CONCURRENCY")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec![1, 16, 64])
}

/// Open-loop rates: `BENCH_RATES=300,900` (the default).
fn rates() -> Vec<f64> {
    std::env::var("BENCH_RATES")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|r| r.trim().parse().ok())
                .collect::<Vec<f64>>()
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec![300.0, 900.0])
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
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
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
        let node = Server::start("tandem-index-node", &["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", &index_dir])?;
        let upstream = node.grpc.to_string();
        let hop = Server::start("tandem-passthrough", &["--upstream", &upstream])?;
        let catalog = format!(
            "[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n\
             [[nodes]]\nid = \"idx\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"http://{upstream}\"\n\n\
             [[tenants]]\nid = \"en\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
             api_key_sha256 = [\"{}\"]\nmodel_replicas = []\n\n[tenants.shards]\n0 = [\"idx\"]\n",
            tandem_common::auth::sha256_hex(API_KEY)
        );
        let catalog_path = dir.path().join("catalog.toml");
        std::fs::write(&catalog_path, catalog)?;
        let router = Server::start(
            "tandem-router",
            &["--region", "r1", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--catalog", &catalog_path.display().to_string()],
        )?;
        let connect = |addr: std::net::SocketAddr| async move {
            Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await.map_err(anyhow::Error::from)
        };
        let (direct_ch, hop_ch, router_ch) = (connect(node.grpc).await?, connect(hop.grpc).await?, connect(router.grpc).await?);
        println!("corpus: {} English pages; {} distinct queries; {seconds} s per run", docs.len(), queries.len());

        let shard_call = |channel: Channel| {
            let client = IndexNodeClient::new(channel);
            move |q: String| {
                let mut client = client.clone();
                async move {
                    client
                        .search_shard(ShardSearchRequest { tenant: "en".into(), shard: 0, query: q, top_k: 10, ..Default::default() })
                        .await
                        .is_ok()
                }
            }
        };
        let router_call = {
            let client = SearchClient::new(router_ch.clone());
            move |q: String| {
                let mut client = client.clone();
                async move {
                    let mut request = tonic::Request::new(SearchRequest { tenant: "en".into(), query: q, top_k: 10, ..Default::default() });
                    request.metadata_mut().insert("authorization", format!("Bearer {API_KEY}").parse().expect("ascii"));
                    client.search(request).await.is_ok()
                }
            }
        };
        // Warm every path (connections, caches, the router's statistics).
        closed_loop(4, Duration::from_secs(1), queries.clone(), shard_call(direct_ch.clone())).await;
        closed_loop(4, Duration::from_secs(1), queries.clone(), router_call.clone()).await;

        // Each path runs in short slices, interleaved with the others, so
        // that noise from anything else on the machine hits all three alike.
        let rounds = 10u32;
        let slice = duration / rounds;
        let mut rows: Vec<(usize, RunStats, RunStats, RunStats)> = Vec::new();
        // CPU time per call of the process in the middle (the hop or the
        // router), to tell computation apart from waiting.
        let mut cpu_rows: Vec<(usize, f64, f64)> = Vec::new();
        for concurrency in concurrencies() {
            let (mut direct, mut bare, mut routed) = (Measured::default(), Measured::default(), Measured::default());
            let (mut hop_cpu, mut router_cpu) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..rounds {
                direct.merge(measure(concurrency, slice, queries.clone(), shard_call(direct_ch.clone())).await);
                let before = hop.cpu_time();
                bare.merge(measure(concurrency, slice, queries.clone(), shard_call(hop_ch.clone())).await);
                hop_cpu += hop.cpu_time().saturating_sub(before);
                let before = router.cpu_time();
                routed.merge(measure(concurrency, slice, queries.clone(), router_call.clone()).await);
                router_cpu += router.cpu_time().saturating_sub(before);
            }
            let per_call = |cpu: Duration, m: &Measured| cpu.as_secs_f64() * 1e6 / m.calls().max(1) as f64;
            cpu_rows.push((concurrency, per_call(hop_cpu, &bare), per_call(router_cpu, &routed)));
            rows.push((concurrency, direct.stats(), bare.stats(), routed.stats()));
        }
        println!("\n| concurrency | path | QPS | p50 µs | p99 µs | errors |");
        println!("|---|---|---|---|---|---|");
        for (c, direct, bare, routed) in &rows {
            for (name, s) in [("direct index-node", direct), ("bare pass-through hop", bare), ("tandem-router", routed)] {
                println!("| {c} | {name} | {:.0} | {} | {} | {} |", s.qps, s.p50_us, s.p99_us, s.errors);
            }
        }
        println!();
        for (c, direct, bare, routed) in &rows {
            let hop_added = bare.p50_us as f64 - direct.p50_us as f64;
            let router_added = routed.p50_us as f64 - direct.p50_us as f64;
            println!(
                "concurrency {c}: added p50 latency: bare hop {hop_added:.0} us, router {router_added:.0} us, ratio {:.2}; router QPS / direct {:.2}, bare hop QPS / direct {:.2}",
                router_added / hop_added.max(1.0),
                routed.qps / direct.qps,
                bare.qps / direct.qps
            );
        }
        for (c, hop_us, router_us) in &cpu_rows {
            println!("concurrency {c}: CPU per call: bare hop {hop_us:.0} us, router {router_us:.0} us");
        }

        // The same paths at the same fixed rates, three interleaved rounds
        // each; the table shows each percentile's median over the rounds.
        println!("\nopen loop, same rate ({seconds} s per path and rate, 3 interleaved rounds, median of rounds):");
        println!("\n| rate | path | p50 µs | p90 µs | p99 µs | failed |");
        println!("|---|---|---|---|---|---|");
        let mut added = Vec::new();
        for rate in rates() {
            let mut runs: [Vec<Summary>; 3] = Default::default();
            for _ in 0..3 {
                runs[0].push(open_loop(rate, duration / 3, &queries, shard_call(direct_ch.clone())).await?);
                runs[1].push(open_loop(rate, duration / 3, &queries, shard_call(hop_ch.clone())).await?);
                runs[2].push(open_loop(rate, duration / 3, &queries, router_call.clone()).await?);
            }
            let median = |runs: &[Summary], pick: fn(&Summary) -> u64| {
                let mut v: Vec<u64> = runs.iter().map(pick).collect();
                v.sort_unstable();
                v[v.len() / 2]
            };
            let mut p50 = [0u64; 3];
            for (i, name) in ["direct index-node", "bare pass-through hop", "tandem-router"].iter().enumerate() {
                p50[i] = median(&runs[i], |s| s.latency_us.p50);
                println!(
                    "| {rate:.0} | {name} | {} | {} | {} | {} |",
                    p50[i],
                    median(&runs[i], |s| s.latency_us.p90),
                    median(&runs[i], |s| s.latency_us.p99),
                    runs[i].iter().map(|s| s.failed).sum::<u64>()
                );
            }
            added.push((rate, p50[1] as f64 - p50[0] as f64, p50[2] as f64 - p50[0] as f64));
        }
        println!();
        for (rate, hop_added, router_added) in added {
            println!(
                "{rate:.0} QPS: added p50 latency: bare hop {hop_added:.0} us, router {router_added:.0} us, ratio {:.2}",
                router_added / hop_added.max(1.0)
            );
        }
        Ok(())
    })
}
