//! `tandem promote`: makes a follower the leader of a shard, at a higher
//! epoch, by editing the catalog.
//!
//! The follower must be caught up: among the shard's replicas that answer
//! (the old leader included, if it does), none may have a longer log than
//! it. If the old leader answers and is ahead, the command waits a little
//! for the follower to catch up; `--force` promotes anyway (acknowledged
//! writes the follower lacks are then lost, see docs/architecture.md).
//!
//! Once the catalog names the new leader at epoch E + 1, every router sends
//! writes there, the new leader takes them, and the other replicas follow
//! it; nodes refuse writes and replication from epoch E, so the old leader
//! cannot take writes again, even if it comes back with a stale catalog
//! (it asks the other replicas for their epoch before leading).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::verify::shard_states;

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The previous leader.
    pub from: String,
    /// Its epoch.
    pub from_epoch: u64,
    /// The new leader.
    pub to: String,
    /// The new epoch.
    pub epoch: u64,
    /// The new leader's last sequence number when promoted.
    pub seq: u64,
}

/// Promotes `node` to lead `tenant`'s `shard` in the catalog at `path`.
pub async fn promote(
    path: &Path,
    tenant: &str,
    shard: u32,
    node: &str,
    force: bool,
) -> anyhow::Result<Promoted> {
    let catalog = tandem_catalog::Catalog::load_file(path)?;
    let (_, s) = crate::catalog_edit::shard(&catalog, tenant, shard)?;
    if !s.replicas.iter().any(|n| &*n.id == node) {
        bail!("{node} holds no replica of {tenant}/{shard}");
    }
    let old = s.leader.clone();
    if &*old.node.id == node {
        bail!(
            "{node} already leads {tenant}/{shard} (epoch {})",
            old.epoch
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        let states = shard_states(&catalog, tenant, shard, false).await?;
        let mine = states
            .iter()
            .find(|r| r.node == node)
            .and_then(|r| r.info.as_ref().ok())
            .with_context(|| {
                format!("{node} does not answer; only a live replica can be promoted")
            })?
            .log_seq;
        let best = states
            .iter()
            .filter_map(|r| r.info.as_ref().ok().map(|i| (r.node.clone(), i.log_seq)))
            .max_by_key(|(_, seq)| *seq)
            .expect("the candidate answered");
        if best.1 <= mine || force {
            break mine;
        }
        if Instant::now() >= deadline {
            bail!(
                "{node} is behind: its log ends at {mine}, {}'s at {}; wait for it to catch up, \
                 promote {} instead, or pass --force to lose the difference",
                best.0,
                best.1,
                best.0
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let epoch = old.epoch + 1;
    // The file as it is now: other edits may have come while we waited.
    crate::catalog_edit::edit(path, |file, _| file.set_leader(tenant, shard, node, epoch))?;
    Ok(Promoted {
        from: old.node.id.to_string(),
        from_epoch: old.epoch,
        to: node.to_string(),
        epoch,
        seq,
    })
}
