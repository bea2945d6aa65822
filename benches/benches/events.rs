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
//! gzipped objects in the store) per thousand searches recorded. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench events`
//! (`BENCH_SECONDS=N` per fleet and concurrency, default 5).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tandem_benches::fleets::{compare, ratios, start, FleetFlags};

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

/// (bytes, search events) of every gzipped events object under `dir`.
fn shipped(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in entries.filter_map(Result::ok) {
        let (bytes, searches) = match entry.file_type() {
            Ok(t) if t.is_dir() => shipped(&entry.path()),
            _ => {
                let gz = std::fs::read(entry.path()).unwrap_or_default();
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&gz[..]),
                    &mut text,
                );
                (
                    gz.len() as u64,
                    text.matches("\"type\":\"search\"").count() as u64,
                )
            }
        };
        total = (total.0 + bytes, total.1 + searches);
    }
    total
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
        let on = FleetFlags { router: &flags, ..FleetFlags::default() };
        let fleets = [("recording off", start(&off_dir, FleetFlags::default()).await?), ("recording on", start(&on_dir, on).await?)];
        let queries = Arc::new(tandem_loadgen::natural_language_queries());
        println!("router path (router + index-node, no model), English tldr pages, {} natural-language queries, top 10; {seconds} s per fleet and concurrency", queries.len());
        let channels: Vec<(&str, _)> = fleets.iter().map(|(n, f)| (*n, f.channel.clone())).collect();
        let concurrencies = tandem_benches::env_list("BENCH_CONCURRENCY", &[16, 64]);
        for round in compare(&channels, &concurrencies, duration, queries).await {
            let ((off, _), (on, _)) = (&round.fleets[0], &round.fleets[1]);
            println!("concurrency {}: {}", round.concurrency, ratios("on / off", off, on));
        }
        // Every file closed and shipped: two rotations and ships.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (bytes, searches) = shipped(&on_dir.join("store"));
        println!(
            "events: {searches} searches recorded and shipped, {bytes} gzipped bytes: {} bytes per 1000 searches",
            bytes * 1000 / searches.max(1)
        );
        Ok(())
    })
}
