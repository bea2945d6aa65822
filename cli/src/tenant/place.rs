//! Where a new tenant goes: its shards' replicas, their leaders and its
//! model replicas, chosen from the catalog's nodes.
//!
//! The rule is "least loaded first": an index-node's load is the number of
//! shard replicas the catalog already gives it (leaderships are counted
//! apart, so leaders spread too), a model-node's the number of tenants it
//! serves; ties go to the lower node id, so a plan is deterministic. Each
//! region of the tenant gets `replicas_per_region` replicas of every shard
//! on distinct nodes (default: two, or one in a region with one
//! index-node), so a node can be lost in a region without failing over.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use tandem_catalog::{Catalog, Node, NodeKind};
use toml_edit::{value, Array, InlineTable, Table};

/// Most shards a tenant may be created with.
pub const MAX_SHARDS: u32 = 256;

/// What the operator asks for.
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// Tenant id.
    pub id: String,
    /// Home region (its writes are ordered there).
    pub home: String,
    /// ISO 639-1 code picking the stemmer, or "" for none.
    pub language: String,
    /// Number of shards.
    pub shards: u32,
    /// Replicas of each shard in each region (default: see the module
    /// documentation).
    pub replicas_per_region: Option<usize>,
    /// Replicas in the home region only (`active_active = false`); `tandem
    /// migrate` makes it active-active later.
    pub single_region: bool,
}

/// The nodes chosen for a new tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Per shard, the index-nodes holding a replica.
    pub shards: Vec<Vec<Arc<str>>>,
    /// Per shard, the replica that leads it (in the home region).
    pub leaders: Vec<Arc<str>>,
    /// Model-nodes serving the tenant (one per region that has one).
    pub models: Vec<Arc<str>>,
}

/// How busy each node already is, per the catalog.
#[derive(Default)]
struct Load {
    replicas: HashMap<Arc<str>, usize>,
    leaderships: HashMap<Arc<str>, usize>,
    tenants: HashMap<Arc<str>, usize>,
}

impl Load {
    fn of(catalog: &Catalog) -> Load {
        let mut load = Load::default();
        for tenant in catalog.tenants() {
            for shard in &tenant.shards {
                for node in &shard.replicas {
                    *load.replicas.entry(node.id.clone()).or_default() += 1;
                }
                *load
                    .leaderships
                    .entry(shard.leader.node.id.clone())
                    .or_default() += 1;
            }
            for node in &tenant.model_replicas {
                *load.tenants.entry(node.id.clone()).or_default() += 1;
            }
        }
        load
    }
}

/// Chooses the nodes of `t` in `catalog` (see the module documentation).
pub fn place(catalog: &Catalog, t: &NewTenant) -> anyhow::Result<Placement> {
    tandem_catalog::ids::validate_tenant_id(&t.id).map_err(anyhow::Error::msg)?;
    if catalog.tenant(&t.id).is_some() {
        bail!("tenant {} already exists", t.id);
    }
    let pair = catalog
        .pair_of(&t.home)
        .with_context(|| format!("{:?} is not a region of the catalog", t.home))?
        .clone();
    ensure!(
        (1..=MAX_SHARDS).contains(&t.shards),
        "--shards must be between 1 and {MAX_SHARDS}"
    );
    let home: Arc<str> = t.home.as_str().into();
    let regions = if t.single_region {
        vec![home.clone()]
    } else {
        vec![home.clone(), pair]
    };
    let mut load = Load::of(catalog);
    let mut shards = vec![Vec::new(); t.shards as usize];
    for region in &regions {
        let nodes = nodes_of(catalog, region, NodeKind::Index);
        ensure!(!nodes.is_empty(), "region {region} has no index node");
        let per = t.replicas_per_region.unwrap_or(nodes.len().min(2));
        ensure!(
            (1..=nodes.len()).contains(&per),
            "{per} replicas per region: region {region} has {} index node(s)",
            nodes.len()
        );
        for replicas in shards.iter_mut() {
            let mut candidates = nodes.clone();
            candidates.sort_by_key(|n| (load.replicas.get(&n.id).copied(), n.id.clone()));
            for node in candidates.into_iter().take(per) {
                *load.replicas.entry(node.id.clone()).or_default() += 1;
                replicas.push(node.id.clone());
            }
        }
    }
    let leaders = shards
        .iter()
        .map(|replicas| {
            let leader = replicas
                .iter()
                .filter(|id| catalog.node(id).is_some_and(|n| n.region == home))
                .min_by_key(|id| (load.leaderships.get(*id).copied(), (*id).clone()))
                .expect("every shard has a replica in the home region")
                .clone();
            *load.leaderships.entry(leader.clone()).or_default() += 1;
            leader
        })
        .collect();
    let models = regions
        .iter()
        .filter_map(|region| {
            nodes_of(catalog, region, NodeKind::Model)
                .into_iter()
                .min_by_key(|n| (load.tenants.get(&n.id).copied(), n.id.clone()))
                .map(|n| n.id.clone())
        })
        .collect();
    Ok(Placement {
        shards,
        leaders,
        models,
    })
}

