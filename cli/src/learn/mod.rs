//! The learning loop's commands: `tandem train` (train on both regions'
//! usage, judge, publish a version every model-node pulls; `--rollback`)
//! and `tandem events` (export and delete a tenant's events).
//!
//! - [`events`]: a tenant's events in the object store;
//! - [`gate`]: whether a new model may replace the one served;
//! - [`serve_wait`]: waiting until every model-node serves a version;
//! - [`train`]: `tandem train`'s flow and what it reports.
//!
//! Scheduling: `tandem train --every SECS` trains again and again until
//! stopped (a Deployment of one, or a terminal); in Kubernetes the
//! `tandem-train` CronJob runs `tandem train` once per schedule, so a
//! missed run, retries and history are the cluster's business, not a
//! process's.

pub mod events;
pub mod gate;
pub mod serve_wait;
pub mod train;

pub use train::train;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tandem_common::store::Store;
use tandem_model_node::versions;

use crate::commands::Target;

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
    /// Versions kept in the store per tenant (older ones are retired
    /// after a publication; a rollback can go back this far).
    #[arg(long, default_value_t = 10)]
    pub keep: usize,
    /// One JSON object per tenant instead of text.
    #[arg(long)]
    pub json: bool,
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
pub(crate) fn open_store(target: &Target, flag: Option<&str>) -> anyhow::Result<Store> {
    let url = match flag {
        Some(url) => url.to_string(),
        None => target
            .topology_store()
            .context("give --store URL (or --topology of a cluster that names its store)")?,
    };
    Store::open(&url, &Default::default())
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
            let models = versions::list(&store, tenant).await?;
            if !yes {
                let objects = store.list(&store.events(tenant)).await?.len();
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
