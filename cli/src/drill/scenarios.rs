//! The drills: the seed's outage list, each as "what to break" and "how to
//! heal it". Targets are picked from the topology relative to the load's
//! home region, so the same scenario works from either side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tandem_client::{NodeInfo, Topology};

use super::faults::{self, FaultScope};
use super::restart::{self, Snapshot};
use crate::procfs::{self, Signal};
use tandem_proto::v1::FaultAction;

/// An outage to drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A service answering wrongly: the home region's model-node fails
    /// every call with UNAVAILABLE (injected fault).
    ModelErrors,
    /// A region's front door down: the home region's router is killed
    /// (SIGKILL); clients fail over to the paired region's router.
    RouterDown,
    /// Node network trouble, connection refused: the home region's first
    /// index-node is killed (SIGKILL).
    IndexKilled,
    /// Node network trouble, hung: the home region's first index-node is
    /// frozen (SIGSTOP); connections open, nothing answers.
    IndexFrozen,
    /// A slow node: the home region's first index-node answers every call
    /// 200 ms late (injected delay); hedging and ejection route around it.
    SlowNode,
    /// An overloaded front door: the home region's router sheds every
    /// search (RESOURCE_EXHAUSTED, `tandem-shed: router`, injected on its
    /// admin listener); clients move to the paired region's router.
    RouterOverload,
    /// The regions cut apart: every router's and index-node's calls to the
    /// other region hang (a cross-region fault injected on each process).
    /// Each region serves its own tenants; a single-region tenant of the
    /// other region gets UNAVAILABLE, not a hang; replication catches up
    /// after.
    RegionPartition,
    /// Name resolution gone: the cluster's hosts file (through which its
    /// routers and index-nodes resolve each other) is emptied, and the home
    /// region's first index-node is killed meanwhile. Connections made
    /// before stay up; the dead node cannot be reached again until names
    /// come back, so its replicas' calls go to the paired region.
    DnsFailure,
    /// A micro-service outage: every model-node of the home region killed.
    ModelsDown,
    /// Every model-node of every region killed: searches answer without
    /// boosts, marked `degraded: ["model"]`.
    ModelsDownAll,
    /// One customer's index failing: the load's tenant, shard 0, fails
    /// with UNAVAILABLE on the home region's first index-node.
    TenantIndexFailing,
    /// A whole region's index-nodes down: every index-node of the home
    /// region killed.
    RegionIndexDown,
    /// Not an outage: a new replica of the tenant's shard 0 is built in the
    /// paired region from a snapshot while searches and 125 writes/s run
    /// (`--write-rate`); reports failed searches and writes, time to caught
    /// up, and whether every replica's digest is equal.
    ReplicaBootstrap,
    /// Not an outage: a single-region tenant (`--tenant tldr-es`) is
    /// migrated to active-active with `tandem migrate` (short ramp steps)
    /// under search load; the timeline shows the share each region served,
    /// failures and p99. The tenant is made single-region again after.
    Migration,
}

impl Scenario {
    /// Every scenario, in the order of the seed's outage list.
    pub const ALL: [Scenario; 8] = [
        Scenario::ModelErrors,
        Scenario::RouterDown,
        Scenario::IndexKilled,
        Scenario::IndexFrozen,
        Scenario::ModelsDown,
        Scenario::ModelsDownAll,
        Scenario::TenantIndexFailing,
        Scenario::RegionIndexDown,
    ];

    /// The name on the command line, e.g. `index-killed`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ModelErrors => "model-errors",
            Scenario::RouterDown => "router-down",
            Scenario::IndexKilled => "index-killed",
            Scenario::IndexFrozen => "index-frozen",
            Scenario::SlowNode => "slow-node",
            Scenario::RouterOverload => "router-overload",
            Scenario::RegionPartition => "region-partition",
            Scenario::DnsFailure => "dns-failure",
            Scenario::ModelsDown => "models-down",
            Scenario::ModelsDownAll => "models-down-all",
            Scenario::TenantIndexFailing => "tenant-index-failing",
            Scenario::RegionIndexDown => "region-index-down",
            Scenario::ReplicaBootstrap => "replica-bootstrap",
            Scenario::Migration => "migration",
        }
    }
}

