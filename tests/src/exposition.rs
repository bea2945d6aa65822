//! Checks of what every process serves on `/metrics`, read with a
//! Prometheus text-format parser: every series has HELP text, the build is
//! named, status codes are spelled canonically (as `code_name` spells them;
//! its own test pins the spellings), and the router's endpoint states and
//! dials exist from start-up.

use std::collections::{HashMap, HashSet};

use tandem_client::{NodeInfo, Topology};

/// Every process of `topology` with its `/metrics`, parsed as Prometheus
/// text (a process whose output does not parse fails the test).
pub fn scrapes(topology: &Topology) -> Vec<(&NodeInfo, prometheus_parse::Scrape)> {
    topology
        .nodes
        .iter()
        .map(|node| {
            let addr = node.metrics.as_deref().expect("metrics address");
            let text = crate::scrape(addr.parse().expect("metrics address"));
            let body = text
                .split_once("\r\n\r\n")
                .map_or(text.as_str(), |(_, b)| b);
            let lines = body.lines().map(|l| Ok(l.to_string()));
            let scrape = prometheus_parse::Scrape::parse(lines)
                .unwrap_or_else(|e| panic!("{}: not Prometheus text: {e}", node.id));
            (node, scrape)
        })
        .collect()
}

/// Scrapes and parses every process of `topology` and checks the rules
/// above; returns the router samples' metric names (for more checks).
pub fn assert_exposition(topology: &Topology) -> HashSet<String> {
    let canonical: HashSet<&str> = (0..17)
        .map(|i| tandem_common::grpc_metrics::code_name(tonic::Code::from_i32(i)))
        .collect();
    let mut router_names = HashSet::new();
    for (node, scrape) in scrapes(topology) {
        assert!(!scrape.samples.is_empty(), "{}: no samples", node.id);
        for sample in &scrape.samples {
            let family = family_of(&sample.metric, &scrape.docs);
            assert!(
                scrape.docs.contains_key(family),
                "{}: {} has no HELP",
                node.id,
                sample.metric
            );
            if let Some(code) = sample.labels.get("grpc_code") {
                assert!(canonical.contains(code), "{}: grpc_code {code}", node.id);
            }
            if node.kind == "router" {
                router_names.insert(sample.metric.clone());
            }
        }
        let build = scrape
            .samples
            .iter()
            .find(|s| s.metric == "tandem_build_info")
            .unwrap_or_else(|| panic!("{}: no tandem_build_info", node.id));
        assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
        assert!(build.labels.get("commit").is_some_and(|c| !c.is_empty()));
        if node.kind == "router" {
            let has = |metric: &str, label: &str, value: &str| {
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == metric && s.labels.get(label) == Some(value))
            };
            assert!(has("router_endpoints", "state", "healthy"), "{}", node.id);
            assert!(has("router_endpoints", "state", "ejected"), "{}", node.id);
            for region in &topology.regions {
                assert!(
                    has("router_dial_percent", "region", &region.name),
                    "{}",
                    node.id
                );
            }
        }
    }
    router_names
}

/// The family a sample belongs to: histograms' `_bucket`, `_sum` and
/// `_count` series are documented under the histogram's name.
pub fn family_of<'a>(metric: &'a str, docs: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = metric.strip_suffix(suffix) {
            if docs.contains_key(base) {
                return base;
            }
        }
    }
    metric
}
