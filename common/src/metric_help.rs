//! Every metric a tandem process exports, with its type and HELP text: one
//! table, described to the recorder when it is installed, so every series
//! on `/metrics` has `# HELP` and `# TYPE` lines (the exporter writes a
//! description only for series that exist). `docs/operations.md` lists the
//! same names (a test keeps the two together), and `tandem_build_info`
//! says which build runs.

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (buckets in seconds).
    Histogram,
}

/// (name, type, HELP text) of every metric.
pub const METRICS: &[(&str, Kind, &str)] = &[
    // Every process.
    (
        "grpc_server_started_total",
        Kind::Counter,
        "gRPC calls started, by service and method.",
    ),
    (
        "grpc_server_handled_total",
        Kind::Counter,
        "gRPC calls finished, by service, method and canonical status code.",
    ),
    (
        "grpc_server_handling_seconds",
        Kind::Histogram,
        "Time to answer a gRPC call, by service and method.",
    ),
    (
        "tandem_build_info",
        Kind::Gauge,
        "Always 1; the labels name the build (version, commit).",
    ),
    (
        "tandem_tls_reloads_total",
        Kind::Counter,
        "Changed TLS files put in force (applied) or refused.",
    ),
    (
        "tandem_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes that failed on a listener, by reason.",
    ),
    (
        "tandem_connections_refused_total",
        Kind::Counter,
        "Connections closed at once because their listener held its most connections.",
    ),
    (
        "tandem_connections_silent_total",
        Kind::Counter,
        "Connections closed because they sent nothing within 10 s of being accepted.",
    ),
    (
        "tandem_connections_slow_headers_total",
        Kind::Counter,
        "Connections closed because a request's header block took too long to arrive.",
    ),
    ("faults_active", Kind::Gauge, "Injected faults in force."),
    // Router.
    (
        "router_requests_total",
        Kind::Counter,
        "Public calls by method, outcome and the region whose replicas served them.",
    ),
    (
        "router_request_seconds",
        Kind::Histogram,
        "Time to answer a public call, by method.",
    ),
    (
        "router_fallbacks_total",
        Kind::Counter,
        "Shard or model calls moved to the next replica after a failure.",
    ),
    (
        "router_hedges_total",
        Kind::Counter,
        "Hedged calls sent to the next replica.",
    ),
    (
        "router_attempt_failures_total",
        Kind::Counter,
        "Failed attempts of shard and model calls, retried or not, by reason.",
    ),
    (
        "router_retry_budget_exhausted_total",
        Kind::Counter,
        "Retries or hedges refused by the retry budget.",
    ),
    (
        "router_shed_total",
        Kind::Counter,
        "Searches answered RESOURCE_EXHAUSTED, by who shed them (router, node, quota).",
    ),
    (
        "router_admission_limit",
        Kind::Gauge,
        "The router's adaptive admission limit: searches in flight it admits.",
    ),
    (
        "router_ejections_total",
        Kind::Counter,
        "Endpoints or endpoint shards ejected by outlier detection.",
    ),
    (
        "router_readmissions_total",
        Kind::Counter,
        "Ejected or probation endpoints made healthy again.",
    ),
    (
        "router_endpoints",
        Kind::Gauge,
        "Index and model endpoints of the catalog by kind and health state.",
    ),
    (
        "router_forwarded_total",
        Kind::Counter,
        "Calls forwarded to the paired region by the dial.",
    ),
    (
        "router_forward_failures_total",
        Kind::Counter,
        "Forwarded calls that failed to reach the paired router and were served here.",
    ),
    (
        "router_degraded_total",
        Kind::Counter,
        "Answers degraded because a model call failed or ran out of time.",
    ),
    (
        "router_replica_cache_total",
        Kind::Counter,
        "Replica-map cache lookups by result.",
    ),
    (
        "router_catalog_reloads_total",
        Kind::Counter,
        "Catalog reloads, replaced or refused.",
    ),
    (
        "router_dial_percent",
        Kind::Gauge,
        "Each region's traffic dial, percent served by the region's own replicas.",
    ),
    (
        "router_auto_dial_changes_total",
        Kind::Counter,
        "Health-driven dial: this region's traffic shifted away or back.",
    ),
    (
        "router_auto_dial_shifted",
        Kind::Gauge,
        "1 while the health-driven dial holds this region's traffic away.",
    ),
    (
        "router_dns_changes_total",
        Kind::Counter,
        "Node names that resolved to a new address while connected.",
    ),
    (
        "router_dns_failures_total",
        Kind::Counter,
        "Re-resolutions of connected nodes' names that failed (the connection is kept).",
    ),
    (
        "router_writes_total",
        Kind::Counter,
        "Documents.Write calls by status code.",
    ),
    (
        "router_written_ops_total",
        Kind::Counter,
        "Upserts and deletes acknowledged.",
    ),
    (
        "router_events_total",
        Kind::Counter,
        "Usage events handed to the recorder, by kind (search, click).",
    ),
    (
        "router_events_dropped_total",
        Kind::Counter,
        "Usage events dropped: the recorder's buffer was full or its file unwritable.",
    ),
    (
        "router_events_shipped_bytes_total",
        Kind::Counter,
        "Compressed bytes of usage events put in the object store.",
    ),
    (
        "router_events_ship_errors_total",
        Kind::Counter,
        "Rounds of event shipping that failed (retried at the next round).",
    ),
    (
        "router_clicks_total",
        Kind::Counter,
        "Events.Click calls by status code.",
    ),
    (
        "router_write_seconds",
        Kind::Histogram,
        "Time to answer a write.",
    ),
    // Index-node.
    (
        "index_search_seconds",
        Kind::Histogram,
        "Time of a successful shard search, queue wait included.",
    ),
    (
        "index_docs_ingested_total",
        Kind::Counter,
        "Documents upserted.",
    ),
    (
        "index_docs_deleted_total",
        Kind::Counter,
        "Deletes applied.",
    ),
    ("index_open_shards", Kind::Gauge, "Shards open right now."),
    (
        "index_searcher_cache_total",
        Kind::Counter,
        "Lookups of an open shard, hit or miss.",
    ),
    (
        "index_shards_quarantined_total",
        Kind::Counter,
        "Shards moved to the quarantine directory at start because their files do not open.",
    ),
    (
        "index_search_shed_total",
        Kind::Counter,
        "Searches refused by the search pool, by reason (queue_full, queue_timeout).",
    ),
    (
        "index_search_behind_total",
        Kind::Counter,
        "Searches whose consistency token this replica had not reached in time.",
    ),
    (
        "index_commit_seconds",
        Kind::Histogram,
        "Time of a tantivy commit.",
    ),
    (
        "index_replication_shipped_ops_total",
        Kind::Counter,
        "Log records a leader sent to followers.",
    ),
    (
        "index_replication_shipped_bytes_total",
        Kind::Counter,
        "Bytes of log records a leader sent to followers.",
    ),
    (
        "index_replication_applied_ops_total",
        Kind::Counter,
        "Log records a follower pulled and wrote.",
    ),
    (
        "index_replication_lag_ops",
        Kind::Gauge,
        "Largest lag in operations among the shards this node follows.",
    ),
    (
        "index_replication_lag_seconds",
        Kind::Gauge,
        "Largest lag in seconds among the shards this node follows.",
    ),
    (
        "index_oplog_bytes",
        Kind::Gauge,
        "Bytes of the operation logs of the shards with a writer.",
    ),
    (
        "index_snapshots_taken_total",
        Kind::Counter,
        "Snapshots uploaded to the snapshot store.",
    ),
    (
        "index_snapshot_bytes_total",
        Kind::Counter,
        "Bytes of the snapshots uploaded.",
    ),
    (
        "index_bootstrap_bytes_total",
        Kind::Counter,
        "Snapshot bytes installed by bootstraps.",
    ),
    (
        "index_bootstraps_in_progress",
        Kind::Gauge,
        "Replicas installing a snapshot right now.",
    ),
    // Model-node.
    (
        "model_suggest_seconds",
        Kind::Histogram,
        "Time of a successful Suggest.",
    ),
    (
        "model_boosts_seconds",
        Kind::Histogram,
        "Time of a successful Boosts.",
    ),
    (
        "model_load_seconds",
        Kind::Histogram,
        "Time to read and decode a model artifact.",
    ),
    (
        "model_loaded_models",
        Kind::Gauge,
        "Tenants with a model served.",
    ),
    (
        "model_reloads_total",
        Kind::Counter,
        "Model loads by result and trigger.",
    ),
    (
        "model_store_sync_errors_total",
        Kind::Counter,
        "Polls of the model store that failed (the models served stay).",
    ),
];

/// The commit this binary was built from (`unknown` outside a git
/// checkout, as in a container build without `.git`).
pub const COMMIT: &str = env!("TANDEM_COMMIT");

/// The version and commit, as `--version` prints them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TANDEM_COMMIT"),
    ")"
);

/// Describes every metric of [`METRICS`] to the installed recorder and
/// sets `tandem_build_info`.
pub fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    metrics::gauge!("tandem_build_info",
        "version" => env!("CARGO_PKG_VERSION"), "commit" => COMMIT)
    .set(1.0);
}

/// The HELP text of `name`, if it is one of tandem's metrics.
pub fn help(name: &str) -> Option<&'static str> {
    METRICS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, _, h)| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_operations_guide_lists_each() {
        let guide = include_str!("../../docs/operations.md");
        let mut seen = std::collections::HashSet::new();
        for (name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} twice");
            assert!(help.ends_with('.'), "{name}");
            // The recorder's buckets are set for names ending in _seconds.
            if *kind == Kind::Histogram {
                assert!(name.ends_with("_seconds"), "{name}");
            }
            assert!(
                guide.contains(&format!("| `{name}` |")),
                "docs/operations.md does not list {name}"
            );
        }
    }
}
