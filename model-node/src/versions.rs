//! Model versions in the object store: `<store>/<tenant>/models/v<ms>.tmodel`
//! (`tandem_common::store`). `tandem train` publishes a version, a
//! rollback retires the newest, and every model-node pulls the newest one
//! ([`crate::sync`]). A version is immutable: it is put once, under a name
//! that only grows, and never changed.

use bytes::Bytes;
use tandem_common::store::Store;

use crate::artifact::{self, EXTENSION};
use crate::model::ModelSet;

/// A version in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `v<number>`.
    pub version: String,
    /// Its number (Unix milliseconds when published; orders versions).
    pub number: u64,
    /// Bytes.
    pub size: u64,
}

/// `tenant`'s versions in the store, oldest first.
pub async fn list(store: &Store, tenant: &str) -> anyhow::Result<Vec<Published>> {
    let mut out: Vec<Published> = store
        .list(&store.models(tenant))
        .await?
        .into_iter()
        .filter_map(|(path, size)| {
            let number = artifact::parse_version(path.filename()?)?;
            Some(Published {
                version: format!("v{number}"),
                number,
                size,
            })
        })
        .collect();
    out.sort_by_key(|p| p.number);
    Ok(out)
}

/// Publishes `set` as a new version of its tenant, numbered `now_ms` or
/// one more than the newest published if that is not older.
pub async fn publish(store: &Store, set: &ModelSet, now_ms: u64) -> anyhow::Result<Published> {
    let tenant = &set.meta.tenant;
    let number = match list(store, tenant).await?.last() {
        Some(p) if p.number >= now_ms => p.number + 1,
        _ => now_ms,
    };
    let version = format!("v{number}");
    let bytes = artifact::encode(set);
    let size = bytes.len() as u64;
    store
        .client
        .put(&store.model_object(tenant, &version), bytes.into())
        .await?;
    Ok(Published {
        version,
        number,
        size,
    })
}

/// [`publish`] numbered by the clock (Unix milliseconds now).
pub async fn publish_now(store: &Store, set: &ModelSet) -> anyhow::Result<Published> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    publish(store, set, now_ms).await
}

/// The artifact bytes of one version.
pub async fn fetch(store: &Store, tenant: &str, version: &str) -> anyhow::Result<Bytes> {
    let got = store
        .client
        .get(&store.model_object(tenant, version))
        .await?;
    Ok(got.bytes().await?)
}

/// The model set of one version (checked like a local artifact).
pub async fn read(store: &Store, tenant: &str, version: &str) -> anyhow::Result<ModelSet> {
    let bytes = fetch(store, tenant, version).await?;
    artifact::decode(&bytes).map_err(|e| anyhow::anyhow!("version {version} of {tenant}: {e}"))
}

/// Removes one version (a rollback, a privacy deletion).
pub async fn retire(store: &Store, tenant: &str, version: &str) -> anyhow::Result<()> {
    store
        .client
        .delete(&store.model_object(tenant, version))
        .await?;
    Ok(())
}

/// The file name of a version in a model directory.
pub fn file_name(version: &str) -> String {
    format!("{version}.{EXTENSION}")
}
