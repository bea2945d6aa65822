//! Two (or more) small fleets measured against each other in one run: a
//! one-shard tenant `en` behind a router, the same load on each fleet in
//! interleaved slices, so that the machine's noise hits every fleet alike.
//! The `tls` and `events` benchmarks compare fleets that differ in one
//! setting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use crate::{closed_loop, measure, Measured, RunStats};

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
