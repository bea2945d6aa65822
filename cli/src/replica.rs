//! `tandem replica add` and `tandem replica remove`: a shard's replica set,
//! changed while the tenant is live.
//!
//! `add` asks the new node to bootstrap (install a fresh snapshot the
//! leader takes, then follow the leader), shows its progress, and once it
//! has caught up and its content digest equals the leader's at one
//! sequence number, adds it to the catalog. Only then do routers send it
//! searches. `remove` takes a follower out of the catalog (its node stops
//! following; the files stay on its disk until deleted by hand).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tandem_catalog::NodeKind;
use tandem_proto::v1::{BootstrapRequest, ShardHealth};

use crate::verify::{meet, shard_info};

/// What an added replica took.
#[derive(Debug, Clone)]
pub struct Added {
    /// From the request to "caught up with equal digests".
    pub elapsed: Duration,
    /// Bytes of the snapshot it installed.
    pub snapshot_bytes: u64,
    /// The sequence number at which its digest matched the leader's.
    pub seq: u64,
}

/// Adds `node` as a replica of `tenant`'s `shard` in the catalog at `path`.
pub async fn add(
    path: &Path,
    tenant: &str,
    shard: u32,
    node: &str,
    wait: Duration,
    progress: bool,
) -> anyhow::Result<Added> {
    let started = Instant::now();
    let catalog = tandem_catalog::Catalog::load_file(path)?;
    let (t, s) = crate::catalog_edit::shard(&catalog, tenant, shard)?;
    let target = catalog
        .node(node)
        .filter(|n| n.kind == NodeKind::Index)
        .with_context(|| format!("{node} is not an index node of the catalog"))?
        .clone();
    if s.replicas.iter().any(|n| n.id == target.id) {
        bail!("{node} is already a replica of {tenant}/{shard}");
    }
    crate::operator::index_node(&target.addr)
        .await
        .with_context(|| format!("cannot reach {node}"))?
        .bootstrap(BootstrapRequest {
            tenant: tenant.into(),
            shard,
            language: t.language.to_string(),
            leader: s.leader.node.id.to_string(),
            epoch: s.leader.epoch,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{node} refused to bootstrap: {}", e.message()))?;
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>12} {bar:40} {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let deadline = Instant::now() + wait;
    let mut snapshot_bytes = 0;
    // Once installed, caught up means: applied what the leader had logged
    // when the installation ended.
    let mut goal_seq = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{node} did not catch up within {wait:?}"
        );
        let mine = shard_info(&target, tenant, shard, false)
            .await
            .map_err(anyhow::Error::msg)?;
        let leader = shard_info(&s.leader.node, tenant, shard, false)
            .await
            .map_err(anyhow::Error::msg)?;
        snapshot_bytes = snapshot_bytes.max(mine.bootstrap_total_bytes);
        let bootstrapping = mine.health == ShardHealth::Bootstrapping as i32;
        // A bootstrap that keeps failing (no snapshot store shared with
        // the leader, for one) is reported rather than waited out.
        if bootstrapping && !mine.error.is_empty() {
            let since = *failing_since.get_or_insert_with(Instant::now);
            anyhow::ensure!(
                since.elapsed() < Duration::from_secs(30),
                "{node} cannot bootstrap: {}",
                mine.error
            );
        } else {
            failing_since = None;
        }
        if let Some(bar) = &bar {
            if bootstrapping {
                bar.set_message("snapshot");
                bar.set_length(mine.bootstrap_total_bytes);
                bar.set_position(mine.bootstrap_bytes);
            } else {
                bar.set_message("catching up");
                bar.set_length(goal_seq.unwrap_or(leader.log_seq));
                bar.set_position(mine.applied_seq);
            }
        }
        if !bootstrapping {
            let goal = *goal_seq.get_or_insert(leader.log_seq);
            if mine.applied_seq >= goal {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let nodes = [s.leader.node.clone(), target.clone()];
    let verdict = meet(
        &nodes,
        tenant,
        shard,
        wait.saturating_sub(started.elapsed()),
    )
    .await;
    let Some(seq) = verdict.seq.filter(|_| verdict.equal) else {
        bail!("{node}'s copy does not match the leader's: {verdict:?}");
    };
    // The file as it is now (other edits may have come meanwhile).
    crate::catalog_edit::edit(path, |file, _| file.set_replica(tenant, shard, node, true))?;
    Ok(Added {
        elapsed: started.elapsed(),
        snapshot_bytes,
        seq,
    })
}

/// Removes follower `node` from `tenant`'s `shard` in the catalog at `path`.
pub fn remove(path: &Path, tenant: &str, shard: u32, node: &str) -> anyhow::Result<()> {
    crate::catalog_edit::edit(path, |file, catalog| {
        let (_, s) = crate::catalog_edit::shard(catalog, tenant, shard)?;
        if &*s.leader.node.id == node {
            bail!("{node} leads {tenant}/{shard}; promote another replica first");
        }
        file.set_replica(tenant, shard, node, false)
    })?;
    Ok(())
}
