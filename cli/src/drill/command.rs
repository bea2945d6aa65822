//! `tandem drill SCENARIO` as the command runs it: the right drill for the
//! scenario, its report as text or JSON, its timeline as CSV or SVG, and
//! whether it went cleanly (the exit code).

use std::path::PathBuf;

use serde::Serialize;
use tandem_loadgen::Timeline;

use super::{bootstrap, migration, run_drill, DrillOptions, Scenario};

/// Where the report goes.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// JSON instead of text.
    pub json: bool,
    /// The timeline (of the first tenant) as CSV here.
    pub timeline_csv: Option<PathBuf>,
    /// The timeline as an SVG plot here.
    pub timeline_svg: Option<PathBuf>,
}

impl Output {
    fn report(&self, report: &impl Serialize, text: String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            print!("{text}");
        }
        Ok(())
    }

    fn timeline(&self, timeline: &Timeline, title: &str) -> anyhow::Result<()> {
        if let Some(path) = &self.timeline_csv {
            timeline.write_csv(path)?;
        }
        if let Some(path) = &self.timeline_svg {
            timeline.write_svg(path, title)?;
        }
        Ok(())
    }
}

/// Runs the drill `opts` names and prints its report; whether it was clean
/// (for `replica-bootstrap` and `migration`: no failure; for an outage:
/// the fault was inflicted and healed, whatever the callers saw).
pub async fn run(opts: &DrillOptions, write_rate: f64, out: &Output) -> anyhow::Result<bool> {
    match opts.scenario {
        Scenario::ReplicaBootstrap => {
            let report = bootstrap::run(opts, write_rate).await?;
            out.report(&report, report.to_text())?;
            Ok(report.clean())
        }
        Scenario::Migration => {
            let report = migration::run(opts).await?;
            out.report(&report, report.to_text())?;
            let title = format!("tandem drill migration: {}", report.tenant);
            out.timeline(&report.timeline, &title)?;
            Ok(report.clean())
        }
        _ => {
            let report = run_drill(opts).await?;
            out.report(&report, report.to_text())?;
            if let Some(first) = report.tenants.first() {
                let title = format!("tandem drill {}: {}", report.scenario, report.fault);
                out.timeline(&first.timeline, &title)?;
            }
            // The report is printed either way; a cluster left broken is
            // an error for scripts.
            Ok(report.heal_error.is_none() && report.fault_error.is_none())
        }
    }
}
