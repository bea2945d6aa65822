//! `tandem drill replica-bootstrap`: a new replica of a tenant's shard 0 is
//! built in the paired region from a snapshot while searches and writes
//! keep coming, and the drill reports what callers saw.
//!
//! Searches go at `--rate` through the failover client (as in every drill)
//! and single-document writes at `--write-rate` (125/s by default, the rate
//! of the system that inspired tandem) through the home region's router.
//! `tandem replica add` runs in the middle; the load runs at least
//! `--duration`, and on until the replica has been added. The report gives
//! failed searches, failed writes, the time until the replica was caught up
//! with a digest equal to the leader's, and `tandem verify` over every
//! replica. The drill then takes the replica out of the catalog again, so
//! it can be run again on the same cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tandem_client::{NodeInfo, TandemClient, Topology};
use tandem_loadgen::{
    run_load_with, EventLog, LoadConfig, LoadMode, Outcome, Summary, DEFAULT_MAX_OUTSTANDING,
};
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::{Document, WriteRequest};

use super::DrillOptions;
use crate::replica;

/// What the drill saw.
#[derive(Debug, Serialize)]
pub struct BootstrapReport {
    /// Tenant.
    pub tenant: String,
    /// The node the replica was built on.
    pub node: String,
    /// Searches.
    pub searches: Summary,
    /// Writes.
    pub writes: Summary,
    /// Seconds from `replica add` to caught up with an equal digest.
    pub caught_up_s: f64,
    /// Bytes of the snapshot installed.
    pub snapshot_bytes: u64,
    /// Every replica of the tenant had one digest at one sequence number.
    pub digests_equal: bool,
}

impl BootstrapReport {
    /// The report for a person.
    pub fn to_text(&self) -> String {
        format!(
            "drill replica-bootstrap: {tenant}/0 on {node}\n\
             searches: {} sent, {} failed ({:.0}/s)\n\
             writes:   {} sent, {} failed ({:.0}/s)\n\
             replica caught up (digest equal to the leader's) after {:.1} s; snapshot {:.1} MB\n\
             tandem verify: {}\n",
            self.searches.sent,
            self.searches.failed,
            self.searches.qps,
            self.writes.sent,
            self.writes.failed,
            self.writes.qps,
            self.caught_up_s,
            self.snapshot_bytes as f64 / 1e6,
            if self.digests_equal {
                "every replica identical"
            } else {
                "REPLICAS DIFFER"
            },
            tenant = self.tenant,
            node = self.node,
        )
    }

    /// Whether callers saw no failure and the replicas agree.
    pub fn clean(&self) -> bool {
        self.searches.failed == 0 && self.writes.failed == 0 && self.digests_equal
    }
}

/// Runs the drill (see the module documentation).
pub async fn run(opts: &DrillOptions, write_rate: f64) -> anyhow::Result<BootstrapReport> {
    let (topology, home) = super::topology_and_home(opts)?;
    let catalog_path: std::path::PathBuf = topology
        .catalog
        .clone()
        .context("the topology names no catalog file")?
        .into();
    let info = topology
        .tenant(&opts.tenant)
        .context("the tenant is not in the topology")?;
    let node = target(&topology, &catalog_path, &opts.tenant, &home)?;

    let client =
        TandemClient::connect(topology.client_config(Some(&home), Some(&opts.tenant))?).await?;
    let events = EventLog::new();
    let queries = info.sample_queries.clone();
    let searches = super::spawn_searches(&client, opts, &opts.tenant, queries, &events);
    let writes = {
        let router = topology
            .regions
            .iter()
            .find(|r| r.name == home)
            .map(|r| r.router.clone())
            .context("no router in the home region")?;
        let channel = crate::operator::endpoint(&router)?.connect_lazy();
        let (tenant, key) = (opts.tenant.clone(), info.write_key.clone());
        let mode = LoadMode::OpenLoop {
            rate: write_rate,
            max_outstanding: DEFAULT_MAX_OUTSTANDING,
        };
        let config = LoadConfig::new(mode, opts.duration, tenant.clone(), vec!["w".into()]);
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let events = events.clone();
        let run_id: u32 = rand::random();
        tokio::spawn(async move {
            run_load_with(&config, &events, move |_| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("{run_id:08x}-{n}");
                write_one(
                    DocumentsClient::new(channel.clone()),
                    tenant.clone(),
                    key.clone(),
                    id,
                )
            })
            .await
        })
    };
    tokio::time::sleep(opts.duration / 3).await;
    let started = Instant::now();
    let added = replica::add(
        &catalog_path,
        &opts.tenant,
        0,
        &node,
        Duration::from_secs(3600),
        false,
    )
    .await;
    let caught_up = started.elapsed();
    let searches = searches.await.context("search load failed")??.summary;
    let writes = writes.await.context("write load failed")??.summary;
    let added = added?;
    let catalog = tandem_catalog::Catalog::load_file(&catalog_path)?;
    let verdicts = crate::verify::verify(&catalog, &opts.tenant, Duration::from_secs(60)).await?;
    replica::remove(&catalog_path, &opts.tenant, 0, &node)?;
    Ok(BootstrapReport {
        tenant: opts.tenant.clone(),
        node,
        searches,
        writes,
        caught_up_s: caught_up.as_secs_f64(),
        snapshot_bytes: added.snapshot_bytes,
        digests_equal: verdicts.iter().all(|v| v.equal),
    })
}

/// An index-node of the paired region that holds no replica of the
/// tenant's shard 0.
fn target(
    topology: &Topology,
    catalog: &std::path::Path,
    tenant: &str,
    home: &str,
) -> anyhow::Result<String> {
    let catalog = tandem_catalog::Catalog::load_file(catalog)?;
    let (_, shard) = crate::catalog_edit::shard(&catalog, tenant, 0)?;
    let mut candidates: Vec<&NodeInfo> = topology
        .nodes
        .iter()
        .filter(|n| n.kind == NodeInfo::KIND_INDEX && n.region != home)
        .filter(|n| !shard.replicas.iter().any(|r| *r.id == *n.id))
        .collect();
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    candidates
        .first()
        .map(|n| n.id.clone())
        .context("every index-node of the paired region already holds the shard")
}

async fn write_one(
    mut client: DocumentsClient<tonic::transport::Channel>,
    tenant: String,
    key: String,
    n: String,
) -> Outcome {
    let mut request = tonic::Request::new(WriteRequest {
        tenant,
        upserts: vec![Document {
            id: format!("drill/bootstrap/{n}"),
            title: format!("drill write {n}"),
            body: "written during a replica-bootstrap drill".into(),
            ..Default::default()
        }],
        request_id: format!("drill-bootstrap-{n}"),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(5));
    if let Ok(v) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", v);
    }
    match client.write(request).await {
        Ok(_) => Outcome::Ok(Default::default()),
        Err(status) => Outcome::Failed(format!("{:?}", status.code()).to_uppercase()),
    }
}
