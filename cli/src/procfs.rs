//! What this machine knows about a process, from `/proc`, and signals.
//!
//! Drills kill, freeze and restart the cluster's processes, and `tandem dev`
//! must stop processes a drill restarted (which are not its children). Both
//! work from pids in the topology file, so every helper here is careful
//! about pids that are gone, zombies, and pids the kernel reused for
//! something else (see [`belongs_to`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A signal a drill or a shutdown sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ask to stop (processes drain, then exit).
    Term,
    /// Stop at once: what a crash or an OOM kill looks like.
    Kill,
    /// Freeze: the kernel still accepts connections, nothing answers.
    Stop,
    /// Thaw a frozen process.
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to `pid`; false if there is no such process (or it may
/// not be signalled).
pub fn send(pid: u32, signal: Signal) -> bool {
    // A pid above i32::MAX cannot exist; 0 and negative values would
    // signal whole process groups, which must never happen by accident.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe { libc::kill(pid, signal.number()) == 0 }
}

/// The process state letter from `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`,
/// ...), or `None` when there is no such process.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself; the state is the first field after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// True while the process exists and has not exited (a zombie is dead:
/// its sockets are closed, only its exit status waits to be collected).
pub fn is_alive(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// True when the process is frozen (SIGSTOP).
pub fn is_stopped(pid: u32) -> bool {
    matches!(state(pid), Some('T'))
}

/// The process's arguments, `argv[0]` first (empty if it is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's working directory.
pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// The process's environment, as it was when it started.
pub fn environ(pid: u32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where the process's file descriptor `fd` points (e.g. its stderr log).
pub fn fd_target(pid: u32, fd: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// True when `pid` is alive and is the tandem process `node_id` of the
/// cluster whose files are under `marker` (its data directory): its
/// command line names the node and mentions the directory. This is what
/// keeps a stale topology file from getting an unrelated process killed
/// after the kernel reused a pid.
pub fn belongs_to(pid: u32, node_id: &str, marker: &str) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let args = cmdline(pid);
    let names_node = args
        .windows(2)
        .any(|w| (w[0] == "--node-id" || w[0] == "--router-id") && w[1] == node_id);
    names_node && args.iter().any(|a| a.contains(marker))
}

/// Waits until `pid` is no longer alive; false if it still is after
/// `timeout`.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !is_alive(pid) {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(!is_stopped(me));
        assert!(!cmdline(me).is_empty());
        assert!(cwd(me).is_some());
        assert!(!environ(me).is_empty() || std::env::vars().next().is_none());
    }

    #[test]
    fn a_missing_pid_is_dead_and_not_signalled() {
        // Above the kernel's pid_max limit (4,194,304), so never in use.
        let missing = 4_194_305 + 17;
        assert_eq!(state(missing), None);
        assert!(!is_alive(missing));
        assert!(!send(missing, Signal::Term));
        assert!(cmdline(missing).is_empty());
        assert!(!belongs_to(missing, "x", "/"));
        // 0 would mean "my process group": refused.
        assert!(!send(0, Signal::Cont));
    }

    #[tokio::test]
    async fn kill_and_zombie_and_wait_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert!(is_alive(pid));
        assert!(send(pid, Signal::Stop));
        let frozen = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            is_stopped(pid)
        });
        assert!(frozen);
        assert!(send(pid, Signal::Kill));
        // Not reaped yet: a zombie, which counts as gone.
        assert!(wait_gone(pid, Duration::from_secs(5)).await);
        let _ = child.wait();
    }

    #[test]
    fn belongs_to_needs_the_node_and_the_marker() {
        // `; true` keeps the shell (and its arguments) from exec'ing sleep.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 30; true",
                "sh",
                "--node-id",
                "n1",
                "/tmp/cluster-a/x",
            ])
            .spawn()
            .expect("sh");
        let pid = child.id();
        // Until the exec, the child still has the test binary's arguments.
        let exec_done = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            cmdline(pid).iter().any(|a| a == "--node-id")
        });
        assert!(exec_done);
        assert!(belongs_to(pid, "n1", "/tmp/cluster-a"));
        assert!(!belongs_to(pid, "n2", "/tmp/cluster-a"));
        assert!(!belongs_to(pid, "n1", "/tmp/cluster-b"));
        let _ = child.kill();
        let _ = child.wait();
    }
}
