//! What TLS costs on the router path, in one run on the same machine: two
//! identical fleets (an index-node with the English tldr pages as one
//! shard, a router in front of it, no model), one plaintext and one with
//! TLS on every listener and channel (client to router and, mutual,
//! router to index-node), certificates from a throwaway CA.
//!
//! Closed loop at concurrency 1 and 16 (`BENCH_CONCURRENCY`), the two
//! fleets measured in interleaved slices so that noise hits both alike;
//! natural-language queries, top 10 with snippets. Connections are made
//! before measuring, as a long-lived client's are: the figures are the
//! cost of encrypting calls, not of handshakes. Reports QPS and p50/p99
//! per fleet and the TLS / plaintext ratios. Run:
//! `cargo build --release --bins && cargo bench -p tandem-benches --bench tls`
//! (`BENCH_SECONDS=N` per fleet and concurrency, default 5).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tandem_benches::fleets::{compare, ratios, start, FleetFlags};
use tandem_common::tls::throwaway::{ThrowawayCa, LOOPBACK_NAMES};

/// The TLS flags of every process of the TLS fleet, and the CA's PEM.
fn certificates(dir: &Path) -> anyhow::Result<(Vec<String>, String)> {
    let ca = ThrowawayCa::generate()?;
    let ca_pem = ca.certificate_pem()?;
    let (cert, key) = ca.issue(&LOOPBACK_NAMES)?;
    let files = [
        ("ca.pem", &ca_pem),
        ("node.pem", &cert),
        ("node-key.pem", &key),
    ];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem)?;
    }
    let path = |name: &str| dir.join(name).display().to_string();
    let flags = vec![
        "--tls-cert".into(),
        path("node.pem"),
        "--tls-key".into(),
        path("node-key.pem"),
        "--tls-ca".into(),
        path("ca.pem"),
    ];
    Ok((flags, ca_pem))
}

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    let duration = Duration::from_secs(seconds);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let (plain_dir, tls_dir) = (dir.path().join("plain"), dir.path().join("tls"));
        tandem_benches::write_english_shard(&plain_dir.join("index"), "en")?;
        tandem_benches::copy_dir(&plain_dir.join("index"), &tls_dir.join("index"))?;
        let tls = certificates(&tls_dir)?;
        let tls_flags = FleetFlags { both: &tls.0, ca: Some(&tls.1), ..FleetFlags::default() };
        let fleets = [("plaintext", start(&plain_dir, FleetFlags::default()).await?), ("TLS", start(&tls_dir, tls_flags).await?)];
        let queries = Arc::new(tandem_loadgen::natural_language_queries());
        println!("router path (router + index-node, no model), English tldr pages, {} natural-language queries, top 10; {seconds} s per fleet and concurrency", queries.len());
        let channels: Vec<(&str, _)> = fleets.iter().map(|(n, f)| (*n, f.channel.clone())).collect();
        let concurrencies = tandem_benches::env_list("BENCH_CONCURRENCY", &[1, 16]);
        for round in compare(&channels, &concurrencies, duration, queries).await {
            let (plain, tls) = (&round.fleets[0].0, &round.fleets[1].0);
            println!("concurrency {}: {}", round.concurrency, ratios("TLS / plaintext", plain, tls));
        }
        Ok(())
    })
}
