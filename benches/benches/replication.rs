//! Writes and replication on this machine, in one run, with release
//! binaries: a leader index-node (region r1), a follower (region r2), a
//! router, and a third index-node that a replica is bootstrapped onto.
//!
//! 1. **Write throughput**: English tldr pages written in batches of 1, 100
//!    and 1,000 documents, closed loop, through the router's
//!    `Documents.Write` and straight to the leader's own `Ingest` (the same
//!    log and group commit, without the router): documents/s and their ratio.
//! 2. **Replication lag**: single-document writes, open loop at 125/s and at
//!    80 % of the single-document maximum from step 1; for each write, the
//!    time from its acknowledgement to the follower showing its sequence
//!    number (polled every 2 ms): p50 / p99.
//! 3. **Cross-region bytes and follower CPU**: what the leader shipped to
//!    the follower per replicated document (its metrics), beside the index
//!    bytes per document (what copying segments would ship at the least),
//!    and CPU seconds of follower and leader.
//! 4. **Bootstrap**: `Bootstrap` of a new replica on the third node, timed
//!    whole: the leader snapshots (a copy into the store), the node
//!    downloads and installs it, then catches up. MB/s and documents/s,
//!    against a plain copy (fsynced) of the same snapshot files.
//!
//! Run: `cargo build --release --bins && cargo bench -p tandem-benches --bench replication`
//! (`BENCH_SECONDS=N` per measured run, default 5).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tandem_benches::{bench_seconds, copy_dir, sample_corpus, Server};
use tandem_client::corpus::{read_documents, Where};
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{
    BootstrapRequest, Document, IngestRequest, ShardHealth, ShardRef, WriteRequest,
};
use tonic::transport::Channel;

const WRITE_KEY: &str = "bench-write-key";
const CONCURRENCY: usize = 8;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

struct Fleet {
    leader: Server,
    follower: Server,
    spare: Server,
    router: Server,
    dir: tempfile::TempDir,
}

async fn start() -> anyhow::Result<Fleet> {
    let dir = tempfile::tempdir()?;
    let catalog = dir.path().join("catalog.toml");
    let store = format!("file://{}", dir.path().join("snapshots").display());
    let node = |id: &str, region: &str| -> anyhow::Result<Server> {
        let data = dir.path().join(id).display().to_string();
        let catalog = catalog.display().to_string();
        Server::start(
            "tandem-index-node",
            &[
                "serve",
                "--node-id",
                id,
                "--region",
                region,
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--data-dir",
                &data,
                "--catalog",
                &catalog,
                "--catalog-poll-ms",
                "100",
                "--snapshot-store",
                &store,
            ],
        )
    };
    let (leader, follower, spare) = (
        node("leader", "r1")?,
        node("follower", "r2")?,
        node("spare", "r2")?,
    );
    let write = |router: &str| {
        std::fs::write(
            &catalog,
            format!(
                "format = 2\n[[regions]]\nid = \"r1\"\npair = \"r2\"\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\
                 [[nodes]]\nid = \"router\"\nregion = \"r1\"\nkind = \"router\"\naddr = \"http://{router}\"\n\
                 [[nodes]]\nid = \"leader\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"http://{}\"\n\
                 [[nodes]]\nid = \"follower\"\nregion = \"r2\"\nkind = \"index\"\naddr = \"http://{}\"\n\
                 [[nodes]]\nid = \"spare\"\nregion = \"r2\"\nkind = \"index\"\naddr = \"http://{}\"\n\
                 [[tenants]]\nid = \"bench\"\nhome = \"r1\"\nactive_active = true\nlanguage = \"en\"\n\
                 api_key_sha256 = [\"{}\"]\nwrite_key_sha256 = [\"{}\"]\n[tenants.shards]\n0 = [\"leader\", \"follower\"]\n",
                leader.grpc,
                follower.grpc,
                spare.grpc,
                tandem_catalog::hash_key("bench-search-key"),
                tandem_catalog::hash_key(WRITE_KEY),
            ),
        )
    };
    write("127.0.0.1:1")?;
    let path = catalog.display().to_string();
    let router = Server::start(
        "tandem-router",
        &[
            "--router-id",
            "router",
            "--region",
            "r1",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--catalog",
            &path,
            "--catalog-poll-ms",
            "100",
        ],
    )?;
    write(&router.grpc.to_string())?;
    // The leader creates its shard once it has read the catalog.
    let mut c = tandem_benches::index_client(leader.grpc).await?;
    for _ in 0..100 {
        let r = c.get_shard_info(shard_ref(false)).await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Fleet {
        leader,
        follower,
        spare,
        router,
        dir,
    })
}

