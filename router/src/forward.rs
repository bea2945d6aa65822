//! Forwarding a call to the paired region's router (the traffic dial).
//!
//! A forwarded call carries `x-tandem-forwarded-from: <entry region>`, so
//! the receiving router serves it itself and never sends it back, and the
//! answer's route says `forwarded` with the entry region. If the paired
//! router cannot be reached, the call is served here instead: turning a
//! dial must never fail a query.

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use prost::Message;
use tandem_common::unary::{self, encode_frame};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::catalog::Node;
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

/// The metadata a forwarded call carries: what every downstream call
/// carries (the request id), the caller's key, and where it entered.
fn metadata(
    state: &RouterState,
    incoming: &MetadataMap,
    ctx: &CallContext,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut md = ctx.metadata.clone();
    if let Some(auth) = incoming.get("authorization") {
        if let Ok(v) = HeaderValue::from_bytes(auth.as_bytes()) {
            md.push((AUTHORIZATION, v));
        }
    }
    if let Ok(v) = HeaderValue::try_from(&*state.region) {
        md.push((HeaderName::from_static(FORWARDED_HEADER), v));
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

/// Sends one call to `router`'s `path` (a `tandem.v1.Search` method).
pub async fn forward<Req: Message, Resp: Message + Default>(
    state: &RouterState,
    router: &Node,
    path: &'static str,
    message: &Req,
    incoming: &MetadataMap,
    ctx: &CallContext,
) -> Forwarded<Resp> {
    let Ok(channel) = state.resilience.channels.get(router) else {
        return Forwarded::Unreachable;
    };
    let metadata = metadata(state, incoming, ctx);
    let result = unary::call(
        &channel,
        path,
        encode_frame(message),
        remaining(ctx.deadline),
        &metadata,
    );
    // The deadline bounds the wait, as it bounds every downstream call.
    let result = match tokio::time::timeout_at(ctx.deadline, result).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(
            "deadline exceeded while forwarding",
        )),
    };
    judge(router, result)
}
