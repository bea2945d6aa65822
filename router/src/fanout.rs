//! Serving a query from replicas: one call per shard in parallel plus the
//! tenant's model, then merging (or, for one shard and no model, relaying
//! the shard's hits as they came).
//!
//! Boosts come from the model concurrently with the shard searches (never
//! before them: the model must not add its latency to every query), so the
//! router applies them itself: each shard is asked for a few more hits than
//! the page needs, boosted documents' scores become `score * (1 + weight)`,
//! and the merged list is cut to the page. A boosted document ranked just
//! below the page can thus move onto it; one ranked far below cannot (the
//! over-fetch bounds the cost).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use prost::Message;
use tandem_common::grpc_metrics::REQUEST_ID_HEADER_NAME;
use tandem_common::unary::{self, encode_frame};
use tandem_proto::paths;
use tandem_proto::v1::{
    BoostsRequest, BoostsResponse, ModelSuggestRequest, ModelSuggestResponse, Route, SearchRequest,
    SearchResponse, ShardRoute, ShardSearchRequest, ShardSearchResponse, SuggestRequest,
    SuggestResponse,
};
use tokio::time::Instant;
use tonic::Status;

use crate::channels::NodeChannel;
use crate::config::ms;
use crate::fallback::{is_unavailability, Outcome, Target};
use crate::raw_hits::{RawHit, WithRawHits};
use crate::replicas::{ReplicaMap, MODEL_SCOPE};
use crate::state::RouterState;

/// Largest page end (`offset + top_k`) a search may ask for: each shard is
/// asked for the whole window.
pub const MAX_WINDOW: u32 = 1000;
/// Boosts asked of the model per query.
const MAX_BOOSTS: u32 = 50;
/// Extra hits fetched per shard so that boosted documents can move up.
const OVERFETCH: usize = 20;

/// Per-call context passed down to every downstream request.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The caller's deadline.
    pub deadline: Instant,
    /// The request id, propagated as `x-request-id`.
    pub request_id: String,
    /// Metadata every downstream call carries (the request id).
    pub metadata: Vec<(HeaderName, HeaderValue)>,
}

impl CallContext {
    /// The context of a call that must end by `deadline`.
    pub fn new(deadline: Instant, request_id: String) -> Self {
        let metadata = HeaderValue::try_from(request_id.as_str())
            .map(|mut v| {
                unary::once_only(&mut v);
                vec![(REQUEST_ID_HEADER_NAME, v)]
            })
            .unwrap_or_default();
        Self {
            deadline,
            request_id,
            metadata,
        }
    }
}

/// One attempt of a unary call: `frame` to `path` on `channel`.
async fn attempt<Resp: Message + Default>(
    channel: NodeChannel,
    path: &'static str,
    frame: Bytes,
    timeout: Duration,
    ctx: &CallContext,
) -> Result<Resp, Status> {
    unary::call(&channel, path, frame, timeout, &ctx.metadata).await
}

/// A search answer whose hits stay as the index-nodes encoded them (see
/// [`crate::raw_hits`]); on the wire it is a `SearchResponse`.
pub type SearchAnswer = WithRawHits<SearchResponse>;

/// Runs a search over the tenant's shards and model.
pub async fn search(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SearchRequest,
    ctx: &CallContext,
) -> Result<SearchAnswer, Status> {
    if relays_hits(map) {
        search_shards::<false>(state, map, req, ctx).await
    } else {
        search_shards::<true>(state, map, req, ctx).await
    }
}

/// One shard and no model (the common tenant): nothing to merge and nothing
/// to re-score, and the node sends its hits in the order the merge would
/// put them (see `ShardSearchResponse`), so they are relayed without being
/// read. Reading them was about 5K of the router's 125K instructions per
/// search (callgrind, router benchmark).
fn relays_hits(map: &ReplicaMap) -> bool {
    map.shards.len() == 1 && map.models.is_empty()
}

