//! `tandem train`: for each tenant, read both regions' events, judge a new
//! model against the served version ([`super::gate`]), publish it if it
//! passes, and wait until every model-node serves it; or, with
//! `--rollback`, retire the newest version. What happened is one
//! [`Trained`] per tenant, printed as text or as a JSON object.

use std::time::Duration;

use serde::Serialize;
use tandem_catalog::Catalog;
use tandem_common::store::Store;
use tandem_model_node::eval::Mrr;
use tandem_model_node::versions;

use super::gate::{judge, GateConfig};
use super::{events, open_store, serve_wait, TrainArgs};
use crate::commands::Target;

/// What `tandem train` did for one tenant.
#[derive(Debug, Default, Serialize)]
pub struct Trained {
    /// The tenant.
    pub tenant: String,
    /// Events read, per region (`seed`: the seed log).
    pub events: std::collections::BTreeMap<String, usize>,
    /// Events objects older than the retention, deleted.
    pub expired_objects: usize,
    /// Held-out searches with a click the models were judged on.
    pub held_out_searches: usize,
    /// Held-out MRR of the new model.
    pub new_mrr: f64,
    /// Of the served version's twin (`None`: no version yet).
    pub twin_mrr: Option<f64>,
    /// The version served before, if any.
    pub served_version: Option<String>,
    /// Of the served version itself (flattered: it saw some of them).
    pub served_mrr: Option<f64>,
    /// Without any model (the order shown).
    pub no_model_mrr: f64,
    /// The version published, or returned to by a rollback.
    pub version: Option<String>,
    /// The version a rollback retired.
    pub retired: Option<String>,
    /// Why (published or not).
    pub reason: String,
    /// (model-node, region, what it serves: `serves <tenant> <version>`, or
    /// why not) once waited for.
    pub served_by: Vec<(String, String, String)>,
    /// Whether every model-node serves `version`.
    pub everywhere: bool,
    /// Nothing to learn: no events, or none since the served version.
    pub unchanged: bool,
    /// Old versions retired to keep the newest `--keep`.
    pub pruned: Vec<String>,
}

/// Runs `tandem train`; false when a tenant's model was not published (or
/// not served everywhere in time).
pub async fn train(target: &Target, args: &TrainArgs) -> anyhow::Result<bool> {
    let store = open_store(target, args.store.as_deref())?;
    loop {
        // Read each round: a loop trains new tenants and not deleted ones.
        let catalog = match target.catalog_path(args.catalog.clone()) {
            Ok(path) => Some(Catalog::load_file(&path)?),
            Err(_) => None,
        };
        let tenants: Vec<String> = match (&catalog, args.all) {
            (Some(c), true) => c.tenants().map(|t| t.id.to_string()).collect(),
            (None, true) => anyhow::bail!("--all needs the catalog (--catalog FILE or --topology)"),
            (_, false) => args.tenant.clone(),
        };
        let mut all_good = true;
        for tenant in &tenants {
            let result = match args.rollback {
                true => rollback(&store, tenant).await,
                false => train_one(&store, tenant, args).await,
            };
            let mut trained = match result {
                Ok(t) => t,
                // A loop goes on to the next tenant and round.
                Err(e) if args.every.is_some() || tenants.len() > 1 => {
                    eprintln!("{tenant}: training failed: {e:#}");
                    all_good = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let (Some(v), Some(catalog)) = (&trained.version, &catalog) {
                if args.wait > 0 {
                    let wait = Duration::from_secs(args.wait);
                    let (everywhere, served_by) =
                        serve_wait::wait_served(catalog, tenant, v, wait).await;
                    trained.everywhere = everywhere;
                    trained.served_by = served_by;
                }
            }
            let served = args.wait == 0 || trained.everywhere;
            all_good &= trained.unchanged || (trained.version.is_some() && served);
            print(&trained, args.json)?;
        }
        match args.every {
            Some(secs) if !args.rollback => tokio::time::sleep(Duration::from_secs(secs)).await,
            _ => return Ok(all_good),
        }
    }
}

/// Prints one tenant's outcome.
fn print(t: &Trained, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(t)?);
        return Ok(());
    }
    let tenant = &t.tenant;
    if !t.events.is_empty() {
        let regions: Vec<String> = t.events.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let total: usize = t.events.values().sum();
        let expired = match t.expired_objects {
            0 => String::new(),
            n => format!("; {n} expired objects deleted"),
        };
        println!("{tenant}: {total} events ({}){expired}", regions.join(", "));
        let f = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.4}"));
        println!(
            "{tenant}: held-out MRR over {} searches: new model {:.4}, served version's twin {}, \
             served version {} {} (trained on some of them), no model {:.4}",
            t.held_out_searches,
            t.new_mrr,
            f(t.twin_mrr),
            t.served_version.as_deref().unwrap_or("none"),
            f(t.served_mrr),
            t.no_model_mrr,
        );
    }
    match (&t.version, &t.retired) {
        (Some(v), Some(old)) => println!("{tenant}: retired {old}; every region returns to {v}"),
        (Some(v), None) => println!("{tenant}: published {v} ({})", t.reason),
        (None, _) if t.unchanged => println!("{tenant}: unchanged: {}", t.reason),
        (None, _) => println!("{tenant}: not published: {}", t.reason),
    }
    if !t.pruned.is_empty() {
        println!("{tenant}: retired old versions {}", t.pruned.join(", "));
    }
    for (node, region, state) in &t.served_by {
        println!("  {node} ({region}) {state}");
    }
    Ok(())
}

