//! Forwarding a call to the paired region's router (the traffic dial).
//!
//! A forwarded call carries `x-tandem-forwarded-from: <entry region>`, so
//! the receiving router serves it itself and never sends it back, and the
//! answer's route says `forwarded` with the entry region. If the paired
//! router cannot be reached, the call is served here instead: turning a
//! dial must never fail a query.

use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::catalog::Node;
use crate::channels::Transport;
use crate::deadline::remaining;
use crate::dial::FORWARDED_HEADER;
use crate::fanout::CallContext;
use crate::state::RouterState;

/// What came back from the paired region.
pub enum Forwarded<T> {
    /// Its answer (or its verdict on a bad request), to return as is.
    Answer(Result<T, Status>),
    /// It could not be reached: serve locally.
    Unreachable,
}

fn request<T>(
    state: &RouterState,
    message: T,
    incoming: &MetadataMap,
    ctx: &CallContext,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(remaining(ctx.deadline));
    let md = request.metadata_mut();
    if let Some(auth) = incoming.get("authorization") {
        md.insert("authorization", auth.clone());
    }
    if let Ok(v) = state.region.parse() {
        md.insert(FORWARDED_HEADER, v);
    }
    if let Ok(v) = ctx.request_id.parse() {
        md.insert(tandem_common::grpc_metrics::REQUEST_ID_HEADER, v);
    }
    request
}

fn judge<T>(router: &Node, result: Result<tonic::Response<T>, Status>) -> Forwarded<T> {
    match result {
        Ok(resp) => Forwarded::Answer(Ok(resp.into_inner())),
        Err(status)
            if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
        {
            tracing::warn!(router = %router.id, error = %status.message(), "paired router unreachable; serving locally");
            metrics::counter!("router_forward_failures_total").increment(1);
            Forwarded::Unreachable
        }
        Err(status) => Forwarded::Answer(Err(status)),
    }
}

/// Sends one call to `router` through `rpc` (a `tandem.v1.Search` method).
async fn forward<Req, Resp, F, Fut>(
    state: &RouterState,
    router: &Node,
    message: Req,
    incoming: &MetadataMap,
    ctx: &CallContext,
    rpc: F,
) -> Forwarded<Resp>
where
    F: FnOnce(SearchClient<Transport>, tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let Ok(channel) = state.resilience.channels.get(router) else {
        return Forwarded::Unreachable;
    };
    let client = SearchClient::with_origin(channel.transport, channel.origin);
    judge(
        router,
        rpc(client, request(state, message, incoming, ctx)).await,
    )
}

/// Forwards a search to `router`.
pub async fn search(
    state: &RouterState,
    router: &Node,
    message: SearchRequest,
    incoming: &MetadataMap,
    ctx: &CallContext,
) -> Forwarded<SearchResponse> {
    forward(
        state,
        router,
        message,
        incoming,
        ctx,
        |mut c, r| async move { c.search(r).await },
    )
    .await
}

/// Forwards a suggest call to `router`.
pub async fn suggest(
    state: &RouterState,
    router: &Node,
    message: SuggestRequest,
    incoming: &MetadataMap,
    ctx: &CallContext,
) -> Forwarded<SuggestResponse> {
    forward(
        state,
        router,
        message,
        incoming,
        ctx,
        |mut c, r| async move { c.suggest(r).await },
    )
    .await
}
