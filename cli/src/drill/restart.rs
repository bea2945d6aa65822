//! Killing a process and bringing it back as it was: same binary, same
//! arguments, same data, **same ports**, so the routers' channels to it
//! simply reconnect and their health probes re-admit it.
//!
//! Everything needed is read from `/proc/<pid>` *before* the kill (command
//! line, working directory, environment, where its stderr log goes). The
//! node was started on port 0, so `--listen` / `--metrics-listen` are
//! replaced by the addresses it actually had (from the topology). The new
//! process is detached (own process group, stdout and stderr appended to
//! its log), so it outlives the drill; `tandem dev` stops it on shutdown
//! through the topology file, which is rewritten with the new pid.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Deserialize;
use tandem_client::{NodeInfo, Topology};

use crate::procfs::{self, Signal};

/// How long a restarted process may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to keep retrying when the old port is not free yet.
const BIND_RETRY_FOR: Duration = Duration::from_secs(10);

/// A process as it ran, enough to start it again.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Node id.
    pub id: String,
    /// The pid it had.
    pub pid: u32,
    /// Its command line, `argv[0]` first.
    pub argv: Vec<String>,
    /// Its working directory (relative paths in `argv` resolve there).
    pub cwd: Option<PathBuf>,
    /// Its environment (log filters, tokens given by env).
    pub env: Vec<(String, String)>,
    /// The log its stderr went to; the new process appends to it.
    pub log: PathBuf,
    /// gRPC address, `host:port`.
    pub grpc: String,
    /// Metrics address, `host:port`.
    pub metrics: Option<String>,
    /// Admin listener, `host:port` (a router's).
    pub admin: Option<String>,
}

/// The pid of `node`, checked to really be that node (a stale topology
/// file must not get an unrelated process signalled).
pub fn live_pid(node: &NodeInfo) -> anyhow::Result<u32> {
    let pid = node
        .pid
        .with_context(|| format!("the topology has no pid for {}", node.id))?;
    anyhow::ensure!(
        procfs::is_alive(pid),
        "{} (pid {pid}) is not running: restart the cluster (`tandem dev`) first",
        node.id
    );
    let argv = procfs::cmdline(pid);
    let names_node = argv
        .windows(2)
        .any(|w| (w[0] == "--node-id" || w[0] == "--router-id") && w[1] == node.id);
    anyhow::ensure!(
        names_node,
        "pid {pid} is not {} (its command line is {:?}): the topology file is stale",
        node.id,
        argv.join(" ")
    );
    Ok(pid)
}

/// Reads what [`restart`] needs from `/proc` while `node` still runs.
/// `admin` is its admin listener (a router's, from the topology); `log_dir`
/// is where its log goes if its stderr is not a file.
pub fn snapshot(
    node: &NodeInfo,
    admin: Option<String>,
    log_dir: &Path,
) -> anyhow::Result<Snapshot> {
    let pid = live_pid(node)?;
    let argv = procfs::cmdline(pid);
    let log = procfs::fd_target(pid, 2)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| log_dir.join(format!("{}.log", node.id)));
    Ok(Snapshot {
        id: node.id.clone(),
        pid,
        argv,
        cwd: procfs::cwd(pid),
        env: procfs::environ(pid),
        log,
        grpc: node.addr.clone(),
        metrics: node.metrics.clone(),
        admin,
    })
}

/// SIGKILLs the process and waits until its sockets are closed.
pub async fn kill(snapshot: &Snapshot) -> anyhow::Result<()> {
    procfs::send(snapshot.pid, Signal::Kill);
    anyhow::ensure!(
        procfs::wait_gone(snapshot.pid, Duration::from_secs(5)).await,
        "{} (pid {}) did not die from SIGKILL",
        snapshot.id,
        snapshot.pid
    );
    Ok(())
}

/// `argv` with each `(flag, value)` of `pins` set to that value: an old
/// `flag value` or `flag=value` is replaced, a missing flag is added
/// (started with addresses from a config file: flags override it).
pub fn restart_argv(argv: &[String], pins: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 2 * pins.len());
    let mut seen = vec![false; pins.len()];
    let mut iter = argv.iter();
    while let Some(arg) = iter.next() {
        let spaced = pins.iter().position(|(flag, _)| arg == flag);
        let joined = pins.iter().position(|(flag, _)| {
            arg.strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
        });
        match (spaced, joined) {
            (Some(i), _) => {
                seen[i] = true;
                let _ = iter.next();
                out.extend([arg.clone(), pins[i].1.to_string()]);
            }
            (None, Some(i)) => {
                seen[i] = true;
                out.push(format!("{}={}", pins[i].0, pins[i].1));
            }
            (None, None) => out.push(arg.clone()),
        }
    }
    for ((flag, value), seen) in pins.iter().zip(seen) {
        if !seen {
            out.extend([flag.to_string(), value.to_string()]);
        }
    }
    out
}

