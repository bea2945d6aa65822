//! Harness for tandem's end-to-end tests: start the real binaries on
//! ephemeral loopback ports, learn their addresses from the readiness line
//! they print, and talk to them over gRPC.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which
//! the README's test command does): a test binary only gets
//! `CARGO_BIN_EXE_*` for its own package.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tandem_proto::v1::Document;
use tonic::transport::Channel;

pub mod cli;
pub mod cluster;
pub mod dashboard;
pub mod drill;
pub mod exposition;
pub mod learning;
pub mod s3;
pub mod tenants;
pub mod web;

/// Admin token given to every node the harness starts with faults enabled.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The internal token every process the harness starts holds (through
/// `TANDEM_INTERNAL_TOKEN`), and that the tests' node clients carry.
pub const INTERNAL_TOKEN: &str = "e2e-internal-token-of-the-test-cluster";

/// [`INTERNAL_TOKEN`], for `Client::with_interceptor(channel, internal())`.
pub fn internal() -> tandem_common::internal::InternalToken {
    tandem_common::internal::InternalToken::new(INTERNAL_TOKEN).expect("a valid token")
}

/// The workspace's target directory for the profile the tests were built in.
pub fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a workspace binary, failing with a hint if it was not built.
pub fn bin_path(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// The repository root (for sample data).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repo root")
        .to_path_buf()
}

#[derive(Deserialize)]
struct Ready {
    grpc: SocketAddr,
    metrics: SocketAddr,
    #[serde(default)]
    health: Option<SocketAddr>,
    #[serde(default)]
    admin: Option<SocketAddr>,
    pid: u32,
}

/// A running tandem process, killed when dropped.
pub struct Proc {
    child: Child,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
    /// Its health-only address, when started with `--health-listen`.
    pub health: Option<SocketAddr>,
    /// Its admin API address (a router started with `--admin-listen`).
    pub admin: Option<SocketAddr>,
    /// Its process id.
    pub pid: u32,
}

impl Proc {
    /// Starts `bin` with `args` and waits for its readiness line.
    pub fn spawn(bin: &str, args: &[String]) -> anyhow::Result<Proc> {
        Self::spawn_with_env(bin, args, &[])
    }

    /// Starts `bin` with `args` and the environment variables `env` (on
    /// top of the harness's) and waits for its readiness line.
    pub fn spawn_with_env(
        bin: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let mut child = Command::new(bin_path(bin))
            .args(args)
            // Every process knows the admin token (as a fleet's do, from
            // a Secret), never from its arguments; `env` may override.
            .env(tandem_common::secret_file::ADMIN_TOKEN_ENV, ADMIN_TOKEN)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env(tandem_common::internal::INTERNAL_TOKEN_ENV, INTERNAL_TOKEN)
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                bail!("{bin} did not become ready: {other:?}");
            }
        };
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("{bin}: unexpected readiness line {line:?}"))?;
        Ok(Proc {
            child,
            grpc: ready.grpc,
            metrics: ready.metrics,
            health: ready.health,
            admin: ready.admin,
            pid: ready.pid,
        })
    }

    /// A channel to its admin API (a router started with `--admin-listen`).
    pub async fn admin_channel(&self) -> Channel {
        let addr = self.admin.expect("started with --admin-listen");
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the admin listener")
    }

    /// `http://addr` for tonic clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A channel to the process.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("connect")
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Waits for the process to exit and returns whether it exited cleanly.
    pub fn wait(&mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Scrapes its Prometheus metrics.
    pub fn scrape(&self) -> String {
        scrape(self.metrics)
    }
}

/// The Prometheus metrics served at `addr` (`/metrics`, HTTP/1.1).
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read");
    body
}

/// The value of the first sample of `metrics` whose line starts with
/// `name_and_labels` (0 when there is none).
pub fn metric(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A frozen (SIGSTOP) process must be woken to die cleanly.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tandem-<kind>-node serve` on fresh ports with faults enabled,
/// `dir_flag dir` naming its data, plus `extra` flags.
pub fn start_node(
    bin: &str,
    id: &str,
    dir_flag: &str,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    start_node_on(bin, id, "127.0.0.1:0", dir_flag, dir, extra)
}

/// [`start_node`] listening on `listen` (a restart on the old port).
pub fn start_node_on(
    bin: &str,
    id: &str,
    listen: &str,
    dir_flag: &str,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let mut args: Vec<String> = [
        "serve",
        "--node-id",
        id,
        "--listen",
        listen,
        "--metrics-listen",
        "127.0.0.1:0",
        "--enable-faults",
        dir_flag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(bin, &args)
}

/// Starts an index-node on a fresh port over `data_dir`, faults enabled.
pub fn start_index_node(id: &str, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    start_node("tandem-index-node", id, "--data-dir", data_dir, extra)
}

/// The first `n` full (non-alias) pages of the sample corpus in `lang`.
pub fn sample_docs(lang: &str, n: usize) -> Vec<Document> {
    #[derive(Deserialize)]
    struct Page {
        id: String,
        title: String,
        body: String,
        lang: String,
        platform: String,
        is_alias: bool,
        more_info_url: Option<String>,
    }
    let path = repo_root().join("data/tldr_pages/docs.jsonl.gz");
    let file = std::fs::File::open(&path).expect("sample corpus");
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Page>(&l).ok())
        .filter(|p| p.lang == lang && !p.is_alias)
        .take(n)
        .map(|p| Document {
            attrs_json: serde_json::json!({"lang": p.lang, "platform": p.platform}).to_string(),
            id: p.id,
            title: p.title,
            body: p.body,
            url: p.more_info_url.unwrap_or_default(),
        })
        .collect()
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}
