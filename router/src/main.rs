//! `tandem-router`: the region-aware query router.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tandem_common::config::load_toml;
use tandem_router::config::RouterConfig;

/// mimalloc instead of the system allocator: a call through the router
/// allocates a few dozen buffers and messages, several over glibc's
/// per-thread cache limit (the answer buffers), and with mimalloc the
/// router runs about 6% fewer instructions per search (callgrind, router
/// benchmark). The benchmark's pass-through hops use it too, so that the
/// router's overhead is still measured against the same floor.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tandem-router",
    version,
    about = "The region-aware tandem query router"
)]
struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    router_id: Option<String>,
    /// The region this router serves (must be in the catalog).
    #[arg(long)]
    region: Option<String>,
    /// gRPC listen address (port 0: any free port, printed on stdout).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Catalog file (watched and hot-reloaded); default: the embedded one.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Admin API token; without one the admin API is off.
    #[arg(long, env = "TANDEM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[arg(long)]
    default_timeout_ms: Option<u64>,
    #[arg(long)]
    per_try_timeout_ms: Option<u64>,
    #[arg(long)]
    model_timeout_ms: Option<u64>,
    #[arg(long)]
    probe_interval_ms: Option<u64>,
    #[arg(long)]
    catalog_poll_ms: Option<u64>,
    #[arg(long)]
    drain_grace_ms: Option<u64>,
    /// Hedging delay bounds and default (before a replica has history).
    #[arg(long)]
    hedge_floor_ms: Option<u64>,
    #[arg(long)]
    hedge_ceiling_ms: Option<u64>,
    #[arg(long)]
    hedge_default_ms: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut c = match &cli.config {
        Some(path) => load_toml::<RouterConfig>(path)?,
        None => RouterConfig::default(),
    };
    if let Some(v) = cli.router_id {
        c.router_id = v;
    }
    if let Some(v) = cli.region {
        c.region = v;
    }
    if let Some(v) = cli.listen {
        c.listen = v;
    }
    if let Some(v) = cli.metrics_listen {
        c.metrics_listen = v;
    }
    if let Some(v) = cli.catalog {
        c.catalog = Some(v);
    }
    if let Some(v) = cli.default_timeout_ms {
        c.default_timeout_ms = v;
    }
    if let Some(v) = cli.per_try_timeout_ms {
        c.per_try_timeout_ms = v;
    }
    if let Some(v) = cli.model_timeout_ms {
        c.model_timeout_ms = v;
    }
    if let Some(v) = cli.probe_interval_ms {
        c.probe_interval_ms = v;
    }
    if let Some(v) = cli.catalog_poll_ms {
        c.catalog_poll_ms = v;
    }
    if let Some(v) = cli.drain_grace_ms {
        c.drain_grace_ms = v;
    }
    if let Some(v) = cli.hedge_floor_ms {
        c.hedge_floor_ms = v;
    }
    if let Some(v) = cli.hedge_ceiling_ms {
        c.hedge_ceiling_ms = v;
    }
    if let Some(v) = cli.hedge_default_ms {
        c.hedge_default_ms = v;
    }
    c.json_logs |= cli.json_logs;
    tandem_common::telemetry::init_tracing(c.json_logs);
    tokio::runtime::Runtime::new()?.block_on(tandem_router::node::run(c, cli.admin_token))
}
