//! The dev cluster's fixed shape (regions, sample tenants), its secrets,
//! and the data it starts with: trained models and the loaded corpus.

use std::path::{Path, PathBuf};

use super::load::{load, LoadPlan};
use anyhow::Context;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tandem_client::corpus::{read_documents_up_to, Where};
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{CreateShardRequest, ShardRef};

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
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}-{}", hex::encode(bytes))
}

impl Secrets {
    /// The secrets of `dir`, made and saved on first use.
    pub fn of(dir: &Path) -> anyhow::Result<Secrets> {
        let path = dir.join("secrets.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(s) = serde_json::from_str(&text) {
                return Ok(s);
            }
        }
        let s = Secrets {
            admin_token: random_secret("admin"),
            api_keys: TENANTS
                .iter()
                .map(|t| (t.id.to_string(), random_secret(t.id)))
                .collect(),
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&s)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(s)
    }

    /// The API key of `tenant` (empty for a tenant it does not know).
    pub fn key(&self, tenant: &str) -> &str {
        self.api_keys
            .iter()
            .find(|(t, _)| t == tenant)
            .map_or("", |(_, k)| k.as_str())
    }
}

/// Trains each tenant's model from the sample event log, unless an artifact
/// exists already. Model-nodes of both regions share the model directory
/// (on one machine; a real fleet ships artifacts to each node).
pub(crate) async fn train_models(
    model_bin: PathBuf,
    repo: PathBuf,
    dir: PathBuf,
) -> anyhow::Result<()> {
    let model_dir = dir.join("models");
    let mut runs = Vec::new();
    for t in &TENANTS {
        let has_artifact = std::fs::read_dir(model_dir.join(t.id))
            .map(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "tmodel")))
            })
            .unwrap_or(false);
        if has_artifact {
            continue;
        }
        let events = repo
            .join("data/events")
            .join(format!("{}.jsonl.gz", t.lang));
        let log = std::fs::File::create(dir.join("logs").join(format!("train-{}.log", t.id)))?;
        let mut cmd = tokio::process::Command::new(&model_bin);
        cmd.args(["train", "--tenant", t.id, "--events"])
            .arg(&events)
            .arg("--model-dir")
            .arg(&model_dir);
        cmd.stdout(log.try_clone()?).stderr(log);
        runs.push((t.id, cmd.status()));
    }
    for (tenant, run) in runs {
        let status = run
            .await
            .with_context(|| format!("cannot run training for {tenant}"))?;
        anyhow::ensure!(
            status.success(),
            "training {tenant} failed (see {}/logs/train-{tenant}.log)",
            dir.display()
        );
    }
    Ok(())
}

/// Loads each tenant's pages (at most `limit` per tenant) into every
/// replica that does not have documents yet; one that has keeps them, so a
/// second start on the same data directory loads nothing.
pub(crate) async fn load_corpus(
    processes: &[Process],
    repo: &Path,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let corpus = repo.join("data/tldr_pages/docs.jsonl.gz");
    let mut tasks = Vec::new();
    for t in &TENANTS {
        let filters = vec![format!("lang={}", t.lang)
            .parse::<Where>()
            .map_err(anyhow::Error::msg)?];
        let corpus = corpus.clone();
        let docs =
            tokio::task::spawn_blocking(move || read_documents_up_to(&corpus, &filters, limit))
                .await??;
        for node_id in t.index_replicas {
            let node = processes
                .iter()
                .find(|p| p.id == *node_id)
                .with_context(|| format!("replica node {node_id} is not running"))?;
            let (addr, docs, tenant, lang) =
                (format!("http://{}", node.grpc), docs.clone(), t.id, t.lang);
            tasks.push(tokio::spawn(async move {
                let mut client = IndexNodeClient::connect(addr)
                    .await?
                    .max_encoding_message_size(64 << 20);
                let plan = LoadPlan {
                    tenant: tenant.into(),
                    shard: 0,
                    create_language: Some(lang.into()),
                    batch_size: 2000,
                };
                client
                    .create_shard(CreateShardRequest {
                        tenant: tenant.into(),
                        shard: 0,
                        language: lang.into(),
                    })
                    .await?;
                let info = client
                    .get_shard_info(ShardRef {
                        tenant: tenant.into(),
                        shard: 0,
                    })
                    .await?
                    .into_inner();
                if info.num_docs > 0 {
                    return Ok::<_, anyhow::Error>(());
                }
                load(&mut client, &plan, docs).await?;
                Ok(())
            }));
        }
    }
    for t in tasks {
        t.await.context("load task failed")??;
    }
    Ok(())
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
