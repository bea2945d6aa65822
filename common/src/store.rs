//! The object store every tandem process shares, and its one layout.
//!
//! One store (an S3 bucket in a fleet, `file://<dir>/snapshots` under
//! `tandem dev`) holds everything a tenant has outside the nodes' disks:
//!
//! ```text
//! <store>/<tenant>/<shard>/<S, 20 digits>/...            index snapshots (index-node)
//! <store>/<tenant>/events/<region>/<router>-<ms>.jsonl.gz usage events (routers ship them)
//! <store>/<tenant>/events/seed/<name>.jsonl.gz           a seed log (tandem dev)
//! <store>/<tenant>/models/v<ms>.tmodel                   model versions (tandem train)
//! ```
//!
//! Shards are numbers, so `events` and `models` never collide with them,
//! and deleting `<store>/<tenant>/` (`tandem tenant delete`) takes a
//! tenant's snapshots, events and models at once. The paths below are the
//! only place that spells the layout out.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use object_store::path::Path;
use object_store::ObjectStore;

/// Directory of a tenant's usage events.
pub const EVENTS_DIR: &str = "events";
/// Directory of a tenant's model versions.
pub const MODELS_DIR: &str = "models";
/// The `<region>` of events that seeded a tenant's models.
pub const SEED_REGION: &str = "seed";

/// An opened store: the client and the root path inside it.
#[derive(Clone, Debug)]
pub struct Store {
    /// The client.
    pub client: Arc<dyn ObjectStore>,
    /// Everything lives under this path.
    pub root: Path,
    url: String,
}

impl Store {
    /// The store at `url` (`file:///abs/dir`, `s3://bucket/prefix`, ...),
    /// with `options` (e.g. `aws_endpoint`, `aws_allow_http`) and, for S3,
    /// the standard `AWS_*` environment variables. A `file://` directory is
    /// created if missing, and directories a deletion empties are removed.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> anyhow::Result<Store> {
        let parsed = url::Url::parse(url).with_context(|| format!("store {url:?} is not a URL"))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|_| anyhow::anyhow!("store {url:?} is not an absolute path"))?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut opts: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        opts.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (client, root) = object_store::parse_url_opts(&parsed, opts)
            .with_context(|| format!("cannot open store {url:?}"))?;
        let client: Arc<dyn ObjectStore> = if parsed.scheme() == "file" {
            Arc::new(object_store::local::LocalFileSystem::new().with_automatic_cleanup(true))
        } else {
            Arc::from(client)
        };
        Ok(Store {
            client,
            root,
            url: url.to_string(),
        })
    }

    /// The store's URL (for logs; never in a public error).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<store>/<tenant>`.
    pub fn tenant(&self, tenant: &str) -> Path {
        self.root.child(tenant)
    }

    /// `<store>/<tenant>/events`.
    pub fn events(&self, tenant: &str) -> Path {
        self.tenant(tenant).child(EVENTS_DIR)
    }

    /// `<store>/<tenant>/events/<region>/<name>`.
    pub fn event_object(&self, tenant: &str, region: &str, name: &str) -> Path {
        self.events(tenant).child(region).child(name)
    }

    /// `<store>/<tenant>/models`.
    pub fn models(&self, tenant: &str) -> Path {
        self.tenant(tenant).child(MODELS_DIR)
    }

    /// `<store>/<tenant>/models/<version>.tmodel`.
    pub fn model_object(&self, tenant: &str, version: &str) -> Path {
        self.models(tenant).child(format!("{version}.tmodel"))
    }

    /// The tenants with anything in the store (the first level of names).
    pub async fn tenants(&self) -> anyhow::Result<Vec<String>> {
        let listing = self
            .client
            .list_with_delimiter(Some(&self.root))
            .await
            .context("cannot list the store")?;
        let mut out: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every object under `prefix`, with its size, sorted by path.
    pub async fn list(&self, prefix: &Path) -> anyhow::Result<Vec<(Path, u64)>> {
        let listed = self.list_meta(prefix).await?;
        Ok(listed.into_iter().map(|m| (m.location, m.size)).collect())
    }

    /// Every object under `prefix`, sorted by path.
    pub async fn list_meta(&self, prefix: &Path) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        let mut out: Vec<object_store::ObjectMeta> = self
            .client
            .list(Some(prefix))
            .try_collect()
            .await
            .context("cannot list the store")?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn layout_and_tenants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, &BTreeMap::new()).expect("open");
        assert_eq!(
            store.model_object("t1", "v12").as_ref(),
            format!("{}/t1/models/v12.tmodel", store.root.as_ref())
        );
        let events = store.event_object("t1", "us-east-1", "r-1.jsonl.gz");
        assert!(events
            .as_ref()
            .ends_with("t1/events/us-east-1/r-1.jsonl.gz"));
        store
            .client
            .put(&events, b"x".to_vec().into())
            .await
            .expect("put");
        assert_eq!(store.tenants().await.expect("tenants"), ["t1"]);
        let listed = store.list(&store.events("t1")).await.expect("list");
        assert_eq!(listed, [(events, 1)]);
    }
}
