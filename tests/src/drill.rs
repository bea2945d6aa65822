//! The drills' shared fixture: a small `tandem dev` cluster per test
//! (all processes, small corpus slice), a drill run against it at 50 QPS,
//! and the assertions every drill test makes. One cluster per test, so a
//! drill that fails to heal cannot spoil another; the tests of one binary
//! take turns ([`TURN`]), as two debug-build clusters plus their load on a
//! 2-core machine would measure the machine, not the failover.

use std::time::Duration;

use tandem_cli::dev::{start_cluster, Cluster, DevOptions};
use tandem_cli::drill::{run_drill, DrillOptions, DrillReport, Scenario, TenantReport};
use tandem_cli::procfs;

use crate::cluster::SLOW_HEDGE_FLAGS;

/// The drills' home region.
pub const HOME: &str = "us-east-1";
/// The paired region.
pub const AWAY: &str = "us-east-2";

/// Held by the test whose cluster runs (see the module docs).
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A small plaintext cluster in a fresh directory (returned so it
/// outlives the cluster).
pub async fn cluster() -> (tempfile::TempDir, Cluster) {
    cluster_in_mode(false).await
}

/// A small cluster, serving TLS if `tls`.
pub async fn cluster_in_mode(tls: bool) -> (tempfile::TempDir, Cluster) {
    cluster_with(tls, &[]).await
}

/// A small cluster, serving TLS if `tls`, its routers given `router_args`
/// too.
pub async fn cluster_with(tls: bool, router_args: &[&str]) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevOptions::new(dir.path().join("dev"), crate::repo_root());
    opts.docs_limit = Some(200);
    opts.bin_dir = Some(crate::target_dir());
    opts.router_args = SLOW_HEDGE_FLAGS
        .iter()
        .chain(router_args)
        .map(|a| a.to_string())
        .collect();
    opts.tls = tls;
    let cluster = start_cluster(&opts).await.expect("dev cluster starts");
    (dir, cluster)
}

/// Runs `scenario` for `seconds` at 50 QPS on tldr-en (plus `also`).
pub async fn drill(
    cluster: &Cluster,
    scenario: Scenario,
    seconds: f64,
    also: &[&str],
) -> DrillReport {
    let mut opts = DrillOptions::new(scenario, cluster.topology_path());
    opts.rate = 50.0;
    opts.duration = Duration::from_secs_f64(seconds);
    opts.extra_tenants = also.iter().map(|t| t.to_string()).collect();
    let report = run_drill(&opts).await.expect("the drill runs");
    // The report in the test output makes a failure readable.
    println!("{}", report.to_text());
    assert_eq!(report.fault_error, None);
    assert_eq!(report.heal_error, None);
    report
}

/// Every process of the current topology runs; returns its pids by id.
pub fn assert_all_running(cluster: &Cluster) -> Vec<(String, u32)> {
    let topology = cluster.current_topology();
    assert_eq!(topology.nodes.len(), 8);
    topology
        .nodes
        .iter()
        .map(|n| {
            let pid = n.pid.expect("pid");
            assert!(
                procfs::is_alive(pid) && !procfs::is_stopped(pid),
                "{} (pid {pid}) is not running after the drill",
                n.id
            );
            (n.id.clone(), pid)
        })
        .collect()
}

/// The pid of `id` in the current topology.
pub fn pid_of(cluster: &Cluster, id: &str) -> u32 {
    cluster
        .current_topology()
        .node(id)
        .and_then(|n| n.pid)
        .expect("node in topology")
}

/// Stops the cluster and checks nothing is left, restarted processes too.
pub async fn stop(cluster: Cluster) {
    let pids = assert_all_running(&cluster);
    cluster.stop(Duration::from_secs(5)).await;
    for (id, pid) in pids {
        assert!(
            procfs::wait_gone(pid, Duration::from_secs(2)).await,
            "{id} (pid {pid}) survived the cluster's stop"
        );
    }
}

/// The report of tenant `id`.
pub fn tenant<'a>(report: &'a DrillReport, id: &str) -> &'a TenantReport {
    report
        .tenants
        .iter()
        .find(|t| t.tenant == id)
        .expect("tenant in report")
}

/// The active-active tenant lost no query, was served by `during` while
/// the fault was in force, and by its home region again at the end.
pub fn assert_no_failure_and_back_home(t: &TenantReport, during: &str) {
    assert_eq!(
        t.summary.failed, 0,
        "failed queries for {}: {:?}",
        t.tenant, t.summary.errors
    );
    assert!(t.phases.during.ok > 0);
    assert!(
        t.phases.during.share(during) > 0.9,
        "during the fault, {during} served {:.0}%",
        t.phases.during.share(during) * 100.0
    );
    assert!(
        t.last.share(HOME) > 0.5,
        "at the end, {HOME} served only {:.0}%",
        t.last.share(HOME) * 100.0
    );
    let after = t.after_heal_query.as_ref().expect("probe after heal");
    assert_eq!(after.error, None);
    assert_eq!(after.served_region, HOME);
}

/// The home router's trouble (down, or shedding) sent the client library
/// to the paired region's router with no failed query, and the clients
/// came home after the heal.
pub fn assert_clients_moved_away_and_back(t: &TenantReport) {
    assert_no_failure_and_back_home(t, AWAY);
    assert!(t.summary.client_failover > 0);
    let during = t.during_fault_query.as_ref().expect("probe");
    assert_eq!(during.client_region, AWAY);
    let after = t.after_heal_query.as_ref().expect("probe");
    assert_eq!(after.client_region, HOME);
}
