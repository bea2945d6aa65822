//! The methods of the public `tandem.v1.Search` API as the router serves
//! them: each method's limits and validation, how it is served from this
//! region's replicas ([`fanout`]), and how it is forwarded to the paired
//! region's router ([`crate::forward`]). [`crate::service`] runs any of
//! them through the same steps.

use std::future::Future;

use prost::Message;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{Route, SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tonic::{Request, Response, Status};

use crate::calls::CallContext;
use crate::channels::NodeChannel;
use crate::fanout::{self, MAX_WINDOW};
use crate::replicas::ReplicaMap;
use crate::state::RouterState;

use tandem_common::limits::{MAX_FILTER_BYTES, MAX_PREFIX_BYTES, MAX_QUERY_BYTES, MAX_QUERY_WORDS};

/// Most filters per query.
const MAX_FILTERS: usize = 32;
/// Most suggestions per call.
const MAX_SUGGESTIONS: u32 = 100;

/// A method of the public API, as `SearchService::handle` serves it.
pub trait PublicMethod: Message + Default + Clone + Send + Sync + 'static {
    /// Its answer.
    type Answer: Answer;
    /// Method name, for metrics.
    const NAME: &'static str;
    /// What one answered call counts as in the tenant's usage.
    const USE: crate::usage::Use;
    /// Calls the method on another router (see [`crate::forward`]).
    fn forward(
        client: SearchClient<NodeChannel>,
        request: Request<Self>,
    ) -> impl Future<Output = Result<Response<Self::Answer>, Status>> + Send;
    /// The tenant asked.
    fn tenant(&self) -> &str;
    /// INVALID_ARGUMENT for a request out of bounds.
    fn validate(&self) -> Result<(), Status>;
    /// Serves the call from this router's view of the replicas.
    fn serve_here<'a>(
        &'a self,
        state: &'a RouterState,
        map: &'a ReplicaMap,
        ctx: &'a CallContext,
    ) -> impl Future<Output = Result<Self::Answer, Status>> + Send + 'a;
}

/// What `SearchService::handle` fills in on an answer.
pub trait Answer: Message + Default + Send + 'static {
    /// The route, if set.
    fn route(&self) -> Option<&Route>;
    /// The route, for the entry region to be filled in.
    fn route_mut(&mut self) -> Option<&mut Route>;
    /// Whether the answer is degraded.
    fn degraded(&self) -> bool;
    /// Records the time taken, where the answer has room for it.
    fn set_took_micros(&mut self, _micros: u64) {}
}

impl PublicMethod for SearchRequest {
    type Answer = SearchResponse;
    const NAME: &'static str = "Search";
    const USE: crate::usage::Use = crate::usage::Use::Search;
    async fn forward(
        mut client: SearchClient<NodeChannel>,
        request: Request<Self>,
    ) -> Result<Response<SearchResponse>, Status> {
        client.search(request).await
    }
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn validate(&self) -> Result<(), Status> {
        validate_search(self)
    }
    async fn serve_here(
        &self,
        state: &RouterState,
        map: &ReplicaMap,
        ctx: &CallContext,
    ) -> Result<SearchResponse, Status> {
        let mut answer = fanout::search(state, map, self, ctx).await?;
        // The router that serves a search signs and records it (a
        // forwarded search is the paired router's).
        state.events.searched(&map.tenant.id, self, &mut answer);
        Ok(answer)
    }
}

impl Answer for SearchResponse {
    fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }
    fn route_mut(&mut self) -> Option<&mut Route> {
        self.route.as_mut()
    }
    fn degraded(&self) -> bool {
        !self.degraded.is_empty()
    }
    fn set_took_micros(&mut self, micros: u64) {
        self.took_micros = micros;
    }
}

impl Answer for SuggestResponse {
    fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }
    fn route_mut(&mut self) -> Option<&mut Route> {
        self.route.as_mut()
    }
    fn degraded(&self) -> bool {
        !self.degraded.is_empty()
    }
}

impl PublicMethod for SuggestRequest {
    type Answer = SuggestResponse;
    const NAME: &'static str = "Suggest";
    const USE: crate::usage::Use = crate::usage::Use::Suggest;
    async fn forward(
        mut client: SearchClient<NodeChannel>,
        request: Request<Self>,
    ) -> Result<Response<SuggestResponse>, Status> {
        client.suggest(request).await
    }
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn validate(&self) -> Result<(), Status> {
        validate_suggest(self)
    }
    fn serve_here<'a>(
        &'a self,
        state: &'a RouterState,
        map: &'a ReplicaMap,
        ctx: &'a CallContext,
    ) -> impl Future<Output = Result<SuggestResponse, Status>> + Send + 'a {
        fanout::suggest(state, map, self, ctx)
    }
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
    let words = req.query.split_whitespace().count();
    if words > MAX_QUERY_WORDS {
        return Err(Status::invalid_argument(format!(
            "query has {words} words; at most {MAX_QUERY_WORDS} are allowed"
        )));
    }
    if req.filters.len() > MAX_FILTERS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_FILTERS} filters are allowed"
        )));
    }
    if let Some(long) = req.filters.iter().find(|f| f.len() > MAX_FILTER_BYTES) {
        return Err(Status::invalid_argument(format!(
            "a filter is {} bytes; at most {MAX_FILTER_BYTES} are allowed",
            long.len()
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn search() -> impl Strategy<Value = SearchRequest> {
        (
            any::<u32>(),
            any::<u32>(),
            prop_oneof![".{0,64}", "( ?[a-z]{1,3}){100,140}", ".{4090,4100}"],
            prop::collection::vec(prop_oneof![".{0,16}", ".{1020,1030}"], 0..40),
        )
            .prop_map(|(top_k, offset, query, filters)| SearchRequest {
                top_k: top_k % 1200,
                offset: offset % 1200,
                query,
                filters,
                ..Default::default()
            })
    }

    proptest! {
        /// Any request gets an answer (no panic), and a request accepted
        /// is within every documented bound.
        #[test]
        fn an_accepted_search_is_within_its_bounds(req in search()) {
            if validate_search(&req).is_ok() {
                let top_k = if req.top_k == 0 { 10 } else { req.top_k };
                prop_assert!(req.offset + top_k <= MAX_WINDOW);
                prop_assert!(req.query.len() <= MAX_QUERY_BYTES);
                prop_assert!(req.query.split_whitespace().count() <= MAX_QUERY_WORDS);
                prop_assert!(req.filters.len() <= MAX_FILTERS);
                prop_assert!(req.filters.iter().all(|f| f.len() <= MAX_FILTER_BYTES));
            }
        }

        #[test]
        fn an_accepted_suggest_is_within_its_bounds(prefix in ".{0,300}", k in any::<u32>()) {
            let req = SuggestRequest { prefix, k, ..Default::default() };
            if validate_suggest(&req).is_ok() {
                prop_assert!(!req.prefix.trim().is_empty());
                prop_assert!(req.prefix.len() <= MAX_PREFIX_BYTES);
                prop_assert!(req.k <= MAX_SUGGESTIONS);
            }
        }
    }
}
