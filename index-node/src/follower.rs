//! A follower replica's pull loop: long-poll the leader's log from the last
//! local record, append what comes back to the local log (which applies it
//! to the index), and keep the numbers that say how far behind it is.
//!
//! The loop ends only when the node's roles change (it is aborted). When the
//! leader says the follower's history is out of its retained log
//! (OUT_OF_RANGE) or diverged from it (ABORTED), the replica is marked
//! *bootstrapping*: it serves no searches until it has been rebuilt from a
//! snapshot. A leader that cannot be reached is retried with backoff, and
//! the replica's lag grows until the node reports it *lagging*.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_catalog::Node;
use tandem_common::channel::ChannelSettings;
use tandem_common::internal::InternalToken;
use tandem_common::latency::Network;
use tandem_common::tls::Tls;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::ReadLogRequest;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::bootstrap;
use crate::oplog::OpLog;
use crate::registry::ShardRegistry;
use crate::shard::ShardKey;
use crate::snapshot::{Progress, SnapshotStore};
use crate::writer::unix_ms;
use tandem_proto::v1::ShardRef;

/// Records asked per pull (Elasticsearch's CCR default read batch).
pub const PULL_OPS: u32 = 5120;
/// How long the leader holds a pull open waiting for a record.
const PULL_WAIT: Duration = Duration::from_secs(2);
/// Largest answer accepted from a leader.
const MAX_PULL_BYTES: usize = 128 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where a follower stands; read by `GetShardInfo` and the health loop.
#[derive(Debug, Default)]
pub struct FollowerStatus {
    inner: Mutex<StatusInner>,
    /// Bytes of the snapshot being installed.
    pub progress: Progress,
}

#[derive(Debug, Default, Clone)]
struct StatusInner {
    leader_seq: u64,
    leader_unix_ms: u64,
    /// Wall clock of the last answer from the leader (0: none yet).
    contact_unix_ms: u64,
    /// Set when the history diverged or fell out of the leader's log.
    bootstrap_reason: Option<String>,
    /// Why the last bootstrap attempt failed.
    bootstrap_error: Option<String>,
}

/// How far behind a follower is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Leader records not yet searchable here.
    pub ops: u64,
    /// Age of the oldest of those (ms); with no contact, at least the time
    /// since the last answer from the leader.
    pub millis: u64,
}

impl FollowerStatus {
    /// The lag of a replica that shows `applied` and whose log is `log`.
    pub fn lag(&self, applied: u64, log: &OpLog) -> Lag {
        let s = self.inner.lock().expect("status lock").clone();
        let now = unix_ms();
        let ops = s.leader_seq.saturating_sub(applied);
        let since_contact = now.saturating_sub(s.contact_unix_ms);
        let oldest = if ops == 0 {
            None
        } else if applied < log.tip().seq {
            log.read(applied + 1, 1, u64::MAX)
                .ok()
                .and_then(|r| r.first().map(|r| r.unix_ms))
        } else {
            Some(s.leader_unix_ms)
        };
        let behind = oldest.map_or(0, |t| now.saturating_sub(t));
        let millis = if s.contact_unix_ms == 0 {
            behind
        } else {
            behind.max(since_contact.saturating_sub(PULL_WAIT.as_millis() as u64 * 2))
        };
        Lag { ops, millis }
    }

    /// Why the replica must be rebuilt, if it must.
    pub fn bootstrap_reason(&self) -> Option<String> {
        self.inner
            .lock()
            .expect("status lock")
            .bootstrap_reason
            .clone()
    }

    fn contact(&self, leader_seq: u64, leader_unix_ms: u64) {
        let mut s = self.inner.lock().expect("status lock");
        s.leader_seq = leader_seq;
        s.leader_unix_ms = leader_unix_ms;
        s.contact_unix_ms = unix_ms();
    }

    /// Marks the replica as needing a snapshot before it can follow.
    pub fn must_bootstrap(&self, reason: String) {
        self.inner.lock().expect("status lock").bootstrap_reason = Some(reason);
    }

    fn bootstrapped(&self) {
        let mut s = self.inner.lock().expect("status lock");
        s.bootstrap_reason = None;
        s.bootstrap_error = None;
    }

    /// Why the last bootstrap attempt failed (while bootstrapping).
    pub fn bootstrap_error(&self) -> Option<String> {
        self.inner
            .lock()
            .expect("status lock")
            .bootstrap_error
            .clone()
    }
}

/// What one follower loop needs.
pub struct Follow {
    /// The shard followed.
    pub key: ShardKey,
    /// Its leader.
    pub leader: Arc<Node>,
    /// The leader epoch followed.
    pub epoch: u64,
    /// This node's id (sent to the leader for its metrics).
    pub node_id: String,
    /// Where the shard's writer comes from.
    pub registry: Arc<ShardRegistry>,
    /// Shared with the health loop.
    pub status: Arc<FollowerStatus>,
    /// Where snapshots are (none: a replica that must bootstrap waits).
    pub store: Option<SnapshotStore>,
    /// Carried by the pulls (the leader's API is internal).
    pub internal: InternalToken,
    /// This node's TLS, for an `https://` leader.
    pub tls: Option<Tls>,
    /// The way to the other region: a pull from a leader there waits its
    /// distance on the way back, and a drill's partition fails or holds it.
    pub network: Network,
}

/// A client of the leader's API, carrying the internal token.
type LeaderClient = IndexNodeClient<InterceptedService<Channel, InternalToken>>;

