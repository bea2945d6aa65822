//! The `tandem.v1.IndexNode` gRPC service: validates requests, applies
//! injected faults, and runs the work on the search pool or a blocking
//! thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_catalog::ids::validate_tenant_id;
use tandem_common::faults::FaultRegistry;
use tandem_proto::v1::index_node_server::IndexNode;
use tandem_proto::v1::{
    BootstrapRequest, CreateShardRequest, DeleteTenantRequest, DeleteTenantResponse, IngestRequest,
    IngestResponse, ListShardsRequest, ListShardsResponse, ReadLogRequest, ReadLogResponse,
    ShardHealth, ShardInfo, ShardRef, ShardRole, ShardSearchRequest, ShardSearchResponse,
    SnapshotInfo,
};
use tonic::{Request, Response, Status};

use crate::bootstrap;
use crate::leader;
use crate::pool::{SearchPool, Shed};
use crate::registry::{ShardError, ShardRegistry};
use crate::retire;
use crate::roles::{Role, Roles};
use crate::shard::{SearchError, SearchParams, ShardKey};
use crate::snapshot::SnapshotStore;
use crate::writer::{Batch, WriteError};

/// Limits on what one request may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `top_k`.
    pub max_top_k: u32,
    /// Largest `offset + top_k`.
    pub max_window: u32,
    /// Longest query text, in bytes.
    pub max_query_bytes: usize,
    /// Most filters.
    pub max_filters: usize,
    /// Most boosts.
    pub max_boosts: usize,
    /// Most documents + deletes in one batch.
    pub max_batch_ops: usize,
    /// Largest batch, in bytes of document text.
    pub max_batch_bytes: usize,
    /// Longest a search waits for `min_applied_seq` before answering
    /// FAILED_PRECONDITION.
    pub behind_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_top_k: 1000,
            max_window: 10_000,
            max_query_bytes: 4096,
            max_filters: 32,
            max_boosts: 1000,
            max_batch_ops: 10_000,
            max_batch_bytes: 32 * 1024 * 1024,
            behind_wait: Duration::from_millis(200),
        }
    }
}

/// Default number of hits when a request says 0.
pub const DEFAULT_TOP_K: u32 = 10;

/// See the module documentation.
#[derive(Clone)]
pub struct IndexService {
    node_id: String,
    registry: Arc<ShardRegistry>,
    roles: Arc<Roles>,
    /// The snapshot store and how many snapshots to keep per shard.
    snapshots: Option<(SnapshotStore, usize)>,
    pool: SearchPool,
    faults: FaultRegistry,
    limits: Limits,
}

impl IndexService {
    /// A service over `registry`, identifying itself as `node_id`.
    pub fn new(
        node_id: String,
        registry: Arc<ShardRegistry>,
        roles: Arc<Roles>,
        snapshots: Option<(SnapshotStore, usize)>,
        pool: SearchPool,
        faults: FaultRegistry,
        limits: Limits,
    ) -> Self {
        Self {
            node_id,
            registry,
            roles,
            snapshots,
            pool,
            faults,
            limits,
        }
    }

    fn search_params(&self, req: &ShardSearchRequest) -> Result<SearchParams, Status> {
        let l = &self.limits;
        let top_k = if req.top_k == 0 {
            DEFAULT_TOP_K
        } else {
            req.top_k
        };
        if top_k > l.max_top_k {
            return Err(Status::invalid_argument(format!(
                "top_k {top_k} is over the limit of {}",
                l.max_top_k
            )));
        }
        if req.offset.saturating_add(top_k) > l.max_window {
            return Err(Status::invalid_argument(format!(
                "offset + top_k may be at most {}",
                l.max_window
            )));
        }
        if req.query.len() > l.max_query_bytes {
            return Err(Status::invalid_argument(format!(
                "query is {} bytes; at most {} are allowed",
                req.query.len(),
                l.max_query_bytes
            )));
        }
        if req.filters.len() > l.max_filters {
            return Err(Status::invalid_argument(format!(
                "at most {} filters are allowed",
                l.max_filters
            )));
        }
        if req.ids.len() > top_k as usize {
            return Err(Status::invalid_argument(format!(
                "at most top_k ({top_k}) ids are allowed"
            )));
        }
        if req.boosts.len() > l.max_boosts {
            return Err(Status::invalid_argument(format!(
                "at most {} boosts are allowed",
                l.max_boosts
            )));
        }
        if let Some((id, w)) = req.boosts.iter().find(|(_, w)| !w.is_finite() || **w < 0.0) {
            return Err(Status::invalid_argument(format!(
                "boost for {id:?} is {w}; weights must be finite and >= 0"
            )));
        }
        Ok(SearchParams {
            query: req.query.clone(),
            top_k: top_k as usize,
            offset: req.offset as usize,
            filters: req.filters.clone(),
            strict: req.strict,
            boosts: req
                .boosts
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _>>(),
            snippets: !req.no_snippets,
            ids: req.ids.clone(),
            ranking: crate::ranking::Ranking::DEFAULT,
        })
    }