/// The index-node of `region` with the fewest shard replicas (ties: the
/// lower id), leaving out `exclude`: where a new replica goes.
pub fn least_loaded_index(
    catalog: &Catalog,
    region: &str,
    exclude: &[Arc<str>],
) -> Option<Arc<Node>> {
    let load = Load::of(catalog);
    nodes_of(catalog, region, NodeKind::Index)
        .into_iter()
        .filter(|n| !exclude.contains(&n.id))
        .min_by_key(|n| (load.replicas.get(&n.id).copied(), n.id.clone()))
}

fn nodes_of(catalog: &Catalog, region: &str, kind: NodeKind) -> Vec<Arc<Node>> {
    catalog
        .nodes()
        .filter(|n| n.kind == kind && &*n.region == region)
        .cloned()
        .collect()
}

/// The `[[tenants]]` entry of `t` placed at `p`, with the hashes of one
/// search key and one write key (none: they go to a keys file); leaders
/// start at epoch 1.
pub fn tenant_table(t: &NewTenant, p: &Placement, hashes: Option<(&str, &str)>) -> Table {
    let strings = |items: &[Arc<str>]| items.iter().map(|s| &**s).collect::<Array>();
    let mut table = Table::new();
    table.insert("id", value(&t.id));
    table.insert("home", value(&t.home));
    table.insert("active_active", value(!t.single_region));
    table.insert("language", value(&t.language));
    if let Some((search, write)) = hashes {
        table.insert("api_key_sha256", value(Array::from_iter([search])));
        table.insert("write_key_sha256", value(Array::from_iter([write])));
    }
    table.insert("model_replicas", value(strings(&p.models)));
    let mut shards = Table::new();
    let mut leaders = Table::new();
    for (number, (replicas, leader)) in p.shards.iter().zip(&p.leaders).enumerate() {
        shards.insert(&number.to_string(), value(strings(replicas)));
        let mut entry = InlineTable::new();
        entry.insert("node", (&**leader).into());
        entry.insert("epoch", 1i64.into());
        leaders.insert(&number.to_string(), value(entry));
    }
    table.insert("shards", toml_edit::Item::Table(shards));
    table.insert("leaders", toml_edit::Item::Table(leaders));
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, shards: u32) -> NewTenant {
        NewTenant {
            id: id.into(),
            home: "eu-west".into(),
            language: "en".into(),
            shards,
            replicas_per_region: None,
            single_region: false,
        }
    }

    fn ids(p: &[Arc<str>]) -> Vec<&str> {
        p.iter().map(|s| &**s).collect()
    }

    #[test]
    fn least_loaded_nodes_in_both_regions() {
        let catalog = Catalog::embedded_default().unwrap();
        let p = place(&catalog, &new("shop", 2)).unwrap();
        assert_eq!(p.shards.len(), 2);
        for replicas in &p.shards {
            // Two per region, on distinct nodes.
            let mut sorted = ids(replicas);
            sorted.sort();
            assert_eq!(sorted, ["eu-idx-1", "eu-idx-2", "us-idx-1", "us-idx-2"]);
        }
        // Leaders in the home region, spread over its nodes.
        assert!(p.leaders.iter().all(|l| l.starts_with("eu-")));
        assert_ne!(p.leaders[0], p.leaders[1]);
        assert_eq!(ids(&p.models), ["eu-model-1", "us-model-1"]);
    }

    #[test]
    fn single_region_and_refusals() {
        let catalog = Catalog::embedded_default().unwrap();
        let mut t = new("shop", 3);
        t.single_region = true;
        t.replicas_per_region = Some(1);
        let p = place(&catalog, &t).unwrap();
        assert!(p
            .shards
            .iter()
            .all(|r| r.len() == 1 && r[0].starts_with("eu-")));
        // One replica each: the three shards alternate between the nodes.
        let firsts: Vec<&str> = p.shards.iter().map(|r| &*r[0]).collect();
        assert!(firsts.contains(&"eu-idx-1") && firsts.contains(&"eu-idx-2"));
        assert_eq!(ids(&p.models), ["eu-model-1"]);

        let refused = |t: NewTenant| place(&catalog, &t).unwrap_err().to_string();
        assert!(refused(new("acme", 1)).contains("already exists"));
        assert!(refused(new("bad id!", 1)).contains("tenant id"));
        assert!(refused(new("shop", 0)).contains("--shards"));
        let mut far = new("shop", 1);
        far.home = "mars".into();
        assert!(refused(far).contains("not a region"));
        let mut many = new("shop", 1);
        many.replicas_per_region = Some(3);
        assert!(refused(many).contains("has 2 index node(s)"));
    }

    #[test]
    fn the_table_is_a_valid_tenant() {
        let catalog = Catalog::embedded_default().unwrap();
        let t = new("shop", 2);
        let p = place(&catalog, &t).unwrap();
        let mut doc: toml_edit::DocumentMut = tandem_catalog::EMBEDDED_DEFAULT.parse().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let table = tenant_table(&t, &p, Some((&a, &b)));
        doc["tenants"].as_array_of_tables_mut().unwrap().push(table);
        let after = Catalog::parse(doc.to_string().as_bytes()).unwrap();
        let shop = after.tenant("shop").unwrap();
        assert!(shop.active_active);
        assert_eq!(shop.shards.len(), 2);
        assert_eq!(shop.shards[1].leader.node.id, p.leaders[1]);
        assert_eq!(shop.shards[1].leader.epoch, 1);
        assert_eq!(shop.model_replicas.len(), 2);
    }
}