/// Runs until aborted.
pub async fn run(follow: Follow) {
    let settings = ChannelSettings {
        connect_timeout: Duration::from_secs(2),
        tls: follow.tls.clone(),
        ..ChannelSettings::default()
    };
    let channel = match tandem_common::channel::channel(&follow.leader.addr, settings) {
        Ok(channel) => channel,
        Err(error) => {
            tracing::error!(shard = %follow.key, leader = %follow.leader.id, %error, "cannot reach the leader");
            return;
        }
    };
    let mut client = IndexNodeClient::with_interceptor(channel, follow.internal.clone())
        .max_decoding_message_size(MAX_PULL_BYTES);
    let mut backoff = Duration::from_millis(50);
    let mut writer = open_writer(&follow).await;
    if writer.log.tip().seq == 0 && follow.status.bootstrap_reason().is_none() {
        // A wiped replica (empty, not asked to bootstrap from a fresh
        // snapshot) starts from the newest snapshot in the store if there
        // is one: no leader needed, and no replay of the whole history.
        if let Err(e) = restore_from_store(&follow).await {
            tracing::warn!(shard = %follow.key, error = %format!("{e:#}"), "no restore from the store");
        }
        writer = open_writer(&follow).await;
    }
    loop {
        if let Some(reason) = follow.status.bootstrap_reason() {
            // Nothing to pull until the replica is rebuilt from a snapshot.
            tracing::info!(shard = %follow.key, reason, "bootstrapping from a snapshot");
            match rebuild(&follow, &mut client).await {
                Ok(()) => {
                    follow.status.bootstrapped();
                    writer = open_writer(&follow).await;
                }
                Err(e) => {
                    tracing::error!(shard = %follow.key, error = %format!("{e:#}"), "bootstrap failed; retrying");
                    follow
                        .status
                        .inner
                        .lock()
                        .expect("status lock")
                        .bootstrap_error = Some(format!("{e:#}"));
                    tokio::time::sleep(MAX_BACKOFF * 2).await;
                }
            }
            continue;
        }
        let tip = writer.log.tip();
        let mut request = tonic::Request::new(ReadLogRequest {
            tenant: follow.key.tenant.clone(),
            shard: follow.key.shard,
            from_seq: tip.seq + 1,
            prev_seq: tip.seq,
            prev_epoch: tip.epoch,
            epoch: follow.epoch,
            max_ops: PULL_OPS,
            max_wait_ms: PULL_WAIT.as_millis() as u32,
            follower: follow.node_id.clone(),
        });
        request.set_timeout(PULL_WAIT + Duration::from_secs(5));
        let (network, there) = (&follow.network, &follow.leader.region);
        let pulled = async {
            network.reachable(there).await?;
            let response = client.read_log(request).await?;
            network.cross(there).await?;
            Ok::<_, Status>(response)
        };
        let pulled = tokio::time::timeout(PULL_WAIT + Duration::from_secs(5), pulled)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the pull timed out")));
        match pulled {
            Ok(response) => {
                let response = response.into_inner();
                backoff = Duration::from_millis(50);
                follow
                    .status
                    .contact(response.last_seq, response.last_unix_ms);
                if response.records.is_empty() {
                    continue;
                }
                let n = response.records.len();
                if let Err(e) = writer.replicate(response.records).await {
                    tracing::error!(shard = %follow.key, error = %e, "pulled records not written");
                    tokio::time::sleep(backoff).await;
                } else {
                    metrics::counter!("index_replication_applied_ops_total").increment(n as u64);
                }
            }
            Err(status) if matches!(status.code(), Code::OutOfRange | Code::Aborted) => {
                tracing::error!(shard = %follow.key, leader = %follow.leader.id, reason = %status.message(),
                    "replica must be rebuilt from a snapshot");
                follow.status.must_bootstrap(status.message().to_string());
            }
            Err(status) => {
                tracing::debug!(shard = %follow.key, leader = %follow.leader.id, code = ?status.code(),
                    error = %status.message(), "pull failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn open_writer(follow: &Follow) -> crate::writer::WriterHandle {
    loop {
        match follow.registry.writer_async(&follow.key).await {
            Ok(w) => return w,
            Err(e) => {
                tracing::warn!(shard = %follow.key, error = %e, "follower cannot open its shard; retrying");
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    }
}

async fn restore_from_store(follow: &Follow) -> anyhow::Result<()> {
    let Some(store) = &follow.store else {
        return Ok(());
    };
    let Some(manifest) = store.latest(&follow.key).await? else {
        return Ok(());
    };
    follow
        .status
        .must_bootstrap("restoring from the snapshot store".into());
    let installed = bootstrap::install(
        &follow.registry,
        store,
        &manifest,
        follow.epoch,
        &follow.status.progress,
    )
    .await;
    follow.status.bootstrapped();
    installed
}

/// Installs a snapshot: a fresh one the leader takes now, or the newest in
/// the store if the leader cannot take one (it is down: the replica is then
/// restored from the store alone, and follows once a leader answers).
async fn rebuild(follow: &Follow, client: &mut LeaderClient) -> anyhow::Result<()> {
    let store = follow
        .store
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no snapshot store is configured (snapshot_store)"))?;
    let mut request = tonic::Request::new(ShardRef {
        tenant: follow.key.tenant.clone(),
        shard: follow.key.shard,
        digest: false,
        digest_at_seq: 0,
    });
    request.set_timeout(Duration::from_secs(600));
    let manifest = match client.create_snapshot(request).await {
        Ok(info) => store.manifest(&follow.key, info.into_inner().seq).await?,
        Err(status) => {
            tracing::warn!(shard = %follow.key, error = %status.message(),
                "the leader took no snapshot; using the newest in the store");
            store
                .latest(&follow.key)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the store holds no snapshot of {}", follow.key))?
        }
    };
    bootstrap::install(
        &follow.registry,
        store,
        &manifest,
        follow.epoch,
        &follow.status.progress,
    )
    .await
}
