//! `tandem-index-node`: serve tenant shards, or load a corpus into one.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tandem_common::config::load_toml;
use tandem_index_node::config::NodeConfig;
use tandem_index_node::corpus::{read_documents, Where};
use tandem_index_node::loader::{load, LoadPlan};
use tandem_proto::v1::index_node_client::IndexNodeClient;

#[derive(Parser)]
#[command(
    name = "tandem-index-node",
    version,
    about = "Hosts many tenants' tantivy index shards behind gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the shards under a data directory.
    Serve(ServeArgs),
    /// Load a JSON-lines corpus into one shard through the gRPC API.
    Load(LoadArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<String>,
    #[arg(long)]
    region: Option<String>,
    /// gRPC listen address (port 0: any free port, printed on stdout).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    search_workers: Option<usize>,
    #[arg(long)]
    search_queue: Option<usize>,
    #[arg(long)]
    max_open_shards: Option<u64>,
    /// Serve the fault-injection admin API (needs an admin token).
    #[arg(long)]
    enable_faults: bool,
    #[arg(long, env = "TANDEM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[arg(long)]
    drain_grace_ms: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

#[derive(Args)]
struct LoadArgs {
    /// The index-node's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:7101")]
    addr: String,
    #[arg(long)]
    tenant: String,
    #[arg(long, default_value_t = 0)]
    shard: u32,
    /// Create the shard first with this language (idempotent).
    #[arg(long)]
    create: Option<String>,
    /// Only records whose attribute KEY equals VALUE (repeatable).
    #[arg(long = "where", value_name = "KEY=VALUE")]
    filters: Vec<Where>,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// JSON-lines corpus (`.gz` is decompressed).
    file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => {
            let json = args.json_logs;
            let (config, token) = serve_config(args)?;
            tandem_common::telemetry::init_tracing(json || config.json_logs);
            runtime.block_on(tandem_index_node::node::run(config, token))
        }
        Command::Load(args) => {
            tandem_common::telemetry::init_tracing(false);
            runtime.block_on(run_load(args))
        }
    }
}

fn serve_config(args: ServeArgs) -> anyhow::Result<(NodeConfig, Option<String>)> {
    let mut c = match &args.config {
        Some(path) => load_toml::<NodeConfig>(path)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.node_id {
        c.node_id = v;
    }
    if let Some(v) = args.region {
        c.region = v;
    }
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.metrics_listen {
        c.metrics_listen = v;
    }
    if let Some(v) = args.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = args.search_workers {
        c.search_workers = v;
    }
    if let Some(v) = args.search_queue {
        c.search_queue = v;
    }
    if let Some(v) = args.max_open_shards {
        c.max_open_shards = v;
    }
    if let Some(v) = args.drain_grace_ms {
        c.drain_grace_ms = v;
    }
    c.enable_faults |= args.enable_faults;
    c.json_logs |= args.json_logs;
    Ok((c, args.admin_token))
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let docs = tokio::task::spawn_blocking({
        let (file, filters) = (args.file.clone(), args.filters.clone());
        move || read_documents(&file, &filters)
    })
    .await??;
    let mut client = IndexNodeClient::connect(args.addr.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?
        .max_encoding_message_size(64 * 1024 * 1024);
    let plan = LoadPlan {
        tenant: args.tenant,
        shard: args.shard,
        create_language: args.create,
        batch_size: args.batch,
    };
    let started = std::time::Instant::now();
    let report = load(&mut client, &plan, docs).await?;
    println!(
        "loaded {} documents in {} batches into {}/{} (applied seq {}) in {:.2?}",
        report.documents,
        report.batches,
        plan.tenant,
        plan.shard,
        report.applied_seq,
        started.elapsed()
    );
    Ok(())
}
