//! The public `tandem.v1.Search` gRPC service.
//!
//! A call's way through the router: deadline, authentication, validation,
//! traffic dial (serve here or forward to the paired region), fan-out with
//! fallback and hedging, merge, and an answer that says which route it took.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use tandem_common::grpc_metrics::REQUEST_ID_HEADER;
use tandem_proto::v1::search_server::Search;
use tandem_proto::v1::{SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::catalog::{bearer_token, is_valid_id, verify_key, AuthOutcome, KeyCheck};
use crate::config::ms;
use crate::deadline::deadline_for;
use crate::dial::{decide, draw, Decision, DialInput, FORWARDED_HEADER};
use crate::fanout::{self, CallContext, MAX_WINDOW};
use crate::forward::{self, Forwarded};
use crate::replicas::ReplicaMap;
use crate::state::RouterState;

/// Longest query text accepted, in bytes.
const MAX_QUERY_BYTES: usize = 4096;
/// Most filters per query.
const MAX_FILTERS: usize = 32;
/// Longest suggestion prefix accepted, in bytes.
const MAX_PREFIX_BYTES: usize = 256;
/// Most suggestions per call.
const MAX_SUGGESTIONS: u32 = 100;

/// See the module documentation.
#[derive(Clone)]
pub struct SearchService {
    state: Arc<RouterState>,
}

impl SearchService {
    /// A service over the router's shared state.
    pub fn new(state: Arc<RouterState>) -> Self {
        Self { state }
    }

    /// Authenticates the caller for `tenant` and returns its replica map.
    ///
    /// Missing key: UNAUTHENTICATED. A key of no tenant: UNAUTHENTICATED.
    /// Another tenant's key: PERMISSION_DENIED. Unknown tenant: NOT_FOUND,
    /// but only to a caller holding some valid key, so that tenant ids
    /// cannot be enumerated anonymously.
    fn authorize(&self, metadata: &MetadataMap, tenant: &str) -> Result<Arc<ReplicaMap>, Status> {
        let key = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <api key>`"))?;
        if !is_valid_id(tenant) {
            return Err(Status::invalid_argument(
                "tenant id must be 1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit",
            ));
        }
        let catalog = self.state.catalog.current();
        if let Some(map) = self.state.cache.get(&catalog, tenant, &self.state.region) {
            if verify_key(&map.tenant, key) == KeyCheck::Valid {
                return Ok(map);
            }
        }
        match catalog.authorize(tenant, Some(key)) {
            AuthOutcome::Authorized(_) => self
                .state
                .cache
                .get(&catalog, tenant, &self.state.region)
                .ok_or_else(|| Status::not_found(format!("tenant {tenant:?} not found"))),
            AuthOutcome::Unauthenticated => Err(Status::unauthenticated("API key not accepted")),
            AuthOutcome::PermissionDenied => Err(Status::permission_denied(format!(
                "this API key may not query tenant {tenant:?}"
            ))),
            AuthOutcome::TenantNotFound => {
                Err(Status::not_found(format!("tenant {tenant:?} not found")))
            }
        }
    }

    /// Where to serve: `Some(router)` to forward to the paired region.
    fn dial(
        &self,
        map: &ReplicaMap,
        forwarded_from: Option<&str>,
    ) -> Option<Arc<crate::catalog::Node>> {
        let paired = self.state.paired_router_up();
        let input = DialInput {
            dial_percent: self.state.dials.get(&self.state.region),
            already_forwarded: forwarded_from.is_some(),
            paired_router_healthy: paired.is_some(),
            tenant_active_active: map.tenant.active_active,
            draw: draw(&mut rand::rng()),
        };
        let (decision, reason) = decide(&input);
        if decision == Decision::Forward {
            metrics::counter!("router_forwarded_total", "reason" => reason.as_str()).increment(1);
            paired
        } else {
            None
        }
    }

    fn context(&self, metadata: &MetadataMap) -> CallContext {
        let config = &self.state.config;
        CallContext {
            deadline: deadline_for(
                metadata,
                ms(config.default_timeout_ms),
                ms(config.max_timeout_ms),
            ),
            request_id: metadata
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        }
    }
}

fn forwarded_from(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn validate_search(req: &SearchRequest) -> Result<(), Status> {
    let top_k = if req.top_k == 0 { 10 } else { req.top_k };
    if top_k > MAX_WINDOW {
        return Err(Status::invalid_argument(format!(
            "top_k {top_k} is over the limit of {MAX_WINDOW}"
        )));
    }
    if req.offset.saturating_add(top_k) > MAX_WINDOW {
        return Err(Status::invalid_argument(format!(
            "offset + top_k may be at most {MAX_WINDOW}"
        )));
    }
    if req.query.len() > MAX_QUERY_BYTES {
        return Err(Status::invalid_argument(format!(
            "query is {} bytes; at most {MAX_QUERY_BYTES} are allowed",
            req.query.len()
        )));
    }
    if req.filters.len() > MAX_FILTERS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_FILTERS} filters are allowed"
        )));
    }
    Ok(())
}

fn validate_suggest(req: &SuggestRequest) -> Result<(), Status> {
    if req.prefix.trim().is_empty() {
        return Err(Status::invalid_argument("prefix is empty"));
    }
    if req.prefix.len() > MAX_PREFIX_BYTES {
        return Err(Status::invalid_argument(format!(
            "prefix is {} bytes; at most {MAX_PREFIX_BYTES} are allowed",
            req.prefix.len()
        )));
    }
    if req.k > MAX_SUGGESTIONS {
        return Err(Status::invalid_argument(format!(
            "k may be at most {MAX_SUGGESTIONS}"
        )));
    }
    Ok(())
}

fn count(method: &'static str, result: &Result<(&str, bool), &Status>) {
    let (outcome, region) = match result {
        Ok((region, degraded)) => (
            if *degraded { "degraded" } else { "ok" },
            region.to_string(),
        ),
        Err(status) => (code_label(status.code()), String::new()),
    };
    metrics::counter!("router_requests_total", "method" => method, "outcome" => outcome,
        "served_region" => region)
    .increment(1);
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        InvalidArgument => "invalid_argument",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission_denied",
        NotFound => "not_found",
        DeadlineExceeded => "deadline_exceeded",
        Unavailable => "unavailable",
        _ => "error",
    }
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let started = StdInstant::now();
        let ctx = self.context(request.metadata());
        let from = forwarded_from(request.metadata());
        let result = async {
            let map = self.authorize(request.metadata(), &request.get_ref().tenant)?;
            validate_search(request.get_ref())?;
            if let Some(router) = self.dial(&map, from.as_deref()) {
                let message = request.get_ref().clone();
                if let Forwarded::Answer(answer) =
                    forward::search(&self.state, &router, message, request.metadata(), &ctx).await
                {
                    return answer;
                }
            }
            let mut response = fanout::search(&self.state, &map, request.get_ref(), &ctx).await?;
            if let Some(route) = response.route.as_mut() {
                route.entry_region = from
                    .clone()
                    .unwrap_or_else(|| self.state.region.to_string());
                route.forwarded = from.is_some();
            }
            Ok(response)
        }
        .await;
        let mut result = result;
        if let Ok(response) = result.as_mut() {
            response.took_micros = started.elapsed().as_micros() as u64;
        }
        count(
            "Search",
            &result.as_ref().map(|r| {
                (
                    r.route.as_ref().map_or("", |x| x.served_region.as_str()),
                    !r.degraded.is_empty(),
                )
            }),
        );
        metrics::histogram!("router_request_seconds", "method" => "Search")
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn suggest(
        &self,
        request: Request<SuggestRequest>,
    ) -> Result<Response<SuggestResponse>, Status> {
        let started = StdInstant::now();
        let ctx = self.context(request.metadata());
        let from = forwarded_from(request.metadata());
        let result = async {
            let map = self.authorize(request.metadata(), &request.get_ref().tenant)?;
            validate_suggest(request.get_ref())?;
            if let Some(router) = self.dial(&map, from.as_deref()) {
                let message = request.get_ref().clone();
                if let Forwarded::Answer(answer) =
                    forward::suggest(&self.state, &router, message, request.metadata(), &ctx).await
                {
                    return answer;
                }
            }
            let mut response = fanout::suggest(&self.state, &map, request.get_ref(), &ctx).await?;
            if let Some(route) = response.route.as_mut() {
                route.entry_region = from
                    .clone()
                    .unwrap_or_else(|| self.state.region.to_string());
                route.forwarded = from.is_some();
            }
            Ok(response)
        }
        .await;
        count(
            "Suggest",
            &result.as_ref().map(|r| {
                (
                    r.route.as_ref().map_or("", |x| x.served_region.as_str()),
                    !r.degraded.is_empty(),
                )
            }),
        );
        metrics::histogram!("router_request_seconds", "method" => "Suggest")
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}
