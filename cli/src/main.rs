//! `tandem`: run the two-region system locally and talk to it.
//!
//! - `tandem dev`: start both regions (routers, index-nodes, model-nodes)
//!   with the sample data, until Ctrl-C;
//! - `tandem search`, `tandem suggest`: query through the routers;
//! - `tandem status`, `tandem dial`: the routers' admin API.

mod commands;
mod dev;
mod supervise;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::commands::Target;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "tandem: active-active multi-tenant search across two regions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
enum Command {
    /// Start two regions on this machine with the sample data, until Ctrl-C.
    Dev {
        /// Data directory (reused by the next run).
        #[arg(long, default_value = "target/tandem-dev")]
        data_dir: PathBuf,
        /// Also write the cluster's topology JSON here (the CLI's other
        /// commands read it with --topology, or the copy in the data dir).
        #[arg(long = "write-topology", value_name = "FILE")]
        write_topology: Option<PathBuf>,
    },
    /// Search a tenant through the routers.
    Search {
        #[arg(long)]
        tenant: String,
        /// The query text.
        query: String,
        #[arg(long, default_value_t = 10)]
        top_k: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Query suggestions for a prefix.
    Suggest {
        #[arg(long)]
        tenant: String,
        prefix: String,
        #[arg(long, default_value_t = 5)]
        k: u32,
    },
    /// Every router's view: dials, catalog, endpoints, ejections.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set a region's traffic dial (0-100) on every router.
    Dial { region: String, percent: u32 },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tandem_common::telemetry::init_tracing(false);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev {
                data_dir,
                write_topology,
            } => run_dev(data_dir, write_topology.or(cli.target.topology)).await,
            Command::Search {
                tenant,
                query,
                top_k,
                json,
            } => commands::search(&cli.target, &tenant, &query, top_k, json).await,
            Command::Suggest { tenant, prefix, k } => {
                commands::suggest(&cli.target, &tenant, &prefix, k).await
            }
            Command::Status { json } => commands::status(&cli.target, json).await,
            Command::Dial { region, percent } => {
                commands::dial(&cli.target, &region, percent).await
            }
        }
    })
}

async fn run_dev(data_dir: PathBuf, topology: Option<PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    let repo = std::env::current_dir()?;
    anyhow::ensure!(
        repo.join("data/tldr_pages/docs.jsonl.gz").exists(),
        "run `tandem dev` from the repository root (the sample data lives in data/)"
    );
    let opts = dev::DevOptions {
        data_dir: data_dir.clone(),
        topology,
        repo,
    };
    let mut cluster = match dev::start_cluster(&opts).await {
        Ok(c) => c,
        Err(e) => {
            return Err(e.context(format!(
                "tandem dev failed; process logs are in {}/logs",
                data_dir.display()
            )))
        }
    };
    let t = &cluster.topology;
    println!(
        "\ntandem dev: two regions serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for r in &t.regions {
        println!(
            "  {:<10} router {:<21} metrics http://{}/metrics",
            r.name,
            r.router,
            r.metrics.clone().unwrap_or_default()
        );
    }
    for n in t.nodes.iter().filter(|n| n.kind != "router") {
        println!(
            "  {:<16} {:<6} {:<10} {:<21} pid {}",
            n.id,
            n.kind,
            n.region,
            n.addr,
            n.pid.unwrap_or(0)
        );
    }
    for tenant in &t.tenants {
        println!(
            "  tenant {:<8} {} home {}, key {}",
            tenant.id,
            if tenant.active_active {
                "active-active,"
            } else {
                "single-region,"
            },
            tenant.home,
            tenant.api_key
        );
    }
    println!(
        "  topology: {}/topology.json; logs: {}/logs\n",
        data_dir.display(),
        data_dir.display()
    );
    println!("try (in another terminal, from this directory):");
    println!("  ./target/release/tandem search --tenant tldr-en \"extract a tar archive\"");
    println!("  ./target/release/tandem suggest --tenant tldr-en \"ext\"");
    println!("  ./target/release/tandem status");
    println!("  ./target/release/tandem dial us-east-1 50");
    println!("Ctrl-C stops every process.");

    // Drills kill and freeze processes on purpose; only Ctrl-C / SIGTERM
    // ends the cluster.
    tandem_common::server::shutdown_signal().await;
    println!("stopping {} processes...", cluster.processes.len());
    let stops = cluster
        .processes
        .iter_mut()
        .map(|p| p.stop(Duration::from_secs(5)));
    futures::future::join_all(stops).await;
    println!("stopped");
    Ok(())
}
