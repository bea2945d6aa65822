//! The client subcommands: `search`, `suggest`, `status`, `dial`, `ingest`.
//!
//! Router addresses, the API key and the admin token come from flags, or
//! from the topology file `tandem dev` writes (`--topology FILE`).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tandem_client::{ClientConfig, RegionEndpoint, TandemClient, Topology};
use tandem_proto::v1::router_admin_client::RouterAdminClient;
use tandem_proto::v1::{
    ReloadCatalogRequest, SearchRequest, SetDialRequest, StatusRequest, SuggestRequest,
};
use tonic::transport::Channel;

/// Where the cluster is and who we are.
#[derive(Args, Clone, Debug, Default)]
pub struct Target {
    /// Topology file written by `tandem dev --topology` (default: the one in
    /// `target/tandem-dev/` if present).
    #[arg(long, global = true)]
    pub topology: Option<std::path::PathBuf>,
    /// A router address (`host:port`), instead of the topology's routers.
    #[arg(long, global = true)]
    pub router: Option<String>,
    /// Region whose router to prefer (default: the topology's first).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Tenant API key (default: the topology's key of the tenant).
    #[arg(long, global = true, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A router's admin API address (`host:port`, its `--admin-listen`),
    /// instead of the topology's routers, for `status` and `dial`.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// File holding the admin token (else `TANDEM_ADMIN_TOKEN`, else the
    /// topology's); never the token itself on the command line.
    #[arg(long, global = true, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) the cluster's certificates chain to, when
    /// it serves TLS (default: the topology's `ca_cert`); with it,
    /// `host:port` addresses are dialled over TLS.
    #[arg(long, global = true, env = "TANDEM_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// The default data directory of `tandem dev`.
pub const DEFAULT_DATA_DIR: &str = "target/tandem-dev";
/// The default topology path of `tandem dev`.
pub const DEFAULT_TOPOLOGY: &str = "target/tandem-dev/topology.json";

impl Target {
    /// The topology file to use: `--topology`, else `tandem dev`'s default
    /// one if it exists.
    pub fn topology_path(&self) -> Option<std::path::PathBuf> {
        match &self.topology {
            Some(p) => Some(p.clone()),
            None if std::path::Path::new(DEFAULT_TOPOLOGY).exists() => {
                Some(DEFAULT_TOPOLOGY.into())
            }
            None => None,
        }
    }

    /// The catalog file: `flag`, else the topology's.
    pub fn catalog_path(
        &self,
        flag: Option<std::path::PathBuf>,
    ) -> anyhow::Result<std::path::PathBuf> {
        if let Some(path) = flag {
            return Ok(path);
        }
        self.topology()?
            .and_then(|t| t.catalog)
            .map(Into::into)
            .context("give --catalog FILE (or --topology of a cluster that names its catalog)")
    }

    /// The object store the topology's cluster names, if any.
    pub fn topology_store(&self) -> Option<String> {
        self.topology().ok().flatten()?.store
    }

    /// The internal token of the topology's cluster, if it names one.
    pub fn internal_token(&self) -> Option<tandem_common::internal::InternalToken> {
        let topology = self.topology().ok().flatten()?;
        tandem_common::internal::InternalToken::new(&topology.internal_token).ok()
    }

    /// The cluster's CA: `--ca-cert`, else the topology's `ca_cert`.
    pub fn ca_cert(&self) -> Option<std::path::PathBuf> {
        if let Some(path) = &self.ca_cert {
            return Some(path.clone());
        }
        let topology = self.topology().ok().flatten()?;
        topology.ca_cert.map(Into::into)
    }

    fn topology(&self) -> anyhow::Result<Option<Topology>> {
        let Some(path) = self.topology_path() else {
            return Ok(None);
        };
        Ok(Some(Topology::load(&path).with_context(|| {
            format!("cannot read topology {}", path.display())
        })?))
    }

    /// A failover client for `tenant`.
    pub async fn client(&self, tenant: &str) -> anyhow::Result<TandemClient> {
        let topology = self.topology()?;
        let mut config = match (&self.router, &topology) {
            (Some(addr), _) => {
                let mut c = ClientConfig::new(vec![RegionEndpoint::new(
                    self.region.clone().unwrap_or_else(|| "default".into()),
                    crate::operator::uri(addr),
                )]);
                c.ca_cert = crate::operator::ca_cert();
                c
            }
            (None, Some(t)) => {
                let mut c = t.client_config(self.region.as_deref(), None)?;
                c.api_key = t.tenant(tenant).map(|t| t.api_key.clone());
                c
            }
            (None, None) => bail!(
                "no router: pass --router HOST:PORT or --topology FILE (run `tandem dev` first)"
            ),
        };
        if let Some(key) = &self.key {
            config.api_key = Some(key.clone());
        }
        Ok(TandemClient::connect(config).await?)
    }

