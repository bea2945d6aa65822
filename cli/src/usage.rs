//! `tandem usage`: what each tenant used, per region: searches, suggests,
//! errors and documents written (every router's in-memory counters since
//! it started, summed over the region's routers), index bytes (the
//! region's index-nodes' shard files) and cross-region calls and bytes.

use std::collections::BTreeMap;

use serde::Serialize;
use tandem_catalog::{Catalog, NodeKind};
use tandem_proto::v1::router_admin_client::RouterAdminClient;
use tandem_proto::v1::{ListShardsRequest, UsageRequest};

use crate::commands::{bearer, Target};

/// One tenant's use of one region.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RegionUsage {
    /// Region.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Searches answered by the region's routers.
    pub searches: u64,
    /// Suggests answered.
    pub suggests: u64,
    /// Public calls that failed.
    pub errors: u64,
    /// Documents written (upserts + deletes).
    pub documents: u64,
    /// Bytes of the tenant's shard files on the region's index-nodes.
    pub index_bytes: u64,
    /// Calls answered by the paired region.
    pub cross_region_calls: u64,
    /// Bytes of those answers.
    pub cross_region_bytes: u64,
}

/// Collects every region's usage of `tenant` (every tenant when empty).
pub async fn collect(target: &Target, tenant: &str) -> anyhow::Result<Vec<RegionUsage>> {
    let mut by: BTreeMap<(String, String), RegionUsage> = BTreeMap::new();
    let (routers, token) = target.admin().await?;
    for (name, channel) in routers {
        let request = bearer(
            UsageRequest {
                tenant: tenant.into(),
            },
            &token,
        )?;
        let answer = match RouterAdminClient::new(channel).usage(request).await {
            Ok(a) => a.into_inner(),
            Err(s) => {
                eprintln!("router {name}: {:?}: {} (left out)", s.code(), s.message());
                continue;
            }
        };
        for t in answer.tenants {
            let u = entry(&mut by, &answer.region, &t.tenant);
            u.searches += t.searches;
            u.suggests += t.suggests;
            u.errors += t.errors;
            u.documents += t.documents;
            u.cross_region_calls += t.cross_region_calls;
            u.cross_region_bytes += t.cross_region_bytes;
        }
    }
    if let Ok(path) = target.catalog_path(None) {
        let catalog = Catalog::load_file(&path)?;
        add_index_bytes(&catalog, tenant, &mut by).await;
    }
    Ok(by.into_values().collect())
}

fn entry<'a>(
    by: &'a mut BTreeMap<(String, String), RegionUsage>,
    region: &str,
    tenant: &str,
) -> &'a mut RegionUsage {
    by.entry((region.to_string(), tenant.to_string()))
        .or_insert_with(|| RegionUsage {
            region: region.to_string(),
            tenant: tenant.to_string(),
            ..RegionUsage::default()
        })
}

/// Adds each index-node's shard bytes to its region's tenants.
async fn add_index_bytes(
    catalog: &Catalog,
    tenant: &str,
    by: &mut BTreeMap<(String, String), RegionUsage>,
) {
    for node in catalog.nodes().filter(|n| n.kind == NodeKind::Index) {
        let listed = async {
            let mut client = crate::operator::index_node(&node.addr).await?;
            let request = ListShardsRequest {
                not_serving_only: false,
                with_bytes: true,
            };
            anyhow::Ok(client.list_shards(request).await?.into_inner().shards)
        };
        match listed.await {
            Ok(shards) => {
                for s in shards
                    .iter()
                    .filter(|s| tenant.is_empty() || s.tenant == tenant)
                {
                    entry(by, &node.region, &s.tenant).index_bytes += s.bytes;
                }
            }
            Err(e) => eprintln!("index-node {}: {e:#} (its bytes left out)", node.id),
        }
    }
}

/// The usage as a table.
pub fn to_text(usage: &[RegionUsage]) -> String {
    let mut out = format!(
        "{:<10} {:<16} {:>9} {:>9} {:>7} {:>10} {:>12} {:>10} {:>12}\n",
        "region",
        "tenant",
        "searches",
        "suggests",
        "errors",
        "documents",
        "index",
        "x-region",
        "x-region B"
    );
    for u in usage {
        out += &format!(
            "{:<10} {:<16} {:>9} {:>9} {:>7} {:>10} {:>12} {:>10} {:>12}\n",
            u.region,
            u.tenant,
            u.searches,
            u.suggests,
            u.errors,
            u.documents,
            indicatif::HumanBytes(u.index_bytes).to_string(),
            u.cross_region_calls,
            indicatif::HumanBytes(u.cross_region_bytes).to_string(),
        );
    }
    out
}
