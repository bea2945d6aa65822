//! `tandem tenant create|delete`: a tenant's whole life, as catalog edits
//! pushed to every router.
//!
//! `create` places the tenant on the least-loaded nodes ([`place`]), writes
//! it into the catalog with one new key of each scope (printed once; the
//! catalog keeps their SHA-256), has every router reload, and waits until
//! every replica of every shard serves: the index-nodes create the shards
//! when their catalog names them.
//!
//! `delete` takes the tenant out of the catalog first, so that routers stop
//! sending it searches and writes and its nodes stop leading and following
//! it, and then has every node remove what it holds of it ([`retire`]). It
//! asks for `--yes`, prints what it is about to remove, and can be run
//! again: a tenant already out of the catalog is only removed from the
//! nodes.
//!
//! When the catalog is the one `tandem dev`'s topology names, the topology's
//! tenant list follows (with the new keys: the file is readable by its
//! owner only), so `tandem search --tenant T` works without `--key`.

pub mod place;
pub mod retire;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tandem_catalog::{hash_key, Catalog};
use tandem_client::{TenantInfo, Topology};
use tandem_proto::v1::ShardHealth;

use crate::catalog_edit::KeysFile;
use crate::commands::{reload_catalogs, Target};
use crate::keys::{new_key, CatalogArgs, KeySource, Scope};
use place::{place, tenant_table, NewTenant, Placement};

/// `tandem tenant` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TenantAction {
    /// Add a tenant on the least-loaded nodes, with a new search key and
    /// write key (printed once), and wait until it is served.
    Create {
        /// The new tenant's id.
        #[arg(long)]
        tenant: String,
        /// Home region: where its writes are ordered.
        #[arg(long)]
        home: String,
        /// ISO 639-1 code picking the stemmer ("" for none); fixed for the
        /// tenant's life.
        #[arg(long, default_value = "en")]
        language: String,
        /// Number of shards (documents are placed by a hash of their id).
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Replicas of each shard per region (default: 2, or 1 in a region
        /// with one index-node).
        #[arg(long)]
        replicas_per_region: Option<usize>,
        /// Replicas in the home region only (not active-active).
        #[arg(long)]
        single_region: bool,
        /// Seconds to wait for every replica to serve (0: do not wait).
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// The catalog (and keys file) to edit.
        #[command(flatten)]
        files: CatalogArgs,
    },
    /// Remove a tenant from the catalog, then its shards from every
    /// index-node, its snapshots and its models; says what it removed.
    Delete {
        /// The tenant to delete.
        #[arg(long)]
        tenant: String,
        /// Really delete (without it, only print what would go).
        #[arg(long)]
        yes: bool,
        /// Seconds to keep asking nodes whose catalog still lists the
        /// tenant.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// The catalog (and keys file) to edit.
        #[command(flatten)]
        files: CatalogArgs,
    },
}

/// Runs `action` against the cluster of `target`.
pub async fn run(target: &Target, action: TenantAction) -> anyhow::Result<()> {
    match action {
        TenantAction::Create {
            tenant,
            home,
            language,
            shards,
            replicas_per_region,
            single_region,
            wait,
            files,
        } => {
            let src = files.source(target)?;
            let new = NewTenant {
                id: tenant,
                home,
                language,
                shards,
                replicas_per_region,
                single_region,
            };
            create(target, &src, &new, Duration::from_secs(wait)).await
        }
        TenantAction::Delete {
            tenant,
            yes,
            wait,
            files,
        } => {
            let src = files.source(target)?;
            delete(target, &src, &tenant, yes, Duration::from_secs(wait)).await
        }
    }
}

/// A tenant just written into the catalog.
#[derive(Debug)]
pub struct Added {
    /// Where it went.
    pub placement: Placement,
    /// Its first search key (only its hash is stored).
    pub search_key: String,
    /// Its first write key (only its hash is stored).
    pub write_key: String,
    /// The catalog with it (and the keys file's hashes, if any).
    pub catalog: Catalog,
}