/// Trains, judges and maybe publishes one tenant's model.
async fn train_one(store: &Store, tenant: &str, args: &TrainArgs) -> anyhow::Result<Trained> {
    let retention =
        (args.retention_days > 0).then(|| Duration::from_secs(args.retention_days * 86_400));
    let (events, read) = events::read_all(store, tenant, retention).await?;
    for bad in &read.unreadable {
        eprintln!("warning: {tenant}: skipped an unreadable events object: {bad}");
    }
    let published = versions::list(store, tenant).await?;
    let served_version = published.last().map(|p| p.version.clone());
    let current = match &served_version {
        Some(v) => Some(versions::read(store, tenant, v).await?),
        None => None,
    };
    let newest_event = events.iter().map(|e| e.ts()).max();
    let learned_up_to = current.as_ref().map(|m| m.meta.trained_through);
    if newest_event.is_none() || newest_event <= learned_up_to {
        return Ok(Trained {
            tenant: tenant.to_string(),
            events: read.per_region,
            served_version,
            unchanged: true,
            reason: "no events since the served version was trained".into(),
            ..Trained::default()
        });
    }
    let cfg = GateConfig {
        holdout: args.holdout,
        tolerance: args.tolerance,
        min_searches: args.min_holdout_searches,
        shuffle_clicks: args.shuffle_clicks,
    };
    let tenant_owned = tenant.to_string();
    // Training and judging are CPU work: off the runtime's threads.
    let verdict =
        tokio::task::spawn_blocking(move || judge(&events, &tenant_owned, current.as_ref(), &cfg))
            .await??;
    let boosted = |m: Option<Mrr>| m.map(|m| m.boosted);
    let mut trained = Trained {
        tenant: tenant.to_string(),
        events: read.per_region,
        expired_objects: read.expired,
        held_out_searches: verdict.candidate.searches,
        new_mrr: verdict.candidate.boosted,
        twin_mrr: boosted(verdict.current),
        served_version,
        served_mrr: boosted(verdict.current_own),
        no_model_mrr: verdict.candidate.original,
        reason: verdict.reason.clone(),
        ..Trained::default()
    };
    if verdict.publish {
        let version = versions::publish_now(store, &verdict.model).await?;
        trained.reason = format!(
            "{} bytes, {} suggestions, {} boosted queries; {}",
            version.size, verdict.stats.suggestions, verdict.stats.boosted_queries, verdict.reason
        );
        trained.version = Some(version.version);
        // The versions before this one, oldest first, as listed above: the
        // newest `keep` in all stay.
        let keep = args.keep.max(1);
        let surplus = (published.len() + 1).saturating_sub(keep);
        for old in published.iter().take(surplus) {
            versions::retire(store, tenant, &old.version).await?;
            trained.pruned.push(old.version.clone());
        }
    }
    Ok(trained)
}

/// Retires the newest version of `tenant`.
async fn rollback(store: &Store, tenant: &str) -> anyhow::Result<Trained> {
    let published = versions::list(store, tenant).await?;
    let [.., previous, newest] = published.as_slice() else {
        anyhow::bail!(
            "{tenant} has {} published version(s): nothing to roll back to",
            published.len()
        );
    };
    versions::retire(store, tenant, &newest.version).await?;
    Ok(Trained {
        tenant: tenant.to_string(),
        served_version: Some(newest.version.clone()),
        version: Some(previous.version.clone()),
        retired: Some(newest.version.clone()),
        reason: "rolled back".into(),
        ..Trained::default()
    })
}
