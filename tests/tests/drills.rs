//! Every drill of `tandem drill` against a real `tandem dev` cluster (all
//! processes, small corpus slice), asserting behaviour, never wall-clock
//! numbers: no failed query for the active-active tenant wherever a
//! replica of every shard remained, the right region serving during the
//! fault, `degraded: ["model"]` when every model is gone, the single-region
//! tenant's clear UNAVAILABLE when its region lost its indexes, and the
//! way back to the local region once healed, with every process running
//! again (restarted ones on their old ports, under new pids).
//!
//! The index-node kill and the router kill also run against a cluster in
//! `--tls` mode (every listener and channel TLS, mutual between the
//! processes; the load and the CLI's calls verify the cluster's CA).
//!
//! One cluster per test, taking turns (`tandem_e2e::drill`). The drills
//! of the network between the regions are in `network_drills.rs`.
//!
//! Build the binaries first: `cargo build --workspace --bins`.

use std::time::Duration;

use tandem_cli::drill::{DrillOptions, Scenario};
use tandem_e2e::drill::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_errors_fall_back_to_the_other_model_replica() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let report = drill(&cluster, Scenario::ModelErrors, 3.0, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(t, HOME);
    // The home model-node fails every call: the answer's boosts came from
    // the other region's, or (if that was slow) none, never from it.
    let during = t.during_fault_query.as_ref().expect("probe");
    assert_eq!(during.error, None);
    assert_ne!(during.model_node, "use1-model-1");
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_down_fails_clients_over_and_back() {
    router_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_down_fails_clients_over_and_back_over_tls() {
    router_down(true).await;
}

async fn router_down(tls: bool) {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster_in_mode(tls).await;
    let old = pid_of(&cluster, "use1-router");
    let addr = cluster.topology.regions[0].router.clone();
    let report = drill(&cluster, Scenario::RouterDown, 4.5, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_clients_moved_away_and_back(t);
    // Restarted under a new pid, on its old address.
    let topology = cluster.current_topology();
    assert_ne!(pid_of(&cluster, "use1-router"), old);
    assert_eq!(topology.regions[0].router, addr);
    assert_eq!(topology.node("use1-router").map(|n| &n.addr), Some(&addr));
    // Its admin listener came back on its old address too.
    let admin = topology.regions[0].admin.clone().expect("admin address");
    let channel = tandem_cli::operator::endpoint(&admin)
        .expect("admin endpoint")
        .connect()
        .await
        .expect("the admin listener is back");
    let status = tandem_proto::v1::router_admin_client::RouterAdminClient::new(channel)
        .status(tandem_e2e::with_bearer(
            tandem_proto::v1::StatusRequest {},
            &topology.admin_token,
        ))
        .await
        .expect("status");
    assert_eq!(status.into_inner().router_id, "use1-router");
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_killed_falls_back_to_the_paired_region_and_returns() {
    index_killed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_killed_falls_back_to_the_paired_region_and_returns_over_tls() {
    index_killed(true).await;
}

async fn index_killed(tls: bool) {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster_in_mode(tls).await;
    let old = pid_of(&cluster, "use1-index-1");
    let report = drill(&cluster, Scenario::IndexKilled, 3.0, &["tldr-es"]).await;
    let en = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(en, AWAY);
    let during = en.during_fault_query.as_ref().expect("probe");
    assert_eq!(during.shard_nodes, ["use2-index-1"]);
    let after = en.after_heal_query.as_ref().expect("probe");
    assert_eq!(after.shard_nodes, ["use1-index-1"]);
    // The single-region tenant still had its other home replica.
    let es = tenant(&report, "tldr-es");
    assert_eq!(es.summary.failed, 0, "{:?}", es.summary.errors);
    assert_eq!(
        es.during_fault_query
            .as_ref()
            .map(|p| p.shard_nodes.clone()),
        Some(vec!["use1-index-2".to_string()])
    );
    assert_ne!(pid_of(&cluster, "use1-index-1"), old);
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_frozen_is_hedged_around_and_returns() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let old = pid_of(&cluster, "use1-index-1");
    let report = drill(&cluster, Scenario::IndexFrozen, 3.0, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(t, AWAY);
    // Thawed, not restarted.
    assert_eq!(pid_of(&cluster, "use1-index-1"), old);
    stop(cluster).await;
}

/// A node answering 200 ms late (over the regions' emulated 10 ms) costs
/// no query: hedges and ejection route around it, and it serves again
/// once the delay is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_hedged_around_and_returns() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let report = drill(&cluster, Scenario::SlowNode, 3.0, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_eq!(
        t.summary.failed, 0,
        "failed queries: {:?}",
        t.summary.errors
    );
    assert!(t.phases.during.ok > 0);
    let after = t.after_heal_query.as_ref().expect("probe after heal");
    assert_eq!(after.error, None);
    assert_eq!(after.served_region, HOME);
    stop(cluster).await;
}

/// A router shedding every search (`tandem-shed: router`) sends the
/// client library to the paired region's router, with no failed query,
/// and back once it has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_router_sends_clients_to_the_paired_region() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let report = drill(&cluster, Scenario::RouterOverload, 4.5, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_clients_moved_away_and_back(t);
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_down_in_the_home_region_uses_the_other_regions_model() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let report = drill(&cluster, Scenario::ModelsDown, 4.5, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(t, HOME);
    let during = t.during_fault_query.as_ref().expect("probe");
    assert_ne!(during.model_node, "use1-model-1");
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_down_everywhere_degrades_without_failing() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    // Longer: model-nodes load their models before they serve again.
    let report = drill(&cluster, Scenario::ModelsDownAll, 4.5, &[]).await;
    let t = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(t, HOME);
    assert!(
        t.phases.during.degraded_share() > 0.9,
        "degraded during the fault: {:.0}%",
        t.phases.during.degraded_share() * 100.0
    );
    let during = t.during_fault_query.as_ref().expect("probe");
    assert_eq!(during.degraded, ["model"]);
    assert_eq!(during.model_node, "");
    // Models restarted: answers are boosted again.
    let after = t.after_heal_query.as_ref().expect("probe");
    assert!(after.degraded.is_empty(), "{:?}", after.degraded);
    assert!(t.last.degraded_share() < 0.5);
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_tenant_shard_falls_back_and_returns() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    // Longer: the router keeps the failing node x shard pair ejected for
    // its backoff after the fault is cleared, then probes it back.
    let report = drill(&cluster, Scenario::TenantIndexFailing, 6.0, &["tldr-es"]).await;
    let en = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(en, AWAY);
    // Only that tenant's shard failed: the other tenant on the same node
    // kept being served there.
    let es = tenant(&report, "tldr-es");
    assert_eq!(es.summary.failed, 0, "{:?}", es.summary.errors);
    assert!(es.phases.during.share(HOME) > 0.9);
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_index_down_serves_active_active_remotely_and_fails_single_region_clearly() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let report = drill(&cluster, Scenario::RegionIndexDown, 3.0, &["tldr-es"]).await;
    let en = tenant(&report, "tldr-en");
    assert_no_failure_and_back_home(en, AWAY);
    // tldr-es lives only in us-east-1: while its indexes are down its
    // queries fail, with UNAVAILABLE and nothing else, and only then. (A
    // query due just before the restart may still be answered: the
    // client's retry can land after it.)
    let es = tenant(&report, "tldr-es");
    let during = &es.phases.during;
    assert!(during.sent > 0);
    assert!(during.failed * 10 >= during.sent * 9, "{during:?}");
    assert_eq!(
        es.summary.errors.keys().collect::<Vec<_>>(),
        ["UNAVAILABLE"]
    );
    let probe = es.during_fault_query.as_ref().expect("probe");
    assert!(
        probe
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("Unavailable")),
        "{probe:?}"
    );
    assert_eq!(es.phases.before.failed, 0);
    assert_eq!(es.phases.after.failed, 0);
    assert!(es.last.ok > 0 && es.last.failed == 0);
    stop(cluster).await;
}

/// The health-driven dial: with it on, us-east-1's routers shift their
/// active-active traffic to us-east-2 once every us-east-1 index-node is
/// down for 300 ms, and back 300 ms after they return; no search fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_index_down_with_the_health_driven_dial_shifts_away_and_back() {
    let _turn = TURN.lock().await;
    let auto_dial = [
        "--auto-dial-after-ms",
        "300",
        "--auto-dial-back-after-ms",
        "300",
    ];
    let (_dir, cluster) = cluster_with(false, &auto_dial).await;
    let report = drill(&cluster, Scenario::RegionIndexDown, 4.0, &[]).await;
    let en = tenant(&report, "tldr-en");
    assert_eq!(en.summary.failed, 0, "{:?}", en.summary.errors);
    let topology = cluster.current_topology();
    let router = topology.node("use1-router").expect("router");
    let metrics_addr = router.metrics.as_deref().expect("metrics").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tandem_e2e::scrape(metrics_addr);
        let changes = |to: &str| {
            tandem_e2e::metric(
                &m,
                &format!("router_auto_dial_changes_total{{to=\"{to}\"}}"),
            )
        };
        let forwarded = tandem_e2e::metric(&m, "router_forwarded_total{reason=\"dial_forward\"}");
        if changes("away") >= 1.0 && changes("back") >= 1.0 {
            assert!(forwarded > 0.0, "shifted traffic was forwarded:\n{m}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no shift away and back:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // After an outage and its fallbacks, every panel of the Grafana
    // dashboard has its series.
    tandem_e2e::dashboard::assert_dashboard_served(&cluster.current_topology());
    stop(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_bootstrap_and_migration_under_load() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let mut opts = DrillOptions::new(Scenario::ReplicaBootstrap, cluster.topology_path());
    opts.rate = 50.0;
    opts.duration = Duration::from_secs(3);
    // Scaled down: 40 writes/s on a debug build (docs/benchmarks.md has
    // the full 125/s run).
    let report = tandem_cli::drill::bootstrap::run(&opts, 40.0)
        .await
        .expect("the drill runs");
    println!("{}", report.to_text());
    assert_eq!(report.node, "use2-index-2");
    assert_eq!(report.searches.failed, 0, "{:?}", report.searches.errors);
    assert_eq!(report.writes.failed, 0, "{:?}", report.writes.errors);
    assert!(report.writes.ok > 0 && report.searches.ok > 0);
    assert!(report.snapshot_bytes > 0);
    assert!(report.digests_equal);
    // Taken out of the catalog again: the drill can run again.
    let again = tandem_cli::drill::bootstrap::run(&opts, 40.0)
        .await
        .expect("again");
    assert!(again.clean(), "{}", again.to_text());

    // The migration drill on the same cluster: tldr-es (single-region)
    // becomes active-active under load, then single-region again.
    let mut opts = DrillOptions::new(Scenario::Migration, cluster.topology_path());
    opts.tenant = "tldr-es".into();
    opts.rate = 50.0;
    opts.duration = Duration::from_secs(9);
    let report = tandem_cli::drill::migration::run(&opts)
        .await
        .expect("the drill runs");
    println!("{}", report.to_text());
    assert!(report.clean(), "{}", report.to_text());
    let new_region = report
        .timeline
        .buckets
        .iter()
        .map(|b| b.share("us-east-2"))
        .fold(0.0, f64::max);
    assert!(new_region > 0.0, "the new region served some searches");
    let catalog = std::fs::read_to_string(cluster.data_dir.join("catalog.toml")).unwrap();
    assert!(!catalog.contains("ramp ="), "no ramp left after the drill");
    stop(cluster).await;
}
