//! The public `tandem.v1.Documents` API: writes, taken by any region's
//! router and routed to the leaders of the shards they touch.
//!
//! A call's way: authenticate a key with the write scope, check the batch
//! (the rule in `tandem_common::documents`), split it by shard (the
//! placement rule in `tandem_catalog::placement`), send each part to its
//! shard's leader with the leader epoch from the catalog, and answer once
//! every part is durable, with a consistency token. Parts go out at once;
//! each is atomic on its shard. If one fails, the call fails UNAVAILABLE
//! and its error details (`google.rpc.ErrorInfo`, reason `PARTIAL_WRITE`)
//! list the shards that took their part; `request_id` makes the retry safe.
//!
//! Writes are never hedged or sent to a follower: only the leader may order
//! a shard's writes. A leader that cannot be reached fails its part fast.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tandem_common::auth::bearer_token;
use tandem_common::documents::{check_batch, MAX_WRITE_OPS};
use tandem_proto::v1::documents_server::Documents;
use tandem_proto::v1::{Document, IngestRequest, WriteRequest, WriteResponse};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::calls::{self, CallContext};
use crate::catalog::{is_valid_id, AuthOutcome, KeyHash, KeyScope, Tenant};
use crate::state::RouterState;
use crate::token::{self, ShardPosition};

/// See the module documentation.
#[derive(Clone)]
pub struct DocumentsService {
    state: Arc<RouterState>,
}

impl DocumentsService {
    /// A service over the router's shared state.
    pub fn new(state: Arc<RouterState>) -> Self {
        Self { state }
    }

