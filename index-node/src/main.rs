//! `tandem-index-node`: serve tenant shards.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tandem_common::config::load_with_flags;
use tandem_common::internal::InternalToken;
use tandem_common::tls::TlsArgs;
use tandem_index_node::config::NodeConfig;

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
}

#[derive(Args, Serialize)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// gRPC listen address (port 0: any free port, printed on stdout).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// Serve `grpc.health.v1` alone on this plaintext address too (for
    /// kubelet probes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_listen: Option<SocketAddr>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    search_workers: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    search_queue: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    search_queue_timeout_ms: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    network: tandem_common::latency::InterRegionFlags,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_open_shards: Option<u64>,
    /// Serve the fault-injection admin API (needs an admin token).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    enable_faults: bool,
    /// File holding the fault-injection API's admin token (else the
    /// `TANDEM_ADMIN_TOKEN` environment variable).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    admin_token_file: Option<PathBuf>,
    /// File holding the cluster's internal token (else the
    /// `TANDEM_INTERNAL_TOKEN` environment variable); required.
    #[arg(long)]
    #[serde(skip)]
    internal_token_file: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    tls: TlsArgs,
    #[command(flatten)]
    #[serde(skip)]
    resolve: tandem_common::resolve::ResolveArgs,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_grace_ms: Option<u64>,
    /// Catalog file naming each shard's leader and followers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog_poll_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_interval_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_lag_ms: Option<u64>,
    /// Snapshot store URL (`file:///dir`, `s3://bucket/prefix`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_store: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_interval_secs: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json_logs: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => {
            let internal = InternalToken::resolve(args.internal_token_file.as_deref())?;
            let tls = args.tls.clone();
            let resolve = args.resolve.clone();
            let (config, token) = serve_config(args)?;
            tandem_common::telemetry::init_tracing(config.json_logs);
            runtime.block_on(async {
                resolve.install()?;
                let tls = tls.start()?;
                tandem_index_node::node::run(config, token, internal, tls).await
            })
        }
    }
}

/// The config file (or defaults) with the flags applied, and the admin token.
fn serve_config(args: ServeArgs) -> anyhow::Result<(NodeConfig, Option<String>)> {
    let config = load_with_flags(args.config.as_deref(), &args)?;
    let token = tandem_common::secret_file::admin_token(args.admin_token_file.as_deref())?;
    Ok((config, token))
}