/// [`search`], with the shards' hits read for merging (`READ`) or relayed.
async fn search_shards<const READ: bool>(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SearchRequest,
    ctx: &CallContext,
) -> Result<SearchAnswer, Status> {
    // Relayed hits cannot be merged or re-scored (their scores are unread).
    debug_assert!(READ || relays_hits(map));
    let top_k = if req.top_k == 0 { 10 } else { req.top_k } as usize;
    let window = req.offset as usize + top_k;
    // Without a model there are no boosts, so nothing can move up.
    let headroom = if map.models.is_empty() {
        0
    } else {
        OVERFETCH.min(window)
    };
    let fetch = (window + headroom).min(MAX_WINDOW as usize) as u32;
    let per_try = ms(state.config.per_try_timeout_ms);
    let tenant = &map.tenant.id;

    let shard_calls = map.shards.iter().map(|s| {
        let frame = encode_frame(&ShardSearchRequest {
            tenant: String::from(&**tenant),
            shard: s.shard,
            query: req.query.clone(),
            top_k: fetch,
            offset: 0,
            filters: req.filters.clone(),
            strict: req.strict,
            boosts: HashMap::new(),
            no_snippets: false,
        });
        let target = Target {
            replicas: &s.replicas,
            tenant,
            scope: s.shard,
            kind: "index",
        };
        state
            .resilience
            .call(target, ctx.deadline, per_try, move |channel, timeout| {
                attempt::<WithRawHits<ShardSearchResponse, READ>>(
                    channel,
                    paths::SEARCH_SHARD,
                    frame.clone(),
                    timeout,
                    ctx,
                )
            })
    });
    let boosts_call = async {
        if map.models.is_empty() || req.query.trim().is_empty() {
            return None;
        }
        let (deadline, per_try) = model_budget(state, ctx.deadline);
        let frame = encode_frame(&BoostsRequest {
            tenant: String::from(&**tenant),
            query: req.query.clone(),
            max: MAX_BOOSTS,
        });
        let target = Target {
            replicas: &map.models,
            tenant,
            scope: MODEL_SCOPE,
            kind: "model",
        };
        Some(
            state
                .resilience
                .call(target, deadline, per_try, move |channel, timeout| {
                    attempt::<BoostsResponse>(channel, paths::BOOSTS, frame.clone(), timeout, ctx)
                })
                .await,
        )
    };
    let (shards, boosts) = tokio::join!(futures::future::join_all(shard_calls), boosts_call);

    let mut response = SearchResponse::default();
    let mut route = Route::default();
    let mut hits: Vec<RawHit> = Vec::new();
    for (replicas, outcome) in map.shards.iter().zip(shards) {
        route.fallback |= outcome.fallback;
        route.shards.push(shard_route(replicas.shard, &outcome));
        match outcome.result {
            Ok(answer) => {
                response.total_hits += answer.head.total_hits;
                if hits.is_empty() {
                    hits = answer.hits;
                } else {
                    hits.extend(answer.hits);
                }
            }
            Err(status) if req.allow_partial && is_unavailability(&status) => {
                tracing::warn!(tenant = %tenant, shard = replicas.shard, request_id = %ctx.request_id, error = %status.message(), "shard missing from partial results");
                if !response.degraded.iter().any(|d| d == "partial") {
                    response.degraded.push("partial".to_string());
                }
            }
            Err(status) => return Err(shard_failure(replicas.shard, status)),
        }
    }
    route.served_region = route
        .shards
        .iter()
        .find(|s| !s.region.is_empty())
        .map(|s| s.region.clone())
        .unwrap_or_default();

    match boosts {
        None => {}
        Some(Outcome {
            result: Ok(answer),
            node,
            ..
        }) => {
            route.model_node = node.map(|n| String::from(&*n.id)).unwrap_or_default();
            let weights: HashMap<&[u8], f32> = answer
                .boosts
                .iter()
                .filter(|b| b.weight.is_finite() && b.weight > 0.0)
                .map(|b| (b.doc_id.as_bytes(), b.weight))
                .collect();
            for hit in &mut hits {
                if let Some(w) = weights.get(hit.id()) {
                    hit.rescore(hit.score() * (1.0 + w));
                }
            }
        }
        Some(Outcome {
            result: Err(status),
            ..
        }) => {
            metrics::counter!("router_degraded_total", "what" => "model").increment(1);
            tracing::debug!(tenant = %tenant, error = %status.message(), "no boosts: degraded");
            response.degraded.push("model".to_string());
        }
    }

    if READ {
        hits.sort_by(|a, b| {
            b.score()
                .total_cmp(&a.score())
                .then(a.shard().cmp(&b.shard()))
                .then_with(|| a.id().cmp(b.id()))
        });
    }
    response.route = Some(route);
    Ok(SearchAnswer {
        head: response,
        hits: hits
            .into_iter()
            .skip(req.offset as usize)
            .take(top_k)
            .collect(),
    })
}

