//! Forwarding a call to the paired region's router (the traffic dial).
//!
//! A forwarded call carries `x-tandem-forwarded-from: <entry region>`, so
//! the receiving router serves it itself and never sends it back, and the
//! answer's route says `forwarded` with the entry region. If the paired
//! router cannot be reached, the call is served here instead: turning a
//! dial must never fail a query.

use std::future::Future;

use tandem_proto::v1::search_client::SearchClient;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

use crate::calls::CallContext;
use crate::catalog::Node;
use crate::channels::NodeChannel;
use crate::deadline::remaining;
use crate::dial::FORWARDED_HEADER;
use crate::state::RouterState;

/// What came back from the paired region.
pub enum Forwarded<T> {
    /// Its answer (or its verdict on a bad request), to return as is.
    Answer(Result<T, Status>),
    /// It could not be reached: serve locally.
    Unreachable,
}

/// The metadata a forwarded call carries besides the request id: the
/// caller's key, and where it entered.
fn metadata(state: &RouterState, incoming: &MetadataMap) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Some(auth) = incoming.get("authorization") {
        md.insert("authorization", auth.clone());
    }
    if let Ok(v) = MetadataValue::try_from(&*state.region) {
        md.insert(FORWARDED_HEADER, v);
    }
    md
}

fn judge<T>(router: &Node, result: Result<T, Status>) -> Forwarded<T> {
    match result {
        Ok(answer) => Forwarded::Answer(Ok(answer)),
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

/// Sends `message` to `router` with `call` (one `tandem.v1.Search`
/// method of its client).
pub async fn forward<Req, Resp, F, Fut>(
    state: &RouterState,
    router: &Node,
    message: &Req,
    incoming: &MetadataMap,
    ctx: &CallContext,
    call: F,
) -> Forwarded<Resp>
where
    Req: Clone,
    F: FnOnce(SearchClient<NodeChannel>, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let Ok(channel) = state.resilience.channels.get(router) else {
        return Forwarded::Unreachable;
    };
    let extra = metadata(state, incoming);
    let request = ctx.request_with(message.clone(), remaining(ctx.deadline), &extra);
    let network = &state.resilience.network;
    let result = async {
        // A partition fails the forward like a refused connection.
        network.cross(&router.region).await?;
        call(SearchClient::new(channel), request).await
    };
    // The deadline bounds the wait, as it bounds every downstream call.
    let result = match tokio::time::timeout_at(ctx.deadline, result).await {
        Ok(result) => result.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(
            "deadline exceeded while forwarding",
        )),
    };
    judge(router, result)
}