    fn validate_batch(&self, req: &IngestRequest) -> Result<(), Status> {
        let l = &self.limits;
        tandem_common::documents::check_batch(
            &req.upserts,
            &req.deletes,
            &req.request_id,
            l.max_batch_ops,
        )
        .map_err(Status::invalid_argument)?;
        let bytes: usize = req
            .upserts
            .iter()
            .map(|d| d.id.len() + d.title.len() + d.body.len() + d.url.len() + d.attrs_json.len())
            .sum();
        if bytes > l.max_batch_bytes {
            return Err(Status::invalid_argument(format!(
                "batch is {bytes} bytes; at most {} are allowed",
                l.max_batch_bytes
            )));
        }
        Ok(())
    }

    /// Waits (briefly) until the shard shows `min` for a search that needs
    /// it; FAILED_PRECONDITION, marked as "behind", if it does not.
    async fn await_applied(&self, key: &ShardKey, min: u64) -> Result<(), Status> {
        let registry = self.registry.clone();
        let k = key.clone();
        let shard = tokio::task::spawn_blocking(move || registry.get(&k))
            .await
            .map_err(blocking_failed)??;
        if shard.applied_seq() >= min {
            return Ok(());
        }
        if let Some(writer) = self.registry.writer_if_started(key) {
            writer.flush();
        }
        let mut watch = shard.watch_applied();
        let waited =
            tokio::time::timeout(self.limits.behind_wait, watch.wait_for(|seq| *seq >= min)).await;
        if matches!(waited, Ok(Ok(_))) {
            return Ok(());
        }
        metrics::counter!("index_search_behind_total").increment(1);
        let mut status = Status::failed_precondition(format!(
            "shard {key} on this node has applied {} < required {min}",
            shard.applied_seq()
        ));
        status.metadata_mut().insert(
            tandem_proto::REPLICA_BEHIND_KEY,
            "1".parse().expect("ascii"),
        );
        Err(status)
    }
}

