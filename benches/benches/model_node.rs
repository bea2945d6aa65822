//! Suggest and Boosts of the real `tandem-model-node` over gRPC on loopback,
//! and the same calls in-process on the same model (no network), at
//! concurrency 1 and 16. Reports QPS, p50/p99, the share of non-empty
//! answers, the model's heap size and its artifact size.
//!
//! The model is trained in-process with the model-node library on a
//! deterministic **synthetic** log (`tandem_model_node::synth`, the click
//! model documented in `data/events/README.md`) over the tldr example
//! descriptions of **every language** of the sample corpus, as one
//! multilingual tenant: each language gets `3 x (its example count)`
//! sessions (doubled until the model holds at least 100,000 distinct
//! queries). The users' phrasings (truncated, a word dropped, typos,
//! accents left out, refinements) are what makes the queries distinct.
//!
//! Workload: Boosts asks for the queries users typed (20,000 distinct ones
//! of at most 256 bytes, in a hash order that spreads them over languages);
//! Suggest for their first 2-8 characters.
//!
//! Run: `cargo build --release -p tandem-model-node --bins && cargo bench -p tandem-benches --bench model_node`
//! (`BENCH_SECONDS=N` sets the length of each run; default 5.)

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tandem_benches::{closed_loop, sample_corpus, RunStats, Server};
use tandem_model_node::artifact::write_new_version;
use tandem_model_node::corpus::read_pages;
use tandem_model_node::events::Event;
use tandem_model_node::store::MAX_QUERY_BYTES;
use tandem_model_node::synth::{generate, SynthConfig};
use tandem_model_node::train::{now_millis, train, TrainConfig};
use tandem_model_node::TenantModel;
use tandem_proto::v1::model_node_client::ModelNodeClient;
use tandem_proto::v1::{BoostsRequest, ModelSuggestRequest};
use tonic::transport::Channel;

const TENANT: &str = "tldr-all";
const MIN_DISTINCT_QUERIES: u64 = 100_000;
const WORKLOAD_QUERIES: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir()?;
    let (model, artifact_bytes, events, train_time) = build_model(dir.path())?;
    let info = model.info();
    println!(
        "model: {} distinct queries, {} boosted queries, from {} synthetic events; synthesised and trained in {train_time:.1?}",
        info.suggestions,
        info.boosted_queries,
        events.len()
    );
    println!(
        "model heap (TenantModel::heap_bytes): {:.1} MiB; artifact: {:.1} MiB",
        model.heap_bytes() as f64 / (1 << 20) as f64,
        artifact_bytes as f64 / (1 << 20) as f64
    );
    let (typed, prefixes) = workload(&events);
    drop(events);
    println!(
        "workload: {} typed queries (Boosts), {} prefixes (Suggest); {seconds} s per run",
        typed.len(),
        prefixes.len()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let models = dir.path().join("models").display().to_string();
        let node = Server::start(
            "tandem-model-node",
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--watch-ms",
                "0",
                "--model-dir",
                &models,
            ],
        )?;
        let channel = Channel::from_shared(format!("http://{}", node.grpc))?
            .connect()
            .await?;
        let model = Arc::new(model);
        let mut rows = Vec::new();
        for concurrency in [1usize, 16] {
            for (method, queries) in [("Suggest", &prefixes), ("Boosts", &typed)] {
                let local =
                    in_process(&model, method, concurrency, duration, queries.clone()).await;
                let grpc =
                    over_grpc(&channel, method, concurrency, duration, queries.clone()).await;
                rows.push((concurrency, method, local, grpc));
            }
        }
        println!("\n| concurrency | call | path | QPS | p50 µs | p99 µs | errors | non-empty |");
        println!("|---|---|---|---|---|---|---|---|");
        for (c, method, local, grpc) in &rows {
            for (path, (s, filled)) in [("in-process", local), ("gRPC model-node", grpc)] {
                println!(
                    "| {c} | {method} | {path} | {:.0} | {} | {} | {} | {:.0} % |",
                    s.qps,
                    s.p50_us,
                    s.p99_us,
                    s.errors,
                    filled * 100.0
                );
            }
        }
        drop(node);
        Ok(())
    })
}

