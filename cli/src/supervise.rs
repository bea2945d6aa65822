//! Starting and stopping the cluster's processes.
//!
//! Each tandem process prints one JSON readiness line on stdout once it
//! listens (`{"ready":true,"grpc":...,"metrics":...,"pid":...}`); a child is
//! started on port 0 and its addresses are read from that line. Children
//! are stopped with SIGTERM (they drain), then SIGKILL after a grace period;
//! dropping a [`Process`] kills it, so a failed start leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procfs::{self, Signal};

/// A running child process of the cluster.
pub struct Process {
    /// Node id.
    pub id: String,
    /// `index`, `model` or `router`.
    pub kind: &'static str,
    /// Region.
    pub region: String,
    /// gRPC address, `host:port`.
    pub grpc: String,
    /// Metrics address, `host:port`.
    pub metrics: String,
    /// The admin API's address, `host:port` (routers started with
    /// `--admin-listen`).
    pub admin: Option<String>,
    /// OS process id.
    pub pid: u32,
    child: Child,
}

#[derive(Deserialize)]
struct Ready {
    grpc: String,
    metrics: String,
    #[serde(default)]
    admin: Option<String>,
    pid: u32,
}

/// The directory of the running executable: where `cargo build --bins`
/// puts `tandem` and the other binaries side by side.
pub fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("the running binary has no directory")
}

/// The binary `name` in `bin_dir`, with a hint to build it if it is missing.
pub fn binary(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found in {}: build every binary first with `cargo build --release --bins`",
            name,
            bin_dir.display()
        );
    }
    Ok(path)
}

/// Starts `bin args...` with `env` added to its environment (secrets go
/// there, never into the arguments, which any local user can read),
/// logging to `log`, and waits for its readiness line.
pub async fn start(
    id: &str,
    kind: &'static str,
    region: &str,
    bin: &Path,
    (args, env): (&[String], &[(String, String)]),
    log: &Path,
) -> anyhow::Result<Process> {
    let stderr =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| {
            format!(
                "{id} did not become ready within 60 s (log: {})",
                log.display()
            )
        })??
        .with_context(|| {
            format!(
                "{id} exited before it was ready (log: {}){}",
                log.display(),
                log_tail(log)
            )
        })?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ready: Ready = serde_json::from_str(&line)
        .with_context(|| format!("{id}: unexpected readiness line {line:?}"))?;
    Ok(Process {
        id: id.to_string(),
        kind,
        region: region.to_string(),
        grpc: ready.grpc,
        metrics: ready.metrics,
        admin: ready.admin,
        pid: ready.pid,
        child,
    })
}

/// The last lines of `log`, to quote in an error (the log may be gone
/// by the time someone reads it, e.g. a test's temporary directory).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n  {tail}")
    }
}

impl Process {
    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        procfs::send(self.pid, Signal::Term);
        // A process a drill froze only sees the TERM once thawed.
        procfs::send(self.pid, Signal::Cont);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
