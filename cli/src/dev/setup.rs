//! The dev cluster's fixed shape (regions, sample tenants), its secrets,
//! and the data it starts with: trained models and the loaded corpus.

use std::path::{Path, PathBuf};

use crate::ingest::{ingest, IngestPlan};
use anyhow::Context;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tandem_client::corpus::{read_documents_up_to, Where};
use tandem_common::internal::InternalToken;
use tandem_common::secret_file;
use tandem_proto::v1::ShardRef;

use crate::supervise::Process;

/// One sample tenant of the dev cluster.
pub(crate) struct SampleTenant {
    pub id: &'static str,
    pub lang: &'static str,
    pub active_active: bool,
    pub index_replicas: &'static [&'static str],
    pub queries: &'static [&'static str],
}

/// `(region, paired region, node id prefix)`.
pub(crate) const REGIONS: [(&str, &str, &str); 2] = [
    ("us-east-1", "us-east-2", "use1"),
    ("us-east-2", "us-east-1", "use2"),
];

/// The id of router `i` (1-based) of the region with short name `short`:
/// `use1-router`, then `use1-router-2`, `use1-router-3`, ...
pub(crate) fn router_id(short: &str, i: usize) -> String {
    if i == 1 {
        format!("{short}-router")
    } else {
        format!("{short}-router-{i}")
    }
}

/// Home region of both sample tenants.
pub(crate) const HOME: &str = "us-east-1";

/// The sample tenants; the active-active one first (the topology promises
/// that order).
pub(crate) const TENANTS: [SampleTenant; 2] = [
    SampleTenant {
        id: "tldr-en",
        lang: "en",
        active_active: true,
        index_replicas: &["use1-index-1", "use2-index-1"],
        queries: &[
            "extract a tar archive",
            "list running processes",
            "change file permissions",
            "show disk usage",
            "compress a directory",
        ],
    },
    SampleTenant {
        id: "tldr-es",
        lang: "es",
        active_active: false,
        index_replicas: &["use1-index-1", "use1-index-2"],
        queries: &[
            "extraer un archivo",
            "listar archivos",
            "mostrar el uso del disco",
            "cambiar permisos",
        ],
    },
];

/// Keys and the admin token, made once per data directory so a restarted
/// cluster keeps the keys its users already have.
#[derive(Serialize, Deserialize)]
pub(crate) struct Secrets {
    pub admin_token: String,
    pub api_keys: Vec<(String, String)>,
    /// Keys with the write scope (made on first use by this version).
    #[serde(default)]
    pub write_keys: Vec<(String, String)>,
    /// The cluster's internal token (made on first use by this version).
    #[serde(default)]
    pub internal_token: String,
    /// The routers' search-id signing key (made on first use by this
    /// version).
    #[serde(default)]
    pub search_id_key: String,
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}-{}", hex::encode(bytes))
}

impl Secrets {
    /// The secrets of `dir`, made and saved on first use.
    pub fn of(dir: &Path) -> anyhow::Result<Secrets> {
        let path = dir.join("secrets.json");
        let write_keys = || {
            TENANTS
                .iter()
                .map(|t| (t.id.to_string(), random_secret(&format!("{}-write", t.id))))
                .collect()
        };
        if path.exists() {
            // An unreadable secrets file is an error, never a reason to
            // mint new keys that the cluster's users do not have.
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut s = serde_json::from_str::<Secrets>(&text)
                .with_context(|| format!("{} is not a secrets file", path.display()))?;
            if s.write_keys.is_empty() || s.internal_token.is_empty() || s.search_id_key.is_empty()
            {
                if s.write_keys.is_empty() {
                    s.write_keys = write_keys();
                }
                if s.internal_token.is_empty() {
                    s.internal_token = InternalToken::generate().as_str().to_string();
                }
                if s.search_id_key.is_empty() {
                    s.search_id_key = random_secret("search-id");
                }
                secret_file::write(&path, &serde_json::to_vec_pretty(&s)?)?;
            }
            return Ok(s);
        }
        let s = Secrets {
            admin_token: random_secret("admin"),
            api_keys: TENANTS
                .iter()
                .map(|t| (t.id.to_string(), random_secret(t.id)))
                .collect(),
            write_keys: write_keys(),
            internal_token: InternalToken::generate().as_str().to_string(),
            search_id_key: random_secret("search-id"),
        };
        secret_file::write(&path, &serde_json::to_vec_pretty(&s)?)?;
        Ok(s)
    }

    /// Writes the search-id key to `search-id.key` in `dir` (mode 0600)
    /// for every router's `--search-id-key-file`; returns the file's path.
    pub fn install_search_id_key(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("search-id.key");
        secret_file::write(&path, format!("{}\n", self.search_id_key).as_bytes())?;
        Ok(path)
    }

    /// Writes the internal token to `internal-token` in `dir` (mode 0600)
    /// for the processes' `--internal-token-file`, and makes it this
    /// invocation's operator token; returns the file's path.
    pub fn install_internal_token(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let token = InternalToken::new(&self.internal_token)?;
        let path = dir.join("internal-token");
        token.write_file(&path)?;
        crate::operator::use_internal_token(token);
        Ok(path)
    }

    /// The search key of `tenant` (empty for a tenant it does not know).
    pub fn key(&self, tenant: &str) -> &str {
        self.api_keys
            .iter()
            .find(|(t, _)| t == tenant)
            .map_or("", |(_, k)| k.as_str())
    }