    /// The tenant, if `metadata`'s key has the write scope for it. An
    /// unknown tenant gets the same PERMISSION_DENIED as another tenant's,
    /// so that tenant ids cannot be probed with a write key.
    fn authorize(&self, metadata: &MetadataMap, tenant: &str) -> Result<Arc<Tenant>, Status> {
        let key = bearer_token(metadata).ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <write key>`")
        })?;
        if !is_valid_id(tenant) {
            return Err(Status::invalid_argument(
                "tenant id must be 1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit",
            ));
        }
        let catalog = self.state.catalog.current();
        match catalog.authorize_scoped(tenant, &KeyHash::of_key(key), KeyScope::Write) {
            AuthOutcome::Authorized(t) => Ok(t),
            AuthOutcome::Unauthenticated => Err(Status::unauthenticated("API key not accepted")),
            AuthOutcome::PermissionDenied | AuthOutcome::TenantNotFound => Err(
                Status::permission_denied(format!("this key may not write to tenant {tenant:?}")),
            ),
        }
    }

    async fn write_parts(
        &self,
        tenant: &Tenant,
        req: WriteRequest,
        ctx: &CallContext,
    ) -> Result<WriteResponse, Status> {
        let mut parts: BTreeMap<u32, (Vec<Document>, Vec<String>)> = BTreeMap::new();
        for id in req.deletes {
            parts
                .entry(tenant.shard_of(&id).number)
                .or_default()
                .1
                .push(id);
        }
        for doc in req.upserts {
            parts
                .entry(tenant.shard_of(&doc.id).number)
                .or_default()
                .0
                .push(doc);
        }
        let calls = parts.into_iter().map(|(shard, (upserts, deletes))| {
            let message = IngestRequest {
                tenant: tenant.id.to_string(),
                shard,
                seq: 0,
                upserts,
                deletes,
                epoch: tenant.shards[shard as usize].leader.epoch,
                request_id: req.request_id.clone(),
            };
            async move { (shard, self.write_part(tenant, message, ctx).await) }
        });
        let results = futures::future::join_all(calls).await;
        let mut written = Vec::new();
        let mut failed: Vec<(u32, Status)> = Vec::new();
        for (shard, result) in results {
            match result {
                Ok(position) => written.push(position),
                Err(status) => failed.push((shard, status)),
            }
        }
        if failed.is_empty() {
            return Ok(WriteResponse {
                consistency_token: token::encode(&tenant.id, written),
            });
        }
        Err(partial_failure(&written, failed))
    }

    /// One shard's part, to its leader.
    async fn write_part(
        &self,
        tenant: &Tenant,
        message: IngestRequest,
        ctx: &CallContext,
    ) -> Result<ShardPosition, Status> {
        let shard = message.shard;
        let leader = &tenant.shards[shard as usize].leader;
        let channel = self
            .state
            .resilience
            .channels
            .get(&leader.node)
            .map_err(|_| {
                Status::unavailable(format!("the leader of shard {shard} cannot be reached"))
            })?;
        let timeout = ctx
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let answer = match tokio::time::timeout(timeout, calls::ingest(channel, message, timeout, ctx)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) => return Err(public_status(shard, status)),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "shard {shard}'s leader did not confirm the write in time; retry with the same request_id"
                )))
            }
        };
        Ok(ShardPosition {
            shard,
            epoch: answer.epoch,
            seq: answer.applied_seq,
        })
    }
}

/// What a caller may read of a leader's refusal: the node's own words for
/// what is about the batch, a plain sentence (no node names or addresses)
/// for the rest.
fn public_status(shard: u32, status: Status) -> Status {
    tracing::warn!(shard, code = ?status.code(), error = %status.message(), "a leader refused a write");
    match status.code() {
        Code::InvalidArgument | Code::AlreadyExists => Status::new(status.code(), status.message()),
        Code::FailedPrecondition => Status::unavailable(format!(
            "the leadership of shard {shard} is changing; retry with the same request_id"
        )),
        Code::DeadlineExceeded => Status::deadline_exceeded(format!(
            "shard {shard}'s leader did not confirm the write in time; retry with the same request_id"
        )),
        _ => Status::unavailable(format!(
            "the leader of shard {shard} is unavailable; writes to it fail until it returns \
             or a follower is promoted (searches are not affected)"
        )),
    }
}

/// The error of a write some of whose parts failed: the first failure's
/// code (UNAVAILABLE when several kinds failed), and an `ErrorInfo` listing
/// the shards that took their part and those that did not.
fn partial_failure(written: &[ShardPosition], failed: Vec<(u32, Status)>) -> Status {
    let list = |shards: Vec<u32>| {
        shards
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let written_shards = list(written.iter().map(|p| p.shard).collect());
    let failed_shards = list(failed.iter().map(|(s, _)| *s).collect());
    let (first_shard, first) = &failed[0];
    let code = if failed.iter().all(|(_, s)| s.code() == first.code()) {
        first.code()
    } else {
        Code::Unavailable
    };
    let message = if written.is_empty() {
        first.message().to_string()
    } else {
        format!(
            "shards {written_shards} took the write but shard {first_shard} did not: {}; \
             retry with the same request_id",
            first.message()
        )
    };
    let details = ErrorDetails::with_error_info(
        "PARTIAL_WRITE",
        "tandem.v1.Documents",
        HashMap::from([
            ("written_shards".to_string(), written_shards),
            ("failed_shards".to_string(), failed_shards),
        ]),
    );
    Status::with_error_details(code, message, details)
}

#[tonic::async_trait]
impl Documents for DocumentsService {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let started = StdInstant::now();
        let (metadata, _, req) = request.into_parts();
        let ctx = CallContext::of_call(&metadata, &self.state);
        let ops = req.upserts.len() + req.deletes.len();
        let mut authorized = None;
        let result = async {
            let tenant = self.authorize(&metadata, &req.tenant)?;
            authorized = Some(tenant.id.clone());
            check_batch(&req.upserts, &req.deletes, &req.request_id, MAX_WRITE_OPS)
                .map_err(Status::invalid_argument)?;
            self.write_parts(&tenant, req, &ctx).await
        }
        .await;
        if let Some(tenant) = &authorized {
            let used = match &result {
                Ok(_) => crate::usage::Use::Documents(ops as u64),
                Err(_) => crate::usage::Use::Error,
            };
            self.state.usage.record(tenant, used);
        }
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        metrics::counter!("router_writes_total", "code" => tandem_common::grpc_metrics::code_name(code))
            .increment(1);
        if result.is_ok() {
            metrics::counter!("router_written_ops_total").increment(ops as u64);
        }
        metrics::histogram!("router_write_seconds").record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}
