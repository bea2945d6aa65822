//! Serving a query from replicas, in up to four steps, each fetching only
//! what the caller receives:
//!
//! 1. **boosts**: the tenant's model is asked first, within its own small
//!    budget (a slow or absent model degrades the answer, never fails it);
//! 2. **fetch**: one call per shard, in parallel, with the boosts, which
//!    the index-node applies while it ranks (so a boosted document can move
//!    onto the page from anywhere, and the router re-scores nothing). A
//!    lone shard is asked for exactly the page, with snippets: its answer
//!    is the page. Each of several shards is asked for the whole window
//!    (`offset + top_k`) without snippets;
//! 3. **merge** (several shards): the window's hits in one order (score,
//!    then shard, then id) and cut to the page;
//! 4. **snippets** (several shards): one call per shard with hits on the
//!    page, restricted to those documents, for their snippets. A shard
//!    that cannot answer leaves its hits without snippets, marked
//!    `degraded: ["snippets"]`.

use std::collections::HashMap;
use std::time::Duration;

use tandem_proto::v1::{
    BoostsRequest, Hit, ModelSuggestRequest, Route, SearchRequest, SearchResponse, ShardRoute,
    ShardSearchRequest, ShardSearchResponse, SuggestRequest, SuggestResponse,
};
use tokio::time::Instant;
use tonic::Status;

use crate::calls::{self, CallContext};
use crate::config::ms;
use crate::fallback::{is_unavailability, Outcome, Target};
use crate::replicas::{ReplicaMap, ShardReplicas, MODEL_SCOPE};
use crate::state::RouterState;
use crate::usage::Use;

/// Largest page end (`offset + top_k`) a search may ask for: each shard is
/// asked for the whole window.
pub const MAX_WINDOW: u32 = 1000;
/// Boosts asked of the model per query.
const MAX_BOOSTS: u32 = 50;
/// How long before the caller's deadline the snippet calls give up, so
/// that the page goes out without them rather than not at all.
const SNIPPETS_MARGIN: Duration = Duration::from_millis(5);

/// Which hits of the ranking the caller receives.
#[derive(Clone, Copy, Debug)]
struct Page {
    offset: u32,
    top_k: u32,
}

impl Page {
    fn of(req: &SearchRequest) -> Self {
        Page {
            offset: req.offset,
            top_k: if req.top_k == 0 { 10 } else { req.top_k },
        }
    }

    /// Hits each of several shards must return for the page to be exact.
    fn window(self) -> u32 {
        self.offset.saturating_add(self.top_k).min(MAX_WINDOW)
    }
}