    /// The write key of `tenant` (empty for a tenant it does not know).
    pub fn write_key(&self, tenant: &str) -> &str {
        self.write_keys
            .iter()
            .find(|(t, _)| t == tenant)
            .map_or("", |(_, k)| k.as_str())
    }
}

/// Seeds each tenant's models from the sample (synthetic) event log,
/// unless the store has a version already: the log goes into the store as
/// the tenant's `seed` events (so that every later `tandem train` learns
/// from it and from what the routers record), and a first version is
/// trained from it and published. Model-nodes pull it from the store.
pub(crate) async fn seed_models(repo: PathBuf, store_url: String) -> anyhow::Result<()> {
    use tandem_model_node::{events, train, versions};
    let store = tandem_common::store::Store::open(&store_url, &Default::default())?;
    for t in &TENANTS {
        if !versions::list(&store, t.id).await?.is_empty() {
            continue;
        }
        let path = repo
            .join("data/events")
            .join(format!("{}.jsonl.gz", t.lang));
        let bytes: bytes::Bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into();
        let seed = store.event_object(
            t.id,
            tandem_common::store::SEED_REGION,
            "synthetic.jsonl.gz",
        );
        store.client.put(&seed, bytes.clone().into()).await?;
        let tenant = t.id.to_string();
        let set = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let log = events::read_events(&bytes[..])?;
            Ok(train::train(&log, &tenant, &train::TrainConfig::default())?.0)
        })
        .await??;
        versions::publish_now(&store, &set).await?;
    }
    Ok(())
}

/// Writes each tenant's pages (at most `limit` per tenant) through the
/// public write API of the home region's router, so that they are written
/// once, to the leader, and replicated to every other replica. A tenant
/// whose leader already holds writes is skipped, so a second start on the
/// same data directory writes nothing.
pub(crate) async fn load_corpus(
    processes: &[Process],
    secrets: &Secrets,
    repo: &Path,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let corpus = repo.join("data/tldr_pages/docs.jsonl.gz");
    let router = processes
        .iter()
        .find(|p| p.kind == tandem_client::NodeInfo::KIND_ROUTER && p.region == HOME)
        .context("the home region's router is not running")?;
    let mut tasks = Vec::new();
    for t in &TENANTS {
        let leader = processes
            .iter()
            .find(|p| p.id == t.index_replicas[0])
            .with_context(|| format!("leader node {} is not running", t.index_replicas[0]))?;
        if leader_has_writes(&leader.grpc, t.id).await? {
            continue;
        }
        let filters = vec![format!("lang={}", t.lang)
            .parse::<Where>()
            .map_err(anyhow::Error::msg)?];
        let corpus = corpus.clone();
        let docs =
            tokio::task::spawn_blocking(move || read_documents_up_to(&corpus, &filters, limit))
                .await??;
        let plan = IngestPlan {
            tenant: t.id.to_string(),
            write_key: secrets.write_key(t.id).to_string(),
            batch_size: 500,
            progress: false,
            first_line: 1,
        };
        let addr = router.grpc.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = crate::ingest::connect(&addr).await?;
            ingest(&mut client, &plan, docs).await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("load task failed")??;
    }
    Ok(())
}

/// Whether the tenant's leader replica has a log with writes in it (its
/// shard is created by the node itself once the catalog names it, so wait
/// for that).
async fn leader_has_writes(addr: &str, tenant: &str) -> anyhow::Result<bool> {
    let mut client = crate::operator::index_node(addr).await?;
    for _ in 0..100 {
        let info = client
            .get_shard_info(ShardRef {
                tenant: tenant.into(),
                shard: 0,
                digest: false,
                digest_at_seq: 0,
            })
            .await;
        match info {
            Ok(info) => {
                let info = info.into_inner();
                return Ok(info.log_seq > 0 || info.applied_seq > 0 || info.num_docs > 0);
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(status) => {
                anyhow::bail!("leader of {tenant} does not answer: {}", status.message())
            }
        }
    }
    anyhow::bail!("the leader of {tenant} did not create its shard from the catalog")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_made_once_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Secrets::of(dir.path()).expect("secrets");
        let b = Secrets::of(dir.path()).expect("secrets again");
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.key("tldr-en"), b.key("tldr-en"));
        assert_ne!(a.key("tldr-en"), a.key("tldr-es"));
        assert_eq!(a.key("nobody"), "");
    }

    #[test]
    fn an_unreadable_secrets_file_is_an_error_not_new_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.json");
        // A directory where the file should be: it exists, it cannot be
        // read (whoever runs the test, root included).
        std::fs::create_dir(&path).expect("dir");
        let err = Secrets::of(dir.path()).err().expect("refused");
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
        std::fs::remove_dir(&path).expect("rmdir");
        std::fs::write(&path, "not json").expect("write");
        let err = Secrets::of(dir.path()).err().expect("refused");
        assert!(format!("{err:#}").contains("not a secrets file"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "not json",
            "left as it was"
        );
    }

    #[test]
    fn reads_a_limited_slice_of_one_language() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let corpus = repo.join("data/tldr_pages/docs.jsonl.gz");
        let filters = vec!["lang=es".parse::<Where>().expect("filter")];
        let docs = read_documents_up_to(&corpus, &filters, Some(25)).expect("docs");
        assert_eq!(docs.len(), 25);
        assert!(docs.iter().all(|d| d.id.starts_with("es/")));
    }

    #[test]
    fn the_active_active_tenant_is_first() {
        assert!(TENANTS[0].active_active);
        assert!(!TENANTS[1].active_active);
    }
}
