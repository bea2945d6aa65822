//! The learning loop's commands: `tandem train` (train on both regions'
//! usage, judge, publish a version every model-node pulls; `--rollback`)
//! and `tandem events` (export and delete a tenant's events).
//!
//! - [`events`]: a tenant's events in the object store;
//! - [`gate`]: whether a new model may replace the one served;
//! - [`serve_wait`]: waiting until every model-node serves a version.
//!
//! Scheduling: `tandem train --every SECS` trains again and again until
//! stopped (a Deployment of one, or a terminal); in Kubernetes the
//! `tandem-train` CronJob runs `tandem train` once per schedule, so a
//! missed run, retries and history are the cluster's business, not a
//! process's.

pub mod events;
pub mod gate;
pub mod serve_wait;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tandem_common::store::Store;
use tandem_model_node::versions;

use crate::commands::Target;
use gate::{judge, GateConfig};

/// `tandem train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The tenant (repeat for several).
    #[arg(long, required_unless_present = "all")]
    pub tenant: Vec<String>,
    /// Every tenant of the catalog (the scheduled run).
    #[arg(long, conflicts_with = "tenant")]
    pub all: bool,
    /// Return every region to the previous version: the newest published
    /// version is retired and the model-nodes pull the one before it.
    #[arg(long)]
    pub rollback: bool,
    /// Train again every this many seconds, until Ctrl-C.
    #[arg(long, value_name = "SECS")]
    pub every: Option<u64>,
    /// The object store (default: the topology's `store`).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Catalog file, for the model-nodes to wait for (default: the
    /// topology's).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Share of the newest events held out to judge the new model.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// How much lower than the served version's held-out MRR the new
    /// model may score and still be published.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// Held-out searches with a click needed to judge (fewer: published
    /// without a comparison).
    #[arg(long, default_value_t = 20)]
    pub min_holdout_searches: usize,
    /// Negative control of the gate: train on clicks moved to random
    /// results (such a model must be refused).
    #[arg(long)]
    pub shuffle_clicks: bool,
    /// Delete events older than this many days while reading (0: keep).
    #[arg(long, default_value_t = 90)]
    pub retention_days: u64,
    /// Wait this many seconds for every model-node to serve the result
    /// (0: do not wait).
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
}

/// `tandem click`: what a frontend sends when a user opens a result.
#[derive(clap::Args, Debug)]
pub struct ClickArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The `search id` a search printed.
    #[arg(long)]
    pub search_id: String,
    /// The opened hit's id.
    #[arg(long)]
    pub doc: String,
    /// Its 1-based position in the result list.
    #[arg(long)]
    pub position: u32,
}

