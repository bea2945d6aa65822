//! Loading a corpus into one standalone shard (one the node's catalog does
//! not assign) of an index-node, through its `Ingest` call: `tandem
//! load-shard`, for building a shard by hand. Replicated tenants are written
//! through a router instead ([`crate::ingest`]).
//!
//! Documents go in batches; each batch gets the next sequence number after
//! the shard's applied one, so running the loader twice simply re-applies
//! the same upserts. A batch is retried a few times on UNAVAILABLE or
//! RESOURCE_EXHAUSTED; re-delivery is safe because the node acknowledges an
//! already-applied sequence number without effect.

use std::time::Duration;

use anyhow::Context;

use crate::operator::IndexClient;
use tandem_proto::v1::{CreateShardRequest, Document, IngestRequest, ShardRef};
use tonic::Code;

/// What to load where.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Tenant id.
    pub tenant: String,
    /// Shard number.
    pub shard: u32,
    /// Create the shard with this language first (idempotent).
    pub create_language: Option<String>,
    /// Documents per batch.
    pub batch_size: usize,
}

/// What a load did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    /// Documents sent.
    pub documents: usize,
    /// Batches acknowledged.
    pub batches: usize,
    /// The shard's applied sequence number at the end.
    pub applied_seq: u64,
}

/// Sends `docs` to the shard named in `plan` over `client`.
pub async fn load(
    client: &mut IndexClient,
    plan: &LoadPlan,
    docs: Vec<Document>,
) -> anyhow::Result<LoadReport> {
    if let Some(language) = &plan.create_language {
        client
            .create_shard(CreateShardRequest {
                tenant: plan.tenant.clone(),
                shard: plan.shard,
                language: language.clone(),
            })
            .await
            .with_context(|| format!("cannot create shard {}/{}", plan.tenant, plan.shard))?;
    }
    let info = client
        .get_shard_info(ShardRef {
            tenant: plan.tenant.clone(),
            shard: plan.shard,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .with_context(|| format!("cannot read shard {}/{}", plan.tenant, plan.shard))?
        .into_inner();
    let mut report = LoadReport {
        applied_seq: info.applied_seq,
        ..Default::default()
    };
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        let batch: Vec<Document> = docs.by_ref().take(plan.batch_size.max(1)).collect();
        let request = IngestRequest {
            tenant: plan.tenant.clone(),
            shard: plan.shard,
            seq: report.applied_seq + 1,
            upserts: batch,
            deletes: Vec::new(),
            ..Default::default()
        };
        let n = request.upserts.len();
        let response = send_with_retry(client, request).await?;
        report.applied_seq = response;
        report.documents += n;
        report.batches += 1;
    }
    Ok(report)
}

async fn send_with_retry(client: &mut IndexClient, request: IngestRequest) -> anyhow::Result<u64> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.ingest(request.clone()).await {
            Ok(resp) => return Ok(resp.into_inner().applied_seq),
            Err(status)
                if attempt < 5
                    && matches!(status.code(), Code::Unavailable | Code::ResourceExhausted) =>
            {
                tracing::warn!(attempt, error = %status.message(), "batch not accepted; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(status) => {
                return Err(anyhow::anyhow!(
                    "batch seq {} refused: {:?}: {}",
                    request.seq,
                    status.code(),
                    status.message()
                ))
            }
        }
    }
}

/// `tandem load-shard`: reads `file` (only the records `filters` keep) and
/// loads it into `plan`'s shard on the index-node at `node`.
pub async fn load_file(
    node: &str,
    plan: &LoadPlan,
    file: &std::path::Path,
    filters: &[tandem_client::corpus::Where],
) -> anyhow::Result<()> {
    let docs = tokio::task::spawn_blocking({
        let (file, filters) = (file.to_path_buf(), filters.to_vec());
        move || tandem_client::corpus::read_documents(&file, &filters)
    })
    .await??;
    let mut client = crate::operator::index_node(node)
        .await?
        .max_encoding_message_size(64 * 1024 * 1024);
    let started = std::time::Instant::now();
    let report = load(&mut client, plan, docs).await?;
    println!(
        "loaded {} documents in {} batches into {}/{} (applied seq {}) in {:.2?}",
        report.documents,
        report.batches,
        plan.tenant,
        plan.shard,
        report.applied_seq,
        started.elapsed()
    );
    Ok(())
}
