//! The Grafana dashboard (`deploy/grafana/tandem.json`) against what a
//! running cluster exports: every metric a panel queries is one of
//! tandem's (with HELP text) and is on some process's `/metrics`.

use std::collections::BTreeSet;

use tandem_client::Topology;

/// The tandem metrics the dashboard's queries name (histograms by their
/// own name, without `_bucket`).
pub fn queried_metrics() -> BTreeSet<String> {
    let path = crate::repo_root().join("deploy/grafana/tandem.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            names.extend(metric_names(expr).map(|n| n.trim_end_matches("_bucket").to_string()));
        }
    }
    names
}

/// The metric names in a PromQL expression: identifiers followed by a
/// selector (`{` or `[`), not labels, functions or keywords.
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices().chain([(expr.len(), ' ')]) {
        match (start, ident(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                if matches!(c, '{' | '[') {
                    out.push(&expr[s..i]);
                }
                start = None;
            }
            _ => {}
        }
    }
    out.into_iter()
}

/// Every metric the dashboard queries is one of tandem's and exported by
/// some process of `topology` right now.
pub fn assert_dashboard_served(topology: &Topology) {
    let mut exported = BTreeSet::new();
    for (_, scrape) in crate::exposition::scrapes(topology) {
        for sample in &scrape.samples {
            let family = crate::exposition::family_of(&sample.metric, &scrape.docs);
            exported.insert(family.to_string());
        }
    }
    let queried = queried_metrics();
    assert!(queried.len() > 10, "{queried:?}");
    for name in &queried {
        assert!(
            tandem_common::metric_help::help(name).is_some(),
            "the dashboard queries {name}, which tandem does not define"
        );
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which no process exports"
        );
    }
}