/// Suggestions from the tenant's model replicas; no model answering is a
/// degraded (empty) answer, not an error.
pub async fn suggest(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SuggestRequest,
    ctx: &CallContext,
) -> Result<SuggestResponse, Status> {
    let mut response = SuggestResponse::default();
    let mut route = Route::default();
    if map.models.is_empty() {
        response.degraded.push("model".to_string());
        response.route = Some(route);
        return Ok(response);
    }
    let tenant = &map.tenant.id;
    let frame = encode_frame(&ModelSuggestRequest {
        tenant: String::from(&**tenant),
        prefix: req.prefix.clone(),
        k: req.k,
    });
    let target = Target {
        replicas: &map.models,
        tenant,
        scope: MODEL_SCOPE,
        kind: "model",
    };
    let per_try = ms(state.config.per_try_timeout_ms);
    let outcome = state
        .resilience
        .call(target, ctx.deadline, per_try, move |channel, timeout| {
            attempt::<ModelSuggestResponse>(
                channel,
                paths::MODEL_SUGGEST,
                frame.clone(),
                timeout,
                ctx,
            )
        })
        .await;
    route.fallback = outcome.fallback;
    if let Some(node) = &outcome.node {
        route.served_region = String::from(&*node.region);
    }
    match outcome.result {
        Ok(answer) => {
            route.model_node = answer.node.clone();
            response.suggestions = answer.suggestions;
        }
        Err(status) if is_unavailability(&status) => {
            metrics::counter!("router_degraded_total", "what" => "model").increment(1);
            route.served_region.clear();
            response.degraded.push("model".to_string());
        }
        Err(status) => return Err(status),
    }
    response.route = Some(route);
    Ok(response)
}

/// The model gets at most `model_timeout` of the caller's deadline: boosts
/// are an improvement, not a reason to be slow.
fn model_budget(state: &RouterState, deadline: Instant) -> (Instant, Duration) {
    let budget = ms(state.config.model_timeout_ms);
    let model_deadline = deadline.min(Instant::now() + budget);
    (
        model_deadline,
        budget.min(ms(state.config.per_try_timeout_ms)),
    )
}

/// (Here and throughout this module, `Arc<str>` ids and regions are copied
/// with `String::from`, not `to_string`, which for an `Arc<str>` goes
/// through the formatting machinery on every call.)
fn shard_route<T>(shard: u32, outcome: &Outcome<T>) -> ShardRoute {
    let answered = outcome.result.is_ok();
    ShardRoute {
        shard,
        node: match (&outcome.node, answered) {
            (Some(n), true) => String::from(&*n.id),
            _ => String::new(),
        },
        region: match (&outcome.node, answered) {
            (Some(n), true) => String::from(&*n.region),
            _ => String::new(),
        },
        attempts: outcome.attempts,
        hedged: outcome.hedged,
    }
}

/// The status a query fails with when a shard could not be served.
fn shard_failure(shard: u32, status: Status) -> Status {
    match status.code() {
        tonic::Code::DeadlineExceeded => status,
        code if is_unavailability(&status) => replicas_exhausted(format!(
            "shard {shard} has no live replica ({code:?}: {}); set allow_partial to accept results without it",
            status.message()
        )),
        _ => status,
    }
}

/// UNAVAILABLE marked as being about the tenant's replicas (see
/// [`tandem_proto::REPLICAS_EXHAUSTED_KEY`]), so that clients do not fail
/// over to another router that would find the same replicas gone.
fn replicas_exhausted(message: String) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        tandem_proto::REPLICAS_EXHAUSTED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    Status::with_metadata(tonic::Code::Unavailable, message, metadata)
}
