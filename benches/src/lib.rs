//! Shared pieces of tandem's benchmarks: sample queries, closed-loop load
//! with HDR latency histograms, and starting the release binaries. (The
//! load generator is its own crate, `tandem-loadgen`.)

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod fleets;
pub mod open_loop;
pub mod ranking;
use hdrhistogram::Histogram;
use serde::Deserialize;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the repo root")
        .to_path_buf()
}

/// The internal token of every process a benchmark starts.
pub const INTERNAL_TOKEN: &str = "bench-internal-token-of-the-cluster";

/// [`INTERNAL_TOKEN`], for `Client::with_interceptor(channel, internal())`.
pub fn internal() -> tandem_common::internal::InternalToken {
    tandem_common::internal::InternalToken::new(INTERNAL_TOKEN).expect("a valid token")
}

/// An `IndexNode` client of the node at `addr`, carrying the internal token.
pub async fn index_client(
    addr: impl std::fmt::Display,
) -> anyhow::Result<
    tandem_proto::v1::index_node_client::IndexNodeClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            tandem_common::internal::InternalToken,
        >,
    >,
> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(tandem_proto::v1::index_node_client::IndexNodeClient::with_interceptor(channel, internal()))
}

/// Writes the English tldr pages as shard 0 of `tenant` into the
/// index-node data directory `index_dir` (what a node serving it opens).
pub fn write_english_shard(index_dir: &Path, tenant: &str) -> anyhow::Result<()> {
    use tandem_client::corpus::{read_documents, Where};
    let docs = read_documents(
        &sample_corpus(),
        &["lang=en".parse::<Where>().map_err(anyhow::Error::msg)?],
    )?;
    let (health, _server) = tonic_health::server::health_reporter();
    let registry = tandem_index_node::registry::ShardRegistry::new(
        index_dir,
        4,
        health,
        tandem_index_node::writer::WriterConfig::default(),
    );
    let key = tandem_index_node::shard::ShardKey {
        tenant: tenant.into(),
        shard: 0,
    };
    registry.create(&key, "en")?.load_batch(1, &docs, &[])?;
    Ok(())
}

/// One query through one path, as the load functions take it.
pub type Call = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// `Search/Search` for `tenant` through the router at `channel` with the
/// API key `key` (top 10 with snippets).
pub fn search_call(channel: tonic::transport::Channel, tenant: &'static str, key: &str) -> Call {
    let client = tandem_proto::v1::search_client::SearchClient::new(channel);
    let key = bearer(key);
    Arc::new(move |q: String| {
        let (mut client, key) = (client.clone(), key.clone());
        Box::pin(async move {
            let request = search_request(tenant, q, (0, 10), &key);
            client.search(request).await.is_ok()
        })
    })
}

/// `Bearer <key>`, made once per load: formatting the header per call
/// would charge the client's work to the path measured.
pub fn bearer(key: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    format!("Bearer {key}").parse().expect("ascii")
}

/// A search of `tenant` for `query`, `top_k` hits from `offset`, with the
/// `authorization` header `key`.
pub fn search_request(
    tenant: &str,
    query: String,
    (offset, top_k): (u32, u32),
    key: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<tandem_proto::v1::SearchRequest> {
    let mut request = tonic::Request::new(tandem_proto::v1::SearchRequest {
        tenant: tenant.into(),
        query,
        top_k,
        offset,
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", key.clone());
    request
}

/// Path of the sample corpus.
pub fn sample_corpus() -> PathBuf {
    repo_root().join("data/tldr_pages/docs.jsonl.gz")
}

/// Realistic queries for a language's pages: the tldr example descriptions
/// ("Extract a tar archive"), which are how people phrase tasks.
pub fn example_queries(lang: &str, max: usize) -> Vec<String> {
    #[derive(Deserialize)]
    struct Example {
        description: String,
    }
    #[derive(Deserialize)]
    struct Page {
        lang: String,
        examples: Vec<Example>,
    }
    let file = std::fs::File::open(sample_corpus()).expect("sample corpus");
    let mut queries: Vec<String> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Page>(&l).ok())
        .filter(|p| p.lang == lang)
        .flat_map(|p| p.examples.into_iter().map(|e| e.description))
        .filter(|d| !d.is_empty())
        .collect();
    // Spread the picks over the whole corpus, deterministically.
    let step = (queries.len() / max.max(1)).max(1);
    queries = queries.into_iter().step_by(step).take(max).collect();
    queries
}

/// Seconds each measured run lasts: `BENCH_SECONDS` (default 5).
pub fn bench_seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// A comma-separated list from the environment variable `name` (e.g.
/// `BENCH_CONCURRENCY=1,16`), or `default` when it is unset or names
/// nothing that parses.
pub fn env_list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    std::env::var(name)
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<T>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Latency and throughput of one closed-loop run.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// Completed calls per second.
    pub qps: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Calls that failed.
    pub errors: u64,
}

impl std::fmt::Display for RunStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} qps  p50 {:>6} us  p99 {:>6} us  errors {}",
            self.qps, self.p50_us, self.p99_us, self.errors
        )
    }
}