/// Trains the multilingual tenant and writes its artifact under
/// `<dir>/models`; returns the served model, the artifact size, the number
/// of events and the training time.
fn build_model(dir: &Path) -> anyhow::Result<(TenantModel, u64, Vec<Event>, Duration)> {
    let mut corpus = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(sample_corpus())?)
        .read_to_end(&mut corpus)
        .context("reading the sample corpus")?;
    let langs = languages(&corpus)?;
    let mut pages_by_lang = Vec::new();
    for lang in &langs {
        let pages = read_pages(&corpus[..], lang, &sample_corpus())?;
        let examples: usize = pages.iter().map(|p| p.examples.len()).sum();
        pages_by_lang.push((pages, examples));
    }
    let mut factor = 3;
    loop {
        let started = Instant::now();
        let mut events: Vec<Event> = Vec::new();
        for (i, (pages, examples)) in pages_by_lang.iter().enumerate() {
            let cfg = SynthConfig::new(factor * examples, 1000 + i as u64);
            events.extend(generate(pages, &cfg));
        }
        let (set, stats) = train(&events, TENANT, &TrainConfig::default())?;
        let train_time = started.elapsed();
        if (stats.suggestions as u64) < MIN_DISTINCT_QUERIES {
            println!(
                "{} distinct queries with {factor} sessions per example; doubling",
                stats.suggestions
            );
            factor *= 2;
            continue;
        }
        let written = write_new_version(&dir.join("models"), &set, now_millis())?;
        let model = TenantModel::new(set, written.file.version, written.size_bytes);
        return Ok((model, written.size_bytes, events, train_time));
    }
}

/// Every language of the corpus, sorted.
fn languages(corpus: &[u8]) -> anyhow::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Lang {
        lang: String,
    }
    let mut langs = BTreeSet::new();
    for line in corpus.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        langs.insert(serde_json::from_slice::<Lang>(line)?.lang);
    }
    Ok(langs.into_iter().collect())
}

/// Typed queries for Boosts (distinct, in a deterministic pseudo-random
/// order so that every language and region of the model is hit) and their
/// first 2-8 characters for Suggest.
fn workload(events: &[Event]) -> (Arc<Vec<String>>, Arc<Vec<String>>) {
    let distinct: BTreeSet<&str> = events
        .iter()
        .map(Event::query)
        // What the service accepts (longer text is INVALID_ARGUMENT).
        .filter(|q| !q.trim().is_empty() && q.len() <= MAX_QUERY_BYTES)
        .collect();
    let mut typed: Vec<String> = distinct.into_iter().map(str::to_string).collect();
    typed.sort_by_key(|q| fnv1a(q));
    typed.truncate(WORKLOAD_QUERIES);
    let prefixes = typed
        .iter()
        .enumerate()
        .map(|(i, q)| q.chars().take(2 + i % 7).collect())
        .collect();
    (Arc::new(typed), Arc::new(prefixes))
}

/// A stable string hash (FNV-1a), for a shuffle that needs no RNG.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Calls made and calls that found something.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    filled: AtomicU64,
}

impl Tally {
    fn count(&self, found: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.filled.fetch_add(u64::from(found), Ordering::Relaxed);
    }

    /// Share of calls with a non-empty answer.
    fn share(&self) -> f64 {
        let calls = self.calls.load(Ordering::Relaxed).max(1);
        self.filled.load(Ordering::Relaxed) as f64 / calls as f64
    }
}

/// Runs the calls on the in-memory model; returns the stats and the share of
/// non-empty answers.
async fn in_process(
    model: &Arc<TenantModel>,
    method: &'static str,
    concurrency: usize,
    duration: Duration,
    queries: Arc<Vec<String>>,
) -> (RunStats, f64) {
    let tally = Arc::new(Tally::default());
    let (model, counter) = (model.clone(), tally.clone());
    let stats = closed_loop(concurrency, duration, queries, move |q| {
        let (model, counter) = (model.clone(), counter.clone());
        async move {
            let found = match method {
                "Suggest" => !model.suggest(&q, 10).is_empty(),
                _ => !model.boosts(&q, 20).boosts.is_empty(),
            };
            counter.count(found);
            true
        }
    })
    .await;
    (stats, tally.share())
}

/// Runs the calls against the node; returns the stats and the share of
/// non-empty answers.
async fn over_grpc(
    channel: &Channel,
    method: &'static str,
    concurrency: usize,
    duration: Duration,
    queries: Arc<Vec<String>>,
) -> (RunStats, f64) {
    let tally = Arc::new(Tally::default());
    let (client, counter) = (
        ModelNodeClient::with_interceptor(channel.clone(), tandem_benches::internal()),
        tally.clone(),
    );
    let stats = closed_loop(concurrency, duration, queries, move |q| {
        let (mut client, counter) = (client.clone(), counter.clone());
        async move {
            let tenant = TENANT.to_string();
            let found = match method {
                "Suggest" => client
                    .suggest(ModelSuggestRequest {
                        tenant,
                        prefix: q,
                        k: 10,
                    })
                    .await
                    .map(|r| !r.into_inner().suggestions.is_empty()),
                _ => client
                    .boosts(BoostsRequest {
                        tenant,
                        query: q,
                        max: 20,
                    })
                    .await
                    .map(|r| !r.into_inner().boosts.is_empty()),
            };
            counter.count(matches!(found, Ok(true)));
            found.is_ok()
        }
    })
    .await;
    (stats, tally.share())
}
