//! `tandem dev`: the whole two-region system on this machine.
//!
//! Two paired regions (`us-east-1`, `us-east-2`), each with one router, two
//! index-nodes and one model-node, every one its own OS process on a
//! loopback port, so a drill can kill or freeze any of them. The sample
//! tenants:
//!
//! - `tldr-en`: the English tldr pages, active-active, home `us-east-1`, one
//!   index replica per region, a model replica per region;
//! - `tldr-es`: the Spanish pages, *not* active-active, home `us-east-1`, two
//!   index replicas both in `us-east-1` (the other region reads them there).
//!
//! Start-up loads the corpus into every replica and trains both tenants'
//! models from the sample event logs, in parallel; a second run on the same
//! data directory reuses both and is up in seconds. The routers are listed in
//! the catalog, but learn their ports only once started, so the catalog is
//! written once with placeholders and again with their addresses, which
//! the routers pick up by hot reload.
//!
//! Drills restart the processes they kill; those are not children of this
//! cluster, so stopping it also stops every process the current topology
//! file names that still runs and belongs to this data directory.

mod banner;
mod catalog;
mod load;
pub mod sample_data;

pub use load::{load_file, LoadPlan};
mod setup;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tandem_client::{NodeInfo, Topology};

use crate::procfs::{self, Signal};
use crate::supervise::{binary, exe_dir, start, Process};
use setup::{Secrets, REGIONS};

pub use banner::run;

/// Options of `tandem dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where nodes keep their data, logs, catalog, secrets and the
    /// topology file (`<data_dir>/topology.json`).
    pub data_dir: PathBuf,
    /// Also write the topology JSON here.
    pub topology: Option<PathBuf>,
    /// Repository root (sample data).
    pub repo: PathBuf,
    /// Load at most this many pages per tenant (tests want a small, fast
    /// cluster); `None`: the whole corpus.
    pub docs_limit: Option<usize>,
    /// Where the node binaries are; `None`: next to the running executable
    /// (tests pass `target/<profile>/`, as their own executable lives in
    /// `deps/`).
    pub bin_dir: Option<PathBuf>,
    /// Extra flags for every router (e.g. slower hedging for tests on a
    /// busy machine).
    pub router_args: Vec<String>,
    /// Serve TLS on every listener and channel (see [`tls`]).
    pub tls: bool,
    /// Routers in each region (1 or more).
    pub routers_per_region: usize,
    /// The emulated network between the two regions.
    pub network: NetworkArgs,
}

/// The network between the dev cluster's two regions, emulated by its
/// processes (`tandem_common::latency`): both regions run on this machine,
/// where nothing is far, so each call from one region to the other waits
/// this long. The default, 10 ms, is about the round trip between two
/// neighbouring cloud regions (us-east-1 and us-east-2).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct NetworkArgs {
    /// Round trip (ms) added to every call from one region to the other
    /// (fallbacks, forwards, replication pulls); 0: none.
    #[arg(long = "inter-region-latency", value_name = "MS", default_value_t = 10)]
    pub latency_ms: u64,
    /// Up to this much (ms) more or less, drawn per call.
    #[arg(long = "inter-region-jitter", value_name = "MS", default_value_t = 0)]
    pub jitter_ms: u64,
}

impl Default for NetworkArgs {
    fn default() -> Self {
        Self {
            latency_ms: 10,
            jitter_ms: 0,
        }
    }
}

impl NetworkArgs {
    /// The flags that give a router or an index-node this network.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--inter-region-latency-ms".into(),
            self.latency_ms.to_string(),
            "--inter-region-jitter-ms".into(),
            self.jitter_ms.to_string(),
        ]
    }
}

impl DevOptions {
    /// The defaults for a cluster in `data_dir` with the sample data of the
    /// repository at `repo`: the whole corpus, binaries next to this one.
    pub fn new(data_dir: impl Into<PathBuf>, repo: impl Into<PathBuf>) -> Self {
        DevOptions {
            data_dir: data_dir.into(),
            topology: None,
            repo: repo.into(),
            docs_limit: None,
            bin_dir: None,
            router_args: Vec::new(),
            tls: false,
            routers_per_region: 1,
            network: NetworkArgs::default(),
        }
    }
}

/// A running dev cluster. [`Cluster::stop`] stops it gracefully; dropping
/// it kills what is left, so a failing test leaves no process behind.
pub struct Cluster {
    /// Every process this cluster started, routers last. Drills may have
    /// killed some and restarted them as processes that are not in here:
    /// the topology file is the truth about what runs.
    pub processes: Vec<Process>,
    /// The topology as started.
    pub topology: Topology,
    /// The data directory, absolute.
    pub data_dir: PathBuf,
    /// Other topology files written at start (`DevOptions::topology`).
    extra_topology: Option<PathBuf>,
}

