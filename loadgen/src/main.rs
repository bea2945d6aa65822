//! `tandem-loadgen`: load on the public search API through the client
//! library, open-loop at a fixed rate (default) or closed-loop at a
//! concurrency. Prints a JSON summary on stdout and can write the timeline
//! as CSV and SVG.
//!
//! ```text
//! tandem-loadgen --topology topology.json --rate 500 --duration 30 \
//!     --timeline-csv run.csv --timeline-svg run.svg
//! tandem-loadgen --router us-east-1=127.0.0.1:50051 --router us-east-2=127.0.0.1:50052 \
//!     --tenant en --api-key KEY --concurrency 16 --queries data/nq_open_queries/queries.jsonl
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tandem_client::{ClientConfig, RegionEndpoint, TandemClient, Topology};
use tandem_loadgen::{
    natural_language_queries, read_queries, run_load, EventLog, LoadConfig, LoadMode,
    DEFAULT_MAX_OUTSTANDING,
};

/// Load generator for tandem's public search API.
#[derive(Debug, Parser)]
#[command(name = "tandem-loadgen", version)]
struct Args {
    /// Topology file written by `tandem dev --topology FILE`: routers from
    /// `regions[].router`, tenant and key from `tenants[]`.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// A region's router, `NAME=HOST:PORT` (or `HOST:PORT`); repeat for
    /// each region. Used when there is no topology file.
    #[arg(long = "router", value_name = "[NAME=]HOST:PORT")]
    routers: Vec<String>,
    /// The client's own region (default: the first one).
    #[arg(long)]
    home_region: Option<String>,
    /// Tenant to search (default with a topology: its first tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// Tenant API key (default with a topology: the tenant's key).
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Open loop: requests per second, sent on schedule whatever the
    /// answers (the default mode, at 100 QPS).
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: this many callers, each sending when answered.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Open loop: requests in flight at most; further due requests are
    /// not sent and count as failed (`overload`).
    #[arg(long, default_value_t = DEFAULT_MAX_OUTSTANDING)]
    max_outstanding: usize,
    /// Query file: JSON lines with a `text` or `query` field, or plain
    /// lines (default: the natural-language questions of
    /// data/nq_open_queries, built into this binary).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Use the tenant's short sample queries from the topology instead.
    #[arg(long, conflicts_with = "queries")]
    sample_queries: bool,
    /// Hits per search (0: the server's default).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Deadline of one call, failover retry included, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Cap on one attempt, ms: a router that does not answer within it is
    /// treated as down (off by default).
    #[arg(long)]
    attempt_timeout_ms: Option<u64>,
    /// Health-probe interval of a failed home router, ms.
    #[arg(long, default_value_t = 200)]
    probe_interval_ms: u64,
    /// Timeline bucket width, ms.
    #[arg(long, default_value_t = 100)]
    bucket_ms: u64,
    /// Seconds to wait for outstanding answers after the sending window.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Write the timeline as CSV here.
    #[arg(long)]
    timeline_csv: Option<PathBuf>,
    /// Write the timeline plot as SVG here.
    #[arg(long)]
    timeline_svg: Option<PathBuf>,
    /// Title of the plot.
    #[arg(long, default_value = "tandem load timeline")]
    title: String,
    /// Also write the JSON summary here.
    #[arg(long)]
    summary: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole cause chain on one line, no backtrace.
            eprintln!("tandem-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let (client_config, tenant, sample_queries) = client_setup(&args)?;
    let queries = match (&args.queries, args.sample_queries) {
        (Some(path), _) => read_queries(path)?,
        (None, true) if !sample_queries.is_empty() => sample_queries,
        (None, true) => bail!("the topology lists no sample queries for {tenant}"),
        (None, false) => natural_language_queries(),
    };
    let mode = match args.concurrency {
        Some(concurrency) => LoadMode::ClosedLoop { concurrency },
        None => LoadMode::OpenLoop {
            rate: args.rate.unwrap_or(100.0),
            max_outstanding: args.max_outstanding,
        },
    };
    let mut config = LoadConfig::new(mode, seconds(args.duration, "--duration")?, tenant, queries);
    config.top_k = args.top_k;
    config.bucket = Duration::from_millis(args.bucket_ms.max(1));
    config.drain = seconds(args.drain, "--drain")?;

    let client = TandemClient::connect(client_config).await?;
    let bar =
        tandem_loadgen::progress::timed(config.duration + config.drain, &mode_label(&config.mode));
    let report = run_load(&client, &config, &EventLog::new()).await;
    bar.finish_and_clear();
    let report = report?;

    let json = serde_json::to_string_pretty(&report.summary)?;
    println!("{json}");
    if let Some(path) = &args.summary {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.timeline_csv {
        report.timeline.write_csv(path)?;
    }
    if let Some(path) = &args.timeline_svg {
        report.timeline.write_svg(path, &args.title)?;
    }
    Ok(())
}

/// How the load is shaped, for the progress bar.
fn mode_label(mode: &LoadMode) -> String {
    match mode {
        LoadMode::ClosedLoop { concurrency } => format!("closed loop, {concurrency} callers"),
        LoadMode::OpenLoop { rate, .. } => format!("open loop, {rate} calls/s"),
    }
}

/// The client configuration, tenant and its sample queries, from the
/// topology file and/or the flags (flags win).
fn client_setup(args: &Args) -> anyhow::Result<(ClientConfig, String, Vec<String>)> {
    let (mut config, tenant, samples) = match &args.topology {
        Some(path) => {
            let topology = Topology::load(path)?;
            let config =
                topology.client_config(args.home_region.as_deref(), args.tenant.as_deref())?;
            let tenant = match &args.tenant {
                Some(id) => topology.tenant(id),
                None => topology.tenants.first(),
            };
            let tenant_id = tenant
                .map(|t| t.id.clone())
                .context("the topology lists no tenants: pass --tenant")?;
            let samples = tenant.map(|t| t.sample_queries.clone()).unwrap_or_default();
            (config, tenant_id, samples)
        }
        None => {
            if args.routers.is_empty() {
                bail!("give --topology FILE or at least one --router [NAME=]HOST:PORT");
            }
            let regions = args
                .routers
                .iter()
                .enumerate()
                .map(|(i, spec)| match spec.split_once('=') {
                    Some((name, addr)) => RegionEndpoint::new(name, addr),
                    None => RegionEndpoint::new(format!("region-{i}"), spec.as_str()),
                })
                .collect();
            let mut config = ClientConfig::new(regions);
            if let Some(home) = &args.home_region {
                config.home_region = home.clone();
            }
            let tenant = args
                .tenant
                .clone()
                .context("--tenant is required without --topology")?;
            (config, tenant, Vec::new())
        }
    };
    if let Some(key) = &args.api_key {
        config.api_key = Some(key.clone());
    }
    config.timeout = Duration::from_millis(args.timeout_ms.max(1));
    config.attempt_timeout = args.attempt_timeout_ms.map(Duration::from_millis);
    config.probe_interval = Duration::from_millis(args.probe_interval_ms.max(1));
    Ok((config, tenant, samples))
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} must be a number of seconds >= 0, got {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(args: &[&str]) -> anyhow::Result<(ClientConfig, String, Vec<String>)> {
        let args =
            Args::try_parse_from(std::iter::once("tandem-loadgen").chain(args.iter().copied()))?;
        client_setup(&args)
    }

    #[test]
    fn routers_and_tenant_from_flags() {
        let (config, tenant, samples) = setup(&[
            "--router",
            "us-east-1=127.0.0.1:1",
            "--router",
            "127.0.0.1:2",
            "--home-region",
            "region-1",
            "--tenant",
            "en",
            "--api-key",
            "k",
            "--timeout-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(
            config.regions[0],
            RegionEndpoint::new("us-east-1", "127.0.0.1:1")
        );
        assert_eq!(config.regions[1].name, "region-1");
        assert_eq!(config.home_region, "region-1");
        assert_eq!(config.api_key.as_deref(), Some("k"));
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert_eq!(tenant, "en");
        assert!(samples.is_empty());
        assert!(setup(&["--router", "127.0.0.1:1"]).is_err());
        assert!(setup(&["--tenant", "en"]).is_err());
        assert!(setup(&["--rate", "5", "--concurrency", "2"]).is_err());
    }

    #[test]
    fn routers_tenant_and_queries_from_a_topology() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        std::fs::write(
            &path,
            r#"{"regions":[{"name":"us-east-1","router":"127.0.0.1:1"},{"name":"us-east-2","router":"127.0.0.1:2"}],
               "tenants":[{"id":"en","api_key":"k-en","sample_queries":["tar"]},{"id":"de","api_key":"k-de"}]}"#,
        )
        .unwrap();
        let topology = path.to_str().unwrap();
        let (config, tenant, samples) = setup(&["--topology", topology]).unwrap();
        assert_eq!(
            (config.home_region.as_str(), tenant.as_str()),
            ("us-east-1", "en")
        );
        assert_eq!(config.api_key.as_deref(), Some("k-en"));
        assert_eq!(samples, vec!["tar"]);
        let (config, tenant, _) = setup(&[
            "--topology",
            topology,
            "--tenant",
            "de",
            "--home-region",
            "us-east-2",
            "--api-key",
            "override",
        ])
        .unwrap();
        assert_eq!(
            (config.home_region.as_str(), tenant.as_str()),
            ("us-east-2", "de")
        );
        assert_eq!(config.api_key.as_deref(), Some("override"));
        assert!(setup(&["--topology", topology, "--tenant", "fr"]).is_err());
    }
}