    /// Admin channels to every router, with the admin token.
    pub(crate) async fn admin(&self) -> anyhow::Result<(Vec<(String, Channel)>, String)> {
        let topology = self.topology()?;
        let endpoints = match (&self.admin, &topology) {
            // A name (a headless Service) stands for every router behind it.
            (Some(addr), _) => crate::operator::every_address(addr).await?,
            (None, Some(t)) => admin_addresses(t)
                .into_iter()
                .map(|(name, addr)| Ok((name, crate::operator::endpoint(&addr)?)))
                .collect::<anyhow::Result<_>>()?,
            (None, None) => bail!("no router: pass --admin HOST:PORT or --topology FILE"),
        };
        let token = tandem_common::secret_file::admin_token(self.admin_token_file.as_deref())?
            .or_else(|| topology.as_ref().map(|t| t.admin_token.clone()))
            .context(
                "no admin token: pass --admin-token-file, set TANDEM_ADMIN_TOKEN or pass --topology",
            )?;
        let channels = endpoints
            .into_iter()
            .map(|(name, endpoint)| {
                let channel = endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy();
                (name, channel)
            })
            .collect();
        Ok((channels, token))
    }
}

/// Every router's admin address in `t`, named "region (router id)": the
/// routers listed as nodes with an admin address, else each region's
/// `admin` (or its router, in files older than the admin listener).
fn admin_addresses(t: &Topology) -> Vec<(String, String)> {
    let nodes: Vec<(String, String)> = t
        .nodes
        .iter()
        .filter(|n| n.kind == tandem_client::NodeInfo::KIND_ROUTER)
        .filter_map(|n| Some((format!("{} ({})", n.region, n.id), n.admin.clone()?)))
        .collect();
    if !nodes.is_empty() {
        return nodes;
    }
    t.regions
        .iter()
        .map(|r| (r.name.clone(), r.admin.clone().unwrap_or(r.router.clone())))
        .collect()
}

/// `tandem search`.
pub async fn search(
    target: &Target,
    tenant: &str,
    query: &str,
    top_k: u32,
    json: bool,
) -> anyhow::Result<()> {
    let client = target.client(tenant).await?;
    let request = SearchRequest {
        tenant: tenant.into(),
        query: query.into(),
        top_k,
        ..Default::default()
    };
    let (resp, info) = client
        .search(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "total_hits": resp.total_hits,
                "hits": resp.hits.iter().map(|h| serde_json::json!({"id": h.id, "score": h.score, "title": h.title, "url": h.url, "shard": h.shard})).collect::<Vec<_>>(),
                "route": resp.route,
                "degraded": resp.degraded, "took_micros": resp.took_micros, "client_region": &*info.region,
                "search_id": resp.search_id,
            })
        );
        return Ok(());
    }
    println!(
        "{} hits for {query:?} (tenant {tenant}, via {} router{})",
        resp.total_hits,
        info.region,
        if info.failed_over {
            ", failed over"
        } else {
            ""
        }
    );
    for (i, h) in resp.hits.iter().enumerate() {
        println!(
            "{:>2}. {:<28} {:>7.3}  {}",
            i + 1,
            h.id,
            h.score,
            crate::render::snippet(&h.snippet, 90, crate::render::stdout_is_terminal())
        );
    }
    if !resp.degraded.is_empty() {
        println!("degraded: {}", resp.degraded.join(", "));
    }
    crate::render::print_route(resp.route.as_ref(), Some(resp.took_micros));
    if !resp.search_id.is_empty() {
        println!(
            "search id {} (tandem click --tenant {tenant} --search-id ID --doc DOC --position N)",
            resp.search_id
        );
    }
    Ok(())
}

/// `tandem suggest`.
pub async fn suggest(
    target: &Target,
    tenant: &str,
    prefix: &str,
    k: u32,
    json: bool,
) -> anyhow::Result<()> {
    let client = target.client(tenant).await?;
    let request = SuggestRequest {
        tenant: tenant.into(),
        prefix: prefix.into(),
        k,
    };
    let (resp, info) = client
        .suggest(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "suggestions": resp.suggestions.iter().map(|s| serde_json::json!({"text": s.text, "score": s.score})).collect::<Vec<_>>(),
                "route": resp.route,
                "degraded": resp.degraded, "client_region": &*info.region,
            })
        );
        return Ok(());
    }
    println!(
        "suggestions for {prefix:?} (tenant {tenant}, via {} router)",
        info.region
    );
    for s in &resp.suggestions {
        println!("  {:<50} {:.3}", s.text, s.score);
    }
    if !resp.degraded.is_empty() {
        println!("degraded: {}", resp.degraded.join(", "));
    }
    crate::render::print_route(resp.route.as_ref(), None);
    Ok(())
}

