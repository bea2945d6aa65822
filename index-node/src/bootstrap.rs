//! Building a replica from a snapshot, and taking snapshots.
//!
//! [`take`] is the leader's side: the writer links the last commit's files
//! aside (so the leader keeps taking writes), they go to the snapshot store,
//! old snapshots beyond the kept number are deleted. [`install`] is the
//! follower's side: download the newest usable snapshot into a directory
//! beside the shards, then swap it in for the shard (its writer is stopped
//! first and started again on the new files, with an empty log that
//! continues after the snapshot's sequence number). The follower then pulls
//! from the leader from there.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tandem_proto::v1::SnapshotInfo;

use crate::registry::ShardRegistry;
use crate::shard::{ShardKey, ShardMeta};
use crate::snapshot::{Manifest, Progress, SnapshotStore, MANIFEST_FORMAT};
use crate::writer::unix_ms;

/// Takes a snapshot of `key` (which must have a writer) into `store`,
/// keeping the newest `keep` snapshots.
pub async fn take(
    registry: &Arc<ShardRegistry>,
    store: &SnapshotStore,
    key: &ShardKey,
    keep: usize,
) -> anyhow::Result<SnapshotInfo> {
    let writer = registry.writer_async(key).await?;
    let staged = writer.stage_snapshot().await?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        tenant: key.tenant.clone(),
        shard: key.shard,
        seq: staged.seq,
        epoch: staged.epoch,
        language: writer.shard.language().to_string(),
        schema: crate::schema::SCHEMA_VERSION,
        files: staged.files.clone(),
        created_unix_ms: unix_ms(),
    };
    let uploaded = store.upload(&staged.dir, &manifest).await;
    let _ = tokio::fs::remove_dir_all(&staged.dir).await;
    let location = uploaded?;
    if let Err(e) = store.collect_garbage(key, keep).await {
        tracing::warn!(shard = %key, error = %format!("{e:#}"), "old snapshots not deleted");
    }
    metrics::counter!("index_snapshots_taken_total").increment(1);
    metrics::counter!("index_snapshot_bytes_total").increment(manifest.bytes());
    tracing::info!(shard = %key, seq = manifest.seq, bytes = manifest.bytes(), "snapshot taken");
    Ok(SnapshotInfo {
        tenant: key.tenant.clone(),
        shard: key.shard,
        seq: manifest.seq,
        epoch: manifest.epoch,
        location,
        bytes: manifest.bytes(),
        files: manifest.files.len() as u32,
    })
}

/// Replaces the shard `key` on this node with the snapshot `manifest` from
/// `store`, counting downloaded bytes in `progress`; `epoch` is stored as
/// the epoch the replica has seen.
pub async fn install(
    registry: &Arc<ShardRegistry>,
    store: &SnapshotStore,
    manifest: &Manifest,
    epoch: u64,
    progress: &Progress,
) -> anyhow::Result<()> {
    let key = ShardKey {
        tenant: manifest.tenant.clone(),
        shard: manifest.shard,
    };
    let staging: PathBuf = registry
        .data_dir()
        .join("bootstrap")
        .join(&key.tenant)
        .join(key.shard.to_string());
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let started = std::time::Instant::now();
    store
        .download(manifest, &staging.join("index"), progress)
        .await
        .with_context(|| format!("cannot download the snapshot of {key} at {}", manifest.seq))?;
    let meta = ShardMeta {
        language: manifest.language.clone(),
        epoch: epoch.max(manifest.epoch),
        schema: manifest.schema,
    };
    tokio::fs::write(staging.join(ShardMeta::FILE), serde_json::to_vec(&meta)?).await?;
    registry.replace(&key, &staging).await?;
    let secs = started.elapsed().as_secs_f64();
    metrics::counter!("index_bootstrap_bytes_total").increment(manifest.bytes());
    tracing::info!(shard = %key, seq = manifest.seq, bytes = manifest.bytes(), secs,
        "replica installed from a snapshot");
    Ok(())
}

/// Every `interval`, snapshots each shard this node leads (the shards'
/// backups), keeping the newest `keep`.
pub async fn schedule(
    roles: Arc<crate::roles::Roles>,
    registry: Arc<ShardRegistry>,
    store: SnapshotStore,
    interval: std::time::Duration,
    keep: usize,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        for key in roles.led() {
            if let Err(e) = take(&registry, &store, &key, keep).await {
                tracing::error!(shard = %key, error = %format!("{e:#}"), "scheduled snapshot failed");
            }
        }
    }
}
