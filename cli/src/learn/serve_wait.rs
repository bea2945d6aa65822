//! Waiting until every model-node of the catalog, in every region, serves
//! a tenant's version (the nodes pull it from the store on their own).

use std::time::Duration;

use tandem_catalog::{Catalog, NodeKind};
use tandem_proto::v1::ListModelsRequest;
use tokio::time::Instant;

use crate::operator::ModelClient;

/// (tenant, version) of every model the model-node at `addr` serves, or
/// why it could not be asked.
pub async fn served(addr: &str) -> Result<Vec<(String, String)>, String> {
    let mut client = crate::operator::model_node(addr)
        .await
        .map_err(|e| format!("{e:#}"))?;
    list(&mut client).await
}

/// One `ListModels` on `client`, bounded in time (a node that accepts the
/// connection but never answers holds nobody up).
async fn list(client: &mut ModelClient) -> Result<Vec<(String, String)>, String> {
    let mut request = tonic::Request::new(ListModelsRequest {});
    request.set_timeout(Duration::from_secs(2));
    let models = tokio::time::timeout(Duration::from_secs(3), client.list_models(request))
        .await
        .map_err(|_| "no answer within 3 s".to_string())?
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner()
        .models;
    Ok(models.into_iter().map(|m| (m.tenant, m.version)).collect())
}

/// Every model-node of the catalog: (id, region, what it serves).
pub async fn every_node(
    catalog: &Catalog,
) -> Vec<(String, String, Result<Vec<(String, String)>, String>)> {
    let nodes = catalog.nodes().filter(|n| n.kind == NodeKind::Model);
    futures::future::join_all(nodes.map(|n| async move {
        (
            n.id.to_string(),
            n.region.to_string(),
            served(&n.addr).await,
        )
    }))
    .await
}

/// Waits up to `wait` until every model-node serves `version` of
/// `tenant`; whether they all do, and per node (id, region, `serves T V`
/// or what it serves instead, or why it could not be asked).
pub async fn wait_served(
    catalog: &Catalog,
    tenant: &str,
    version: &str,
    wait: Duration,
) -> (bool, Vec<(String, String, String)>) {
    let deadline = Instant::now()
        .checked_add(wait)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    // Each node's client is made once and kept while it answers.
    let mut nodes: Vec<(String, String, String, Option<ModelClient>)> = catalog
        .nodes()
        .filter(|n| n.kind == NodeKind::Model)
        .map(|n| {
            (
                n.id.to_string(),
                n.region.to_string(),
                n.addr.to_string(),
                None,
            )
        })
        .collect();
    loop {
        let mut states = Vec::new();
        let mut all = true;
        for (id, region, addr, client) in &mut nodes {
            let state = match served_on(client, addr, tenant).await {
                Ok(v) if v == version => format!("serves {tenant} {v}"),
                Ok(v) if v.is_empty() => {
                    all = false;
                    format!("serves no model of {tenant} yet")
                }
                Ok(v) => {
                    all = false;
                    format!("still serves {tenant} {v}")
                }
                Err(e) => {
                    all = false;
                    format!("unreachable: {e}")
                }
            };
            states.push((id.clone(), region.clone(), state));
        }
        if all || Instant::now() >= deadline {
            return (all, states);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The version of `tenant` the node at `addr` serves ("" when none),
/// through `client` (connected first if it is not; dropped on a failure,
/// so the next call connects again).
async fn served_on(
    client: &mut Option<ModelClient>,
    addr: &str,
    tenant: &str,
) -> Result<String, String> {
    if client.is_none() {
        let connected = crate::operator::model_node(addr)
            .await
            .map_err(|e| format!("{e:#}"))?;
        *client = Some(connected);
    }
    let Some(c) = client.as_mut() else {
        return Err("not connected".into());
    };
    let listed = list(c).await;
    if listed.is_err() {
        *client = None;
    }
    Ok(listed?
        .into_iter()
        .find(|(t, _)| t == tenant)
        .map(|(_, v)| v)
        .unwrap_or_default())
}
