//! `tandem-router`: the region-aware query router.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;
use tandem_common::config::load_with_flags;
use tandem_common::internal::InternalToken;
use tandem_common::tls::TlsArgs;
use tandem_router::config::RouterConfig;

/// mimalloc instead of the system allocator: a call through the router
/// allocates a few dozen buffers and messages, several over glibc's
/// per-thread cache limit, which mimalloc serves from per-thread pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Serialize)]
#[command(
    name = "tandem-router",
    version,
    about = "The region-aware tandem query router"
)]
struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    router_id: Option<String>,
    /// The region this router serves (must be in the catalog).
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
    /// Serve the admin API on this address (and only there).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<SocketAddr>,
    /// Catalog file (watched and hot-reloaded); default: the embedded one.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<PathBuf>,
    /// Keys file of `[keys.<tenant>]` tables (API key hashes kept apart from
    /// the catalog, e.g. in a Kubernetes Secret; watched too).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog_keys: Option<PathBuf>,
    /// File holding the admin API token (else the `TANDEM_ADMIN_TOKEN`
    /// environment variable); without one the admin API is off.
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
    default_timeout_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    per_try_timeout_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_timeout_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_interval_ms: Option<u64>,
    /// How often nodes' DNS names are resolved again while connected (0: never).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_recheck_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog_poll_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_grace_ms: Option<u64>,
    /// Log (WARN, with the request id) public calls that take this long.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_call_ms: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    network: tandem_common::latency::InterRegionFlags,
    /// Serve the fault-injection API on the admin listener, for drills
    /// (needs the admin token): a fault makes this router's public calls
    /// fail, wait or be shed.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    enable_faults: bool,
    /// The adaptive admission limit's floor: searches in flight it always
    /// admits (default 16).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    min_concurrent_searches: Option<usize>,
    /// The adaptive admission limit's ceiling (default 1000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_searches: Option<usize>,
    /// How many times its unhurried latency searches may take before the
    /// admission limit shrinks (default 2.0).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admission_tolerance: Option<f64>,
    /// Health-driven dial: shift this region's active-active traffic to
    /// the paired region after its index-nodes fail health this long (0:
    /// off).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_dial_after_ms: Option<u64>,
    /// Health-driven dial: shift back after this long healthy again.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_dial_back_after_ms: Option<u64>,
    /// Health-driven dial: share of the region's index-nodes unhealthy
    /// that counts as failing (0 to 1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_dial_threshold: Option<f64>,
    /// Hedging delay bounds and default (before a replica has history).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    hedge_floor_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    hedge_ceiling_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    hedge_default_ms: Option<u64>,
    /// The search-id signing keys (one per line, the signing key first; the
    /// same file on every router of both regions). Without it searches carry
    /// no search id and clicks are refused.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    search_id_key_file: Option<PathBuf>,
    /// Record usage events (searches, clicks) in this directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_dir: Option<PathBuf>,
    /// Ship recorded events to this object store (`file:///dir`,
    /// `s3://bucket/prefix`): `<store>/<tenant>/events/<region>/`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_store: Option<String>,
    /// Events held in memory on their way to disk; more are dropped and
    /// counted, never the search.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_buffer: Option<usize>,
    /// How long an events file stays open before it is readied to ship.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_rotate_ms: Option<u64>,
    /// How often ready events files are shipped.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_ship_ms: Option<u64>,
    /// Clicks per second taken per tenant by this router (default 100).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    click_rate_per_sec: Option<u32>,
    /// How long after a search its clicks count (default 3600).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    click_window_secs: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json_logs: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let internal = InternalToken::resolve(cli.internal_token_file.as_deref())?;
    let config: RouterConfig = load_with_flags(cli.config.as_deref(), &cli)?;
    let admin_token = tandem_common::secret_file::admin_token(cli.admin_token_file.as_deref())?;
    tandem_common::telemetry::init_tracing(config.json_logs);
    tokio::runtime::Runtime::new()?.block_on(async {
        cli.resolve.install()?;
        let tls = cli.tls.start()?;
        tandem_router::node::run(config, admin_token, internal, tls).await
    })
}