/// The flags [`restart`] pins: the addresses the process had.
fn pins(snapshot: &Snapshot) -> Vec<(&'static str, &str)> {
    let mut pins = vec![("--listen", snapshot.grpc.as_str())];
    if let Some(metrics) = &snapshot.metrics {
        pins.push(("--metrics-listen", metrics));
    }
    if let Some(admin) = &snapshot.admin {
        pins.push(("--admin-listen", admin));
    }
    pins
}

#[derive(Deserialize)]
struct Ready {
    grpc: String,
    pid: u32,
}

/// Starts the process of `snapshot` again on its old addresses and waits
/// for its readiness line; returns its new pid. Retries for a while if it
/// cannot bind yet (the port freed by the kill may take a moment).
pub async fn restart(snapshot: &Snapshot) -> anyhow::Result<u32> {
    let (program, args) = snapshot
        .argv
        .split_first()
        .with_context(|| format!("no command line recorded for {}", snapshot.id))?;
    let args = restart_argv(args, &pins(snapshot));
    let started = Instant::now();
    loop {
        match start_once(snapshot, program, &args).await {
            Ok(pid) => return Ok(pid),
            Err(Failure::Exited(e)) if started.elapsed() < BIND_RETRY_FOR => {
                tracing::warn!(node = %snapshot.id, error = %format!("{e:#}"), "restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(Failure::Exited(e) | Failure::Other(e)) => return Err(e),
        }
    }
}

/// Why one start attempt failed: the process exited early (e.g. its port
/// was not free yet: worth another try), or anything else.
enum Failure {
    Exited(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.into())
    }
}

async fn start_once(snapshot: &Snapshot, program: &str, args: &[String]) -> Result<u32, Failure> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&snapshot.log)
        .with_context(|| format!("cannot open {}", snapshot.log.display()))?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(cwd) = &snapshot.cwd {
        command.current_dir(cwd);
    }
    if !snapshot.env.is_empty() {
        command.env_clear().envs(snapshot.env.iter().cloned());
    }
    // Its own process group: a Ctrl-C meant for the drill must not reach
    // it; it lives on as a node of the cluster.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let pid = child.id();
    // Reap it whenever it exits, so a killed restart does not linger as a
    // zombie of the drill (or of a long test process).
    let (exited_tx, exited) = mpsc::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });
    let started = Instant::now();
    loop {
        if let Some(line) = ready_line(&snapshot.log, offset) {
            let ready: Ready = serde_json::from_str(&line)
                .with_context(|| format!("{}: unexpected readiness line {line:?}", snapshot.id))?;
            if ready.grpc != snapshot.grpc {
                procfs::send(ready.pid, Signal::Kill);
                return Err(Failure::Other(anyhow!(
                    "{} came back on {} instead of {}",
                    snapshot.id,
                    ready.grpc,
                    snapshot.grpc
                )));
            }
            return Ok(pid);
        }
        match exited.try_recv() {
            Err(TryRecvError::Empty) => {}
            Ok(status) => {
                return Err(Failure::Exited(anyhow!(
                    "{} exited before it was ready ({}); see {}",
                    snapshot.id,
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    snapshot.log.display()
                )))
            }
            Err(TryRecvError::Disconnected) => {
                return Err(Failure::Exited(anyhow!(
                    "{} exited before it was ready",
                    snapshot.id
                )))
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            procfs::send(pid, Signal::Kill);
            return Err(Failure::Other(anyhow!(
                "{} was not ready within {} s; see {}",
                snapshot.id,
                READY_TIMEOUT.as_secs(),
                snapshot.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The readiness line written to `log` after `offset`, if there is one.
fn ready_line(log: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with('{') && l.contains("\"ready\":true"))
        .map(str::to_string)
}

/// Records `pid` as the pid of node `id` in every topology file of
/// `files` that exists (the one the drill read, and the data directory's
/// copy `tandem dev` reads on shutdown).
pub fn update_topology(files: &[PathBuf], id: &str, pid: u32) -> anyhow::Result<()> {
    for file in files {
        let mut topology = Topology::load(file)?;
        if let Some(node) = topology.nodes.iter_mut().find(|n| n.id == id) {
            node.pid = Some(pid);
        }
        topology
            .save(file)
            .with_context(|| format!("cannot rewrite {}", file.display()))?;
    }
    Ok(())
}

/// The topology files to keep current after restarting the process of
/// `snapshot`: the drill's own, and `<cluster dir>/topology.json` when the
/// process logs to `<cluster dir>/logs/` (as `tandem dev` sets it up) and
/// that is another file.
pub fn topology_files(drill_file: &Path, snapshot: &Snapshot) -> Vec<PathBuf> {
    let mut files = vec![drill_file.to_path_buf()];
    let cluster_file = snapshot
        .log
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "logs"))
        .and_then(Path::parent)
        .map(|d| d.join("topology.json"))
        .filter(|f| f.is_file());
    if let Some(f) = cluster_file {
        let same = match (f.canonicalize(), drill_file.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            files.push(f);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pins_the_listen_addresses() {
        let argv = strings(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            "/d",
        ]);
        assert_eq!(
            restart_argv(
                &argv,
                &[
                    ("--listen", "127.0.0.1:7101"),
                    ("--metrics-listen", "127.0.0.1:9101")
                ]
            ),
            strings(&[
                "serve",
                "--listen",
                "127.0.0.1:7101",
                "--metrics-listen",
                "127.0.0.1:9101",
                "--data-dir",
                "/d"
            ])
        );
    }

    #[test]
    fn handles_equals_forms_and_missing_flags() {
        let argv = strings(&["serve", "--listen=127.0.0.1:0", "--x", "y"]);
        assert_eq!(
            restart_argv(&argv, &[("--listen", "a:1"), ("--metrics-listen", "b:2")]),
            strings(&[
                "serve",
                "--listen=a:1",
                "--x",
                "y",
                "--metrics-listen",
                "b:2"
            ])
        );
        assert_eq!(
            restart_argv(&strings(&["serve"]), &[("--listen", "a:1")]),
            strings(&["serve", "--listen", "a:1"])
        );
        // No metrics address known: the old flag value is kept.
        assert_eq!(
            restart_argv(
                &strings(&["--metrics-listen", "m:0"]),
                &[("--listen", "a:1")]
            ),
            strings(&["--metrics-listen", "m:0", "--listen", "a:1"])
        );
        // A router's admin listener is pinned too; `--admin-listen` is not
        // mistaken for `--listen`.
        assert_eq!(
            restart_argv(
                &strings(&["--admin-listen", "127.0.0.1:0", "--listen=x:0"]),
                &[("--listen", "a:1"), ("--admin-listen", "c:3")]
            ),
            strings(&["--admin-listen", "c:3", "--listen=a:1"])
        );
    }

    #[test]
    fn finds_the_readiness_line_after_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("n.log");
        std::fs::write(&log, "{\"ready\":true,\"grpc\":\"old\",\"pid\":1}\n").expect("write");
        let offset = std::fs::metadata(&log).expect("meta").len();
        assert_eq!(ready_line(&log, offset), None);
        let mut text = std::fs::read_to_string(&log).expect("read");
        text += "INFO starting\n{\"ready\":true,\"grpc\":\"new\",\"pid\":2}\n";
        std::fs::write(&log, text).expect("write");
        let line = ready_line(&log, offset).expect("line");
        assert!(line.contains("new"));
    }

    #[test]
    fn keeps_the_cluster_copy_of_the_topology_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs");
        let cluster_file = dir.path().join("topology.json");
        let other = dir.path().join("elsewhere.json");
        let topology = Topology {
            nodes: vec![NodeInfo {
                id: "n1".into(),
                pid: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        };
        topology.save(&cluster_file).expect("save");
        topology.save(&other).expect("save");
        let snapshot = Snapshot {
            id: "n1".into(),
            pid: 1,
            argv: Vec::new(),
            cwd: None,
            env: Vec::new(),
            log: dir.path().join("logs/n1.log"),
            grpc: String::new(),
            metrics: None,
            admin: None,
        };
        let files = topology_files(&other, &snapshot);
        assert_eq!(files.len(), 2);
        assert_eq!(topology_files(&cluster_file, &snapshot).len(), 1);
        update_topology(&files, "n1", 42).expect("update");
        for f in files {
            let t = Topology::load(&f).expect("load");
            assert_eq!(t.node("n1").and_then(|n| n.pid), Some(42));
        }
    }
}