/// Places `t` and writes it into the catalog of `src`, its key hashes into
/// the keys file if there is one (after the catalog: a tenant without keys
/// is valid, keys without a tenant only a warning).
pub fn add_to_catalog(src: &KeySource, t: &NewTenant) -> anyhow::Result<Added> {
    let path = &src.catalog;
    let search_key = new_key(&t.id, Scope::Search);
    let write_key = new_key(&t.id, Scope::Write);
    let hashes = (hash_key(&search_key), hash_key(&write_key));
    let in_catalog = src.keys_file.is_none().then_some((&*hashes.0, &*hashes.1));
    let mut placement = None;
    let mut catalog = crate::catalog_edit::edit(path, |file, catalog| {
        let placed = placement.insert(place(catalog, t)?);
        file.add_tenant(tenant_table(t, placed, in_catalog))
    })?;
    let placement = placement.expect("placed by the edit");
    if let Some(keys_path) = &src.keys_file {
        let mut keys = KeysFile::load(keys_path)?;
        keys.add_to_list(&t.id, Scope::Search.field(), &hashes.0)?;
        keys.add_to_list(&t.id, Scope::Write.field(), &hashes.1)?;
        catalog = keys.save(keys_path, path)?;
    }
    Ok(Added {
        placement,
        search_key,
        write_key,
        catalog,
    })
}

/// Takes `tenant` out of the catalog of `src` and its `[keys.<tenant>]`
/// table out of the keys file; returns the catalog after, and whether
/// anything changed.
pub fn remove_from_catalog(src: &KeySource, tenant: &str) -> anyhow::Result<(Catalog, bool)> {
    let path = &src.catalog;
    let mut changed = false;
    let catalog = crate::catalog_edit::edit(path, |file, _| {
        changed = file.remove_tenant(tenant);
        Ok(())
    })?;
    if let Some(keys_path) = &src.keys_file {
        let mut keys = KeysFile::load(keys_path)?;
        if keys.remove_tenant(tenant) {
            keys.save(keys_path, path)?;
            changed = true;
        }
    }
    Ok((catalog, changed))
}

async fn create(
    target: &Target,
    src: &KeySource,
    t: &NewTenant,
    wait: Duration,
) -> anyhow::Result<()> {
    let Added {
        placement,
        search_key,
        write_key,
        catalog: after,
    } = add_to_catalog(src, t)?;
    let path = &src.catalog;
    println!("created tenant {} (home {}):", t.id, t.home);
    for (number, (replicas, leader)) in placement.shards.iter().zip(&placement.leaders).enumerate()
    {
        let replicas: Vec<&str> = replicas.iter().map(|r| &**r).collect();
        println!(
            "  shard {number}: {} (leader {leader})",
            replicas.join(", ")
        );
    }
    let models: Vec<&str> = placement.models.iter().map(|m| &**m).collect();
    println!("  models: {}", none_if_empty(&models.join(", ")));
    println!("search key (shown once): {search_key}");
    println!("write key (shown once):  {write_key}");
    record_in_topology(target, path, |topology| {
        topology.tenants.push(TenantInfo {
            id: t.id.clone(),
            api_key: search_key.clone(),
            write_key: write_key.clone(),
            active_active: !t.single_region,
            home: t.home.clone(),
            sample_queries: Vec::new(),
        })
    })?;
    reload_catalogs(target).await?;
    if !wait.is_zero() {
        let took = wait_until_served(&after, &t.id, wait).await?;
        println!(
            "every replica of {} serves (after {:.1} s)",
            t.id,
            took.as_secs_f64()
        );
    }
    Ok(())
}

async fn delete(
    target: &Target,
    src: &KeySource,
    tenant: &str,
    yes: bool,
    wait: Duration,
) -> anyhow::Result<()> {
    let path = &src.catalog;
    let catalog = Catalog::load_file(path)?;
    let listed = catalog.tenant(tenant).cloned();
    match &listed {
        Some(t) => {
            println!("tenant {tenant} (home {}) lives on:", t.home);
            for shard in &t.shards {
                let nodes: Vec<&str> = shard.replicas.iter().map(|n| &*n.id).collect();
                println!("  shard {}: {}", shard.number, nodes.join(", "));
            }
            let models: Vec<&str> = t.model_replicas.iter().map(|n| &*n.id).collect();
            println!("  models: {}", none_if_empty(&models.join(", ")));
        }
        None => println!(
            "tenant {tenant} is not in the catalog; removing what is left of it on the nodes"
        ),
    }
    if !yes {
        bail!("nothing deleted: pass --yes to delete tenant {tenant}, its documents, snapshots and models");
    }
    let (after, changed) = remove_from_catalog(src, tenant)?;
    if changed {
        if let Err(e) = reload_catalogs(target).await {
            // Nodes are asked until their catalog no longer lists it.
            println!("{e:#}");
        }
    }
    record_in_topology(target, path, |topology| {
        topology.tenants.retain(|t| t.id != tenant)
    })?;
    let retired = retire::retire(&after, tenant, wait).await;
    println!("deleted tenant {tenant}:");
    print!("{}", retired.to_text(tenant));
    if !retired.complete() {
        bail!("some nodes still hold {tenant}: run `tandem tenant delete --tenant {tenant} --yes` again once they answer");
    }
    Ok(())
}

