//! `tandem verify`: proves that a tenant's replicas hold the same documents.
//!
//! For each shard, every replica is asked for its content digest and the
//! sequence number it was computed at. Replicas at the same sequence must
//! have equal digests; replicas at different ones are asked again (writes
//! may be flowing) until all meet at one sequence or `wait` runs out.

use std::time::{Duration, Instant};

use anyhow::Context;
use tandem_catalog::{Catalog, Node};
use tandem_proto::v1::index_node_client::IndexNodeClient;
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
    let t = catalog
        .tenant(tenant)
        .with_context(|| format!("tenant {tenant:?} is not in the catalog"))?;
    let s = t
        .shards
        .get(shard as usize)
        .with_context(|| format!("tenant {tenant:?} has no shard {shard}"))?;
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
    let ask = async {
        let channel = tonic::transport::Endpoint::from_shared(node.addr.to_string())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        IndexNodeClient::new(channel)
            .get_shard_info(ShardRef {
                tenant: tenant.into(),
                shard,
                digest,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
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
    let t = catalog
        .tenant(tenant)
        .with_context(|| format!("tenant {tenant:?} is not in the catalog"))?;
    let mut verdicts = Vec::new();
    for shard in &t.shards {
        let deadline = Instant::now() + wait;
        loop {
            let states = shard_states(catalog, tenant, shard.number, true).await?;
            let replicas: Vec<_> = states
                .into_iter()
                .map(|s| (s.node, s.info.map(|i| (i.applied_seq, i.digest))))
                .collect();
            let seqs: Vec<u64> = replicas
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.0))
                .collect();
            let all_answered = seqs.len() == replicas.len();
            let one_seq = all_answered && seqs.windows(2).all(|w| w[0] == w[1]);
            if one_seq || Instant::now() >= deadline {
                let digests: Vec<&String> = replicas
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok().map(|r| &r.1))
                    .collect();
                let equal = one_seq && digests.windows(2).all(|w| w[0] == w[1]);
                verdicts.push(ShardVerdict {
                    shard: shard.number,
                    seq: one_seq.then(|| seqs[0]),
                    replicas,
                    equal,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(verdicts)
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
