//! The leader's side of writes and replication: who may write to a shard,
//! serving a follower's pull from the shard's log, and asking the other
//! replicas which epoch they have seen.
//!
//! Epochs fence leadership. A batch is taken only by the node the sender
//! believes is the leader at that epoch, and only if the node agrees: its
//! catalog names it leader at the same epoch, and it has never seen a
//! higher one (stored with the shard, so a restart does not forget). A
//! follower pulling with a higher epoch than the leader's tells the leader
//! it has been deposed; the leader stores that epoch and refuses writes
//! from then on, even before its own catalog catches up.

use std::time::Duration;

use tandem_catalog::Node;
use tandem_common::channel::ChannelSettings;
use tandem_common::internal::InternalToken;
use tandem_common::tls::Tls;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{IngestRequest, ReadLogRequest, ReadLogResponse, ShardRef};
use tonic::Status;

use crate::follower::PULL_OPS;
use crate::roles::Role;
use crate::shard::ShardKey;
use crate::writer::WriterHandle;

/// Largest pull answer, in bytes of records (beyond one record).
const MAX_PULL_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a pull may wait for a record.
const MAX_PULL_WAIT: Duration = Duration::from_secs(10);

/// Whether this node may take `req` for the shard: FAILED_PRECONDITION if
/// not, saying why.
pub fn check_write(role: &Role, writer: &WriterHandle, req: &IngestRequest) -> Result<(), Status> {
    let key = writer.shard.key();
    match role {
        Role::Standalone if req.epoch == 0 => Ok(()),
        Role::Standalone => Err(Status::failed_precondition(format!(
            "shard {key} has no leader on this node's catalog (sent for epoch {})",
            req.epoch
        ))),
        Role::Follower { leader, epoch } => Err(Status::failed_precondition(format!(
            "this node follows shard {key}; its leader is {} (epoch {epoch})",
            leader.id
        ))),
        Role::Leader { epoch } => {
            if req.seq != 0 {
                return Err(Status::invalid_argument(
                    "a shard with a leader numbers its own batches; seq must be 0",
                ));
            }
            let stored = writer.shard.stored_epoch();
            if req.epoch != *epoch || stored > *epoch {
                return Err(Status::failed_precondition(format!(
                    "shard {key}: write for epoch {} refused; this node leads epoch {epoch} \
                     and has seen epoch {stored}",
                    req.epoch
                )));
            }
            Ok(())
        }
    }
}

/// Serves one pull: checks roles and history, waits up to the asked time for
/// a record after `from_seq - 1`, and returns up to `max_ops` of them.
pub async fn read_log(
    role: &Role,
    writer: &WriterHandle,
    req: &ReadLogRequest,
) -> Result<ReadLogResponse, Status> {
    let key = writer.shard.key().clone();
    let Role::Leader { epoch } = role else {
        return Err(Status::failed_precondition(format!(
            "this node does not lead shard {key}"
        )));
    };
    let epoch = *epoch;
    if req.epoch > epoch {
        // A follower knows of a newer leader: stop taking writes now.
        let shard = writer.shard.clone();
        let seen = req.epoch;
        let _ = tokio::task::spawn_blocking(move || shard.raise_epoch(seen)).await;
        tracing::warn!(shard = %key, epoch, newer = seen, "deposed: a follower follows a newer epoch");
    }
    if req.epoch != epoch {
        return Err(Status::failed_precondition(format!(
            "shard {key}: pull for epoch {} refused; this node leads epoch {epoch}",
            req.epoch
        )));
    }
    let log = writer.log.clone();
    if req.from_seq < log.first_seq() && req.from_seq <= log.tip().seq {
        return Err(Status::out_of_range(format!(
            "shard {key}: records from {} are no longer in the log (it starts at {}); \
             bootstrap from a snapshot",
            req.from_seq,
            log.first_seq()
        )));
    }
    check_history(writer, req).await?;
    let mut tips = log.watch();
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_PULL_WAIT);
    let _ = tokio::time::timeout(wait, tips.wait_for(|tip| tip.seq >= req.from_seq)).await;
    let max_ops = match req.max_ops {
        0 => PULL_OPS,
        n => n.min(PULL_OPS * 4),
    } as usize;
    let from = req.from_seq;
    let records = tokio::task::spawn_blocking(move || log.read(from, max_ops, MAX_PULL_BYTES))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("shard {key}: log read failed: {e:#}")))?;
    let tip = writer.log.tip();
    Ok(ReadLogResponse {
        records,
        last_seq: tip.seq,
        last_unix_ms: tip.unix_ms,
        epoch,
    })
}

/// ABORTED if the follower's last record is not this log's record at that
/// sequence number (or the follower is ahead of the leader): its history
/// diverged, as after a promotion that lost unreplicated writes.
async fn check_history(writer: &WriterHandle, req: &ReadLogRequest) -> Result<(), Status> {
    let key = writer.shard.key();
    let tip = writer.log.tip();
    if req.prev_seq > tip.seq {
        return Err(Status::aborted(format!(
            "shard {key}: follower is at {} but the leader's log ends at {}; its history diverged",
            req.prev_seq, tip.seq
        )));
    }
    if req.prev_seq == 0 || req.prev_epoch == 0 || req.prev_seq < writer.log.first_seq() {
        return Ok(());
    }
    let log = writer.log.clone();
    let seq = req.prev_seq;
    let ours = tokio::task::spawn_blocking(move || log.epoch_at(seq))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("shard {key}: log read failed: {e:#}")))?;
    match ours {
        Some(e) if e != req.prev_epoch => Err(Status::aborted(format!(
            "shard {key}: follower's record {seq} is from epoch {} but the leader's is from \
             epoch {e}; its history diverged",
            req.prev_epoch
        ))),
        _ => Ok(()),
    }
}

/// The highest epoch `node` has seen for the shard, if it answers in time.
pub async fn epoch_of(
    node: &Node,
    key: &ShardKey,
    internal: &InternalToken,
    tls: Option<Tls>,
) -> Option<u64> {
    let settings = ChannelSettings {
        connect_timeout: Duration::from_secs(1),
        tls,
        ..ChannelSettings::default()
    };
    let channel = tandem_common::channel::channel(&node.addr, settings).ok()?;
    let ask = async {
        let mut client = IndexNodeClient::with_interceptor(channel, internal.clone());
        let info = client
            .get_shard_info(ShardRef {
                tenant: key.tenant.clone(),
                shard: key.shard,
                digest: false,
                digest_at_seq: 0,
            })
            .await
            .ok()?;
        Some(info.into_inner().epoch)
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}