/// Runs a search over the tenant's model and shards.
pub async fn search(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SearchRequest,
    ctx: &CallContext,
) -> Result<SearchResponse, Status> {
    let page = Page::of(req);
    let lone = map.shards.len() == 1;
    let min_seq = min_applied(map, req)?;
    let mut response = SearchResponse::default();
    let mut route = Route::default();
    let boosts = model_boosts(state, map, req, ctx, &mut route, &mut response.degraded).await;

    let ask = ShardSearchRequest {
        tenant: String::from(&*map.tenant.id),
        shard: 0,
        query: req.query.clone(),
        top_k: if lone { page.top_k } else { page.window() },
        offset: if lone { page.offset } else { 0 },
        filters: req.filters.clone(),
        strict: req.strict,
        boosts,
        no_snippets: !lone,
        ids: Vec::new(),
        min_applied_seq: 0,
    };
    let asks = map.shards.iter().map(|s| {
        let mut ask = ask.clone();
        ask.min_applied_seq = min_seq.get(s.shard as usize).copied().unwrap_or(0);
        (s, ask)
    });
    let outcomes = call_shards(state, map, ctx, asks).await;
    let mut hits = Vec::new();
    for (replicas, outcome) in map.shards.iter().zip(outcomes) {
        route.fallback |= outcome.fallback;
        route.shards.push(shard_route(replicas.shard, &outcome));
        match outcome.result {
            Ok(answer) => {
                count_cross_region(state, map, outcome.node.as_deref(), &answer);
                response.total_hits += answer.total_hits;
                if answer.truncated {
                    mark(&mut response.degraded, "truncated");
                }
                hits.extend(answer.hits);
            }
            Err(status) if req.allow_partial && is_unavailability(&status) => {
                tracing::warn!(tenant = %map.tenant.id, shard = replicas.shard, request_id = %ctx.request_id, error = %status.message(), "shard missing from partial results");
                mark(&mut response.degraded, "partial");
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

    if !lone {
        hits = merge(hits, page);
        fill_snippets(
            state,
            map,
            req,
            ctx,
            &min_seq,
            &mut hits,
            &mut response.degraded,
        )
        .await;
    }
    if tandem_common::limits::fit_hits(&mut hits) {
        mark(&mut response.degraded, "truncated");
    }
    response.hits = hits;
    response.route = Some(route);
    Ok(response)
}

/// Step 1: the model's boosts for this query, as the index-node takes them
/// (document id -> weight). Records the model node on the route, or marks
/// the answer degraded if no model replica answered in time.
async fn model_boosts(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SearchRequest,
    ctx: &CallContext,
    route: &mut Route,
    degraded: &mut Vec<String>,
) -> HashMap<String, f32> {
    if map.models.is_empty() || req.query.trim().is_empty() {
        return HashMap::new();
    }
    let (deadline, per_try) = model_budget(state, ctx.deadline);
    let message = BoostsRequest {
        tenant: String::from(&*map.tenant.id),
        query: req.query.clone(),
        max: MAX_BOOSTS,
    };
    let target = Target {
        replicas: &map.models,
        tenant: &map.tenant.id,
        scope: MODEL_SCOPE,
        kind: "model",
        request_id: &ctx.request_id,
    };
    let outcome = state
        .resilience
        .call(target, deadline, per_try, |_, channel, timeout| {
            calls::boosts(channel, message.clone(), timeout, ctx)
        })
        .await;
    match outcome.result {
        Ok(answer) => {
            count_cross_region(state, map, outcome.node.as_deref(), &answer);
            route.model_node = outcome
                .node
                .map(|n| String::from(&*n.id))
                .unwrap_or_default();
            answer
                .boosts
                .into_iter()
                .filter(|b| b.weight.is_finite() && b.weight > 0.0)
                .map(|b| (b.doc_id, b.weight))
                .collect()
        }
        Err(status) => {
            metrics::counter!("router_degraded_total", "what" => "model").increment(1);
            tracing::debug!(tenant = %map.tenant.id, error = %status.message(), "no boosts: degraded");
            mark(degraded, "model");
            HashMap::new()
        }
    }
}

/// Counts an answer from another region's `node` in the tenant's usage
/// (a cross-region call and its bytes).
fn count_cross_region(
    state: &RouterState,
    map: &ReplicaMap,
    node: Option<&crate::catalog::Node>,
    answer: &impl prost::Message,
) {
    if node.is_some_and(|n| n.region != state.region) {
        let bytes = answer.encoded_len() as u64;
        state.usage.record(&map.tenant.id, Use::CrossRegion(bytes));
    }
}

/// Calls `SearchShard` on each given shard's replicas (with fallback and
/// hedging), in parallel; outcomes in the order given.
async fn call_shards<'a>(
    state: &RouterState,
    map: &ReplicaMap,
    ctx: &CallContext,
    asks: impl Iterator<Item = (&'a ShardReplicas, ShardSearchRequest)>,
) -> Vec<Outcome<ShardSearchResponse>> {
    let per_try = ms(state.config.per_try_timeout_ms);
    let calls = asks.map(|(replicas, mut message)| {
        message.shard = replicas.shard;
        let target = Target {
            replicas: &replicas.replicas,
            tenant: &map.tenant.id,
            scope: replicas.shard,
            kind: "index",
            request_id: &ctx.request_id,
        };
        state
            .resilience
            .call(target, ctx.deadline, per_try, move |_, channel, timeout| {
                calls::search_shard(channel, message.clone(), timeout, ctx)
            })
    });
    futures::future::join_all(calls).await
}

/// The sequence number each shard's replica must have applied for this
/// search (index = shard; empty: no requirement), from its consistency token.
fn min_applied(map: &ReplicaMap, req: &SearchRequest) -> Result<Vec<u64>, Status> {
    if req.consistency_token.is_empty() {
        return Ok(Vec::new());
    }
    crate::token::requirements(&req.consistency_token, &map.tenant)
}

/// Step 3: the hits of several shards in the answer's order (score
/// descending, then shard, then id), cut to the page.
fn merge(mut hits: Vec<Hit>, page: Page) -> Vec<Hit> {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.shard.cmp(&b.shard))
            .then_with(|| a.id.cmp(&b.id))
    });
    hits.into_iter()
        .skip(page.offset as usize)
        .take(page.top_k as usize)
        .collect()
}

