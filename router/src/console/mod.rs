//! The operator's web console, served on the router's admin listener.
//!
//! `GET /` (and `/console`) is one page of plain HTML and a small script
//! ([`PAGE`], embedded in the binary, no build step). The page shows
//! nothing without the admin token, which it takes from a login field or
//! the URL fragment (`#token=...`, never sent to the server as part of a
//! URL) and sends as `authorization: Bearer` to the JSON endpoints below,
//! each checked like an admin RPC (the same token and brake):
//!
//! - `GET /console/api/status`: the router's `Status` (regions, dials,
//!   endpoints with health and latency, ramps) and the catalog's tenants
//!   with their replicas and leaders;
//! - `GET /console/api/metrics`: the router's request counters and latency
//!   histogram in the Prometheus text format, for the live chart;
//! - `POST /console/api/search` `{tenant, key, query}`: a search through
//!   this router's public path, with the tenant's key, answered with the
//!   hits and the route;
//! - `POST /console/api/dial` `{region, percent}`: this router's dial (as
//!   `RouterAdmin.SetDial`; `tandem dial` records it for every router).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tandem_common::admin_guard::AdminGuard;
use tandem_proto::v1::SearchRequest;
use tonic::metadata::MetadataMap;

use crate::service::SearchService;
use crate::state::RouterState;

/// The page.
pub const PAGE: &str = include_str!("page.html");

struct Console {
    state: Arc<RouterState>,
    guard: Arc<AdminGuard>,
    search: SearchService,
}

/// The console's routes, to serve beside the admin API.
pub fn router(state: Arc<RouterState>, guard: Arc<AdminGuard>) -> axum::Router {
    let console = Arc::new(Console {
        search: SearchService::new(state.clone()),
        state,
        guard,
    });
    axum::Router::new()
        .route("/", get(page))
        .route("/console", get(page))
        .route("/console/api/status", get(status))
        .route("/console/api/metrics", get(metrics_text))
        .route("/console/api/search", post(search))
        .route("/console/api/dial", post(dial))
        .with_state(console)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl Console {
    /// The admin token check of every endpoint: the answer to a refused
    /// call, `None` for an admitted one.
    fn refused(&self, headers: &HeaderMap) -> Option<Response> {
        let metadata = MetadataMap::from_headers(headers.clone());
        let status = self.guard.check(&metadata).err()?;
        let code = match status.code() {
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNAUTHORIZED,
        };
        Some(error(code, status.message()))
    }
}

async fn status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(refused) = c.refused(&headers) {
        return refused;
    }
    let catalog = c.state.catalog.current();
    let tenants: Vec<serde_json::Value> = catalog
        .tenants()
        .map(|t| {
            let shards: Vec<serde_json::Value> = t
                .shards
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "shard": s.number,
                        "leader": &*s.leader.node.id,
                        "epoch": s.leader.epoch,
                        "replicas": s.replicas.iter().map(|n| serde_json::json!({"node": &*n.id, "region": &*n.region})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::json!({
                "id": &*t.id, "home": &*t.home, "active_active": t.active_active, "ramp": t.ramp,
                "shards": shards,
                "models": t.model_replicas.iter().map(|n| &*n.id).collect::<Vec<_>>(),
            })
        })
        .collect();
    json(&serde_json::json!({
        "status": crate::admin::status(&c.state),
        "tenants": tenants,
    }))
}

async fn metrics_text(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(refused) = c.refused(&headers) {
        return refused;
    }
    let text = match tandem_common::telemetry::recorder() {
        Ok(handle) => handle.render(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let wanted: String = text
        .lines()
        .filter(|l| {
            l.starts_with("router_requests_total") || l.starts_with("router_request_seconds")
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        wanted,
    )
        .into_response()
}

#[derive(Deserialize)]
struct ConsoleSearch {
    tenant: String,
    key: String,
    query: String,
}

async fn search(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = c.refused(&headers) {
        return refused;
    }
    let Ok(asked) = serde_json::from_slice::<ConsoleSearch>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"tenant\", \"key\", \"query\"}",
        );
    };
    let mut metadata = MetadataMap::new();
    match format!("Bearer {}", asked.key).parse() {
        Ok(value) => {
            metadata.insert("authorization", value);
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "the key is not a header value"),
    }
    let request = SearchRequest {
        tenant: asked.tenant,
        query: asked.query,
        ..Default::default()
    };
    let admission = c.search.admit(&metadata, &tonic::Extensions::default());
    match c.search.handle(admission, &metadata, &request).await {
        Ok(answer) => json(&answer),
        Err(status) => json(&serde_json::json!({
            "error": format!("{}: {}", tandem_common::grpc_metrics::code_name(status.code()), status.message()),
        })),
    }
}

#[derive(Deserialize)]
struct ConsoleDial {
    region: String,
    percent: u32,
}

async fn dial(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = c.refused(&headers) {
        return refused;
    }
    let Ok(asked) = serde_json::from_slice::<ConsoleDial>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"region\", \"percent\"}",
        );
    };
    match crate::admin::set_dial(&c.state, &asked.region, asked.percent) {
        Ok(()) => json(&serde_json::json!({"region": asked.region, "percent": asked.percent})),
        Err(status) => error(StatusCode::BAD_REQUEST, status.message()),
    }
}