/// How a scenario breaks its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL; healed by restarting with the old data on the old ports.
    Kill,
    /// SIGSTOP; healed by SIGCONT.
    Freeze,
    /// An injected UNAVAILABLE fault; healed by clearing it.
    Fault(FaultScope),
    /// An injected delay (ms) on every call; healed by clearing it.
    Slow(FaultScope, u32),
    /// Every public call shed, injected on a router's admin listener;
    /// healed by clearing it.
    Shed,
    /// Every call to the other region hangs (a cross-region fault on each
    /// target); healed by clearing it.
    Partition,
    /// The cluster's hosts file emptied, then the targets killed; healed
    /// by restoring the file and restarting them.
    NamesGone,
}

/// A scenario resolved against a topology.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to do to the targets.
    pub action: Action,
    /// The nodes it is done to.
    pub targets: Vec<NodeInfo>,
    /// Timeline label of the fault (once inflicted).
    pub fault_label: String,
    /// Timeline label of the start of the heal.
    pub heal_label: String,
    /// Timeline label of the end of the heal (everything back up).
    pub healed_label: String,
}

/// Resolves `scenario` for load homed in `home` on `tenant`.
pub fn plan(
    scenario: Scenario,
    topology: &Topology,
    home: &str,
    tenant: &str,
) -> anyhow::Result<Plan> {
    let of = |kind: &'static str, region: Option<&str>| -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = topology
            .nodes
            .iter()
            .filter(|n| n.kind == kind && region.is_none_or(|r| n.region == r))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    };
    let first = |mut nodes: Vec<NodeInfo>| {
        nodes.truncate(1);
        nodes
    };
    let (action, targets) = match scenario {
        Scenario::ModelErrors => (
            Action::Fault(FaultScope::node()),
            first(of(NodeInfo::KIND_MODEL, Some(home))),
        ),
        Scenario::RouterDown => (Action::Kill, first(of(NodeInfo::KIND_ROUTER, Some(home)))),
        Scenario::IndexKilled => (Action::Kill, first(of(NodeInfo::KIND_INDEX, Some(home)))),
        Scenario::IndexFrozen => (Action::Freeze, first(of(NodeInfo::KIND_INDEX, Some(home)))),
        Scenario::SlowNode => (
            Action::Slow(FaultScope::node(), 200),
            first(of(NodeInfo::KIND_INDEX, Some(home))),
        ),
        Scenario::RouterOverload => (Action::Shed, first(of(NodeInfo::KIND_ROUTER, Some(home)))),
        Scenario::DnsFailure => (
            Action::NamesGone,
            first(of(NodeInfo::KIND_INDEX, Some(home))),
        ),
        Scenario::RegionPartition => {
            let mut both = of(NodeInfo::KIND_ROUTER, None);
            both.extend(of(NodeInfo::KIND_INDEX, None));
            (Action::Partition, both)
        }
        Scenario::ModelsDown => (Action::Kill, of(NodeInfo::KIND_MODEL, Some(home))),
        Scenario::ModelsDownAll => (Action::Kill, of(NodeInfo::KIND_MODEL, None)),
        Scenario::TenantIndexFailing => (
            Action::Fault(FaultScope::shard(tenant, 0)),
            first(of(NodeInfo::KIND_INDEX, Some(home))),
        ),
        Scenario::RegionIndexDown => (Action::Kill, of(NodeInfo::KIND_INDEX, Some(home))),
        Scenario::ReplicaBootstrap | Scenario::Migration => {
            anyhow::bail!(
                "{} breaks nothing; it runs as its own drill (drill::bootstrap, drill::migration)",
                scenario.name()
            )
        }
    };
    anyhow::ensure!(
        !targets.is_empty(),
        "the topology has no node for drill {} in region {home}",
        scenario.name()
    );
    let ids = targets
        .iter()
        .map(|n| n.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (fault_label, heal_label, healed_label) = match &action {
        Action::Kill => (
            format!("{ids} killed"),
            format!("restarting {ids}"),
            format!("{ids} restarted"),
        ),
        Action::Freeze => (
            format!("{ids} frozen"),
            format!("thawing {ids}"),
            format!("{ids} thawed"),
        ),
        Action::Fault(scope) => (
            format!("{ids}: {scope} UNAVAILABLE"),
            format!("{ids}: clearing the fault"),
            format!("{ids}: fault cleared"),
        ),
        Action::Slow(scope, ms) => (
            format!("{ids}: {scope} {ms} ms late"),
            format!("{ids}: clearing the delay"),
            format!("{ids}: delay cleared"),
        ),
        Action::Shed => (
            format!("{ids} shedding every search"),
            format!("{ids}: clearing the overload"),
            format!("{ids}: overload cleared"),
        ),
        Action::NamesGone => (
            format!("names resolve no more; {ids} killed"),
            format!("restoring names; restarting {ids}"),
            format!("names back; {ids} restarted"),
        ),
        Action::Partition => (
            "regions partitioned (calls between them hang)".to_string(),
            "healing the partition".to_string(),
            "partition healed".to_string(),
        ),
    };
    Ok(Plan {
        action,
        targets,
        fault_label,
        heal_label,
        healed_label,
    })
}

