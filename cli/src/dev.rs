//! `tandem dev`: the whole two-region system on this machine.
//!
//! Two paired regions (`us-east-1`, `us-east-2`), each with one router, two
//! index-nodes and one model-node, every one its own OS process on a
//! loopback port, so a drill can kill or freeze any of them. The sample
//! tenants:
//!
//! - `tldr-en`: the English tldr pages, active-active, home `us-east-1`, one
//!   index replica per region, a model replica per region;
//! - `tldr-es`: the Spanish pages, *not* active-active, home `us-east-1`, two
//!   index replicas both in `us-east-1` (the other region reads them there).
//!
//! Start-up loads the corpus into every replica and trains both tenants'
//! models from the sample event logs, in parallel; a second run on the same
//! data directory reuses both and is up in seconds. The routers are listed in
//! the catalog, but learn their ports only once started, so the catalog is
//! written once with placeholders and again with their addresses, which
//! the routers pick up by hot reload.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tandem_client::{NodeInfo, RegionInfo, TenantInfo, Topology};
use tandem_index_node::corpus::{read_documents, Where};
use tandem_index_node::loader::{load, LoadPlan};
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::ShardRef;

use crate::supervise::{sibling, start, Process};

/// Options of `tandem dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where nodes keep their data, logs, catalog and secrets.
    pub data_dir: PathBuf,
    /// Also write the topology JSON here.
    pub topology: Option<PathBuf>,
    /// Repository root (sample data).
    pub repo: PathBuf,
}

/// One sample tenant of the dev cluster.
struct SampleTenant {
    id: &'static str,
    lang: &'static str,
    active_active: bool,
    index_replicas: &'static [&'static str],
    queries: &'static [&'static str],
}

const REGIONS: [(&str, &str, &str); 2] = [
    ("us-east-1", "us-east-2", "use1"),
    ("us-east-2", "us-east-1", "use2"),
];
const HOME: &str = "us-east-1";

const TENANTS: [SampleTenant; 2] = [
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

/// Keys and the admin token, made once per data directory.
#[derive(Serialize, Deserialize)]
struct Secrets {
    admin_token: String,
    api_keys: Vec<(String, String)>,
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}-{}", hex::encode(bytes))
}

fn secrets(dir: &Path) -> anyhow::Result<Secrets> {
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
    std::fs::write(&path, serde_json::to_vec_pretty(&s)?)?;
    Ok(s)
}

impl Secrets {
    fn key(&self, tenant: &str) -> &str {
        self.api_keys
            .iter()
            .find(|(t, _)| t == tenant)
            .map_or("", |(_, k)| k.as_str())
    }
}

/// A running dev cluster.
pub struct Cluster {
    /// Every process, routers last.
    pub processes: Vec<Process>,
    /// What the topology file says.
    pub topology: Topology,
}

/// Starts the cluster, returns once every process serves and data is in.
pub async fn start_cluster(opts: &DevOptions) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let secrets = secrets(dir)?;
    let (index_bin, model_bin, router_bin) = (
        sibling("tandem-index-node")?,
        sibling("tandem-model-node")?,
        sibling("tandem-router")?,
    );

    // Models train while the nodes start.
    let training = tokio::spawn(train_models(
        model_bin.clone(),
        opts.repo.clone(),
        dir.clone(),
    ));

    let mut starts = Vec::new();
    for (region, _, short) in REGIONS {
        for i in 1..=2 {
            let id = format!("{short}-index-{i}");
            let args = node_args(
                &id,
                region,
                &secrets.admin_token,
                &["--data-dir".into(), dir.join(&id).display().to_string()],
            );
            let (bin, log) = (
                index_bin.clone(),
                dir.join("logs").join(format!("{id}.log")),
            );
            starts.push(tokio::spawn(async move {
                start(&id, "index", region, &bin, &args, &log).await
            }));
        }
    }
    training.await.context("training task failed")??;
    for (region, _, short) in REGIONS {
        let id = format!("{short}-model-1");
        let model_dir = dir.join("models");
        let args = node_args(
            &id,
            region,
            &secrets.admin_token,
            &["--model-dir".into(), model_dir.display().to_string()],
        );
        let (bin, log) = (
            model_bin.clone(),
            dir.join("logs").join(format!("{id}.log")),
        );
        starts.push(tokio::spawn(async move {
            start(&id, "model", region, &bin, &args, &log).await
        }));
    }
    let mut processes = Vec::new();
    for s in starts {
        processes.push(s.await.context("start task failed")??);
    }

    let catalog_path = dir.join("catalog.toml");
    std::fs::write(&catalog_path, catalog_toml(&processes, &[], &secrets))?;
    let mut routers = Vec::new();
    for (region, _, short) in REGIONS {
        let id = format!("{short}-router");
        let mut args = vec![
            "--router-id".into(),
            id.clone(),
            "--region".into(),
            region.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--catalog".into(),
            catalog_path.display().to_string(),
            "--catalog-poll-ms".into(),
            "200".into(),
        ];
        args.extend(["--admin-token".to_string(), secrets.admin_token.clone()]);
        let log = dir.join("logs").join(format!("{id}.log"));
        routers.push(start(&id, "router", region, &router_bin, &args, &log).await?);
    }
    std::fs::write(&catalog_path, catalog_toml(&processes, &routers, &secrets))?;
    processes.extend(routers);

    load_corpus(&processes, &opts.repo).await?;
    let topology = topology(&processes, &secrets);
    let json = serde_json::to_string_pretty(&topology)?;
    std::fs::write(dir.join("topology.json"), &json)?;
    if let Some(path) = &opts.topology {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Routers pick the final catalog up within a poll; wait until they do.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster serving"
    );
    Ok(Cluster {
        processes,
        topology,
    })
}

