//! `tandem drill SCENARIO`: an outage under steady load, against a running
//! cluster (the topology file `tandem dev` writes).
//!
//! The load is open-loop at a fixed rate through the client library (so a
//! dead front door is handled the way real clients handle it), on the
//! drill's tenant and optionally on more tenants at once, each reported
//! separately. At a third of the run the scenario breaks something, at two
//! thirds it heals it (a killed process is restarted with its old data on
//! its old ports), and the load goes on until the end so the report shows
//! the way back too. Whatever happens (an error, Ctrl-C) what was broken is
//! healed before the drill returns.

pub mod bootstrap;
pub mod command;
mod faults;
pub mod migration;
pub mod names;
pub mod report;
pub mod restart;
pub mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tandem_client::{TandemClient, Topology};
use tandem_loadgen::{run_load, EventLog, LoadConfig, LoadMode, DEFAULT_MAX_OUTSTANDING};
use tandem_proto::v1::SearchRequest;
use tokio::task::JoinHandle;

pub use report::{DrillReport, Marks, Phase, Phases, Probe, TenantReport};
pub use scenarios::Scenario;

use scenarios::{Broken, Site};

/// How to run a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// What to break.
    pub scenario: Scenario,
    /// The cluster's topology file (rewritten when a process is restarted).
    pub topology: PathBuf,
    /// Tenant under load (and whose shard `tenant-index-failing` breaks).
    pub tenant: String,
    /// More tenants under the same load at once, reported separately (e.g.
    /// the single-region tenant in `region-index-down`).
    pub extra_tenants: Vec<String>,
    /// The client's home region (default: the topology's first region).
    pub home_region: Option<String>,
    /// Queries, round-robin (default: each tenant's sample queries).
    pub queries: Option<Vec<String>>,
    /// Requests per second, per tenant.
    pub rate: f64,
    /// Length of the load; the fault comes at a third, the heal at two
    /// thirds.
    pub duration: Duration,
    /// Stop early (and heal) on Ctrl-C or SIGTERM: for the command line,
    /// not tests.
    pub stop_on_ctrl_c: bool,
}

impl DrillOptions {
    /// `scenario` against the cluster of `topology`, on `tldr-en`, at
    /// 100 QPS for 15 s.
    pub fn new(scenario: Scenario, topology: impl Into<PathBuf>) -> Self {
        DrillOptions {
            scenario,
            topology: topology.into(),
            tenant: "tldr-en".into(),
            extra_tenants: Vec::new(),
            home_region: None,
            queries: None,
            rate: 100.0,
            duration: Duration::from_secs(15),
            stop_on_ctrl_c: false,
        }
    }
}

/// One tenant's load while the drill runs.
struct Load {
    tenant: String,
    active_active: bool,
    client: TandemClient,
    /// Query of the one-off searches before the heal and at the end.
    probe_query: String,
    task: JoinHandle<anyhow::Result<tandem_loadgen::LoadReport>>,
}