/// Latencies and counts of closed-loop runs, mergeable so that several
/// short runs of one path, interleaved with other paths' runs, add up to
/// one measurement (background noise then hits every path alike).
pub struct Measured {
    hist: Histogram<u64>,
    errors: u64,
    seconds: f64,
}

impl Default for Measured {
    fn default() -> Self {
        Self {
            hist: Histogram::<u64>::new(3).expect("3 significant digits is a valid precision"),
            errors: 0,
            seconds: 0.0,
        }
    }
}

impl Measured {
    /// Adds another run's measurements.
    pub fn merge(&mut self, other: Measured) {
        let _ = self.hist.add(other.hist);
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    /// Calls measured (successful or not).
    pub fn calls(&self) -> u64 {
        self.hist.len()
    }

    /// QPS and latency percentiles.
    pub fn stats(&self) -> RunStats {
        RunStats {
            qps: self.hist.len() as f64 / self.seconds.max(f64::MIN_POSITIVE),
            p50_us: self.hist.value_at_quantile(0.5),
            p99_us: self.hist.value_at_quantile(0.99),
            errors: self.errors,
        }
    }
}

/// Runs `call` in a closed loop from `concurrency` tasks for `duration`,
/// each task walking `queries` from a different offset.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    queries: Arc<Vec<String>>,
    call: F,
) -> RunStats
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    measure(concurrency, duration, queries, call).await.stats()
}

/// [`closed_loop`], returning mergeable measurements.
pub async fn measure<F, Fut>(
    concurrency: usize,
    duration: Duration,
    queries: Arc<Vec<String>>,
    call: F,
) -> Measured
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (queries, call) = (queries.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Measured::default();
            let mut i = worker * 7919;
            while start.elapsed() < duration {
                let q = queries[i % queries.len()].clone();
                i += 1;
                let t = Instant::now();
                if !call(q).await {
                    run.errors += 1;
                }
                let _ = run.hist.record(t.elapsed().as_micros() as u64);
            }
            run
        }));
    }
    let mut all = Measured::default();
    for t in tasks {
        if let Ok(run) = t.await {
            all.merge(run);
        }
    }
    all.seconds = start.elapsed().as_secs_f64();
    all
}

/// A release binary of the workspace, started with `args`; killed on drop.
pub struct Server {
    child: Child,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its Prometheus address.
    pub metrics: Option<SocketAddr>,
}

impl Server {
    /// Starts `target/release/<bin>` and waits for its readiness line.
    pub fn start(bin: &str, args: &[&str]) -> anyhow::Result<Server> {
        let path = repo_root().join("target/release").join(bin);
        if !path.exists() {
            bail!(
                "{} not found: run `cargo build --release --bins` first",
                path.display()
            );
        }
        Self::start_path(&path, args)
    }

    /// Starts the binary at `path` and waits for its readiness line.
    pub fn start_path(path: &Path, args: &[&str]) -> anyhow::Result<Server> {
        let bin = path.display().to_string();
        let mut command = Command::new(path);
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            // Warnings and errors only: a process that fails to start says why.
            .env("RUST_LOG", "warn")
            .env(tandem_common::internal::INTERNAL_TOKEN_ENV, INTERNAL_TOKEN)
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        #[derive(Deserialize)]
        struct Ready {
            grpc: SocketAddr,
            metrics: Option<SocketAddr>,
        }
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("{bin} did not become ready: {line:?}"))?;
        Ok(Server {
            child,
            grpc: ready.grpc,
            metrics: ready.metrics,
        })
    }

    /// The value of a Prometheus counter or gauge (summed over its label
    /// sets that contain `labels`), 0 if absent.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        use std::io::{Read, Write};
        let Some(addr) = self.metrics else { return 0.0 };
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return 0.0;
        };
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far (see [`cpu_time_of_process`]).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of_process(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time process `pid` has used so far, all threads, from the
/// scheduler's nanosecond accounting (`/proc/<pid>/task/*/schedstat`).
/// Zero where `/proc` is not available.
pub fn cpu_time_of_process(pid: u32) -> Duration {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Copies a directory tree (to give a server its own copy of an index).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
