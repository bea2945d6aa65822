//! The public `tandem.v1.Search` gRPC service.
//!
//! A call's way through the router: deadline, authentication, validation,
//! traffic dial (serve here or forward to the paired region), fan-out with
//! fallback and hedging, merge (or relay, for one shard), and an answer that
//! says which route it took.

use std::cell::OnceCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use prost::Message;
use tandem_common::grpc_metrics::REQUEST_ID_HEADER;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::search_server::Search;
use tandem_proto::v1::{Route, SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::calls::CallContext;
use crate::catalog::{
    bearer_token, is_valid_id, verify_key_hash, AuthOutcome, KeyCheck, KeyHash, Node,
};
use crate::channels::NodeChannel;
use crate::config::ms;
use crate::deadline::deadline_for;
use crate::dial::{decide, draw, Decision, DialFacts, FORWARDED_HEADER};
use crate::fanout::{self, MAX_WINDOW};
use crate::forward::{self, Forwarded};
use crate::replicas::ReplicaMap;
use crate::request_metrics::RequestMetrics;
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
    metrics: Arc<RequestMetrics>,
}

impl SearchService {
    /// A service over the router's shared state.
    pub fn new(state: Arc<RouterState>) -> Self {
        Self {
            state,
            metrics: Arc::default(),
        }
    }

    /// Works out what a call's headers alone say; see [`Admission`].
    pub fn admit(&self, metadata: &MetadataMap) -> Admission {
        let key = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|k| !k.is_empty())
            .map(KeyHash::of_key);
        Admission {
            ctx: self.context(metadata),
            from: forwarded_from(metadata),
            key,
        }
    }

    /// Authenticates the caller (`key`, from [`Admission`]) for `tenant`
    /// and returns its replica map.
    ///
    /// Missing key: UNAUTHENTICATED. A key of no tenant: UNAUTHENTICATED.
    /// Another tenant's key: PERMISSION_DENIED. Unknown tenant: NOT_FOUND,
    /// but only to a caller holding some valid key, so that tenant ids
    /// cannot be enumerated anonymously.
    fn authorize(&self, key: Option<&KeyHash>, tenant: &str) -> Result<Arc<ReplicaMap>, Status> {
        let key = key
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <api key>`"))?;
        if !is_valid_id(tenant) {
            return Err(Status::invalid_argument(
                "tenant id must be 1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit",
            ));
        }
        let catalog = self.state.catalog.current();
        if let Some(map) = self.state.cache.get(&catalog, tenant, &self.state.region) {
            if verify_key_hash(&map.tenant, key) == KeyCheck::Valid {
                return Ok(map);
            }
        }
        match catalog.authorize_hash(tenant, key) {
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
    fn dial(&self, map: &ReplicaMap, forwarded_from: Option<&str>) -> Option<Arc<Node>> {
        let facts = LiveDialFacts {
            state: &self.state,
            tenant_active_active: map.tenant.active_active,
            already_forwarded: forwarded_from.is_some(),
            paired_router: OnceCell::new(),
        };
        let (decision, reason) = decide(&facts);
        if decision != Decision::Forward {
            return None;
        }
        metrics::counter!("router_forwarded_total", "reason" => reason.as_str()).increment(1);
        // Forward is decided only after the paired router was looked up.
        facts.paired_router.into_inner().flatten()
    }

    fn context(&self, metadata: &MetadataMap) -> CallContext {
        let config = &self.state.config;
        CallContext::new(
            deadline_for(
                metadata,
                ms(config.default_timeout_ms),
                ms(config.max_timeout_ms),
            ),
            metadata
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// Serves one call of the public API: `metadata` are the caller's
    /// headers, `admission` what [`SearchService::admit`] made of them.
    pub async fn handle<M: PublicMethod>(
        &self,
        admission: Admission,
        metadata: &MetadataMap,
        request: &M,
    ) -> Result<M::Answer, Status> {
        let started = StdInstant::now();
        let mut result = self.route(admission, metadata, request).await;
        if let Ok(answer) = result.as_mut() {
            answer.set_took_micros(started.elapsed().as_micros() as u64);
        }
        self.metrics.record::<M>(&result, started.elapsed());
        result
    }

    /// Authenticates, validates, then serves here or in the paired region.
    async fn route<M: PublicMethod>(
        &self,
        admission: Admission,
        metadata: &MetadataMap,
        request: &M,
    ) -> Result<M::Answer, Status> {
        let Admission { ctx, from, key } = admission;
        let map = self.authorize(key.as_ref(), request.tenant())?;
        request.validate()?;
        if let Some(router) = self.dial(&map, from.as_deref()) {
            if let Forwarded::Answer(answer) =
                forward::forward(&self.state, &router, request, metadata, &ctx, M::forward).await
            {
                return answer;
            }
        }
        let mut answer = request.serve_here(&self.state, &map, &ctx).await?;
        if let Some(route) = answer.route_mut() {
            route.forwarded = from.is_some();
            route.entry_region = from.unwrap_or_else(|| String::from(&*self.state.region));
        }
        Ok(answer)
    }
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        self.serve(request).await
    }

    async fn suggest(
        &self,
        request: Request<SuggestRequest>,
    ) -> Result<Response<SuggestResponse>, Status> {
        self.serve(request).await
    }
}

impl SearchService {
    /// One call of the public API, from tonic's server.
    async fn serve<M: PublicMethod>(
        &self,
        request: Request<M>,
    ) -> Result<Response<M::Answer>, Status> {
        let (metadata, _, message) = request.into_parts();
        let admission = self.admit(&metadata);
        self.handle(admission, &metadata, &message)
            .await
            .map(Response::new)
    }
}

/// What a call's headers alone say (the key's hash, the deadline, the
/// request id, the forwarding mark).
pub struct Admission {
    ctx: CallContext,
    from: Option<String>,
    /// The presented key's hash, if a key was presented.
    key: Option<KeyHash>,
}

/// A method of the public API, as [`SearchService::handle`] serves it.
pub trait PublicMethod: Message + Default + Clone + Send + Sync + 'static {
    /// Its answer.
    type Answer: Answer;
    /// Method name, for metrics.
    const NAME: &'static str;
    /// Calls the method on another router (see [`forward`]).
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

/// What [`SearchService::handle`] fills in on an answer.
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
    fn serve_here<'a>(
        &'a self,
        state: &'a RouterState,
        map: &'a ReplicaMap,
        ctx: &'a CallContext,
    ) -> impl Future<Output = Result<SearchResponse, Status>> + Send + 'a {
        fanout::search(state, map, self, ctx)
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

/// The dial's facts for one call, looked up from the router's state only
/// when [`decide`] asks.
struct LiveDialFacts<'a> {
    state: &'a RouterState,
    tenant_active_active: bool,
    already_forwarded: bool,
    /// The paired region's healthy router, once asked for.
    paired_router: OnceCell<Option<Arc<Node>>>,
}

impl DialFacts for LiveDialFacts<'_> {
    fn already_forwarded(&self) -> bool {
        self.already_forwarded
    }
    fn tenant_active_active(&self) -> bool {
        self.tenant_active_active
    }
    fn dial_percent(&self) -> u8 {
        self.state.dials.get(&self.state.region)
    }
    fn draw(&self) -> u8 {
        draw(&mut rand::rng())
    }
    fn paired_router_healthy(&self) -> bool {
        self.paired_router
            .get_or_init(|| self.state.paired_router_up())
            .is_some()
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
