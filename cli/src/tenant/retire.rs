//! The second half of `tandem tenant delete`: once the tenant is out of the
//! catalog, every index-node of the catalog removes the tenant's shards and
//! snapshots (`DeleteTenant`) and every model-node its models
//! (`DeleteModels`), and the report says what went where.
//!
//! Every node is asked, not only the replicas the catalog listed: a replica
//! removed earlier (`tandem replica remove` leaves its files) or a copy
//! being built is removed too. An index-node refuses while its own catalog
//! still lists the tenant (FAILED_PRECONDITION); it is asked again until
//! `wait` runs out, which covers a fleet whose catalog ConfigMap reaches
//! the pods a little later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use futures::future::join_all;
use tandem_catalog::{Catalog, Node, NodeKind};
use tandem_proto::v1::{
    DeleteModelsRequest, DeleteModelsResponse, DeleteTenantRequest, DeleteTenantResponse,
};
use tokio::time::Instant;

/// What each node removed, or why it did not.
#[derive(Debug, Default)]
pub struct Retired {
    /// Per index-node id.
    pub index: BTreeMap<String, Result<DeleteTenantResponse, String>>,
    /// Per model-node id.
    pub models: BTreeMap<String, Result<DeleteModelsResponse, String>>,
}

impl Retired {
    /// Whether every node answered.
    pub fn complete(&self) -> bool {
        self.index.values().all(Result::is_ok) && self.models.values().all(Result::is_ok)
    }

    /// The report, one line per node with something to say.
    pub fn to_text(&self, tenant: &str) -> String {
        let mut out = String::new();
        let mut stores: BTreeMap<&str, u64> = BTreeMap::new();
        for (node, answer) in &self.index {
            match answer {
                Ok(r) if r.shards.is_empty() => {}
                Ok(r) => {
                    let shards: Vec<String> = r.shards.iter().map(u32::to_string).collect();
                    let _ = writeln!(
                        out,
                        "  {node}: shard(s) {} of {tenant}, {}",
                        shards.join(", "),
                        indicatif::HumanBytes(r.bytes)
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  {node}: NOT REMOVED: {e}");
                }
            }
            if let Ok(r) = answer {
                if r.snapshot_objects > 0 {
                    *stores.entry(&r.snapshot_store).or_default() += r.snapshot_objects;
                }
            }
        }
        for (store, objects) in stores {
            let _ = writeln!(out, "  snapshot store {store}: {objects} object(s)");
        }
        for (node, answer) in &self.models {
            match answer {
                Ok(r) if r.served_version.is_empty() && r.artifacts == 0 => {}
                Ok(r) => {
                    let served = if r.served_version.is_empty() {
                        "none served".to_string()
                    } else {
                        format!("was serving {}", r.served_version)
                    };
                    let _ = writeln!(
                        out,
                        "  {node}: model artifact(s) removed: {} ({served})",
                        r.artifacts
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  {node}: MODELS NOT REMOVED: {e}");
                }
            }
        }
        if out.is_empty() {
            out.push_str("  nothing was left on any node\n");
        }
        out
    }
}

/// Asks every node of `catalog` to remove `tenant` (see the module
/// documentation), all at once.
pub async fn retire(catalog: &Catalog, tenant: &str, wait: Duration) -> Retired {
    let deadline = Instant::now() + wait;
    let of_kind = |kind| catalog.nodes().filter(move |n| n.kind == kind);
    let index = join_all(
        of_kind(NodeKind::Index)
            .map(|n| async move { (n.id.to_string(), delete_shards(n, tenant, deadline).await) }),
    );
    let models = join_all(
        of_kind(NodeKind::Model)
            .map(|n| async move { (n.id.to_string(), delete_models(n, tenant).await) }),
    );
    let (index, models) = tokio::join!(index, models);
    Retired {
        index: index.into_iter().collect(),
        models: models.into_iter().collect(),
    }
}

/// `DeleteTenant` on one index-node, asked again while its catalog still
/// lists the tenant.
async fn delete_shards(
    node: &Node,
    tenant: &str,
    deadline: Instant,
) -> Result<DeleteTenantResponse, String> {
    let mut client = crate::operator::index_node(&node.addr)
        .await
        .map_err(|e| format!("unreachable: {e:#}"))?;
    loop {
        let answer = client
            .delete_tenant(DeleteTenantRequest {
                tenant: tenant.into(),
            })
            .await;
        match answer {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

/// `DeleteModels` on one model-node.
async fn delete_models(node: &Node, tenant: &str) -> Result<DeleteModelsResponse, String> {
    crate::operator::model_node(&node.addr)
        .await
        .map_err(|e| format!("unreachable: {e:#}"))?
        .delete_models(DeleteModelsRequest {
            tenant: tenant.into(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}
