//! Where the benchmark's processes run: `BENCH_PIN=1` gives the process in
//! the middle of a path a core of its own.
//!
//! At concurrency 1 on a 2-core machine the client, the process in the
//! middle and the index-node take turns on two cores, and which core the
//! kernel wakes each of them on moves a path's added latency by tens of
//! microseconds from run to run: a hop that happens to share a core with
//! the client skips two cross-core wake-ups, one that does not pays them.
//! With `BENCH_PIN=1` the benchmark client and the index-node run on CPU 0
//! and every process in the middle on CPU 1, so every path crosses cores
//! the same way (client -> middle -> node -> middle -> client), as it would
//! with each process on a host of its own, and only what the middle process
//! does differs. Direct calls then never cross cores, so QPS against direct
//! means little in a pinned run; it is for added latency at concurrency 1.

use std::io;
use std::process::Command;

use anyhow::{bail, Context};

/// CPUs for the two kinds of process, or none (the kernel places them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pinning {
    /// The benchmark client and the index-node.
    pub edge: Option<usize>,
    /// Every process in the middle (hops and the router).
    pub middle: Option<usize>,
}

impl Pinning {
    /// From `BENCH_PIN`: unset or `0` for none, `1` for client and node on
    /// CPU 0 and the middle on CPU 1.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("BENCH_PIN").as_deref() {
            Err(_) | Ok("0") | Ok("") => Ok(Self::default()),
            Ok("1") => {
                let allowed = allowed_cpus().context("cannot read this process's CPUs")?;
                if !(allowed.contains(&0) && allowed.contains(&1)) {
                    bail!("BENCH_PIN=1 needs CPUs 0 and 1; this process may use {allowed:?}");
                }
                Ok(Self {
                    edge: Some(0),
                    middle: Some(1),
                })
            }
            Ok(other) => bail!("BENCH_PIN={other:?}: expected 0 or 1"),
        }
    }

    /// Pins the calling thread to the edge CPU; call it before starting the
    /// client's runtime, whose threads inherit it.
    pub fn pin_client(&self) -> anyhow::Result<()> {
        match self.edge {
            Some(cpu) => pin_current_thread(cpu)
                .with_context(|| format!("cannot pin the benchmark client to CPU {cpu}")),
            None => Ok(()),
        }
    }

    /// A one-line description for the benchmark's output, if pinned.
    pub fn describe(&self) -> Option<String> {
        let (edge, middle) = (self.edge?, self.middle?);
        Some(format!(
            "pinned: client and index-node on CPU {edge}, every process in the middle on CPU {middle}"
        ))
    }
}

/// The empty CPU set.
fn empty_set() -> libc::cpu_set_t {
    // SAFETY: `cpu_set_t` is a plain bit array, and all zeroes is the empty
    // set.
    unsafe { std::mem::zeroed() }
}

/// The set holding `cpu` alone.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    let mut set = empty_set();
    // SAFETY: `CPU_SET` sets one bit through a bounds-checked index (a CPU
    // past the set panics, here, before any fork).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread, and `set` is a valid set of the
    // size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let mut set = empty_set();
    // SAFETY: pid 0 is the calling thread; `sched_getaffinity` fills the set
    // of the size passed, and `CPU_ISSET` reads bits inside it.
    unsafe {
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// Pins the calling thread (and the threads it starts from now on) to `cpu`.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    set_affinity(&cpu_set(cpu))
}

/// Makes `command` start its process pinned to `cpu`, so that every thread
/// the process ever has runs there.
pub fn pin_command(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(cpu);
    // SAFETY: between fork and exec only async-signal-safe work is allowed:
    // `sched_setaffinity` is a bare system call, and `set` was built before
    // the fork; nothing allocates or locks.
    unsafe {
        command.pre_exec(move || set_affinity(&set));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_child_runs_on_its_cpu_alone() {
        let cpu = *allowed_cpus().unwrap().last().expect("some CPU");
        let mut command = Command::new("grep");
        command.args(["^Cpus_allowed_list", "/proc/self/status"]);
        pin_command(&mut command, cpu);
        let out = command.output().expect("grep runs");
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(cpu.to_string().as_str()),
            "{line}"
        );
    }
}