fn shard_key(tenant: &str, shard: u32) -> Result<ShardKey, Status> {
    validate_tenant_id(tenant).map_err(Status::invalid_argument)?;
    Ok(ShardKey {
        tenant: tenant.to_string(),
        shard,
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl From<ShardError> for Status {
    fn from(e: ShardError) -> Self {
        match &e {
            ShardError::NotFound(_) => Status::not_found(e.to_string()),
            ShardError::Failed { .. } => Status::unavailable(e.to_string()),
            ShardError::Conflict { .. } => Status::already_exists(e.to_string()),
            ShardError::Internal { .. } => Status::internal(e.to_string()),
        }
    }
}

fn overloaded(why: Shed) -> Status {
    metrics::counter!("index_search_shed_total", "reason" => why.reason()).increment(1);
    let message = match why {
        Shed::QueueFull => "index node overloaded: search queue full",
        Shed::QueueTimeout => "index node overloaded: search waited too long for a worker",
    };
    tandem_proto::shed::status(tandem_proto::shed::NODE, message)
}

fn blocking_failed(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker failed: {e}"))
}

#[tonic::async_trait]
impl IndexNode for IndexService {
    async fn search_shard(
        &self,
        request: Request<ShardSearchRequest>,
    ) -> Result<Response<ShardSearchResponse>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        let params = self.search_params(&req)?;
        self.faults.check(&key.tenant, Some(key.shard)).await?;
        if req.min_applied_seq > 0 {
            self.await_applied(&key, req.min_applied_seq).await?;
        }
        let registry = self.registry.clone();
        let started = Instant::now();
        let tenant = key.tenant.clone();
        let result = self
            .pool
            .run(&tenant, move || -> Result<_, Status> {
                let shard = registry.get(&key)?;
                shard.search(&params).map_err(|e| match e {
                    SearchError::Query(q) => Status::invalid_argument(q.to_string()),
                    SearchError::Index(i) => Status::internal(format!("shard {key}: {i}")),
                })
            })
            .await
            .map_err(overloaded)??;
        metrics::histogram!("index_search_seconds").record(started.elapsed().as_secs_f64());
        let mut hits = result.hits;
        let truncated = tandem_common::limits::fit_hits(&mut hits);
        Ok(Response::new(ShardSearchResponse {
            hits,
            total_hits: result.total_hits,
            applied_seq: result.applied_seq,
            node: self.node_id.clone(),
            truncated,
        }))
    }

    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        self.validate_batch(&req)?;
        self.faults.check(&key.tenant, Some(key.shard)).await?;
        let role = self.roles.role(&key);
        let writer = self.registry.writer_async(&key).await?;
        let standalone = role == Role::Standalone;
        leader::check_write(&role, &writer, &req)?;
        let written = writer
            .write(Batch {
                seq: req.seq,
                epoch: req.epoch,
                request_id: req.request_id,
                upserts: req.upserts,
                deletes: req.deletes,
                visible: standalone,
            })
            .await
            .map_err(|e| match e {
                WriteError::Reused(_) => Status::already_exists(e.to_string()),
                WriteError::Failed(m) => Status::internal(format!("shard {key}: {m}")),
            })?;
        if !written.duplicate {
            metrics::counter!("index_docs_ingested_total").increment(u64::from(written.upserted));
            metrics::counter!("index_docs_deleted_total").increment(u64::from(written.deleted));
        }
        Ok(Response::new(IngestResponse {
            applied_seq: written.seq,
            duplicate: written.duplicate,
            upserted: written.upserted,
            deleted: written.deleted,
            epoch: written.epoch,
        }))
    }

    async fn read_log(
        &self,
        request: Request<ReadLogRequest>,
    ) -> Result<Response<ReadLogResponse>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        self.faults.check(&key.tenant, Some(key.shard)).await?;
        let role = self.roles.role(&key);
        let writer = self.registry.writer_async(&key).await?;
        let response = leader::read_log(&role, &writer, &req).await?;
        let bytes: usize = response
            .records
            .iter()
            .map(prost::Message::encoded_len)
            .sum();
        let cross = self
            .roles
            .region_of(&req.follower)
            .is_some_and(|r| r != self.roles.region());
        let labels = [("cross_region", if cross { "true" } else { "false" })];
        metrics::counter!("index_replication_shipped_ops_total", &labels)
            .increment(response.records.len() as u64);
        metrics::counter!("index_replication_shipped_bytes_total", &labels).increment(bytes as u64);
        Ok(Response::new(response))
    }

    async fn create_snapshot(
        &self,
        request: Request<ShardRef>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        let Some((store, keep)) = &self.snapshots else {
            return Err(Status::failed_precondition(
                "this node has no snapshot store",
            ));
        };
        if !matches!(
            self.roles.role(&key),
            Role::Leader { .. } | Role::Standalone
        ) {
            return Err(Status::failed_precondition(format!(
                "this node does not lead shard {key}; ask its leader"
            )));
        }
        let info = bootstrap::take(&self.registry, store, &key, *keep)
            .await
            .map_err(|e| Status::internal(format!("snapshot of {key} failed: {e:#}")))?;
        Ok(Response::new(info))
    }

    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> Result<Response<ShardInfo>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        self.roles
            .adopt(&key, &req.language, &req.leader, req.epoch)
            .await
            .map_err(Status::failed_precondition)?;
        let info = ShardInfo {
            tenant: key.tenant.clone(),
            shard: key.shard,
            health: ShardHealth::Bootstrapping as i32,
            ..Default::default()
        };
        Ok(Response::new(self.with_replication(info)))
    }

    async fn create_shard(
        &self,
        request: Request<CreateShardRequest>,
    ) -> Result<Response<ShardInfo>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        if req.language.len() > 16
            || !req
                .language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Status::invalid_argument(format!(
                "language {:?} is not an ISO 639-1 style code",
                truncate(&req.language, 20)
            )));
        }
        let registry = self.registry.clone();
        let lock = self.registry.write_lock(&key);
        let guard = lock.lock_owned().await;
        let info = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let _guard = guard;
            let shard = registry.create(&key, &req.language)?;
            Ok(info_of(&key, Some(&shard), None))
        })
        .await
        .map_err(blocking_failed)??;
        Ok(Response::new(info))
    }

    async fn get_shard_info(
        &self,
        request: Request<ShardRef>,
    ) -> Result<Response<ShardInfo>, Status> {
        let req = request.into_inner();
        let key = shard_key(&req.tenant, req.shard)?;
        if req.digest && req.digest_at_seq > 0 {
            return self.digest_at(key, req.digest_at_seq).await;
        }
        let registry = self.registry.clone();
        let digest = req.digest;
        let info = tokio::task::spawn_blocking(move || match registry.get(&key) {
            Ok(shard) => {
                let mut info = info_of(&key, Some(&shard), None);
                if digest {
                    let (seq, digest) = shard
                        .digest()
                        .map_err(|e| Status::internal(format!("shard {key}: {e}")))?;
                    info.applied_seq = seq;
                    info.digest = digest;
                }
                Ok(info)
            }
            Err(ShardError::Failed { reason, .. }) => Ok(info_of(&key, None, Some(reason))),
            Err(e) => Err(Status::from(e)),
        })
        .await
        .map_err(blocking_failed)??;
        Ok(Response::new(self.with_replication(info)))
    }

    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let req = request.into_inner();
        let (not_serving_only, with_bytes) = (req.not_serving_only, req.with_bytes);
        let registry = self.registry.clone();
        let shards: Vec<ShardInfo> = tokio::task::spawn_blocking(move || {
            registry
                .known()
                .into_iter()
                .filter(|(key, failed)| {
                    !not_serving_only || failed.is_some() || registry.is_held_back(key)
                })
                .map(|(key, failed)| {
                    let mut info = match (failed, registry.peek(&key)) {
                        (Some(reason), _) => info_of(&key, None, Some(reason)),
                        (None, Some(shard)) => info_of(&key, Some(&shard), None),
                        (None, None) => ShardInfo {
                            tenant: key.tenant.clone(),
                            shard: key.shard,
                            health: ShardHealth::Serving as i32,
                            ..Default::default()
                        },
                    };
                    if with_bytes {
                        info.bytes = registry.shard_bytes(&key);
                    }
                    info
                })
                .collect()
        })
        .await
        .map_err(blocking_failed)?;
        let shards = shards
            .into_iter()
            .map(|info| self.with_replication(info))
            .filter(|info| !not_serving_only || info.health != ShardHealth::Serving as i32)
            .collect();
        Ok(Response::new(ListShardsResponse { shards }))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<DeleteTenantResponse>, Status> {
        let tenant = request.into_inner().tenant;
        let store = self.snapshots.as_ref().map(|(store, _)| store);
        retire::delete_tenant(&self.registry, &self.roles, store, &tenant)
            .await
            .map(Response::new)
    }
}

