//! The drills of the network between the regions, against a real `tandem
//! dev` cluster (whose routers and index-nodes are 10 ms apart, emulated):
//! a partition (`region-partition`) and name resolution gone
//! (`dns-failure`). Fixture and shared assertions: `tandem_e2e::drill`.
//!
//! Build the binaries first: `cargo build --workspace --bins`.

use std::time::Duration;

use tandem_cli::drill::{run_drill, DrillOptions, Scenario};
use tandem_e2e::drill::*;

/// The regions cut apart (every router's and index-node's calls to the
/// other region hang), load homed in us-east-2: the active-active tenant is
/// served there with no failed query; tldr-es, which lives only in
/// us-east-1, gets a clear UNAVAILABLE (not a hang, not a deadline) until
/// the heal; writes to tldr-en's leader in us-east-1 go on throughout, and
/// once healed us-east-2's replica catches up to the leader's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_partition_keeps_each_region_serving_its_own() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster().await;
    let topology = cluster.current_topology();
    let seconds = 4.5;
    let writes = tokio::spawn(write_for(topology.clone(), seconds));
    let mut opts = DrillOptions::new(Scenario::RegionPartition, cluster.topology_path());
    opts.rate = 50.0;
    opts.duration = Duration::from_secs_f64(seconds);
    opts.home_region = Some(AWAY.into());
    opts.extra_tenants = vec!["tldr-es".into()];
    let report = run_drill(&opts).await.expect("the drill runs");
    println!("{}", report.to_text());
    assert_eq!((&report.fault_error, &report.heal_error), (&None, &None));
    let en = tenant(&report, "tldr-en");
    assert_eq!(en.summary.failed, 0, "{:?}", en.summary.errors);
    assert!(en.phases.during.ok > 0);
    assert!(
        en.phases.during.share(AWAY) > 0.99,
        "{:?}",
        en.phases.during
    );
    // Its calls fail with UNAVAILABLE once their attempts' per-try
    // timeouts pass (those sent in the last such time before the heal go
    // through after it), never with a deadline.
    let es = tenant(&report, "tldr-es");
    let during = &es.phases.during;
    assert!(during.sent > 0);
    assert!(during.failed * 3 >= during.sent * 2, "{during:?}");
    assert_eq!(
        es.summary.errors.keys().collect::<Vec<_>>(),
        ["UNAVAILABLE"]
    );
    assert_eq!((es.phases.before.failed, es.phases.after.failed), (0, 0));
    assert!(es.last.ok > 0 && es.last.failed == 0);
    let (written, failed) = writes.await.expect("writes");
    assert!(
        written > 0 && failed == 0,
        "{written} written, {failed} failed"
    );
    let path = std::path::Path::new(topology.catalog.as_deref().expect("catalog"));
    let catalog = tandem_catalog::Catalog::load_file(path).expect("catalog");
    let verdicts = tandem_cli::verify::verify(&catalog, "tldr-en", Duration::from_secs(60))
        .await
        .expect("verify");
    assert!(verdicts.iter().all(|v| v.equal), "{verdicts:?}");
    stop(cluster).await;
}

/// Writes a document of tldr-en every 50 ms through us-east-1's router
/// (its leader's region) for `seconds`; returns (written, failed).
async fn write_for(topology: tandem_client::Topology, seconds: f64) -> (u32, u32) {
    use tandem_proto::v1::{documents_client::DocumentsClient, Document, WriteRequest};
    let router = &topology.region(HOME).expect("home").router;
    let key = topology
        .tenant("tldr-en")
        .expect("tenant")
        .write_key
        .clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{router}"))
        .expect("address")
        .connect_lazy();
    let mut client = DocumentsClient::new(channel);
    let (mut written, mut failed) = (0, 0);
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    for n in 0.. {
        if tokio::time::Instant::now() >= end {
            break;
        }
        let mut request = tonic::Request::new(WriteRequest {
            tenant: "tldr-en".into(),
            upserts: vec![Document {
                id: format!("drill/partition/{n}"),
                title: format!("written across a partition {n}"),
                ..Default::default()
            }],
            request_id: format!("partition-{n}"),
            ..Default::default()
        });
        let bearer = format!("Bearer {key}").parse().expect("header");
        request.metadata_mut().insert("authorization", bearer);
        match client.write(request).await {
            Ok(_) => written += 1,
            Err(status) => {
                eprintln!("write {n}: {status:?}");
                failed += 1
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (written, failed)
}

/// Name resolution gone: the cluster's hosts file (through which its
/// routers and index-nodes resolve each other) emptied, and us-east-1's
/// first index-node killed meanwhile. The routers keep the connections
/// they have (their re-resolutions fail and are counted; nothing is cut),
/// the dead node cannot be reached again, so its replica's calls go to the
/// paired region, and once names and the node are back the home region
/// serves again: no failed query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_outage_cuts_no_connection_and_costs_no_query() {
    let _turn = TURN.lock().await;
    let (_dir, cluster) = cluster_with(false, &["--dns-recheck-ms", "100"]).await;
    let report = drill(&cluster, Scenario::DnsFailure, 4.5, &[]).await;
    assert_no_failure_and_back_home(tenant(&report, "tldr-en"), AWAY);
    let topology = cluster.current_topology();
    let failures: f64 = tandem_e2e::exposition::scrapes(&topology)
        .iter()
        .filter(|(node, _)| node.kind == "router" && node.region == HOME)
        .flat_map(|(_, scrape)| &scrape.samples)
        .filter(|s| s.metric == "router_dns_failures_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(failures > 0.0, "the home router never failed to resolve");
    stop(cluster).await;
}