/// Starts the cluster, returns once every process serves and data is in.
pub async fn start_cluster(opts: &DevOptions) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    std::fs::create_dir_all(opts.data_dir.join("logs"))
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    // Absolute, so that restarts from another working directory find the
    // same files and so it can mark the cluster's processes (see procfs).
    let dir = opts
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.data_dir.display()))?;
    stop_leftovers(&dir).await;
    let secrets = Secrets::of(&dir)?;
    let internal_token_file = secrets.install_internal_token(&dir)?.display().to_string();
    let search_id_key_file = secrets.install_search_id_key(&dir)?.display().to_string();
    let tls = match opts.tls {
        true => Some(tls::DevTls::ensure(&dir)?),
        false => None,
    };
    crate::operator::use_ca_cert(tls.as_ref().map(|t| t.ca.as_path()))?;
    let tls_args = tls.as_ref().map(tls::DevTls::args).unwrap_or_default();
    // The admin token reaches the processes through their environment.
    let secret_env = vec![(
        "TANDEM_ADMIN_TOKEN".to_string(),
        secrets.admin_token.clone(),
    )];
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => exe_dir()?,
    };
    let (index_bin, model_bin, router_bin) = (
        binary(&bin_dir, "tandem-index-node")?,
        binary(&bin_dir, "tandem-model-node")?,
        binary(&bin_dir, "tandem-router")?,
    );

    let progress = tandem_loadgen::progress::spinner("starting index-nodes; training models");
    // Models train while the index-nodes start.
    // One object store for the cluster (a fleet's bucket): snapshots,
    // usage events, model versions.
    let store_arg = catalog::store_url(&dir);
    let training = tokio::spawn(setup::seed_models(opts.repo.clone(), store_arg.clone()));

    // Starts one node process in the background; its log goes to
    // `logs/<id>.log`.
    let spawn_node =
        |id: String, kind: &'static str, region: &'static str, bin: &PathBuf, extra: &[&str]| {
            let mut args = node_args(&id, region, &internal_token_file, extra);
            args.extend(tls_args.iter().cloned());
            let (bin, log) = (bin.clone(), dir.join("logs").join(format!("{id}.log")));
            let env = secret_env.clone();
            tokio::spawn(async move { start(&id, kind, region, &bin, (&args, &env), &log).await })
        };
    // Index-nodes read the catalog (written once every port is known) for
    // their shards' leaders and followers.
    let catalog_path = dir.join("catalog.toml");
    let _ = std::fs::remove_file(&catalog_path);
    let catalog_arg = catalog_path.display().to_string();
    // Routers and index-nodes reach each other by name, through the
    // cluster's hosts file (written afresh: a drill may have emptied it).
    let hosts_path = catalog::hosts_file(&dir);
    std::fs::write(&hosts_path, catalog::HOSTS)
        .with_context(|| format!("cannot write {}", hosts_path.display()))?;
    let hosts_arg = hosts_path.display().to_string();
    // Every index-node snapshots to the one store, so followers can
    // install what leaders snapshot.
    let mut starts = Vec::new();
    for (region, _, short) in REGIONS {
        let network = opts.network.flags();
        for i in 1..=2 {
            let id = format!("{short}-index-{i}");
            let data = dir.join(&id).display().to_string();
            let mut flags = vec![
                "--data-dir",
                &data,
                "--catalog",
                &catalog_arg,
                "--catalog-poll-ms",
                "200",
                "--snapshot-store",
                &store_arg,
                "--hosts-file",
                &hosts_arg,
            ];
            flags.extend(network.iter().map(String::as_str));
            starts.push(spawn_node(
                id,
                NodeInfo::KIND_INDEX,
                region,
                &index_bin,
                &flags,
            ));
        }
    }
    training.await.context("training task failed")??;
    progress.set_message("starting model-nodes");
    for (region, _, short) in REGIONS {
        // Each model-node has a directory of its own and pulls what
        // `tandem train` publishes from the store.
        let id = format!("{short}-model-1");
        let models = dir.join("models").join(&id).display().to_string();
        starts.push(spawn_node(
            id,
            NodeInfo::KIND_MODEL,
            region,
            &model_bin,
            &[
                "--model-dir",
                &models,
                "--model-store",
                &store_arg,
                "--store-poll-ms",
                "500",
            ],
        ));
    }
    let mut processes = Vec::new();
    let mut first_error = None;
    for s in starts {
        match s.await.context("start task failed").and_then(|r| r) {
            Ok(p) => processes.push(p),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    // Dropping `processes` kills those that did start.
    if let Some(e) = first_error {
        return Err(e);
    }

    let scheme = if tls.is_some() { "https" } else { "http" };
    progress.set_message("starting routers");
    let per_region = opts.routers_per_region.max(1);
    catalog::write_catalog(
        &catalog_path,
        (&processes, &[], per_region),
        scheme,
        &secrets,
    )?;
    let mut routers = Vec::new();
    let router_ids = REGIONS.iter().flat_map(|(region, _, short)| {
        (1..=per_region).map(move |i| (*region, setup::router_id(short, i)))
    });
    for (region, id) in router_ids {
        let mut args: Vec<String> = [
            "--router-id",
            &id,
            "--region",
            region,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--catalog",
            &catalog_path.display().to_string(),
            "--catalog-poll-ms",
            "200",
            "--internal-token-file",
            &internal_token_file,
            "--admin-listen",
            "127.0.0.1:0",
            "--enable-faults",
            "--search-id-key-file",
            &search_id_key_file,
            "--events-dir",
            &dir.join("events").join(&id).display().to_string(),
            "--events-store",
            &store_arg,
            "--events-rotate-ms",
            "1000",
            "--events-ship-ms",
            "1000",
            "--hosts-file",
            &hosts_arg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(opts.router_args.iter().cloned());
        args.extend(opts.network.flags());
        args.extend(tls_args.iter().cloned());
        let log = dir.join("logs").join(format!("{id}.log"));
        let launch = (args.as_slice(), secret_env.as_slice());
        routers.push(
            start(
                &id,
                NodeInfo::KIND_ROUTER,
                region,
                &router_bin,
                launch,
                &log,
            )
            .await?,
        );
    }
    catalog::write_catalog(
        &catalog_path,
        (&processes, &routers, per_region),
        scheme,
        &secrets,
    )?;
    processes.extend(routers);

    progress.set_message("writing the sample pages through the routers (first start only)");
    setup::load_corpus(&processes, &secrets, &opts.repo, opts.docs_limit).await?;
    progress.finish_and_clear();
    let mut topology = catalog::topology(&processes, &secrets, (&catalog_path, scheme));
    topology.ca_cert = tls.as_ref().map(|t| t.ca.display().to_string());
    topology.save(dir.join("topology.json"))?;
    if let Some(path) = &opts.topology {
        topology
            .save(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Routers pick the final catalog up within a poll; wait until they do.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster serving"
    );
    Ok(Cluster {
        processes,
        topology,
        data_dir: dir,
        extra_topology: opts.topology.clone(),
    })
}

fn node_args(id: &str, region: &str, internal_token_file: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--node-id",
        id,
        "--region",
        region,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--enable-faults",
        "--internal-token-file",
        internal_token_file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Cluster {
    /// The topology file in the data directory, which drills keep current.
    pub fn topology_path(&self) -> PathBuf {
        self.data_dir.join("topology.json")
    }

    /// The topology as it is now (drills rewrite pids when they restart a
    /// process); the one from start-up if the file cannot be read.
    pub fn current_topology(&self) -> Topology {
        Topology::load(self.topology_path()).unwrap_or_else(|_| self.topology.clone())
    }

    /// Processes named by the topology files that are not this cluster's
    /// children but belong to it: those a drill restarted.
    fn adopted(&self) -> Vec<(String, u32)> {
        let children: Vec<u32> = self.processes.iter().map(|p| p.pid).collect();
        let mut files = vec![self.topology_path()];
        files.extend(self.extra_topology.clone());
        adopted_in(&files, &self.data_dir, &children)
    }

    /// Stops every process: SIGTERM (they drain), SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let adopted = self.adopted();
        for (_, pid) in &adopted {
            procfs::send(*pid, Signal::Term);
            procfs::send(*pid, Signal::Cont);
        }
        let mut processes = std::mem::take(&mut self.processes);
        let children = processes.iter_mut().map(|p| p.stop(grace));
        futures::future::join_all(children).await;
        for (id, pid) in adopted {
            if !procfs::wait_gone(pid, grace).await {
                tracing::warn!(node = %id, pid, "did not stop after SIGTERM; killing it");
                procfs::send(pid, Signal::Kill);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Children are killed by their own drop; restarted ones are not
        // children, so kill them here (a no-op after `stop`).
        for (_, pid) in self.adopted() {
            procfs::send(pid, Signal::Kill);
        }
    }
}

/// Live processes named in the topology `files` that belong to the
/// cluster in `dir` and are not in `exclude`.
fn adopted_in(files: &[PathBuf], dir: &Path, exclude: &[u32]) -> Vec<(String, u32)> {
    let marker = dir.display().to_string();
    let mut found: Vec<(String, u32)> = Vec::new();
    for file in files {
        let Ok(topology) = Topology::load(file) else {
            continue;
        };
        for node in topology.nodes {
            let Some(pid) = node.pid else { continue };
            if exclude.contains(&pid) || found.iter().any(|(_, p)| *p == pid) {
                continue;
            }
            if procfs::belongs_to(pid, &node.id, &marker) {
                found.push((node.id, pid));
            }
        }
    }
    found
}

/// Stops processes a previous run on `dir` left behind (its `tandem dev`
/// was killed without a chance to stop them), so they do not hold the
/// data directory's indexes.
async fn stop_leftovers(dir: &Path) {
    let leftovers = adopted_in(&[dir.join("topology.json")], dir, &[]);
    for (id, pid) in &leftovers {
        tracing::warn!(node = %id, pid, "stopping a process left over from a previous run");
        procfs::send(*pid, Signal::Term);
        procfs::send(*pid, Signal::Cont);
    }
    for (_, pid) in leftovers {
        if !procfs::wait_gone(pid, Duration::from_secs(5)).await {
            procfs::send(pid, Signal::Kill);
            procfs::wait_gone(pid, Duration::from_secs(2)).await;
        }
    }
}