impl IndexService {
    /// `GetShardInfo` with the digest taken exactly at `seq` (see
    /// `WriterHandle::digest_at`), waiting up to 30 s for the shard to get
    /// there.
    async fn digest_at(&self, key: ShardKey, seq: u64) -> Result<Response<ShardInfo>, Status> {
        let writer = self.registry.writer_async(&key).await?;
        let wait = std::time::Duration::from_secs(30);
        let (seq, digest) = match tokio::time::timeout(wait, writer.digest_at(seq)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(Status::failed_precondition(format!("shard {key}: {e:#}"))),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "shard {key} did not reach {seq} within {wait:?}"
                )))
            }
        };
        let mut info = self.with_replication(info_of(&key, Some(&writer.shard), None));
        info.applied_seq = seq;
        info.digest = digest;
        Ok(Response::new(info))
    }

    /// Adds role, epoch, log position, lag and the lag-derived health.
    fn with_replication(&self, mut info: ShardInfo) -> ShardInfo {
        let key = ShardKey {
            tenant: info.tenant.clone(),
            shard: info.shard,
        };
        let role = self.roles.role(&key);
        let (role_code, epoch, leader) = match &role {
            Role::Standalone => (ShardRole::Standalone, 0, String::new()),
            Role::Leader { epoch } => (ShardRole::Leader, *epoch, self.node_id.clone()),
            Role::Follower { leader, epoch } => {
                (ShardRole::Follower, *epoch, leader.id.to_string())
            }
        };
        info.role = role_code as i32;
        info.epoch = epoch;
        info.leader = leader;
        if let Some(writer) = self.registry.writer_if_started(&key) {
            info.log_seq = writer.log.tip().seq;
            info.applied_seq = writer.shard.applied_seq();
            info.epoch = info.epoch.max(writer.shard.stored_epoch());
        }
        let (lag, health) = self.roles.assess(&key, info.applied_seq);
        if let Some(lag) = lag {
            info.lag_ops = lag.ops;
            info.lag_millis = lag.millis;
        }
        if info.health == ShardHealth::Serving as i32 {
            info.health = health as i32;
        }
        if let Some((done, total, installing)) = self.roles.bootstrap_progress(&key) {
            if installing {
                info.health = ShardHealth::Bootstrapping as i32;
                info.error = self.roles.bootstrap_error(&key).unwrap_or_default();
            }
            info.bootstrap_bytes = done;
            info.bootstrap_total_bytes = total;
        }
        info
    }
}

fn info_of(
    key: &ShardKey,
    shard: Option<&crate::shard::Shard>,
    error: Option<String>,
) -> ShardInfo {
    let mut info = ShardInfo {
        tenant: key.tenant.clone(),
        shard: key.shard,
        health: ShardHealth::Failed as i32,
        error: error.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(shard) = shard {
        let (num_docs, segments) = shard.stats();
        info.language = shard.language().to_string();
        info.num_docs = num_docs;
        info.segments = segments;
        info.applied_seq = shard.applied_seq();
        info.health = ShardHealth::Serving as i32;
        info.open = true;
    }
    info
}