pub(crate) fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// `tandem status`.
pub async fn status(target: &Target, json: bool) -> anyhow::Result<()> {
    let (routers, token) = target.admin().await?;
    let mut unreachable = Vec::new();
    for (name, channel) in routers {
        let status = match RouterAdminClient::new(channel)
            .status(bearer(StatusRequest {}, &token)?)
            .await
        {
            Ok(s) => s.into_inner(),
            Err(e) => {
                println!(
                    "router of {name}: unreachable ({:?}: {})",
                    e.code(),
                    e.message()
                );
                unreachable.push(name);
                continue;
            }
        };
        if json {
            // Every field of the admin `Status`, by its proto name.
            println!("{}", serde_json::to_string(&status)?);
            continue;
        }
        println!(
            "router {} ({}), catalog {} ({} tenants){}",
            status.router_id,
            status.region,
            status.catalog_version,
            status.tenants,
            if status.catalog_error.is_empty() {
                String::new()
            } else {
                format!(" — REFUSED RELOAD: {}", status.catalog_error)
            }
        );
        for r in &status.regions {
            println!(
                "  region {:<10} paired {:<10} dial {:>3}%  routers {}{}",
                r.name,
                r.paired,
                r.dial_percent,
                if r.router_healthy { "up" } else { "DOWN" },
                if r.auto_shifted {
                    "  AUTO-SHIFTED to the paired region (its index-nodes fail health)"
                } else {
                    ""
                }
            );
        }
        println!(
            "  {:<16} {:<10} {:<7} {:<10} {:>5} {:>9} {:>9} {:>5} {:>9} {:>8}  ejected shards",
            "endpoint",
            "region",
            "kind",
            "state",
            "eject",
            "ewma us",
            "p95 us",
            "infl",
            "ok",
            "failed"
        );
        for e in &status.endpoints {
            println!(
                "  {:<16} {:<10} {:<7} {:<10} {:>5} {:>9} {:>9} {:>5} {:>9} {:>8}  {}",
                e.node,
                e.region,
                e.kind,
                e.state,
                e.ejections,
                e.ewma_micros,
                e.p95_micros,
                e.in_flight,
                e.successes,
                e.failures,
                e.ejected_shards.join(",")
            );
        }
        for r in &status.ramps {
            let arm = |a: &Option<tandem_proto::v1::RampArm>| {
                let a = a.unwrap_or_default();
                format!(
                    "{} searches, {} errors, p99 {} us",
                    a.requests, a.errors, a.p99_micros
                )
            };
            println!(
                "  ramp {}: {}% to {} ({}); home {} ({})",
                r.tenant,
                r.percent,
                r.pair_region,
                arm(&r.pair),
                r.home_region,
                arm(&r.home)
            );
        }
        if let Some(c) = &status.cache {
            println!("  replica-map cache: {} entries, {} hits, {} misses, {} negative hits; retry budget exhausted {} times", c.entries, c.hits, c.misses, c.negative_hits, status.retry_budget_exhausted);
        }
    }
    model_versions(target, json).await?;
    // Scripts (and drills) read the exit code: a router down is news.
    if !unreachable.is_empty() {
        bail!("router(s) unreachable: {}", unreachable.join(", "));
    }
    Ok(())
}