/// Step 4: snippets for the page's hits, one restricted search per shard
/// that has hits on the page.
#[allow(clippy::too_many_arguments)]
async fn fill_snippets(
    state: &RouterState,
    map: &ReplicaMap,
    req: &SearchRequest,
    ctx: &CallContext,
    min_seq: &[u64],
    hits: &mut [Hit],
    degraded: &mut Vec<String>,
) {
    let mut ids_by_shard: HashMap<u32, Vec<String>> = HashMap::new();
    for hit in hits.iter() {
        ids_by_shard
            .entry(hit.shard)
            .or_default()
            .push(hit.id.clone());
    }
    let asks = map.shards.iter().filter_map(|replicas| {
        let ids = ids_by_shard.remove(&replicas.shard)?;
        let message = ShardSearchRequest {
            tenant: String::from(&*map.tenant.id),
            shard: replicas.shard,
            query: req.query.clone(),
            top_k: ids.len() as u32,
            strict: req.strict,
            ids,
            min_applied_seq: min_seq.get(replicas.shard as usize).copied().unwrap_or(0),
            ..ShardSearchRequest::default()
        };
        Some((replicas, message))
    });
    // The page is in hand: snippets must not cost the caller its answer,
    // so they stop a little before the caller's deadline.
    let ctx = CallContext {
        deadline: ctx
            .deadline
            .checked_sub(SNIPPETS_MARGIN)
            .unwrap_or(ctx.deadline),
        ..ctx.clone()
    };
    let mut snippets: HashMap<(u32, String), String> = HashMap::new();
    for outcome in call_shards(state, map, &ctx, asks).await {
        match outcome.result {
            Ok(answer) => {
                for hit in answer.hits {
                    snippets.insert((hit.shard, hit.id), hit.snippet);
                }
            }
            Err(status) => {
                tracing::debug!(tenant = %map.tenant.id, error = %status.message(), "no snippets: degraded");
                mark(degraded, "snippets");
            }
        }
    }
    for hit in hits.iter_mut() {
        match snippets.remove(&(hit.shard, hit.id.clone())) {
            Some(snippet) => hit.snippet = snippet,
            // Deleted since, or a replica behind: the hit stays, unsnipped.
            None => mark(degraded, "snippets"),
        }
    }
}

/// Adds `what` to an answer's `degraded` list once.
fn mark(degraded: &mut Vec<String>, what: &str) {
    if !degraded.iter().any(|d| d == what) {
        degraded.push(what.to_string());
    }
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
    let message = ModelSuggestRequest {
        tenant: String::from(&*map.tenant.id),
        prefix: req.prefix.clone(),
        k: req.k,
    };
    let target = Target {
        replicas: &map.models,
        tenant: &map.tenant.id,
        scope: MODEL_SCOPE,
        kind: "model",
        request_id: &ctx.request_id,
    };
    let per_try = ms(state.config.per_try_timeout_ms);
    let outcome = state
        .resilience
        .call(target, ctx.deadline, per_try, |_, channel, timeout| {
            calls::model_suggest(channel, message.clone(), timeout, ctx)
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

/// How one shard was served, for the answer's route. (Here and throughout
/// this module, `Arc<str>` ids and regions are copied with `String::from`.)
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
    if tandem_proto::shed::who(&status).is_some() {
        return status;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32, shard: u32) -> Hit {
        Hit {
            id: id.into(),
            score,
            shard,
            ..Hit::default()
        }
    }

    #[test]
    fn merge_orders_by_score_then_shard_then_id_and_cuts_the_page() {
        let hits = vec![
            hit("b", 1.0, 1),
            hit("a", 1.0, 1),
            hit("z", 2.0, 0),
            hit("c", 1.0, 0),
            hit("d", 0.5, 0),
        ];
        let page = Page {
            offset: 1,
            top_k: 3,
        };
        let ids: Vec<_> = merge(hits, page).into_iter().map(|h| h.id).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }

    #[test]
    fn the_window_is_the_page_end_within_the_limit() {
        let req = SearchRequest {
            offset: 995,
            top_k: 0,
            ..SearchRequest::default()
        };
        assert_eq!(Page::of(&req).window(), MAX_WINDOW);
        assert_eq!(Page::of(&SearchRequest::default()).window(), 10);
    }
}
