//! One tenant's migration, as a sequence of stages that each start from
//! what the catalog says, so that a killed `tandem migrate` resumes where
//! it stopped:
//!
//! 1. **Replicas.** Every shard without a replica in the home's pair gets
//!    one, built live from a snapshot (`tandem replica add`: bootstrap,
//!    catch up, digest equal to the leader's, then the catalog lists it).
//! 2. **Digests.** Every replica of every shard meets at one sequence
//!    number with equal content digests (`tandem verify`).
//! 3. **Ramp.** For each step (1, 5, 25, 50 % by default) at or above the
//!    ramp already in force, the catalog's `ramp` is set and pushed to every
//!    router; for the step's duration the health gate reads every router's
//!    counters each second and, out of bounds, the ramp goes back to 0 at
//!    once and the migration stops with the figures.
//! 4. **Active-active.** The tenant becomes `active_active = true` and the
//!    ramp goes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::ProgressBar;
use tandem_catalog::Catalog;
use tokio::time::Instant;

use super::gate::{self, Bounds, Figures, Verdict};
use crate::catalog_edit;
use crate::commands::Target;

/// What every tenant's migration shares.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The catalog file (the control-plane source).
    pub catalog: PathBuf,
    /// Where new replicas go (default: the pair's least-loaded index-node).
    pub node: Option<String>,
    /// Ramp steps, percent, ascending.
    pub steps: Vec<u8>,
    /// How long each step holds.
    pub step: Duration,
    /// The health gate's bounds.
    pub bounds: Bounds,
    /// Longest a replica may take to build, and replicas to meet.
    pub wait: Duration,
}

/// How a tenant's migration ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It is active-active now.
    Done {
        /// Steps that had too little traffic to judge.
        unjudged: Vec<u8>,
    },
    /// It was active-active already.
    AlreadyActiveActive,
    /// A gate failed: the ramp is back at 0, the tenant single-region.
    RolledBack {
        /// The step that failed.
        step: u8,
        /// Why.
        why: String,
        /// The step's figures.
        figures: Figures,
    },
}

/// Migrates `tenant` (see the module documentation), reporting on `bar`.
pub async fn migrate(
    target: &Target,
    s: &Settings,
    tenant: &str,
    bar: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let catalog = Catalog::load_file(&s.catalog)?;
    let t = catalog_edit::tenant(&catalog, tenant)?.clone();
    if t.active_active {
        return Ok(Outcome::AlreadyActiveActive);
    }
    let pair = catalog
        .pair_of(&t.home)
        .with_context(|| format!("the home region of {tenant} has no pair"))?
        .clone();
    for shard in &t.shards {
        if shard.replicas.iter().any(|n| n.region == pair) {
            continue;
        }
        let now = Catalog::load_file(&s.catalog)?;
        let node = match &s.node {
            Some(node) => node.clone(),
            None => crate::tenant::place::least_loaded_index(&now, &pair, &[])
                .with_context(|| format!("region {pair} has no index node"))?
                .id
                .to_string(),
        };
        bar.set_message(format!("shard {}: new replica on {node}", shard.number));
        crate::replica::add(&s.catalog, tenant, shard.number, &node, s.wait, false)
            .await
            .with_context(|| format!("shard {}: replica on {node}", shard.number))?;
        bar.println(format!(
            "{tenant}: shard {} has a replica on {node}",
            shard.number
        ));
    }
    bar.set_message("comparing digests".to_string());
    let catalog = Catalog::load_file(&s.catalog)?;
    let verdicts = crate::verify::verify(&catalog, tenant, s.wait).await?;
    if let Some(bad) = verdicts.iter().find(|v| !v.equal) {
        bail!("{tenant}: the replicas differ: {bad:?}; not ramping");
    }
    let ramp = catalog_edit::tenant(&catalog, tenant)?.ramp;
    let mut unjudged = Vec::new();
    for &step in s.steps.iter().filter(|p| **p >= ramp) {
        set_ramp(target, s, tenant, step).await?;
        match hold(target, s, tenant, step, bar).await? {
            (Verdict::Pass, _) => {}
            (Verdict::TooFew, _) => unjudged.push(step),
            (Verdict::Fail(why), figures) => {
                set_ramp(target, s, tenant, 0).await?;
                return Ok(Outcome::RolledBack { step, why, figures });
            }
        }
    }
    bar.set_message("active-active".to_string());
    catalog_edit::edit(&s.catalog, |file, _| {
        file.set_active_active(tenant, true)?;
        file.set_ramp(tenant, 0)
    })?;
    crate::commands::reload_catalogs_quietly(target).await;
    Ok(Outcome::Done { unjudged })
}

/// Holds ramp step `step` for the step's duration, judging it every
/// second; the verdict (with its figures) at its end, or the first
/// failure.
async fn hold(
    target: &Target,
    s: &Settings,
    tenant: &str,
    step: u8,
    bar: &ProgressBar,
) -> anyhow::Result<(Verdict, Figures)> {
    let routers = gate::Routers::of(target).await?;
    let began = Instant::now();
    bar.set_length(s.step.as_secs().max(1));
    bar.set_position(0);
    loop {
        let left = s.step.saturating_sub(began.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        let figures = gate::read(&routers, tenant, step).await?;
        let verdict = gate::judge(&figures, &s.bounds);
        bar.set_position(began.elapsed().as_secs());
        bar.set_message(format!("ramp {step} %: {figures}"));
        if matches!(verdict, Verdict::Fail(_)) || began.elapsed() >= s.step {
            return Ok((verdict, figures));
        }
    }
}

/// Records `tenant`'s ramp in the catalog and has every router take it.
async fn set_ramp(target: &Target, s: &Settings, tenant: &str, percent: u8) -> anyhow::Result<()> {
    catalog_edit::edit(&s.catalog, |file, _| file.set_ramp(tenant, percent))?;
    crate::commands::reload_catalogs_quietly(target).await;
    Ok(())
}

/// Undoes a migration: no ramp, not active-active (the replicas in the
/// pair stay, as standby copies read only when no home replica answers).
pub async fn roll_back(
    target: &Target,
    catalog: &std::path::Path,
    tenant: &str,
) -> anyhow::Result<()> {
    catalog_edit::edit(catalog, |file, c| {
        catalog_edit::tenant(c, tenant)?;
        file.set_ramp(tenant, 0)?;
        file.set_active_active(tenant, false)
    })?;
    crate::commands::reload_catalogs_quietly(target).await;
    Ok(())
}
