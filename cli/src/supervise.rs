//! Starting and stopping the cluster's processes.
//!
//! Each tandem process prints one JSON readiness line on stdout once it
//! listens (`{"ready":true,"grpc":...,"metrics":...,"pid":...}`); a child is
//! started on port 0 and its addresses are read from that line. Children
//! are stopped with SIGTERM (they drain), then SIGKILL after a grace period.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
    /// OS process id.
    pub pid: u32,
    child: Child,
}

#[derive(Deserialize)]
struct Ready {
    grpc: String,
    metrics: String,
    pid: u32,
}

/// Where the sibling binaries live: next to the running `tandem`.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the tandem binary")?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("tandem binary has no directory")?;
    if !path.exists() {
        bail!(
            "{} not found next to {}: build every binary first with `cargo build --release --bins`",
            name,
            exe.display()
        );
    }
    Ok(path)
}

/// Starts `bin args...`, logging to `log`, and waits for its readiness line.
pub async fn start(
    id: &str,
    kind: &'static str,
    region: &str,
    bin: &Path,
    args: &[String],
    log: &Path,
) -> anyhow::Result<Process> {
    let stderr =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = Command::new(bin)
        .args(args)
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
        .with_context(|| format!("{id} exited before it was ready (log: {})", log.display()))?;
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
        pid: ready.pid,
        child,
    })
}

impl Process {
    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        signal(self.pid, "TERM");
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with `kill(1)`.
pub fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
