//! The same queries against the same English shard of the sample corpus,
//! (a) through the real `tandem-index-node` over gRPC on loopback and
//! (b) in-process with tantivy (the node's own shard code, no network), at
//! concurrency 1 and 16. Reports QPS, p50/p99 and the ratios.
//!
//! Run: `cargo build --release --bins && cargo bench -p tandem-benches --bench index_node`
//! (`BENCH_SECONDS=N` sets the length of each run; default 5.)

use std::sync::Arc;
use std::time::Duration;

use tandem_benches::{example_queries, measure, sample_corpus, Measured, RunStats, Server};
use tandem_client::corpus::{read_documents, Where};
use tandem_index_node::registry::ShardRegistry;
use tandem_index_node::shard::{SearchParams, ShardKey};
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::ShardSearchRequest;

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let docs = read_documents(&sample_corpus(), &["lang=en".parse::<Where>().map_err(anyhow::Error::msg)?])?;
        let queries = Arc::new(example_queries("en", 2000));
        println!("corpus: {} English pages; {} distinct queries; {seconds} s per run", docs.len(), queries.len());

        // Build the shard once, in-process, with the node's own code.
        let (health, _svc) = tonic_health_reporter();
        let registry = Arc::new(ShardRegistry::new(
            dir.path(),
            16,
            health,
            tandem_index_node::writer::WriterConfig::default(),
        ));
        let key = ShardKey { tenant: "en".into(), shard: 0 };
        {
            let registry = registry.clone();
            let key = key.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let shard = registry.create(&key, "en")?;
                shard.load_batch(1, &docs, &[])?;
                Ok(())
            })
            .await??;
        }
        let node = Server::start(
            "tandem-index-node",
            &["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", &dir.path().display().to_string()],
        )?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.grpc))?.connect().await?;

        let mut rows: Vec<(usize, RunStats, RunStats)> = Vec::new();
        // Both paths run in short interleaved slices, so that noise from
        // anything else on the machine hits them alike.
        let rounds = 10u32;
        let slice = duration / rounds;
        for concurrency in [1usize, 16] {
            let shard = registry.get(&key)?;
            let local_call = move |q: String| {
                let shard = shard.clone();
                async move {
                    let params = SearchParams { query: q, top_k: 10, snippets: true, ..Default::default() };
                    tokio::task::spawn_blocking(move || shard.search(&params).is_ok()).await.unwrap_or(false)
                }
            };
            let client = IndexNodeClient::with_interceptor(channel.clone(), tandem_benches::internal());
            let grpc_call = move |q: String| {
                let mut client = client.clone();
                async move {
                    client
                        .search_shard(ShardSearchRequest { tenant: "en".into(), shard: 0, query: q, top_k: 10, ..Default::default() })
                        .await
                        .is_ok()
                }
            };
            let (mut in_process, mut grpc) = (Measured::default(), Measured::default());
            for _ in 0..rounds {
                in_process.merge(measure(concurrency, slice, queries.clone(), local_call.clone()).await);
                grpc.merge(measure(concurrency, slice, queries.clone(), grpc_call.clone()).await);
            }
            rows.push((concurrency, in_process.stats(), grpc.stats()));
        }
        println!("\n| concurrency | path | QPS | p50 µs | p99 µs | errors |");
        println!("|---|---|---|---|---|---|");
        for (c, local, grpc) in &rows {
            println!("| {c} | in-process tantivy | {:.0} | {} | {} | {} |", local.qps, local.p50_us, local.p99_us, local.errors);
            println!("| {c} | gRPC index-node | {:.0} | {} | {} | {} |", grpc.qps, grpc.p50_us, grpc.p99_us, grpc.errors);
        }
        println!();
        for (c, local, grpc) in &rows {
            println!(
                "concurrency {c}: gRPC/in-process QPS ratio {:.2}, p50 ratio {:.2}, p99 ratio {:.2}",
                grpc.qps / local.qps,
                grpc.p50_us as f64 / local.p50_us.max(1) as f64,
                grpc.p99_us as f64 / local.p99_us.max(1) as f64
            );
        }
        Ok(())
    })
}

fn tonic_health_reporter() -> (tonic_health::server::HealthReporter, ()) {
    let (reporter, _server) = tonic_health::server::health_reporter();
    (reporter, ())
}
