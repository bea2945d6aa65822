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
//! bare hop's (`(c - a) / (b - a)` at p50), and router QPS as a share of
//! direct QPS. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench router`
//! (`BENCH_SECONDS=N` per path and concurrency, run as 10 interleaved
//! slices; default 5; `BENCH_CONCURRENCY=1` for one concurrency).

use std::sync::Arc;
use std::time::Duration;

use tandem_benches::{
    closed_loop, example_queries, measure, sample_corpus, Measured, RunStats, Server,
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
        Ok(())
    })
}
