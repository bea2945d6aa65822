//! `tandem migrate`: single-region tenants become active-active, a batch at
//! a time, without a failed search.
//!
//! Each tenant goes through [`flow::migrate`]: a live replica of every
//! shard in the home's pair, equal digests, then a traffic ramp with a
//! health gate at each step that rolls back by itself, then
//! active-active. The catalog is the migration's only state (replicas,
//! `ramp`, `active_active`), so a killed command run again resumes; a lock
//! file per tenant beside the catalog (`<catalog>.migrate-<tenant>`,
//! released by the kernel when the holder dies) refuses a second migration
//! of the same tenant. `--rollback` undoes a finished one.

pub mod flow;
pub mod gate;

use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tandem_catalog::Catalog;

use crate::catalog_edit::{lock_path, FileLock};
use crate::commands::Target;
use flow::{Outcome, Settings};
use gate::Bounds;

/// `tandem migrate`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// A tenant to migrate (repeatable).
    #[arg(long = "tenant", required = true)]
    pub tenants: Vec<String>,
    /// Tenants migrated at once; batches run one after the other.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The index-node for the new replicas (default: the paired region's
    /// least-loaded one, per shard).
    #[arg(long)]
    pub node: Option<String>,
    /// Ramp steps, percent of the tenant's searches read from the new
    /// region.
    #[arg(long, value_delimiter = ',', default_value = "1,5,25,50")]
    pub steps: Vec<u8>,
    /// How long each ramp step holds.
    #[arg(long, default_value_t = 180)]
    pub step_seconds: u64,
    /// Gate: largest rise of the new region's error rate over the old
    /// one's, in percentage points.
    #[arg(long, default_value_t = 1.0)]
    pub max_error_increase: f64,
    /// Gate: largest ratio of the new region's p99 to the old one's ...
    #[arg(long, default_value_t = 2.0)]
    pub max_p99_ratio: f64,
    /// ... plus this many milliseconds.
    #[arg(long, default_value_t = 25)]
    pub p99_slack_ms: u64,
    /// Gate: fewest searches on the new side for a step to be judged.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
    /// Seconds a new replica may take to build and replicas to meet.
    #[arg(long, default_value_t = 3600)]
    pub wait: u64,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Undo: the tenants go back to single-region (their replicas in the
    /// paired region stay, as standby copies).
    #[arg(long)]
    pub rollback: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Catalog file (default: the topology's).
    #[arg(long)]
    pub catalog: Option<std::path::PathBuf>,
}

impl MigrateArgs {
    fn settings(&self, target: &Target) -> anyhow::Result<Settings> {
        let mut steps = self.steps.clone();
        steps.sort_unstable();
        steps.dedup();
        if steps.is_empty() || steps.iter().any(|s| !(1..=100).contains(s)) {
            bail!("--steps are percentages from 1 to 100");
        }
        Ok(Settings {
            catalog: target.catalog_path(self.catalog.clone())?,
            node: self.node.clone(),
            steps,
            step: Duration::from_secs(self.step_seconds),
            bounds: Bounds {
                max_error_increase: self.max_error_increase / 100.0,
                max_p99_ratio: self.max_p99_ratio,
                p99_slack: Duration::from_millis(self.p99_slack_ms),
                min_requests: self.min_requests,
            },
            wait: Duration::from_secs(self.wait),
        })
    }
}

/// Runs `tandem migrate`; `Ok(false)` when some tenant was rolled back or
/// failed (the command exits 1).
pub async fn run(target: &Target, args: &MigrateArgs) -> anyhow::Result<bool> {
    let s = args.settings(target)?;
    let catalog = Catalog::load_file(&s.catalog)?;
    for tenant in &args.tenants {
        crate::catalog_edit::tenant(&catalog, tenant)?;
    }
    if args.dry_run {
        print!("{}", plan(&catalog, &s, &args.tenants)?);
        return Ok(true);
    }
    let mut locks = Vec::new();
    for tenant in &args.tenants {
        let path = lock_path(&s.catalog, &format!("migrate-{tenant}"));
        match FileLock::acquire(&path, false)? {
            Some(lock) => locks.push(lock),
            None => bail!(
                "another tandem migrate of {tenant} is running (lock {})",
                path.display()
            ),
        }
    }
    if args.rollback {
        for tenant in &args.tenants {
            flow::roll_back(target, &s.catalog, tenant).await?;
            println!("{tenant}: single-region again (its replicas in the paired region stay as standby copies)");
        }
        return Ok(true);
    }
    let bars = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let mut clean = true;
    for batch in args.tenants.chunks(args.batch.max(1)) {
        let runs = batch.iter().map(|tenant| {
            let bar = bars.add(ProgressBar::new(1));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} {bar:30} {pos}/{len} s {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(tenant.clone());
            let s = &s;
            async move {
                let outcome = flow::migrate(target, s, tenant, &bar).await;
                bar.finish_and_clear();
                (tenant, outcome)
            }
        });
        for (tenant, outcome) in futures::future::join_all(runs).await {
            clean &= report(tenant, &outcome);
        }
    }
    drop(locks);
    Ok(clean)
}

/// Prints how `tenant`'s migration ended; whether it went through.
fn report(tenant: &str, outcome: &anyhow::Result<Outcome>) -> bool {
    match outcome {
        Ok(Outcome::Done { unjudged }) if unjudged.is_empty() => {
            println!("{tenant}: active-active");
            true
        }
        Ok(Outcome::Done { unjudged }) => {
            println!(
                "{tenant}: active-active (steps {unjudged:?} % had too little traffic to judge)"
            );
            true
        }
        Ok(Outcome::AlreadyActiveActive) => {
            println!("{tenant}: already active-active");
            true
        }
        Ok(Outcome::RolledBack { step, why, figures }) => {
            println!("{tenant}: ROLLED BACK at the {step} % step: {why} ({figures}); the ramp is 0 again and the tenant single-region");
            false
        }
        Err(e) => {
            println!("{tenant}: STOPPED: {e:#} (run the command again to resume, or --rollback)");
            false
        }
    }
}

/// What a migration of `tenants` would do.
fn plan(catalog: &Catalog, s: &Settings, tenants: &[String]) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for tenant in tenants {
        let t = crate::catalog_edit::tenant(catalog, tenant)?;
        if t.active_active {
            writeln!(out, "{tenant}: already active-active; nothing to do")?;
            continue;
        }
        let pair = catalog
            .pair_of(&t.home)
            .with_context(|| format!("the home region of {tenant} has no pair"))?;
        writeln!(
            out,
            "{tenant}: home {}, to be active-active with {pair}",
            t.home
        )?;
        for shard in &t.shards {
            let there: Vec<&str> = shard
                .replicas
                .iter()
                .filter(|n| n.region == *pair)
                .map(|n| &*n.id)
                .collect();
            let node = s.node.clone().or_else(|| {
                crate::tenant::place::least_loaded_index(catalog, pair, &[])
                    .map(|n| n.id.to_string())
            });
            match (there.is_empty(), node) {
                (false, _) => writeln!(
                    out,
                    "  shard {}: has {} in {pair}",
                    shard.number,
                    there.join(", ")
                )?,
                (true, Some(node)) => {
                    writeln!(out, "  shard {}: new replica on {node}", shard.number)?
                }
                (true, None) => writeln!(out, "  shard {}: NO index node in {pair}", shard.number)?,
            }
        }
        let steps: Vec<String> = s
            .steps
            .iter()
            .filter(|p| **p >= t.ramp)
            .map(|p| format!("{p} %"))
            .collect();
        writeln!(
            out,
            "  digests compared, then ramp {} ({} s each{}), then active-active",
            steps.join(", "),
            s.step.as_secs(),
            if t.ramp > 0 {
                format!("; resuming at {} %", t.ramp)
            } else {
                String::new()
            }
        )?;
    }
    let b = &s.bounds;
    writeln!(
        out,
        "gate at each step: new error rate at most {:.2} points above the old, new p99 at most {} x old + {} ms, judged from {} searches",
        b.max_error_increase * 100.0,
        b.max_p99_ratio,
        b.p99_slack.as_millis(),
        b.min_requests
    )?;
    Ok(out)
}
