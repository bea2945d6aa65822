//! Pulling model versions from the object store, so that each region's
//! model-nodes serve what `tandem train` published without a shared disk.
//!
//! Each poll makes the node's model directory follow the store, tenant by
//! tenant ([`sync_once`]):
//!
//! - the newest published version is downloaded if the directory lacks it
//!   (to a temporary name, then renamed: the watcher never sees half a
//!   file), and the reloader swaps it in;
//! - a local version the store no longer has (rolled back, deleted) is
//!   removed, so the newest remaining one is served again;
//! - a tenant with no version left in the store is no longer served (its
//!   models were retired: a privacy deletion, a deleted tenant).
//!
//! With a store configured the store is the truth: a model written only
//! into the local directory is removed at the next poll. One poll lists the
//! store's tenants and each tenant's `models/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_common::store::Store;

use crate::artifact;
use crate::reload::Reloader;
use crate::versions;

/// What one poll changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncSummary {
    /// (tenant, version) downloaded.
    pub pulled: Vec<(String, String)>,
    /// Local versions removed because the store no longer has them.
    pub removed: usize,
    /// Tenants with no version left in the store but some served here.
    pub retired: Vec<String>,
}

impl SyncSummary {
    /// Whether the directory changed.
    pub fn changed(&self) -> bool {
        !self.pulled.is_empty() || self.removed > 0 || !self.retired.is_empty()
    }
}

/// Makes `model_dir` follow the store once (see the module docs). A
/// tenant that fails (a store error, a write error, a name that is not a
/// tenant id) is logged and skipped: it does not hold up the others, their
/// rollbacks and retirements included.
pub async fn sync_once(store: &Store, model_dir: &Path) -> anyhow::Result<SyncSummary> {
    let mut tenants: BTreeSet<String> = store.tenants().await?.into_iter().collect();
    tenants.extend(artifact::tenants(model_dir)?);
    let mut summary = SyncSummary::default();
    for tenant in tenants {
        if tandem_catalog::ids::validate_tenant_id(&tenant).is_err() {
            continue;
        }
        if let Err(e) = sync_tenant(store, model_dir, &tenant, &mut summary).await {
            metrics::counter!("model_store_sync_errors_total").increment(1);
            tracing::warn!(tenant, error = %format!("{e:#}"), "cannot sync a tenant's models");
        }
    }
    Ok(summary)
}

/// One tenant's part of [`sync_once`].
async fn sync_tenant(
    store: &Store,
    model_dir: &Path,
    tenant: &str,
    summary: &mut SyncSummary,
) -> anyhow::Result<()> {
    let published = versions::list(store, tenant).await?;
    let local = artifact::list_versions(model_dir, tenant)?;
    let Some(newest) = published.last() else {
        if !local.is_empty() {
            summary.retired.push(tenant.to_string());
        }
        return Ok(());
    };
    // A local copy of another size (a download cut short) is fetched again.
    let have = local.iter().any(|l| {
        l.version == newest.version
            && std::fs::metadata(&l.path).is_ok_and(|m| m.len() == newest.size)
    });
    if !have {
        let bytes = versions::fetch(store, tenant, &newest.version).await?;
        let dir = artifact::tenant_dir(model_dir, tenant)?;
        let name = versions::file_name(&newest.version);
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!(".{name}.pull"));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, dir.join(&name))
            .await
            .with_context(|| format!("cannot install {name} of {tenant}"))?;
        summary
            .pulled
            .push((tenant.to_string(), newest.version.clone()));
    }
    for gone in local
        .iter()
        .filter(|l| !published.iter().any(|p| p.version == l.version))
    {
        tokio::fs::remove_file(&gone.path).await?;
        summary.removed += 1;
    }
    Ok(())
}

/// Polls the store every `every` until the task is aborted, and has the
/// reloader serve what changed at once.
pub async fn sync_forever(store: Store, reloader: Arc<Reloader>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sync_once(&store, reloader.store().model_dir()).await {
            Ok(summary) => apply(&reloader, summary).await,
            Err(e) => {
                metrics::counter!("model_store_sync_errors_total").increment(1);
                tracing::warn!(error = %format!("{e:#}"), "cannot sync models from the store");
            }
        }
    }
}

/// How long a starting node waits for the model store.
const STARTUP_PULL: Duration = Duration::from_secs(5);

/// At start, before the first load: one poll, waiting at most
/// [`STARTUP_PULL`] (a store that does not answer in time does not keep the
/// node from serving what its cache holds; the next poll catches up), and
/// the retired tenants removed. Loading is the caller's.
pub async fn pull_at_start(store: &Store, reloader: &Arc<Reloader>) {
    let model_dir = reloader.store().model_dir();
    let pulled = match tokio::time::timeout(STARTUP_PULL, sync_once(store, model_dir)).await {
        Ok(pulled) => pulled,
        Err(_) => Err(anyhow::anyhow!("no answer in {STARTUP_PULL:?}")),
    };
    match pulled {
        Ok(summary) => retire(reloader, &summary.retired).await,
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot pull models at start"),
    }
}

/// Stops serving `tenants` (their models are retired from the store).
async fn retire(reloader: &Arc<Reloader>, tenants: &[String]) {
    for tenant in tenants {
        if let Err(e) = reloader.remove(tenant).await {
            tracing::warn!(tenant, error = %e, "cannot retire a tenant's models");
        }
    }
}

/// Serves what one poll changed: retired tenants stop, the rest reload.
pub async fn apply(reloader: &Arc<Reloader>, summary: SyncSummary) {
    for (tenant, version) in &summary.pulled {
        tracing::info!(tenant, version, "model version pulled from the store");
    }
    retire(reloader, &summary.retired).await;
    if summary.changed() {
        if let Err(e) = reloader.scan().await {
            tracing::warn!(error = %e, "model reload after a sync failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train, TrainConfig};
    use std::collections::BTreeMap;

    fn store(dir: &Path) -> Store {
        Store::open(&format!("file://{}", dir.display()), &BTreeMap::new()).expect("store")
    }

    #[tokio::test]
    async fn the_directory_follows_publish_rollback_and_retirement() {
        let (s, local) = (
            tempfile::tempdir().expect("t"),
            tempfile::tempdir().expect("t"),
        );
        let store = store(s.path());
        let (set, _) = train(&[], "t1", &TrainConfig::default()).expect("train");
        let v1 = versions::publish(&store, &set, 1000)
            .await
            .expect("publish");
        let v2 = versions::publish(&store, &set, 1000)
            .await
            .expect("publish");
        assert_eq!((v1.number, v2.number), (1000, 1001), "versions only grow");

        let first = sync_once(&store, local.path()).await.expect("sync");
        assert_eq!(first.pulled, [("t1".to_string(), "v1001".to_string())]);
        let names = |d: &Path| -> Vec<String> {
            artifact::list_versions(d, "t1")
                .expect("list")
                .into_iter()
                .map(|f| f.version)
                .collect()
        };
        assert_eq!(names(local.path()), ["v1001"]);
        assert!(!sync_once(&store, local.path())
            .await
            .expect("sync")
            .changed());

        versions::retire(&store, "t1", "v1001")
            .await
            .expect("retire");
        let rolled = sync_once(&store, local.path()).await.expect("sync");
        assert_eq!((rolled.pulled.len(), rolled.removed), (1, 1));
        assert_eq!(
            names(local.path()),
            ["v1000"],
            "the previous version is back"
        );

        versions::retire(&store, "t1", "v1000")
            .await
            .expect("retire");
        let gone = sync_once(&store, local.path()).await.expect("sync");
        assert_eq!(gone.retired, ["t1"]);
    }
}
