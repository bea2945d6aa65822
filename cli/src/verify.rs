//! `tandem verify`: proves that a tenant's replicas hold the same documents.
//!
//! For each shard, every replica is asked for its content digest and the
//! sequence number it was computed at. Replicas at the same sequence must
//! have equal digests; replicas at different ones are asked again (writes
//! may be flowing) until all meet at one sequence or `wait` runs out.

use std::time::{Duration, Instant};

use tandem_catalog::{Catalog, Node};
use tandem_proto::v1::{ShardInfo, ShardRef};

/// One replica's answer.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// Node id.
    pub node: String,
    /// Its shard info (digest filled when asked), or why it did not answer.
    pub info: Result<ShardInfo, String>,
}

/// The shard info of every replica of `tenant`'s `shard`.
pub async fn shard_states(
    catalog: &Catalog,
    tenant: &str,
    shard: u32,
    digest: bool,
) -> anyhow::Result<Vec<ReplicaState>> {
    let (_, s) = crate::catalog_edit::shard(catalog, tenant, shard)?;
    let asks = s.replicas.iter().map(|node| async move {
        ReplicaState {
            node: node.id.to_string(),
            info: shard_info(node, tenant, shard, digest).await,
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// `GetShardInfo` on one node, with a timeout.
pub async fn shard_info(
    node: &Node,
    tenant: &str,
    shard: u32,
    digest: bool,
) -> Result<ShardInfo, String> {
    shard_info_at(node, tenant, shard, digest, 0).await
}

/// [`shard_info`] with the digest taken exactly at `seq` (0: now).
pub async fn shard_info_at(
    node: &Node,
    tenant: &str,
    shard: u32,
    digest: bool,
    seq: u64,
) -> Result<ShardInfo, String> {
    let ask = async {
        let mut client = crate::operator::index_node(&node.addr)
            .await
            .map_err(|e| format!("unreachable: {e:#}"))?;
        client
            .get_shard_info(ShardRef {
                tenant: tenant.into(),
                shard,
                digest,
                digest_at_seq: seq,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(Duration::from_secs(40), ask)
        .await
        .unwrap_or_else(|_| Err("no answer within 40 s".into()))
}

/// A replica's `(sequence, digest)`, or why it did not answer.
pub type Digest = Result<(u64, String), String>;

/// What `verify` found for one shard.
#[derive(Debug, Clone)]
pub struct ShardVerdict {
    /// Shard number.
    pub shard: u32,
    /// The sequence all replicas met at (if they did).
    pub seq: Option<u64>,
    /// Replicas and their digests at the last look.
    pub replicas: Vec<(String, Digest)>,
    /// All replicas met at one sequence with one digest.
    pub equal: bool,
}

/// Compares every replica of every shard of `tenant`, waiting up to `wait`
/// per shard for them to meet at one sequence number.
pub async fn verify(
    catalog: &Catalog,
    tenant: &str,
    wait: Duration,
) -> anyhow::Result<Vec<ShardVerdict>> {
    let t = crate::catalog_edit::tenant(catalog, tenant)?;
    let mut verdicts = Vec::new();
    for shard in &t.shards {
        verdicts.push(meet(&shard.replicas, tenant, shard.number, wait).await);
    }
    Ok(verdicts)
}

/// Compares `nodes`' digests of `tenant`'s `shard` at one sequence number:
/// the highest log position among them, which each replica reaches (writes
/// may keep coming; each commits exactly there to answer). Tried again with
/// a later number if a replica was already past it, until `wait` runs out.
pub async fn meet(
    nodes: &[std::sync::Arc<Node>],
    tenant: &str,
    shard: u32,
    wait: Duration,
) -> ShardVerdict {
    let deadline = Instant::now() + wait;
    loop {
        let positions = nodes
            .iter()
            .map(|node| shard_info(node, tenant, shard, false));
        let target = futures::future::join_all(positions)
            .await
            .into_iter()
            .filter_map(|i| i.ok().map(|i| i.log_seq))
            .max()
            .unwrap_or(0);
        let asks = nodes.iter().map(|node| async move {
            let info = shard_info_at(node, tenant, shard, true, target.max(1)).await;
            (node.id.to_string(), info.map(|i| (i.applied_seq, i.digest)))
        });
        let replicas: Vec<(String, Digest)> = futures::future::join_all(asks).await;
        let answered = replicas.iter().all(|(_, r)| r.is_ok());
        if answered || Instant::now() >= deadline {
            let digests: Vec<&String> = replicas
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|r| &r.1))
                .collect();
            return ShardVerdict {
                shard,
                seq: answered.then_some(target),
                equal: answered && digests.windows(2).all(|w| w[0] == w[1]),
                replicas,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tandem verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// Seconds to wait per shard for the replicas to meet at one
    /// sequence number.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// Catalog file (default: the topology's).
    #[arg(long)]
    pub catalog: Option<std::path::PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tandem verify`; false when replicas differ (or did not meet).
pub async fn run(target: &crate::commands::Target, args: &VerifyArgs) -> anyhow::Result<bool> {
    let path = target.catalog_path(args.catalog.clone())?;
    let catalog = Catalog::load_file(&path)?;
    let wait = std::time::Duration::from_secs(args.wait);
    let verdicts = verify(&catalog, &args.tenant, wait).await?;
    if args.json {
        println!("{}", to_json(&args.tenant, &verdicts));
    } else {
        print!("{}", to_text(&args.tenant, &verdicts));
    }
    Ok(verdicts.iter().all(|v| v.equal))
}

/// The verdicts as one JSON object: the tenant, whether all shards are
/// equal, and per shard its sequence and each replica's digest (or error).
pub fn to_json(tenant: &str, verdicts: &[ShardVerdict]) -> serde_json::Value {
    let shards: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            let replicas: Vec<serde_json::Value> = v
                .replicas
                .iter()
                .map(|(node, r)| match r {
                    Ok((seq, digest)) => serde_json::json!({"node": node, "seq": seq, "digest": digest}),
                    Err(e) => serde_json::json!({"node": node, "error": e}),
                })
                .collect();
            serde_json::json!({"shard": v.shard, "seq": v.seq, "equal": v.equal, "replicas": replicas})
        })
        .collect();
    serde_json::json!({
        "tenant": tenant,
        "equal": verdicts.iter().all(|v| v.equal),
        "shards": shards,
    })
}

/// The verdicts as lines for a person.
pub fn to_text(tenant: &str, verdicts: &[ShardVerdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let head = match (v.equal, v.seq) {
            (true, Some(seq)) => format!(
                "{tenant}/{}: OK, {} replicas identical at seq {seq}",
                v.shard,
                v.replicas.len()
            ),
            (false, Some(seq)) => format!("{tenant}/{}: DIFFERENT digests at seq {seq}", v.shard),
            _ => format!(
                "{tenant}/{}: replicas did not meet at one sequence number",
                v.shard
            ),
        };
        out += &head;
        out.push('\n');
        for (node, r) in &v.replicas {
            match r {
                Ok((seq, digest)) => {
                    out += &format!("  {node:<20} seq {seq:<10} digest {digest}\n")
                }
                Err(e) => out += &format!("  {node:<20} {e}\n"),
            }
        }
    }
    out
}
