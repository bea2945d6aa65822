//! What recording usage events costs on the router path, in one run on the
//! same machine: two identical fleets (an index-node with the English tldr
//! pages as one shard, a router in front of it, no model), one with event
//! recording off and one with it on (search ids signed, every search's
//! event buffered, written to `--events-dir` and shipped to a `file://`
//! object store every second).
//!
//! Closed loop at concurrency 16 and 64 (`BENCH_CONCURRENCY`): the router
//! saturated, which is where a cost on the hot path would show. The fleets
//! are measured in interleaved slices so that noise hits both alike;
//! natural-language queries, top 10 with snippets. Reports QPS and p50/p99
//! per fleet, the on / off ratios, and the events' bytes on disk (the
//! gzipped objects in the store) per thousand searches. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench events`
//! (`BENCH_SECONDS=N` per fleet and concurrency, default 5).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tandem_benches::fleets::{compare, one_shard_catalog, ratios};
use tandem_benches::Server;
use tonic::transport::{Channel, Endpoint};

/// One fleet: its router and index-node (kept alive), and a channel to
/// the router.
struct Fleet {
    _node: Server,
    _router: Server,
    channel: Channel,
}

/// Starts a fleet in `dir` (which holds the shard in `index/`), the router
/// with `router_flags`.
async fn start_fleet(dir: &Path, router_flags: &[String]) -> anyhow::Result<Fleet> {
    let index = dir.join("index").display().to_string();
    let node = Server::start(
        "tandem-index-node",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            &index,
        ],
    )?;
    let catalog = one_shard_catalog("http", node.grpc);
    let catalog_path = dir.join("catalog.toml");
    std::fs::write(&catalog_path, catalog)?;
    let catalog_path = catalog_path.display().to_string();
    let mut args = vec![
        "--region",
        "r1",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--catalog",
        &catalog_path,
    ];
    args.extend(router_flags.iter().map(String::as_str));
    let router = Server::start("tandem-router", &args)?;
    let channel = Endpoint::from_shared(format!("http://{}", router.grpc))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(Fleet {
        _node: node,
        _router: router,
        channel,
    })
}

/// The recording flags of the "on" fleet, with its files under `dir`.
fn recording(dir: &Path) -> anyhow::Result<Vec<String>> {
    let key = dir.join("search-id.key");
    std::fs::write(&key, "a search-id key for the benchmark\n")?;
    let store = dir.join("store");
    std::fs::create_dir_all(&store)?;
    Ok(vec![
        "--search-id-key-file".into(),
        key.display().to_string(),
        "--events-dir".into(),
        dir.join("events").display().to_string(),
        "--events-store".into(),
        format!("file://{}", store.display()),
        "--events-rotate-ms".into(),
        "1000".into(),
        "--events-ship-ms".into(),
        "1000".into(),
    ])
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let (off_dir, on_dir) = (dir.path().join("off"), dir.path().join("on"));
        tandem_benches::write_english_shard(&off_dir.join("index"), "en")?;
        tandem_benches::copy_dir(&off_dir.join("index"), &on_dir.join("index"))?;
        let flags = recording(&on_dir)?;
        let fleets = [("recording off", start_fleet(&off_dir, &[]).await?), ("recording on", start_fleet(&on_dir, &flags).await?)];
        let queries = Arc::new(tandem_loadgen::natural_language_queries());
        println!("router path (router + index-node, no model), English tldr pages, {} natural-language queries, top 10; {seconds} s per fleet and concurrency", queries.len());
        let channels: Vec<(&str, _)> = fleets.iter().map(|(n, f)| (*n, f.channel.clone())).collect();
        let concurrencies = tandem_benches::env_list("BENCH_CONCURRENCY", &[16, 64]);
        let mut recorded_searches = 0u64;
        for round in compare(&channels, &concurrencies, duration, queries).await {
            let ((off, _), (on, calls)) = (&round.fleets[0], &round.fleets[1]);
            recorded_searches += calls;
            println!("concurrency {}: {}", round.concurrency, ratios("on / off", off, on));
        }
        // Every file closed and shipped: two rotations and ships.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let shipped = bytes_under(&on_dir.join("store"));
        let waiting = bytes_under(&on_dir.join("events"));
        println!(
            "events: {recorded_searches} searches (and the warm-up) recorded; {} gzipped bytes in the store per 1000 searches ({waiting} bytes still waiting on disk)",
            shipped * 1000 / recorded_searches.max(1)
        );
        Ok(())
    })
}
