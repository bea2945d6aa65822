//! Retiring a deleted tenant from a node (`DeleteTenant`, called by `tandem
//! tenant delete` once the tenant is out of the catalog): every shard of
//! the tenant on this node goes (writer, health name, files), then the
//! tenant's snapshots in this node's store.
//!
//! The rule that keeps it safe: a node removes nothing while its own
//! catalog still lists the tenant. The call first re-reads the catalog (a
//! reconciliation round), so a catalog edited just before is seen at once;
//! a node whose catalog is older (a ConfigMap not yet updated) answers
//! FAILED_PRECONDITION and the caller tries again. Rounds are held off
//! while the shards go, so none is set up again half-way.

use std::sync::Arc;

use tandem_catalog::ids::validate_tenant_id;
use tandem_proto::v1::DeleteTenantResponse;
use tonic::Status;

use crate::registry::ShardRegistry;
use crate::roles::Roles;
use crate::snapshot::SnapshotStore;

/// Removes `tenant` from this node (see the module documentation).
pub async fn delete_tenant(
    registry: &Arc<ShardRegistry>,
    roles: &Arc<Roles>,
    store: Option<&SnapshotStore>,
    tenant: &str,
) -> Result<DeleteTenantResponse, Status> {
    validate_tenant_id(tenant).map_err(Status::invalid_argument)?;
    if let Err(e) = roles.clone().reconcile().await {
        tracing::warn!(error = %format!("{e:#}"), "catalog not re-read before a tenant delete");
    }
    let _rounds = roles.hold_rounds().await;
    if roles.lists_tenant(tenant) {
        return Err(Status::failed_precondition(format!(
            "this node's catalog still lists tenant {tenant}: remove it from the catalog first \
             (tandem tenant delete does, then asks again)"
        )));
    }
    roles.forget_tenant(tenant);
    let mut out = DeleteTenantResponse::default();
    for (key, _) in registry.known() {
        if key.tenant != tenant {
            continue;
        }
        out.bytes += registry
            .remove(&key)
            .await
            .map_err(|e| Status::internal(format!("cannot delete shard {key}: {e:#}")))?;
        out.shards.push(key.shard);
    }
    // The tenant's directory, with anything a shard left beside it.
    let dir = registry.data_dir().join("shards").join(tenant);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(Status::internal(format!(
                "cannot delete the files of tenant {tenant}: {e}"
            )));
        }
    }
    if let Some(store) = store {
        out.snapshot_objects = store.delete_tenant(tenant).await.map_err(|e| {
            Status::unavailable(format!("cannot delete the snapshots of {tenant}: {e:#}"))
        })?;
        out.snapshot_store = store.url().to_string();
    }
    tracing::info!(tenant, shards = ?out.shards, bytes = out.bytes,
        snapshot_objects = out.snapshot_objects, "tenant deleted from this node");
    Ok(out)
}