/// The model versions every model-node serves, per region (when the
/// catalog is known): a line per node, or a JSON line per node.
async fn model_versions(target: &Target, json: bool) -> anyhow::Result<()> {
    let Ok(path) = target.catalog_path(None) else {
        return Ok(());
    };
    let catalog = tandem_catalog::Catalog::load_file(&path)?;
    let nodes = crate::learn::serve_wait::every_node(&catalog).await;
    if !json && !nodes.is_empty() {
        println!("model versions served");
    }
    for (id, region, served) in nodes {
        if json {
            let models = match &served {
                Ok(list) => serde_json::json!(list
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()),
                Err(e) => serde_json::json!({"error": e}),
            };
            println!(
                "{}",
                serde_json::json!({"model_node": id, "region": region, "models": models})
            );
            continue;
        }
        let text = match served {
            Ok(list) => list
                .iter()
                .map(|(t, v)| format!("{t} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("unreachable ({e})"),
        };
        println!("  {id:<16} {region:<10} {text}");
    }
    Ok(())
}

/// `tandem dial REGION PERCENT`: records the dial in the catalog (`catalog`:
/// the file, default the topology's), from which every router takes it on
/// start and when it changes, then pushes it to every router at once.
pub async fn dial(
    target: &Target,
    (region, percent): (&str, u32),
    catalog: Option<std::path::PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let recorded = match target.catalog_path(catalog) {
        Ok(path) => {
            crate::catalog_edit::edit(&path, |file, _| file.set_dial(region, percent))?;
            Some(path)
        }
        Err(_) => None,
    };
    let results = each_router(target, |mut admin, token| async move {
        let request = SetDialRequest {
            region: region.into(),
            percent,
        };
        admin.set_dial(bearer(request, &token)?).await?;
        Ok(format!("dial of {region} set to {percent}%"))
    })
    .await?;
    let failures = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "region": region, "percent": percent,
                "recorded_in": recorded.as_ref().map(|p| p.display().to_string()),
                "routers": results.iter().map(|(name, r)| serde_json::json!({
                    "router": name, "ok": r.is_ok(),
                    "message": r.as_ref().unwrap_or_else(|e| e),
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        match &recorded {
            Some(path) => println!("dial of {region} recorded in {}", path.display()),
            None => println!(
                "no catalog to record the dial in (--catalog FILE): a router that restarts \
                 goes back to the catalog's dial"
            ),
        }
        print_each(&results);
    }
    if failures > 0 {
        bail!("{failures} router(s) did not take the dial");
    }
    Ok(())
}

/// Tells every router of the cluster to reload its catalog now (after an
/// edit such as a revoked key, so it takes effect at once everywhere);
/// fails if some router did not take it.
pub async fn reload_catalogs(target: &Target) -> anyhow::Result<()> {
    let failures = print_each(&each_router(target, reload_one).await?);
    if failures > 0 {
        bail!("{failures} router(s) did not reload; they pick the file up at their next poll");
    }
    Ok(())
}

/// [`reload_catalogs`] without a line per router, for commands that edit
/// the catalog many times (`tandem migrate`): a router that does not
/// answer is logged, and takes the file at its next poll.
pub async fn reload_catalogs_quietly(target: &Target) {
    match each_router(target, reload_one).await {
        Ok(results) => {
            for (name, result) in results {
                if let Err(e) = result {
                    tracing::warn!(router = %name, error = %e, "router did not reload; it takes the catalog at its next poll");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no router to reload; they take the catalog at their next poll")
        }
    }
}

/// `ReloadCatalog` on one router; the version it serves now.
async fn reload_one(
    mut admin: RouterAdminClient<Channel>,
    token: String,
) -> anyhow::Result<String> {
    let answer = admin
        .reload_catalog(bearer(ReloadCatalogRequest {}, &token)?)
        .await?;
    let version: String = answer.into_inner().version.chars().take(12).collect();
    Ok(format!("catalog {version}"))
}

/// Runs one admin `call` on every router of the target; per router (by
/// name) what the call reports, or its error.
async fn each_router<F, Fut>(
    target: &Target,
    call: F,
) -> anyhow::Result<Vec<(String, Result<String, String>)>>
where
    F: Fn(RouterAdminClient<Channel>, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let (routers, token) = target.admin().await?;
    let mut out = Vec::new();
    for (name, channel) in routers {
        let result = call(RouterAdminClient::new(channel), token.clone())
            .await
            .map_err(|e| match e.downcast_ref::<tonic::Status>() {
                Some(s) => format!("{:?}: {}", s.code(), s.message()),
                None => format!("{e:#}"),
            });
        out.push((name, result));
    }
    Ok(out)
}

/// Prints a line per router of [`each_router`]'s results; how many failed.
fn print_each(results: &[(String, Result<String, String>)]) -> usize {
    for (name, result) in results {
        match result {
            Ok(done) => println!("router of {name}: {done}"),
            Err(e) => println!("router of {name}: {e}"),
        }
    }
    results.iter().filter(|(_, r)| r.is_err()).count()
}

/// `tandem ingest`: writes a file's documents through a router (`--router`,
/// else the topology's router of `--region` or its first region).
pub async fn ingest(
    target: &Target,
    mut plan: crate::ingest::IngestPlan,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let topology = target.topology()?;
    let router = match (&target.router, &topology) {
        (Some(addr), _) => addr.clone(),
        (None, Some(t)) => t
            .regions
            .iter()
            .find(|r| target.region.as_deref().is_none_or(|want| r.name == want))
            .map(|r| r.router.clone())
            .context("no router of that region in the topology")?,
        (None, None) => bail!("give --router HOST:PORT or --topology FILE"),
    };
    if plan.write_key.is_empty() {
        plan.write_key = topology
            .as_ref()
            .and_then(|t| t.tenant(&plan.tenant))
            .map(|t| t.write_key.clone())
            .filter(|k| !k.is_empty())
            .context("give --write-key (or TANDEM_WRITE_KEY)")?;
    }
    let report = crate::ingest::ingest_file(&router, &plan, file).await?;
    let rate = report.documents as f64 / report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "wrote {} documents in {} batches in {:.1?} ({rate:.0} documents/s)",
        report.documents, report.batches, report.elapsed
    );
    println!("consistency token of the last batch: {}", report.last_token);
    Ok(())
}