/// Something a drill broke, with what it takes to heal it.
#[derive(Debug)]
pub enum Broken {
    /// Killed; restarted from this snapshot.
    Killed(Snapshot),
    /// The cluster's hosts file emptied; restored.
    NamesGone(super::names::Emptied),
    /// Frozen; thawed.
    Frozen {
        /// Node id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// A fault is set on the node.
    Faulted {
        /// Node id.
        id: String,
        /// Its gRPC address.
        addr: String,
        /// The fault's scope.
        scope: FaultScope,
    },
}

/// Where a drill works: the topology file (rewritten with restarted pids)
/// and the admin token.
#[derive(Debug, Clone)]
pub struct Site {
    /// The topology file the drill read.
    pub topology_file: PathBuf,
    /// Admin token of the cluster.
    pub admin_token: String,
    /// The hosts file its processes resolve names through, if any.
    pub hosts_file: Option<PathBuf>,
}

impl Site {
    /// The admin listener of `node` if it is a router (from the topology).
    fn admin_of(&self, node: &NodeInfo) -> Option<String> {
        if node.admin.is_some() {
            return node.admin.clone();
        }
        let topology = Topology::load(&self.topology_file).ok()?;
        topology
            .regions
            .iter()
            .find(|r| r.router == node.addr)
            .and_then(|r| r.admin.clone())
    }