fn shard_ref(digest: bool) -> ShardRef {
    ShardRef {
        tenant: "bench".into(),
        shard: 0,
        digest,
        digest_at_seq: 0,
    }
}

/// English pages with ids made unique per round (`r<round>-<id>`).
fn pages() -> anyhow::Result<Arc<Vec<Document>>> {
    let lang = vec!["lang=en".parse::<Where>().map_err(anyhow::Error::msg)?];
    Ok(Arc::new(read_documents(&sample_corpus(), &lang)?))
}

fn batch(pages: &[Document], counter: &AtomicU64, n: usize) -> Vec<Document> {
    (0..n)
        .map(|_| {
            let i = counter.fetch_add(1, Ordering::Relaxed);
            let mut d = pages[i as usize % pages.len()].clone();
            d.id = format!("{i}-{}", d.id);
            d
        })
        .collect()
}

/// Closed loop of `CONCURRENCY` writers of batches of `size` for `secs`:
/// documents per second (and failed calls).
async fn throughput(
    fleet: &Fleet,
    via_router: bool,
    size: usize,
    pages: &Arc<Vec<Document>>,
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<(f64, u64)> {
    let router = Channel::from_shared(format!("http://{}", fleet.router.grpc))?
        .connect()
        .await?;
    let leader = Channel::from_shared(format!("http://{}", fleet.leader.grpc))?
        .connect()
        .await?;
    let secs = Duration::from_secs(bench_seconds());
    let started = Instant::now();
    let (docs, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (router, leader) = (router.clone(), leader.clone());
        let (pages, counter, docs, errors) =
            (pages.clone(), counter.clone(), docs.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut docs_client = DocumentsClient::new(router).max_encoding_message_size(64 << 20);
            let mut node = IndexNodeClient::with_interceptor(leader, tandem_benches::internal())
                .max_encoding_message_size(64 << 20);
            while started.elapsed() < secs {
                let upserts = batch(&pages, &counter, size);
                let ok = if via_router {
                    docs_client.write(write_request(upserts)).await.is_ok()
                } else {
                    node.ingest(IngestRequest {
                        tenant: "bench".into(),
                        shard: 0,
                        upserts,
                        epoch: 1,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                };
                if ok {
                    docs.fetch_add(size as u64, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok((
        docs.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    ))
}

/// Open loop of single-document writes at `rate`/s for the run's seconds;
/// the lag of each (ack -> follower shows it), in ms: (p50, p99, failed).
async fn lag(
    fleet: &Fleet,
    rate: f64,
    pages: &Arc<Vec<Document>>,
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<(f64, f64, u64)> {
    let router = Channel::from_shared(format!("http://{}", fleet.router.grpc))?
        .connect()
        .await?;
    let mut follower = tandem_benches::index_client(fleet.follower.grpc).await?;
    let acks: Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let secs = Duration::from_secs(bench_seconds());
    let started = Instant::now();
    let sender = {
        let (acks, failed, pages, counter) =
            (acks.clone(), failed.clone(), pages.clone(), counter.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = Vec::new();
            while started.elapsed() < secs {
                tick.tick().await;
                let (acks, failed) = (acks.clone(), failed.clone());
                let mut client = DocumentsClient::new(router.clone());
                let upserts = batch(&pages, &counter, 1);
                inflight.push(tokio::spawn(async move {
                    match client.write(write_request(upserts)).await {
                        Ok(r) => {
                            let seq = token_seq(&r.into_inner().consistency_token);
                            acks.lock().expect("acks").push((seq, Instant::now()));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        })
    };
    // Poll the follower: the first time it shows each sequence number.
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    while !sender.is_finished()
        || seen.last().map(|s| s.0) < acks.lock().expect("acks").iter().map(|a| a.0).max()
    {
        if let Ok(info) = follower.get_shard_info(shard_ref(false)).await {
            let applied = info.into_inner().applied_seq;
            if seen.last().is_none_or(|s| s.0 < applied) {
                seen.push((applied, Instant::now()));
            }
        }
        if started.elapsed() > secs + Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for (seq, acked) in acks.lock().expect("acks").iter() {
        if let Some((_, at)) = seen.iter().find(|(s, _)| s >= seq) {
            let _ = hist.record(at.saturating_duration_since(*acked).as_micros() as u64);
        }
    }
    Ok((
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        failed.load(Ordering::Relaxed),
    ))
}

/// A `Documents.Write` of `upserts` with the write key.
fn write_request(upserts: Vec<Document>) -> tonic::Request<WriteRequest> {
    let mut request = tonic::Request::new(WriteRequest {
        tenant: "bench".into(),
        upserts,
        ..Default::default()
    });
    let key = format!("Bearer {WRITE_KEY}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", key);
    request
}

/// The sequence number inside a one-shard consistency token.
fn token_seq(token: &str) -> u64 {
    tandem_router::token::positions(token)
        .ok()
        .and_then(|p| p.first().map(|p| p.seq))
        .unwrap_or(0)
}

async fn run() -> anyhow::Result<()> {
    let fleet = start().await?;
    let pages = pages()?;
    let counter = Arc::new(AtomicU64::new(0));
    println!(
        "writes: {} English pages cycled, {CONCURRENCY} writers, {} s per run",
        pages.len(),
        bench_seconds()
    );
    println!(
        "{:>6} {:>14} {:>14} {:>8}",
        "batch", "router docs/s", "leader docs/s", "ratio"
    );
    let mut single_max = 0f64;
    for size in [1usize, 100, 1000] {
        let (direct, e1) = throughput(&fleet, false, size, &pages, &counter).await?;
        let (routed, e2) = throughput(&fleet, true, size, &pages, &counter).await?;
        if size == 1 {
            single_max = routed;
        }
        println!(
            "{size:>6} {routed:>14.0} {direct:>14.0} {:>8.2}   (failed calls: {e2} / {e1})",
            routed / direct
        );
    }

    let cpu = |s: &Server| s.cpu_time().as_secs_f64();
    let (leader_cpu, follower_cpu) = (cpu(&fleet.leader), cpu(&fleet.follower));
    let (bytes0, ops0) = (
        fleet.leader.metric(
            "index_replication_shipped_bytes_total",
            "cross_region=\"true\"",
        ),
        fleet.leader.metric(
            "index_replication_shipped_ops_total",
            "cross_region=\"true\"",
        ),
    );
    let docs_before = counter.load(Ordering::Relaxed);
    println!("\nreplication lag (single-document writes, open loop; ack -> follower shows it)");
    for rate in [125.0, (single_max * 0.8).max(125.0)] {
        let (p50, p99, failed) = lag(&fleet, rate, &pages, &counter).await?;
        println!(
            "{rate:>8.0} writes/s   p50 {p50:>7.1} ms   p99 {p99:>7.1} ms   failed writes {failed}"
        );
    }
    let docs = (counter.load(Ordering::Relaxed) - docs_before) as f64;
    let shipped = fleet.leader.metric(
        "index_replication_shipped_bytes_total",
        "cross_region=\"true\"",
    ) - bytes0;
    let ops = fleet.leader.metric(
        "index_replication_shipped_ops_total",
        "cross_region=\"true\"",
    ) - ops0;
    println!(
        "\ncross-region: {:.0} bytes per replicated document ({ops:.0} batches); CPU during the lag runs: follower {:.2} s, leader {:.2} s",
        shipped / docs.max(1.0),
        cpu(&fleet.follower) - follower_cpu,
        cpu(&fleet.leader) - leader_cpu,
    );

    // Bootstrap a replica of everything written so far onto the spare node.
    let mut leader = tandem_benches::index_client(fleet.leader.grpc).await?;
    let info = leader.get_shard_info(shard_ref(false)).await?.into_inner();
    let index_bytes = dir_bytes(&fleet.dir.path().join("leader/shards/bench/0/index"));
    println!(
        "index: {} documents, {:.1} MB, {:.0} bytes per document (segment copying ships at least this, plus merges)",
        info.num_docs,
        index_bytes as f64 / 1e6,
        index_bytes as f64 / info.num_docs.max(1) as f64
    );
    let mut spare = tandem_benches::index_client(fleet.spare.grpc).await?;
    let started = Instant::now();
    spare
        .bootstrap(BootstrapRequest {
            tenant: "bench".into(),
            shard: 0,
            language: "en".into(),
            leader: "leader".into(),
            epoch: 1,
        })
        .await?;
    // Phases seen from outside: the leader snapshots (no bytes yet), the
    // node downloads and installs (bytes counting up), then catches up.
    let mut download_started = None;
    let (bytes, installed) = loop {
        let s = spare.get_shard_info(shard_ref(false)).await?.into_inner();
        let installing = s.health == ShardHealth::Bootstrapping as i32;
        if installing && s.bootstrap_bytes > 0 && download_started.is_none() {
            download_started = Some(Instant::now());
        }
        if !installing && s.bootstrap_total_bytes > 0 {
            break (s.bootstrap_total_bytes, Instant::now());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "bootstrap did not finish"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let goal = leader
        .get_shard_info(shard_ref(false))
        .await?
        .into_inner()
        .log_seq;
    loop {
        let s = spare.get_shard_info(shard_ref(false)).await?.into_inner();
        if s.applied_seq >= goal {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let install = installed.duration_since(download_started.unwrap_or(started));
    let snapshot =
        newest_snapshot(&fleet.dir.path().join("snapshots/bench/0")).context("a snapshot")?;
    let copy_to = fleet.dir.path().join("plain-copy");
    let copy_started = Instant::now();
    copy_dir(&snapshot, &copy_to)?;
    sync_dir(&copy_to)?;
    let copy = copy_started.elapsed();
    let mb = bytes as f64 / 1e6;
    println!(
        "bootstrap of {mb:.1} MB, {} documents, whole (the leader's snapshot, download + install, catch up): \
         {:.2} s = {:.1} MB/s, {:.0} documents/s (download + install seen from outside: {:.2} s)\n\
         plain copy of the same snapshot files, fsynced: {:.2} s = {:.1} MB/s; whole bootstrap / plain copy {:.2}",
        info.num_docs,
        total.as_secs_f64(),
        mb / total.as_secs_f64(),
        info.num_docs as f64 / total.as_secs_f64(),
        install.as_secs_f64(),
        copy.as_secs_f64(),
        mb / copy.as_secs_f64(),
        total.as_secs_f64() / copy.as_secs_f64(),
    );
    Ok(())
}

/// `fsync`s every file under `dir`, as an installed replica is.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dir(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn newest_snapshot(shard_dir: &Path) -> Option<std::path::PathBuf> {
    let mut seqs: Vec<_> = std::fs::read_dir(shard_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    seqs.sort();
    seqs.pop()
}