/// Runs the drill (see the module docs). An `Err` means the drill could
/// not run at all (bad options, cluster not healthy) and nothing was
/// broken; problems inflicting or healing the fault are in the report.
pub async fn run_drill(opts: &DrillOptions) -> anyhow::Result<DrillReport> {
    anyhow::ensure!(
        opts.rate.is_finite() && opts.rate > 0.0,
        "the rate must be above 0"
    );
    anyhow::ensure!(
        opts.duration >= Duration::from_millis(300),
        "a drill needs at least 0.3 s of load"
    );
    let (topology, home) = topology_and_home(opts)?;
    let plan = scenarios::plan(opts.scenario, &topology, &home, &opts.tenant)?;
    preflight(&topology)?;
    let site = Site {
        topology_file: opts.topology.clone(),
        admin_token: topology.admin_token.clone(),
        hosts_file: topology.hosts_file.as_ref().map(PathBuf::from),
    };

    let mut tenants = vec![opts.tenant.clone()];
    tenants.extend(opts.extra_tenants.iter().cloned());
    let events = EventLog::new();
    let mut loads = Vec::new();
    for tenant in &tenants {
        let info = topology
            .tenant(tenant)
            .with_context(|| format!("tenant {tenant:?} is not in the topology"))?;
        let queries = match &opts.queries {
            Some(q) => q.clone(),
            None => info.sample_queries.clone(),
        };
        anyhow::ensure!(
            !queries.is_empty(),
            "no queries for {tenant}: pass a query file"
        );
        let client = TandemClient::connect(topology.client_config(Some(&home), Some(tenant))?)
            .await
            .context("cannot build the client")?;
        let probe_query = queries[0].clone();
        warm_up(&client, tenant, &probe_query).await?;
        let task = spawn_searches(&client, opts, tenant, queries, &events);
        loads.push(Load {
            tenant: tenant.clone(),
            active_active: info.active_active,
            client,
            probe_query,
            task,
        });
    }

    // Fault at a third, heal at two thirds, whatever happens in between.
    let third = opts.duration / 3;
    let bar = tandem_loadgen::progress::timed(opts.duration, "steady load");
    let interrupted = !pause(third, opts.stop_on_ctrl_c).await;
    let (broken, fault_result) = if interrupted {
        (
            Vec::new(),
            Err(anyhow::anyhow!("interrupted before the fault")),
        )
    } else {
        let (broken, result) = scenarios::inflict(&plan, &site).await;
        events.mark(&plan.fault_label);
        bar.set_message(plan.fault_label.clone());
        tracing::info!(fault = %plan.fault_label, "fault inflicted");
        (broken, result)
    };
    let interrupted = interrupted || !pause(third, opts.stop_on_ctrl_c).await;
    let mut during_fault = Vec::new();
    for load in &loads {
        during_fault.push(load.probe().await);
    }
    // Both ends of the heal are marked: recovery is timed from its start
    // (what an operator controls), the "after" phase begins at its end.
    events.mark(&plan.heal_label);
    let heal_result = heal_all(broken, &site).await;
    events.mark(&plan.healed_label);
    bar.set_message(plan.healed_label.clone());
    tracing::info!(heal = %plan.healed_label, ok = heal_result.is_ok(), "healed");

    let mut report = DrillReport {
        scenario: opts.scenario.name().into(),
        description: describe(opts.scenario),
        home_region: home,
        rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        fault: plan.fault_label.clone(),
        heal: plan.heal_label.clone(),
        healed: plan.healed_label.clone(),
        fault_error: fault_result.err().map(|e| format!("{e:#}")),
        heal_error: heal_result.err().map(|e| format!("{e:#}")),
        tenants: Vec::new(),
    };
    if interrupted {
        bar.finish_and_clear();
        for load in &loads {
            load.task.abort();
        }
        anyhow::bail!(
            "drill interrupted; {}",
            report
                .heal_error
                .as_deref()
                .map_or("everything it broke is healed".to_string(), |e| format!(
                    "NOT HEALED: {e}"
                ))
        );
    }
    for (mut load, during) in loads.into_iter().zip(during_fault) {
        let result = (&mut load.task).await.context("the load task failed")??;
        let marks = Marks {
            fault: &plan.fault_label,
            heal: &plan.heal_label,
            healed: &plan.healed_label,
        };
        let mut tenant = TenantReport::new(&load.tenant, load.active_active, result, marks);
        tenant.during_fault_query = Some(during);
        tenant.after_heal_query = Some(load.probe().await);
        report.tenants.push(tenant);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// The drill's topology and the region its load is homed in (`--region`,
/// else the topology's first).
fn topology_and_home(opts: &DrillOptions) -> anyhow::Result<(Topology, String)> {
    let topology = Topology::load(&opts.topology)
        .with_context(|| format!("cannot read the topology {}", opts.topology.display()))?;
    let home = match &opts.home_region {
        Some(r) => r.clone(),
        None => topology
            .regions
            .first()
            .map(|r| r.name.clone())
            .context("the topology lists no regions")?,
    };
    Ok((topology, home))
}

/// One sentence on what `scenario` does, for the report.
fn describe(scenario: Scenario) -> String {
    use clap::ValueEnum;
    scenario
        .to_possible_value()
        .and_then(|v| v.get_help().map(|h| h.to_string()))
        .unwrap_or_default()
}

/// Refuses to drill a cluster that is already broken: every process the
/// topology names must run (not frozen), or the numbers would be about
/// the earlier damage.
fn preflight(topology: &Topology) -> anyhow::Result<()> {
    for node in &topology.nodes {
        let pid = restart::live_pid(node)?;
        anyhow::ensure!(
            !crate::procfs::is_stopped(pid),
            "{} (pid {pid}) is frozen (SIGSTOP); thaw it with `kill -CONT {pid}` first",
            node.id
        );
    }
    Ok(())
}

/// Open-loop searches of `tenant` at the drill's rate for its duration
/// through `client`, in the background, timed against `events`.
fn spawn_searches(
    client: &TandemClient,
    opts: &DrillOptions,
    tenant: &str,
    queries: Vec<String>,
    events: &EventLog,
) -> JoinHandle<anyhow::Result<tandem_loadgen::LoadReport>> {
    let mode = LoadMode::OpenLoop {
        rate: opts.rate,
        max_outstanding: DEFAULT_MAX_OUTSTANDING,
    };
    let config = LoadConfig::new(mode, opts.duration, tenant.to_string(), queries);
    let (client, events) = (client.clone(), events.clone());
    tokio::spawn(async move { run_load(&client, &config, &events).await })
}

/// A few searches before the clock starts, so connections are up and the
/// cluster is known to serve; an error if it does not within a few seconds.
async fn warm_up(client: &TandemClient, tenant: &str, query: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match client.search(search(tenant, query)).await {
            Ok(_) => return Ok(()),
            Err(status) => last = Some(status),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = last.map_or_else(String::new, |s| format!("{:?}: {}", s.code(), s.message()));
    anyhow::bail!("the cluster does not answer searches of {tenant} ({status}); is it healthy?")
}

fn search(tenant: &str, query: &str) -> SearchRequest {
    SearchRequest {
        tenant: tenant.into(),
        query: query.into(),
        ..Default::default()
    }
}

impl Load {
    /// One search with its full route, for the report.
    async fn probe(&self) -> Probe {
        let request = search(&self.tenant, &self.probe_query);
        Probe::of(&self.client.search(request).await)
    }
}

/// Waits `length`; false if Ctrl-C or SIGTERM came first (when `ctrl_c`
/// is set), so the drill heals before it exits.
async fn pause(length: Duration, ctrl_c: bool) -> bool {
    if !ctrl_c {
        tokio::time::sleep(length).await;
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(length) => true,
        _ = tandem_common::server::shutdown_signal() => false,
    }
}

async fn heal_all(broken: Vec<Broken>, site: &Site) -> anyhow::Result<()> {
    if broken.is_empty() {
        return Ok(());
    }
    scenarios::heal(broken, site).await
}
