//! What the dev cluster tells others about itself: the catalog the routers
//! read, and the topology file the CLI, the load generator and tests read.

use tandem_client::{NodeInfo, RegionInfo, TenantInfo, Topology};

use super::setup::{router_id, Secrets, HOME, REGIONS, TENANTS};
use crate::supervise::Process;

/// Writes the routers' catalog to `path`, after checking it with the
/// routers' own validation (`tandem_catalog`).
pub(crate) fn write_catalog(
    path: &std::path::Path,
    (nodes, routers, per_region): (&[Process], &[Process], usize),
    scheme: &str,
    secrets: &Secrets,
) -> anyhow::Result<()> {
    let text = catalog_toml((nodes, routers, per_region), scheme, secrets);
    tandem_catalog::Catalog::parse(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("the dev catalog is invalid: {e}"))?;
    std::fs::write(path, text)?;
    Ok(())
}

/// The browser origin the dev tenants allow (a page served on
/// `localhost:8080` during development may call the routers with
/// gRPC-Web).
pub const DEV_ORIGIN: &str = "http://localhost:8080";

/// The routers' catalog TOML. Routers not started yet (`routers` empty)
/// get an unreachable placeholder address; the file is rewritten with the
/// real ones once they listen, and the routers hot-reload it. Addresses
/// are `scheme://` (`https` when the cluster serves TLS).
fn catalog_toml(
    (nodes, routers, per_region): (&[Process], &[Process], usize),
    scheme: &str,
    secrets: &Secrets,
) -> String {
    let mut t = String::from(
        "# Written by `tandem dev`; routers and index-nodes reload it when it changes.\nformat = 3\n\n",
    );
    for (region, pair, short) in REGIONS {
        t += &format!("[[regions]]\nid = \"{region}\"\npair = \"{pair}\"\n\n");
        for i in 1..=per_region {
            let id = router_id(short, i);
            let addr = routers
                .iter()
                .find(|r| r.id == id)
                .map_or("127.0.0.1:1".to_string(), |r| by_name(&r.grpc));
            t += &format!("[[nodes]]\nid = \"{id}\"\nregion = \"{region}\"\nkind = \"router\"\naddr = \"{scheme}://{addr}\"\n\n");
        }
    }
    for n in nodes {
        t += &format!(
            "[[nodes]]\nid = \"{}\"\nregion = \"{}\"\nkind = \"{}\"\naddr = \"{scheme}://{}\"\n\n",
            n.id,
            n.region,
            n.kind,
            by_name(&n.grpc)
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
             write_key_sha256 = [\"{}\"]\nmodel_replicas = [\"use1-model-1\", \"use2-model-1\"]\n\
             allowed_origins = [\"{DEV_ORIGIN}\", \"http://127.0.0.1:8080\"]\n\n\
             [tenants.shards]\n0 = [{replicas}]\n\n[tenants.leaders]\n0 = {{ node = \"{}\", epoch = 1 }}\n\n",
            tenant.id,
            tenant.active_active,
            tenant.lang,
            tandem_catalog::hash_key(secrets.key(tenant.id)),
            tandem_catalog::hash_key(secrets.write_key(tenant.id)),
            tenant.index_replicas[0],
        );
    }
    t
}

/// The topology of the running processes (`scheme`: `http`, or `https`
/// when they serve TLS).
pub(crate) fn topology(
    processes: &[Process],
    secrets: &Secrets,
    (catalog_path, scheme): (&std::path::Path, &str),
) -> Topology {
    Topology {
        regions: REGIONS
            .iter()
            .map(|(region, pair, _)| {
                let routers: Vec<&Process> = processes
                    .iter()
                    .filter(|p| p.kind == NodeInfo::KIND_ROUTER && p.region == *region)
                    .collect();
                let router = routers.first();
                RegionInfo {
                    name: region.to_string(),
                    paired: Some(pair.to_string()),
                    router: router.map(|r| r.grpc.clone()).unwrap_or_default(),
                    routers: routers.iter().map(|r| r.grpc.clone()).collect(),
                    metrics: router.map(|r| r.metrics.clone()),
                    admin: router.and_then(|r| r.admin.clone()),
                    console: router
                        .and_then(|r| r.admin.as_ref())
                        .map(|a| format!("{scheme}://{a}/console")),
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
                admin: p.admin.clone(),
                pid: Some(p.pid),
            })
            .collect(),
        tenants: TENANTS
            .iter()
            .map(|t| TenantInfo {
                id: t.id.to_string(),
                api_key: secrets.key(t.id).to_string(),
                write_key: secrets.write_key(t.id).to_string(),
                active_active: t.active_active,
                home: HOME.to_string(),
                sample_queries: t.queries.iter().map(|q| q.to_string()).collect(),
            })
            .collect(),
        admin_token: secrets.admin_token.clone(),
        internal_token: secrets.internal_token.clone(),
        catalog: Some(catalog_path.display().to_string()),
        ca_cert: None,
        store: catalog_path.parent().map(store_url),
        hosts_file: catalog_path
            .parent()
            .map(|dir| hosts_file(dir).display().to_string()),
    }
}

/// The hosts file of the cluster's processes (`--hosts-file`): they
/// reach each other by name (`localhost` in the catalog), resolved through
/// it, so a drill can take name resolution away from them alone.
pub(crate) fn hosts_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("hosts")
}

/// What the hosts file says while names resolve.
pub(crate) const HOSTS: &str =
    "# Written by `tandem dev`: the cluster's routers and index-nodes resolve
# their peers' names through this file (--hosts-file).
127.0.0.1 localhost
";

/// A process's listening address as the catalog names it: by name.
fn by_name(addr: &str) -> String {
    match addr.strip_prefix("127.0.0.1:") {
        Some(port) => format!("localhost:{port}"),
        None => addr.to_string(),
    }
}

/// The cluster's object store: one `file://` directory in the data
/// directory for snapshots, events and model versions (a fleet's bucket).
pub(crate) fn store_url(data_dir: &std::path::Path) -> String {
    format!("file://{}", data_dir.join("snapshots").display())
}