/// Sends one click through the routers (either region's).
pub async fn click(target: &Target, args: &ClickArgs) -> anyhow::Result<()> {
    let client = target.client(&args.tenant).await?;
    let (_, info) = client
        .click(tandem_proto::v1::ClickRequest {
            tenant: args.tenant.clone(),
            search_id: args.search_id.clone(),
            doc_id: args.doc.clone(),
            position: args.position,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    println!(
        "click on {} at position {} counted (via {} router)",
        args.doc, args.position, info.region
    );
    Ok(())
}

/// `tandem events`.
#[derive(clap::Subcommand, Debug)]
pub enum EventsAction {
    /// Write every event of a tenant (both regions) as JSON lines.
    Export {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The object store (default: the topology's `store`).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// Delete every event of a tenant and retire the models trained on
    /// them (a privacy request).
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Without it, only say what would go.
        #[arg(long)]
        yes: bool,
        /// The object store (default: the topology's `store`).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
}

/// The store: `flag`, else the topology's.
fn open_store(target: &Target, flag: Option<&str>) -> anyhow::Result<Store> {
    let url = match flag {
        Some(url) => url.to_string(),
        None => target
            .topology_store()
            .context("give --store URL (or --topology of a cluster that names its store)")?,
    };
    Store::open(&url, &Default::default())
}

/// Runs `tandem train`; false when a model was not published.
pub async fn train(target: &Target, args: &TrainArgs) -> anyhow::Result<bool> {
    let store = open_store(target, args.store.as_deref())?;
    let catalog = match target.catalog_path(args.catalog.clone()) {
        Ok(path) => Some(tandem_catalog::Catalog::load_file(&path)?),
        Err(_) => None,
    };
    let tenants: Vec<String> = match (&catalog, args.all) {
        (Some(c), true) => c.tenants().map(|t| t.id.to_string()).collect(),
        (None, true) => anyhow::bail!("--all needs the catalog (--catalog FILE or --topology)"),
        (_, false) => args.tenant.clone(),
    };
    loop {
        let mut all_published = true;
        for tenant in &tenants {
            let version = if args.rollback {
                Some(rollback(&store, tenant).await?)
            } else {
                match train_one(&store, tenant, args).await {
                    Ok(v) => v,
                    // A loop goes on to the next tenant and round.
                    Err(e) if args.every.is_some() || tenants.len() > 1 => {
                        eprintln!("{tenant}: training failed: {e:#}");
                        None
                    }
                    Err(e) => return Err(e),
                }
            };
            match (version, &catalog) {
                (Some(v), Some(catalog)) if args.wait > 0 => {
                    let wait = Duration::from_secs(args.wait);
                    if !serve_wait::wait_served(catalog, tenant, &v, wait).await {
                        all_published = false;
                    }
                }
                (Some(_), _) => {}
                (None, _) => all_published = false,
            }
        }
        match args.every {
            Some(secs) if !args.rollback => tokio::time::sleep(Duration::from_secs(secs)).await,
            _ => return Ok(all_published),
        }
    }
}

/// Trains one tenant; the version published, if any.
async fn train_one(
    store: &Store,
    tenant: &str,
    args: &TrainArgs,
) -> anyhow::Result<Option<String>> {
    let retention =
        (args.retention_days > 0).then(|| Duration::from_secs(args.retention_days * 86_400));
    let (events, read) = events::read_all(store, tenant, retention).await?;
    for bad in &read.unreadable {
        eprintln!("warning: {tenant}: skipped an unreadable events object: {bad}");
    }
    let regions: Vec<String> = read
        .per_region
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "{tenant}: {} events from {} objects ({}){}",
        events.len(),
        read.objects,
        regions.join(", "),
        if read.expired > 0 {
            format!("; {} expired objects deleted", read.expired)
        } else {
            String::new()
        }
    );
    let published = versions::list(store, tenant).await?;
    let current = match published.last() {
        Some(p) => Some((
            p.version.clone(),
            versions::read(store, tenant, &p.version).await?,
        )),
        None => None,
    };
    let cfg = GateConfig {
        holdout: args.holdout,
        tolerance: args.tolerance,
        min_searches: args.min_holdout_searches,
        shuffle_clicks: args.shuffle_clicks,
    };
    let (served, current_set) = match current {
        Some((version, set)) => (version, Some(set)),
        None => ("none".to_string(), None),
    };
    let tenant_owned = tenant.to_string();
    // Training and judging are CPU work: off the runtime's threads.
    let verdict = tokio::task::spawn_blocking(move || {
        judge(&events, &tenant_owned, current_set.as_ref(), &cfg)
    })
    .await??;
    let mrr = |m: Option<tandem_model_node::eval::Mrr>| {
        m.map_or("-".to_string(), |m| format!("{:.4}", m.boosted))
    };
    println!(
        "{tenant}: held-out MRR over {} searches: new model {:.4}, served version's twin {}, \
         served version {served} {} (trained on some of them), no model {:.4}",
        verdict.candidate.searches,
        verdict.candidate.boosted,
        mrr(verdict.current),
        mrr(verdict.current_own),
        verdict.candidate.original,
    );
    if !verdict.publish {
        println!("{tenant}: not published: {}", verdict.reason);
        return Ok(None);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let version = versions::publish(store, &verdict.model, now_ms).await?;
    println!(
        "{tenant}: published {} ({} bytes, {} suggestions, {} boosted queries): {}",
        version.version,
        version.size,
        verdict.stats.suggestions,
        verdict.stats.boosted_queries,
        verdict.reason
    );
    let _ = std::io::stdout().flush();
    Ok(Some(version.version))
}

/// Retires the newest version of `tenant`; the version served from now on.
async fn rollback(store: &Store, tenant: &str) -> anyhow::Result<String> {
    let published = versions::list(store, tenant).await?;
    let [.., previous, newest] = published.as_slice() else {
        anyhow::bail!(
            "{tenant} has {} published version(s): nothing to roll back to",
            published.len()
        );
    };
    versions::retire(store, tenant, &newest.version).await?;
    println!(
        "{tenant}: retired {}; every region returns to {}",
        newest.version, previous.version
    );
    Ok(previous.version.clone())
}

/// Runs `tandem events ...`; false when nothing was done (a dry run).
pub async fn events_command(target: &Target, action: &EventsAction) -> anyhow::Result<bool> {
    match action {
        EventsAction::Export { tenant, out, store } => {
            let store = open_store(target, store.as_deref())?;
            let (events, read) = events::read_all(&store, tenant, None).await?;
            let mut sink: Box<dyn Write> = match out {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            tandem_model_node::events::write_events(&mut sink, &events)?;
            eprintln!(
                "{tenant}: {} events from {} objects",
                events.len(),
                read.objects
            );
            Ok(true)
        }
        EventsAction::Delete { tenant, yes, store } => {
            let store = open_store(target, store.as_deref())?;
            let objects = store.list(&store.events(tenant)).await?.len();
            let models = versions::list(&store, tenant).await?;
            if !yes {
                println!(
                    "would delete {objects} events objects and retire {} model versions of {tenant} \
                     (the model-nodes stop serving its models); run again with --yes",
                    models.len()
                );
                return Ok(false);
            }
            let deleted = events::delete_all(&store, tenant).await?;
            for v in &models {
                versions::retire(&store, tenant, &v.version).await?;
            }
            println!(
                "{tenant}: deleted {deleted} events objects and retired {} model versions; \
                 the model-nodes stop serving them at their next poll",
                models.len()
            );
            Ok(true)
        }
    }
}
