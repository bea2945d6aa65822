//! `tandem drill migration`: a single-region tenant is migrated to
//! active-active under steady search load, and the drill draws what
//! callers saw: the share of searches each region served, failures and
//! p99, per 100 ms, with the migration's steps marked.
//!
//! The search load runs at `--rate` through the failover client for
//! `--duration`; the migration starts at a sixth of it with ramp steps of
//! a sixth each (1, 5, 25, 50 %), so the whole ramp and some active-active
//! time fit in the timeline when the new replicas build quickly. When the
//! load ends the tenant is made single-region again (`tandem migrate
//! --rollback`: its new replicas stay, so the drill can run again).

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tandem_client::TandemClient;
use tandem_loadgen::{EventLog, Summary, Timeline};

use super::DrillOptions;
use crate::commands::Target;
use crate::migrate::flow::{self, Outcome, Settings};
use crate::migrate::gate::Bounds;

/// What the drill saw.
#[derive(Debug, Serialize)]
pub struct MigrationReport {
    /// Tenant.
    pub tenant: String,
    /// Searches.
    pub searches: Summary,
    /// How the migration ended.
    pub outcome: String,
    /// Whether it ended active-active.
    pub migrated: bool,
    /// The run over time.
    pub timeline: Timeline,
}

impl MigrationReport {
    /// The report for a person.
    pub fn to_text(&self) -> String {
        let mut shares = String::new();
        let mut last = None;
        for b in &self.timeline.buckets {
            let regions: Vec<String> = b
                .served
                .keys()
                .map(|r| format!("{r} {:.0} %", b.share(r) * 100.0))
                .collect();
            let line = regions.join(", ");
            if !line.is_empty() && last.as_ref() != Some(&line) && b.start_ms % 1000 == 0 {
                shares += &format!("  {:>5.1} s: {line}\n", b.start_ms as f64 / 1000.0);
                last = Some(line);
            }
        }
        format!(
            "drill migration: {}\nsearches: {} sent, {} failed ({:.0}/s), p99 {:.1} ms\nmigration: {}\nserved by region (each second it changed):\n{shares}",
            self.tenant,
            self.searches.sent,
            self.searches.failed,
            self.searches.qps,
            self.searches.latency_us.p99 as f64 / 1000.0,
            self.outcome,
        )
    }

    /// Whether no search failed and the tenant became active-active.
    pub fn clean(&self) -> bool {
        self.searches.failed == 0 && self.migrated
    }
}

/// Runs the drill (see the module documentation).
pub async fn run(opts: &DrillOptions) -> anyhow::Result<MigrationReport> {
    let (topology, home) = super::topology_and_home(opts)?;
    let info = topology
        .tenant(&opts.tenant)
        .context("the tenant is not in the topology")?;
    anyhow::ensure!(
        !info.active_active,
        "{} is active-active already; pick a single-region tenant (--tenant tldr-es)",
        opts.tenant
    );
    let target = Target {
        topology: Some(opts.topology.clone()),
        ..Target::default()
    };
    let sixth = (opts.duration / 6).max(Duration::from_secs(1));
    let settings = Settings {
        catalog: target.catalog_path(None)?,
        node: None,
        steps: vec![1, 5, 25, 50],
        step: sixth,
        // The drill shows the ramp, not the gate (tests/tests/migrate.rs
        // fails the gate on purpose): its few searches per step, read
        // across the regions' distance on a loaded machine, get room
        // enough not to roll back on noise.
        bounds: Bounds {
            min_requests: 5,
            p99_slack: Duration::from_millis(100),
            ..Bounds::default()
        },
        wait: Duration::from_secs(3600),
    };
    let client =
        TandemClient::connect(topology.client_config(Some(&home), Some(&opts.tenant))?).await?;
    let events = EventLog::new();
    let queries = opts.queries.clone().unwrap_or(info.sample_queries.clone());
    let load = super::spawn_searches(&client, opts, &opts.tenant, queries, &events);
    tokio::time::sleep(sixth).await;
    events.mark("migration starts");
    let bar = indicatif::ProgressBar::hidden();
    let outcome = flow::migrate(&target, &settings, &opts.tenant, &bar).await;
    events.mark("migration ends");
    let report = load.await.context("search load failed")??;
    flow::roll_back(&target, &settings.catalog, &opts.tenant).await?;
    let (outcome, migrated) = match outcome {
        Ok(Outcome::Done { .. }) => ("active-active (rolled back after the drill)".into(), true),
        Ok(Outcome::AlreadyActiveActive) => ("already active-active".into(), false),
        Ok(Outcome::RolledBack { step, why, figures }) => {
            (format!("ROLLED BACK at {step} %: {why} ({figures})"), false)
        }
        Err(e) => (format!("FAILED: {e:#}"), false),
    };
    Ok(MigrationReport {
        tenant: opts.tenant.clone(),
        searches: report.summary,
        outcome,
        migrated,
        timeline: report.timeline,
    })
}