/// Polls every replica of `tenant` until all serve; how long it took.
async fn wait_until_served(
    catalog: &Catalog,
    tenant: &str,
    wait: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let t = crate::catalog_edit::tenant(catalog, tenant)?;
    loop {
        let mut pending = Vec::new();
        for shard in &t.shards {
            for node in &shard.replicas {
                let info = crate::verify::shard_info(node, tenant, shard.number, false).await;
                match info {
                    Ok(i) if i.health == ShardHealth::Serving as i32 => {}
                    Ok(i) => pending.push(format!(
                        "shard {} on {}: {:?}",
                        shard.number,
                        node.id,
                        ShardHealth::try_from(i.health).unwrap_or_default()
                    )),
                    Err(e) => pending.push(format!("shard {} on {}: {e}", shard.number, node.id)),
                }
            }
        }
        if pending.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= wait {
            bail!(
                "not every replica serves after {wait:?} (the catalog is saved; nodes pick it up \
                 at their next poll): {}",
                pending.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Applies `edit` to the topology file when it names the catalog at
/// `path` (a `tandem dev` cluster); other topologies are left alone.
fn record_in_topology(
    target: &Target,
    path: &Path,
    edit: impl FnOnce(&mut Topology),
) -> anyhow::Result<()> {
    let Some(topology_path) = target.topology_path() else {
        return Ok(());
    };
    let Ok(mut topology) = Topology::load(&topology_path) else {
        return Ok(());
    };
    let same = |named: &str| {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        canon(Path::new(named)).is_some() && canon(Path::new(named)) == canon(path)
    };
    if !topology.catalog.as_deref().is_some_and(same) {
        return Ok(());
    }
    edit(&mut topology);
    topology
        .save(&topology_path)
        .with_context(|| format!("cannot update the topology {}", topology_path.display()))
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_catalog::AuthOutcome;

    fn shop() -> NewTenant {
        NewTenant {
            id: "shop".into(),
            home: "us-east".into(),
            language: "en".into(),
            shards: 2,
            replicas_per_region: Some(1),
            single_region: false,
        }
    }

    #[test]
    fn keys_go_to_the_keys_file_and_leave_with_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog.toml");
        std::fs::write(&catalog, tandem_catalog::EMBEDDED_DEFAULT).unwrap();
        let keys = dir.path().join("keys.toml");
        let src = KeySource {
            catalog: catalog.clone(),
            keys_file: Some(keys.clone()),
        };
        let added = add_to_catalog(&src, &shop()).unwrap();
        let text = std::fs::read_to_string(&catalog).unwrap();
        assert!(text.contains("id = \"shop\""), "{text}");
        assert!(
            !text.contains(&hash_key(&added.search_key)),
            "no hash in the catalog"
        );
        let merged = Catalog::read_source(&catalog, Some(&keys)).unwrap();
        let merged = Catalog::parse(&merged).unwrap();
        let authorized = |key: &str, scope| {
            let hash = tandem_catalog::KeyHash::of_key(key);
            matches!(
                merged.authorize_scoped("shop", &hash, scope),
                AuthOutcome::Authorized(_)
            )
        };
        assert!(authorized(
            &added.search_key,
            tandem_catalog::KeyScope::Search
        ));
        assert!(authorized(
            &added.write_key,
            tandem_catalog::KeyScope::Write
        ));
        assert!(!authorized(
            &added.search_key,
            tandem_catalog::KeyScope::Write
        ));
        assert!(add_to_catalog(&src, &shop()).is_err(), "exists");

        let (after, changed) = remove_from_catalog(&src, "shop").unwrap();
        assert!(changed && after.tenant("shop").is_none());
        assert!(!std::fs::read_to_string(&keys).unwrap().contains("shop"));
        assert!(std::fs::read_to_string(&catalog)
            .unwrap()
            .contains("# Development keys"));
        let (_, changed) = remove_from_catalog(&src, "shop").unwrap();
        assert!(!changed, "a second removal finds nothing");
    }

    #[test]
    fn without_a_keys_file_the_catalog_holds_the_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog.toml");
        std::fs::write(&catalog, tandem_catalog::EMBEDDED_DEFAULT).unwrap();
        let src = KeySource::catalog(&catalog);
        let added = add_to_catalog(&src, &shop()).unwrap();
        assert!(matches!(
            added.catalog.authorize("shop", Some(&added.search_key)),
            AuthOutcome::Authorized(_)
        ));
        assert_eq!(added.placement.shards.len(), 2);
        let (after, _) = remove_from_catalog(&src, "shop").unwrap();
        assert!(after.tenant("shop").is_none());
    }
}