    /// Where logs of restarted processes go when their old log is unknown.
    fn fallback_log_dir(&self) -> PathBuf {
        self.topology_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("logs")
    }
}

/// Breaks the plan's targets. Returns what it broke even when it fails
/// halfway, so the caller can heal that much.
pub async fn inflict(plan: &Plan, site: &Site) -> (Vec<Broken>, anyhow::Result<()>) {
    let mut broken = Vec::new();
    let result = inflict_into(plan, site, &mut broken).await;
    (broken, result)
}

async fn inflict_into(plan: &Plan, site: &Site, broken: &mut Vec<Broken>) -> anyhow::Result<()> {
    match &plan.action {
        Action::Kill | Action::NamesGone => {
            if plan.action == Action::NamesGone {
                let path = site
                    .hosts_file
                    .as_deref()
                    .context("the topology names no hosts file (`tandem dev` clusters have one)")?;
                // First in the list: healed first, before the restarts.
                broken.push(Broken::NamesGone(super::names::empty(path)?));
            }
            // Snapshot every target first, then kill them back to back: a
            // region losing its nodes at once, not one by one.
            let snapshots = plan
                .targets
                .iter()
                .map(|n| restart::snapshot(n, site.admin_of(n), &site.fallback_log_dir()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for s in &snapshots {
                procfs::send(s.pid, Signal::Kill);
            }
            for s in snapshots {
                let dead = restart::kill(&s).await;
                broken.push(Broken::Killed(s));
                dead?;
            }
        }
        Action::Freeze => {
            for node in &plan.targets {
                let pid = restart::live_pid(node)?;
                anyhow::ensure!(
                    procfs::send(pid, Signal::Stop),
                    "cannot freeze {} (pid {pid})",
                    node.id
                );
                broken.push(Broken::Frozen {
                    id: node.id.clone(),
                    pid,
                });
            }
        }
        Action::Fault(_) | Action::Slow(..) | Action::Shed | Action::Partition => {
            let (scope, how) = match &plan.action {
                Action::Slow(scope, ms) => (scope.clone(), (FaultAction::Delay, *ms)),
                Action::Fault(scope) => (scope.clone(), (FaultAction::Unavailable, 0)),
                Action::Partition => (FaultScope::cross_region(), (FaultAction::Hang, 0)),
                _ => (FaultScope::node(), (FaultAction::Shed, 0)),
            };
            for node in &plan.targets {
                // A router's fault API is on its admin listener.
                let addr = match node.kind.as_str() {
                    NodeInfo::KIND_ROUTER => site
                        .admin_of(node)
                        .with_context(|| format!("{} has no admin listener", node.id))?,
                    _ => node.addr.clone(),
                };
                faults::set(&addr, &site.admin_token, &scope, how)
                    .await
                    .with_context(|| format!("cannot inject the fault on {}", node.id))?;
                broken.push(Broken::Faulted {
                    id: node.id.clone(),
                    addr,
                    scope: scope.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Heals everything in `broken`, all of it even if a part fails; the
/// error names every part that did not heal.
pub async fn heal(broken: Vec<Broken>, site: &Site) -> anyhow::Result<()> {
    // Restarts run concurrently: a region's nodes come back together.
    let results = futures::future::join_all(broken.into_iter().map(|b| heal_one(b, site))).await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    anyhow::ensure!(errors.is_empty(), "heal failed: {}", errors.join("; "));
    Ok(())
}

async fn heal_one(broken: Broken, site: &Site) -> anyhow::Result<()> {
    match broken {
        Broken::NamesGone(emptied) => super::names::restore(emptied)?,
        Broken::Killed(snapshot) => {
            let pid = restart::restart(&snapshot)
                .await
                .with_context(|| format!("cannot restart {}", snapshot.id))?;
            let files = restart::topology_files(&site.topology_file, &snapshot);
            restart::update_topology(&files, &snapshot.id, pid)?;
            tracing::info!(node = %snapshot.id, pid, addr = %snapshot.grpc, "restarted");
        }
        Broken::Frozen { id, pid } => {
            anyhow::ensure!(
                procfs::send(pid, Signal::Cont),
                "cannot thaw {id} (pid {pid})"
            );
            // Running again once the kernel says so.
            for _ in 0..100 {
                if !procfs::is_stopped(pid) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Broken::Faulted { id, addr, scope } => {
            faults::clear(&addr, &site.admin_token, &scope)
                .await
                .with_context(|| format!("cannot clear the fault on {id}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let node = |id: &str, kind: &str, region: &str| NodeInfo {
            id: id.into(),
            kind: kind.into(),
            region: region.into(),
            addr: format!("{id}:1"),
            ..Default::default()
        };
        Topology {
            nodes: vec![
                node("use1-index-2", "index", "us-east-1"),
                node("use1-index-1", "index", "us-east-1"),
                node("use2-index-1", "index", "us-east-2"),
                node("use1-model-1", "model", "us-east-1"),
                node("use2-model-1", "model", "us-east-2"),
                node("use1-router", "router", "us-east-1"),
                node("use2-router", "router", "us-east-2"),
            ],
            ..Default::default()
        }
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.targets.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn targets_are_picked_in_the_home_region() {
        let t = topology();
        let p = |s| plan(s, &t, "us-east-1", "tldr-en").expect("plan");
        assert_eq!(ids(&p(Scenario::IndexKilled)), ["use1-index-1"]);
        assert_eq!(ids(&p(Scenario::IndexFrozen)), ["use1-index-1"]);
        assert_eq!(ids(&p(Scenario::RouterDown)), ["use1-router"]);
        assert_eq!(ids(&p(Scenario::ModelErrors)), ["use1-model-1"]);
        assert_eq!(ids(&p(Scenario::ModelsDown)), ["use1-model-1"]);
        assert_eq!(
            ids(&p(Scenario::ModelsDownAll)),
            ["use1-model-1", "use2-model-1"]
        );
        assert_eq!(
            ids(&p(Scenario::RegionIndexDown)),
            ["use1-index-1", "use1-index-2"]
        );
        let partition = p(Scenario::RegionPartition);
        assert_eq!(partition.action, Action::Partition);
        assert_eq!(
            ids(&partition),
            [
                "use1-router",
                "use2-router",
                "use1-index-1",
                "use1-index-2",
                "use2-index-1"
            ]
        );
        let failing = p(Scenario::TenantIndexFailing);
        assert_eq!(
            failing.action,
            Action::Fault(FaultScope::shard("tldr-en", 0))
        );
        assert_eq!(
            failing.fault_label,
            "use1-index-1: tenant tldr-en shard 0 UNAVAILABLE"
        );
        let other_side = plan(Scenario::RouterDown, &t, "us-east-2", "x").expect("plan");
        assert_eq!(ids(&other_side), ["use2-router"]);
        assert_eq!(other_side.fault_label, "use2-router killed");
        assert_eq!(other_side.heal_label, "restarting use2-router");
        assert_eq!(other_side.healed_label, "use2-router restarted");
    }

    #[test]
    fn a_region_without_targets_is_an_error() {
        assert!(plan(Scenario::IndexKilled, &topology(), "eu-west-1", "x").is_err());
    }

    #[test]
    fn names_match_the_command_line() {
        use clap::ValueEnum;
        for s in Scenario::ALL {
            let parsed = Scenario::from_str(s.name(), false).expect("parses");
            assert_eq!(parsed, s);
        }
    }
}
