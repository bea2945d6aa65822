//! Two (or more) small fleets measured against each other in one run: a
//! one-shard tenant `en` behind a router, the same load on each fleet in
//! interleaved slices, so that the machine's noise hits every fleet alike.
//! The `tls` and `events` benchmarks compare fleets that differ in one
//! setting.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{closed_loop, measure, Measured, RunStats, Server};

/// The tenant every fleet serves.
pub const TENANT: &str = "en";
/// Its search key.
pub const API_KEY: &str = "bench-key-en";

/// A catalog of two regions with one index-node at `node` (reached over
/// `scheme`) holding tenant [`TENANT`]'s one shard, in region `r1`.
pub fn one_shard_catalog(scheme: &str, node: SocketAddr) -> String {
    format!(
        "[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n\
         [[nodes]]\nid = \"idx\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"{scheme}://{node}\"\n\n\
         [[tenants]]\nid = \"{TENANT}\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
         api_key_sha256 = [\"{}\"]\nmodel_replicas = []\n\n[tenants.shards]\n0 = [\"idx\"]\n",
        tandem_catalog::hash_key(API_KEY),
    )
}

/// One fleet: its router and index-node (kept alive while it lives), and
/// a channel to the router.
pub struct Fleet {
    _node: Server,
    _router: Server,
    /// To the router.
    pub channel: Channel,
    /// The router's address (plaintext fleets: `http://` + it), for a
    /// client of its own.
    pub router: SocketAddr,
}

/// How a fleet differs from the plain one.
#[derive(Default)]
pub struct FleetFlags<'a> {
    /// Flags of both processes (TLS).
    pub both: &'a [String],
    /// Flags of the router alone.
    pub router: &'a [String],
    /// The CA (PEM) to reach a TLS router with; `None`: plaintext.
    pub ca: Option<&'a str>,
    /// The catalog, given the scheme and the index-node's address (none:
    /// [`one_shard_catalog`]).
    pub catalog: Option<fn(&str, SocketAddr) -> String>,
}

/// Starts a fleet in `dir`, whose `index/` holds [`TENANT`]'s shard.
pub async fn start(dir: &Path, flags: FleetFlags<'_>) -> anyhow::Result<Fleet> {
    let index = dir.join("index").display().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend(["--data-dir", &index]);
    args.extend(flags.both.iter().map(String::as_str));
    let node = Server::start("tandem-index-node", &args)?;
    let scheme = if flags.ca.is_some() { "https" } else { "http" };
    let catalog_path = dir.join("catalog.toml");
    let catalog = flags.catalog.unwrap_or(one_shard_catalog);
    std::fs::write(&catalog_path, catalog(scheme, node.grpc))?;
    let catalog_path = catalog_path.display().to_string();
    let mut args = vec!["--region", "r1", "--listen", "127.0.0.1:0"];
    args.extend([
        "--metrics-listen",
        "127.0.0.1:0",
        "--catalog",
        &catalog_path,
    ]);
    args.extend(flags.both.iter().chain(flags.router).map(String::as_str));
    let router = Server::start("tandem-router", &args)?;
    let endpoint = match flags.ca {
        Some(ca) => Endpoint::from_shared(format!("https://localhost:{}", router.grpc.port()))?
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?,
        None => Endpoint::from_shared(format!("http://{}", router.grpc))?,
    };
    let channel = endpoint.tcp_nodelay(true).connect().await?;
    Ok(Fleet {
        _node: node,
        router: router.grpc,
        _router: router,
        channel,
    })
}

/// What [`compare`] measured at one concurrency: per fleet, in the
/// order given, its figures and its calls.
pub struct Round {
    /// The concurrency.
    pub concurrency: usize,
    /// (figures, calls) per fleet.
    pub fleets: Vec<(RunStats, u64)>,
}

/// Warms every fleet up, then measures each at every concurrency in 10
/// interleaved slices of `duration / 10`, printing a markdown table.
pub async fn compare(
    fleets: &[(&str, Channel)],
    concurrencies: &[usize],
    duration: Duration,
    queries: Arc<Vec<String>>,
) -> Vec<Round> {
    let caller = |channel: &Channel| crate::search_call(channel.clone(), TENANT, API_KEY);
    for (_, channel) in fleets {
        let call = caller(channel);
        closed_loop(4, Duration::from_millis(500), queries.clone(), move |q| {
            call(q)
        })
        .await;
    }
    let rounds = 10u32;
    let slice = duration / rounds;
    println!("\n| concurrency | fleet | QPS | p50 µs | p99 µs | errors |");
    println!("|---|---|---|---|---|---|");
    let mut out = Vec::new();
    for &concurrency in concurrencies {
        let mut measured: Vec<Measured> = fleets.iter().map(|_| Measured::default()).collect();
        for _ in 0..rounds {
            for ((_, channel), m) in fleets.iter().zip(measured.iter_mut()) {
                let call = caller(channel);
                m.merge(measure(concurrency, slice, queries.clone(), move |q| call(q)).await);
            }
        }
        let figures: Vec<(RunStats, u64)> =
            measured.iter().map(|m| (m.stats(), m.calls())).collect();
        for ((name, _), (s, _)) in fleets.iter().zip(&figures) {
            println!(
                "| {concurrency} | {name} | {:.0} | {} | {} | {} |",
                s.qps, s.p50_us, s.p99_us, s.errors
            );
        }
        out.push(Round {
            concurrency,
            fleets: figures,
        });
    }
    println!();
    out
}

/// `b / a` of QPS, p50 and p99, as a line.
pub fn ratios(label: &str, a: &RunStats, b: &RunStats) -> String {
    format!(
        "{label} QPS {:.3}, p50 {:.2}, p99 {:.2}",
        b.qps / a.qps,
        b.p50_us as f64 / a.p50_us.max(1) as f64,
        b.p99_us as f64 / a.p99_us.max(1) as f64,
    )
}