fn node_args(id: &str, region: &str, admin_token: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--node-id".into(),
        id.into(),
        "--region".into(),
        region.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--enable-faults".into(),
        "--admin-token".into(),
        admin_token.into(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// Trains each tenant's model from the sample event log, unless an artifact
/// exists already. Model-nodes of both regions share the model directory
/// (on one machine; a real fleet ships artifacts to each node).
async fn train_models(model_bin: PathBuf, repo: PathBuf, dir: PathBuf) -> anyhow::Result<()> {
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

/// Loads each tenant's pages into every replica that does not have them yet.
async fn load_corpus(processes: &[Process], repo: &Path) -> anyhow::Result<()> {
    let corpus = repo.join("data/tldr_pages/docs.jsonl.gz");
    let mut tasks = Vec::new();
    for t in &TENANTS {
        let filters = vec![format!("lang={}", t.lang)
            .parse::<Where>()
            .map_err(anyhow::Error::msg)?];
        let corpus = corpus.clone();
        let docs = tokio::task::spawn_blocking(move || read_documents(&corpus, &filters)).await??;
        for node_id in t.index_replicas {
            let node = processes
                .iter()
                .find(|p| p.id == *node_id)
                .context("replica node")?;
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
                // A replica that has documents already keeps them (restart).
                let _ = client
                    .create_shard(tandem_proto::v1::CreateShardRequest {
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

fn catalog_toml(nodes: &[Process], routers: &[Process], secrets: &Secrets) -> String {
    let mut t = String::from("# Written by `tandem dev`; routers reload it when it changes.\n\n");
    for (region, pair, short) in REGIONS {
        t += &format!("[[regions]]\nid = \"{region}\"\npair = \"{pair}\"\n\n");
        let id = format!("{short}-router");
        let addr = routers
            .iter()
            .find(|r| r.id == id)
            .map_or("127.0.0.1:1".to_string(), |r| r.grpc.clone());
        t += &format!("[[nodes]]\nid = \"{id}\"\nregion = \"{region}\"\nkind = \"router\"\naddr = \"http://{addr}\"\n\n");
    }
    for n in nodes {
        t += &format!(
            "[[nodes]]\nid = \"{}\"\nregion = \"{}\"\nkind = \"{}\"\naddr = \"http://{}\"\n\n",
            n.id, n.region, n.kind, n.grpc
        );
    }
    for tenant in &TENANTS {
        let replicas = tenant
            .index_replicas
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        t += &format!(
            "[[tenants]]\nid = \"{}\"\nhome = \"{HOME}\"\nactive_active = {}\nlanguage = \"{}\"\napi_key_sha256 = [\"{}\"]\n\
             model_replicas = [\"use1-model-1\", \"use2-model-1\"]\n\n[tenants.shards]\n0 = [{replicas}]\n\n",
            tenant.id,
            tenant.active_active,
            tenant.lang,
            tandem_common::auth::sha256_hex(secrets.key(tenant.id)),
        );
    }
    t
}

fn topology(processes: &[Process], secrets: &Secrets) -> Topology {
    Topology {
        regions: REGIONS
            .iter()
            .map(|(region, pair, _)| {
                let router = processes
                    .iter()
                    .find(|p| p.kind == "router" && p.region == *region);
                RegionInfo {
                    name: region.to_string(),
                    paired: Some(pair.to_string()),
                    router: router.map(|r| r.grpc.clone()).unwrap_or_default(),
                    metrics: router.map(|r| r.metrics.clone()),
                }
            })
            .collect(),
        nodes: processes
            .iter()
            .map(|p| NodeInfo {
                id: p.id.clone(),
                kind: p.kind.to_string(),
                region: p.region.clone(),
                addr: p.grpc.clone(),
                metrics: Some(p.metrics.clone()),
                pid: Some(p.pid),
            })
            .collect(),
        tenants: TENANTS
            .iter()
            .map(|t| TenantInfo {
                id: t.id.to_string(),
                api_key: secrets.key(t.id).to_string(),
                active_active: t.active_active,
                home: HOME.to_string(),
                sample_queries: t.queries.iter().map(|q| q.to_string()).collect(),
            })
            .collect(),
        admin_token: secrets.admin_token.clone(),
    }
}
