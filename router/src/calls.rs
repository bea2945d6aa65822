//! One attempt of each call the router makes to a node, typed: a shard
//! search, a model's boosts or suggestions, a write to a shard's leader. Each carries the call's request
//! id and tells the server how long it has left (`grpc-timeout`); a call the
//! server never took up is sent again once
//! (`tandem_common::channel::resend_if_refused`, which health probes use
//! too). Forwarded public calls: [`crate::forward`].

use std::future::Future;
use std::time::Duration;

use tandem_common::channel::resend_if_refused;
use tandem_common::grpc_metrics::REQUEST_ID_HEADER;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::model_node_client::ModelNodeClient;
use tandem_proto::v1::{
    BoostsRequest, BoostsResponse, IngestRequest, IngestResponse, ModelSuggestRequest,
    ModelSuggestResponse, ShardSearchRequest, ShardSearchResponse,
};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use crate::channels::NodeChannel;

/// Per-call context passed down to every downstream request.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The caller's deadline.
    pub deadline: Instant,
    /// The request id, propagated as `x-request-id`.
    pub request_id: String,
    /// The cluster's internal token, which every downstream call carries
    /// (node APIs and forwarded calls require it).
    pub internal: InternalToken,
    /// The W3C `traceparent` of the call's span, passed on when spans are
    /// exported (`tandem_common::trace`).
    pub traceparent: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl CallContext {
    /// The context of a call that must end by `deadline`.
    pub fn new(deadline: Instant, request_id: String, internal: InternalToken) -> Self {
        let traceparent = tandem_common::trace::traceparent()
            .and_then(|t| MetadataValue::try_from(t.as_str()).ok());
        Self {
            deadline,
            request_id,
            internal,
            traceparent,
        }
    }

    /// The context of a public call: its deadline (`grpc-timeout`, else the
    /// configured default, capped) and its request id (`x-request-id`).
    pub fn of_call(metadata: &MetadataMap, state: &crate::state::RouterState) -> Self {
        use crate::config::ms;
        let config = &state.config;
        Self::new(
            crate::deadline::deadline_for(
                metadata,
                ms(config.default_timeout_ms),
                ms(config.max_timeout_ms),
            ),
            metadata
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            state.internal.clone(),
        )
    }

    /// A downstream request carrying `message`, this call's request id, the
    /// internal token, and `timeout` as its `grpc-timeout`.
    pub fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        self.internal.attach(request.metadata_mut());
        if let Ok(id) = MetadataValue::try_from(self.request_id.as_str()) {
            request.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        if let Some(parent) = &self.traceparent {
            request.metadata_mut().insert("traceparent", parent.clone());
        }
        request
    }

    /// [`CallContext::request`] with extra metadata (a forwarded call's key
    /// and forwarding mark).
    pub fn request_with<T>(
        &self,
        message: T,
        timeout: Duration,
        extra: &MetadataMap,
    ) -> Request<T> {
        let mut request = self.request(message, timeout);
        for (key, value) in extra.iter().filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k, v)),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        }) {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        request
    }
}

/// One unary call of `message` over `channel`, with `call` naming the
/// method: what every call below shares (the request's metadata, what is
/// left of `timeout` as its `grpc-timeout`, one resend if never taken up).
async fn unary<Req, Resp, F, Fut>(
    channel: NodeChannel,
    message: Req,
    timeout: Duration,
    ctx: &CallContext,
    call: F,
) -> Result<Resp, Status>
where
    Req: Clone,
    F: Fn(NodeChannel, Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let started = Instant::now();
    resend_if_refused(|| {
        let left = timeout.saturating_sub(started.elapsed());
        call(channel.clone(), ctx.request(message.clone(), left))
    })
    .await
    .map(tonic::Response::into_inner)
}

/// `IndexNode.SearchShard` on one replica.
pub async fn search_shard(
    channel: NodeChannel,
    message: ShardSearchRequest,
    timeout: Duration,
    ctx: &CallContext,
) -> Result<ShardSearchResponse, Status> {
    unary(
        channel,
        message,
        timeout,
        ctx,
        |channel, request| async move { IndexNodeClient::new(channel).search_shard(request).await },
    )
    .await
}

/// `IndexNode.Ingest` on a shard's leader (a part of a public write).
pub async fn ingest(
    channel: NodeChannel,
    message: IngestRequest,
    timeout: Duration,
    ctx: &CallContext,
) -> Result<IngestResponse, Status> {
    unary(
        channel,
        message,
        timeout,
        ctx,
        |channel, request| async move { IndexNodeClient::new(channel).ingest(request).await },
    )
    .await
}

/// `ModelNode.Boosts` on one replica.
pub async fn boosts(
    channel: NodeChannel,
    message: BoostsRequest,
    timeout: Duration,
    ctx: &CallContext,
) -> Result<BoostsResponse, Status> {
    unary(
        channel,
        message,
        timeout,
        ctx,
        |channel, request| async move { ModelNodeClient::new(channel).boosts(request).await },
    )
    .await
}

/// `ModelNode.Suggest` on one replica.
pub async fn model_suggest(
    channel: NodeChannel,
    message: ModelSuggestRequest,
    timeout: Duration,
    ctx: &CallContext,
) -> Result<ModelSuggestResponse, Status> {
    unary(
        channel,
        message,
        timeout,
        ctx,
        |channel, request| async move { ModelNodeClient::new(channel).suggest(request).await },
    )
    .await
}
