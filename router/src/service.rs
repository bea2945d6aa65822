//! The public `tandem.v1.Search` gRPC service.
//!
//! A call's way through the router: deadline, authentication, validation,
//! traffic dial (serve here or forward to the paired region), fan-out with
//! fallback and hedging, merge (or relay, for one shard), and an answer that
//! says which route it took.

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tandem_proto::v1::search_server::Search;
use tandem_proto::v1::{SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Request, Response, Status};

use crate::calls::CallContext;
use crate::catalog::{is_valid_id, verify_key_hash, AuthOutcome, KeyCheck, KeyHash, Node};
use crate::dial::{decide, draw, Decision, DialFacts, FORWARDED_HEADER};
use crate::forward::{self, Forwarded};
use crate::method::{Answer, PublicMethod};
use crate::ramp;
use crate::replicas::ReplicaMap;
use crate::request_metrics::RequestMetrics;
use crate::state::RouterState;
use crate::usage::Use;

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
    pub fn admit(&self, metadata: &MetadataMap, extensions: &Extensions) -> Admission {
        // Hashed once, by the admission gate in front of the service.
        let key = extensions
            .get::<KeyHash>()
            .copied()
            .or_else(|| tandem_common::auth::bearer_token(metadata).map(KeyHash::of_key));
        let internal = self.state.internal.admits(extensions, metadata);
        Admission {
            ctx: self.context(metadata),
            from: forwarded_from(metadata, internal),
            key,
        }
    }

    /// Authenticates the caller (`key`, from [`Admission`]) for `tenant`
    /// and returns its replica map.
    ///
    /// Missing key: UNAUTHENTICATED. A key of no tenant: UNAUTHENTICATED.
    /// Another tenant's key, or any valid key for an unknown tenant:
    /// PERMISSION_DENIED, one answer, so that tenant ids cannot be probed.
    /// A browser call (an `origin`) from an origin the tenant does not
    /// allow: PERMISSION_DENIED.
    fn authorize(
        &self,
        key: Option<&KeyHash>,
        tenant: &str,
        origin: Option<&str>,
    ) -> Result<Arc<ReplicaMap>, Status> {
        let map = self.authorize_key(key, tenant)?;
        match origin {
            Some(origin) if !map.tenant.allows_origin(origin) => {
                Err(Status::permission_denied(format!(
                    "origin {origin:?} may not call for tenant {tenant:?} (the tenant's allowed_origins)"
                )))
            }
            _ => Ok(map),
        }
    }

    fn authorize_key(
        &self,
        key: Option<&KeyHash>,
        tenant: &str,
    ) -> Result<Arc<ReplicaMap>, Status> {
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
                .ok_or_else(|| denied(tenant)),
            AuthOutcome::Unauthenticated => Err(Status::unauthenticated("API key not accepted")),
            // Another tenant's and an unknown tenant's get one answer, so
            // that tenant ids cannot be probed with a valid key either.
            AuthOutcome::PermissionDenied | AuthOutcome::TenantNotFound => Err(denied(tenant)),
        }
    }

    /// Authenticates a call of another public API (`Events.Click`) with
    /// the tenant's search key, as [`SearchService::handle`] does.
    pub(crate) fn authorize_call(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
        tenant: &str,
    ) -> Result<Arc<ReplicaMap>, Status> {
        let admission = self.admit(metadata, extensions);
        let origin = tandem_common::web::origin(metadata);
        self.authorize(admission.key.as_ref(), tenant, origin)
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
        CallContext::of_call(metadata, &self.state)
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
        let mut result = match self.state.faults.check(request.tenant(), None).await {
            Ok(()) => self.route(admission, metadata, request, started).await,
            Err(injected) => Err(injected),
        };
        if let Ok(answer) = result.as_mut() {
            answer.set_took_micros(started.elapsed().as_micros() as u64);
        }
        self.metrics.record::<M>(&result, started.elapsed());
        result
    }

    /// A WARN line, with the request id, for a call that failed on the
    /// service's side (not the caller's: a bad request, a wrong key) or
    /// that took longer than `slow_call_ms`.
    fn log_if_notable<M: PublicMethod>(
        &self,
        result: &Result<M::Answer, Status>,
        tenant: &str,
        request_id: &str,
        took: std::time::Duration,
    ) {
        use tonic::Code;
        let took_ms = took.as_millis() as u64;
        match result {
            Err(status)
                if !matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::NotFound
                ) =>
            {
                tracing::warn!(request_id, tenant, method = M::NAME, code = ?status.code(),
                    error = status.message(), took_ms, "call failed");
            }
            Ok(_) if took_ms >= self.state.config.slow_call_ms => {
                tracing::warn!(request_id, tenant, method = M::NAME, took_ms, "slow call");
            }
            _ => {}
        }
    }

    /// Authenticates, validates, then serves here or in the paired region;
    /// counts the tenant's usage and logs a notable call (`started`: when
    /// the call arrived).
    async fn route<M: PublicMethod>(
        &self,
        admission: Admission,
        metadata: &MetadataMap,
        request: &M,
        started: StdInstant,
    ) -> Result<M::Answer, Status> {
        let Admission { ctx, from, key } = admission;
        let origin = tandem_common::web::origin(metadata);
        let map = self.authorize(key.as_ref(), request.tenant(), origin)?;
        let result = self
            .serve_authorized(&map, (&ctx, from), metadata, request)
            .await;
        let used = if result.is_ok() { M::USE } else { Use::Error };
        self.state.usage.record(&map.tenant.id, used);
        let took = started.elapsed();
        self.log_if_notable::<M>(&result, &map.tenant.id, &ctx.request_id, took);
        result
    }

    /// Serves an authorized call: validation, the dial, the ramp, then
    /// here or in the paired region.
    async fn serve_authorized<M: PublicMethod>(
        &self,
        map: &Arc<ReplicaMap>,
        (ctx, from): (&CallContext, Option<String>),
        metadata: &MetadataMap,
        request: &M,
    ) -> Result<M::Answer, Status> {
        request.validate()?;
        if let Some(router) = self.dial(map, from.as_deref()) {
            if let Forwarded::Answer(answer) =
                forward::forward(&self.state, &router, request, metadata, ctx, M::forward).await
            {
                if let Ok(a) = &answer {
                    let bytes = prost::Message::encoded_len(a) as u64;
                    self.state
                        .usage
                        .record(&map.tenant.id, Use::CrossRegion(bytes));
                }
                return answer;
            }
        }
        let (map, arm) = ramp::choose(map, || draw(&mut rand::rng()));
        let started = StdInstant::now();
        let served = request.serve_here(&self.state, map, ctx).await;
        if let Some(arm) = arm.filter(|_| M::USE == Use::Search) {
            let route = served.as_ref().ok().and_then(|a| a.route());
            let failed = served.is_err();
            let elapsed = started.elapsed();
            self.state.ramps.record(map, arm, failed, route, elapsed);
        }
        let mut answer = served?;
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
        let (metadata, extensions, message) = request.into_parts();
        let admission = self.admit(&metadata, &extensions);
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
        if self.state.auto_dial.as_ref().is_some_and(|a| a.shifted()) {
            return 0;
        }
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

/// The refusal of a valid key for a tenant it may not query, whether that
/// tenant exists or not.
fn denied(tenant: &str) -> Status {
    Status::permission_denied(format!("this API key may not query tenant {tenant:?}"))
}

/// The region a call was forwarded from: believed only of an internal
/// call (another tandem router: the internal token or a verified client
/// certificate), so a client cannot use the mark to get past this
/// region's dial.
fn forwarded_from(metadata: &MetadataMap, internal: bool) -> Option<String> {
    if !internal {
        return None;
    }
    metadata
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::internal::InternalToken;

    #[test]
    fn only_a_router_with_the_internal_token_may_say_it_forwarded() {
        let internal = InternalToken::new("the-cluster-internal-token").unwrap();
        let admits = |md: &MetadataMap| internal.admits(&Extensions::new(), md);
        let mut md = MetadataMap::new();
        md.insert(FORWARDED_HEADER, "us-east-2".parse().unwrap());
        assert_eq!(forwarded_from(&md, admits(&md)), None, "a client's claim");
        InternalToken::new("another-internal-token-x")
            .unwrap()
            .attach(&mut md);
        assert_eq!(forwarded_from(&md, admits(&md)), None, "a wrong token");
        internal.attach(&mut md);
        assert_eq!(
            forwarded_from(&md, admits(&md)).as_deref(),
            Some("us-east-2")
        );
    }
}
