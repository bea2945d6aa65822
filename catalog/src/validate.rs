//! Turns a [`RawCatalog`] into a [`Catalog`], or into the list of everything
//! wrong with it.
//!
//! Problems are collected rather than returned at the first one: a broken
//! catalog is fixed by a person reading a log line, and one round trip per
//! typo is a slow way to fix ten of them. Every message starts with the entry
//! it is about (`region "x"`, `node "y"`, `tenant "z" shard 3`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::ids::is_valid_id;
use super::raw::{RawCatalog, RawKind, RawTenant, Unknown};
use super::{Catalog, KeyHash, Leader, Node, NodeKind, Quota, Region, Shard, Tenant, FORMAT};

/// More messages than this are summarised: a catalog generated wrongly can
/// produce one problem per tenant, and a 100k-line log entry helps nobody.
const MAX_PROBLEMS: usize = 100;

#[derive(Default)]
struct Problems {
    list: Vec<String>,
    dropped: usize,
    /// Format version of the file being validated.
    format: u32,
    /// Unknown keys of a newer format: logged, not refused.
    warnings: Vec<String>,
}

impl Problems {
    /// Refuses (same or older format) or notes (newer format) the keys of
    /// `what` that this version does not know; see [`super::raw`].
    fn unknown(&mut self, what: &str, unknown: &Unknown) {
        for key in unknown.keys() {
            if self.format > FORMAT {
                self.warnings.push(format!(
                    "{what}: key {key:?} of catalog format {} ignored (this version reads format {FORMAT})",
                    self.format
                ));
            } else {
                self.push(format!("{what}: unknown key {key:?}"));
            }
        }
    }

    fn push(&mut self, msg: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(msg);
        } else {
            self.dropped += 1;
        }
    }

    fn id(&mut self, what: &str, index: usize, id: &str) {
        if !is_valid_id(id) {
            self.push(format!(
                "{what}[{index}]: id {id:?} is not valid (expected 1-64 characters \
                 [A-Za-z0-9_.-], starting with a letter or digit)"
            ));
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("... and {} more problem(s)", self.dropped));
        }
        self.list
    }
}

/// Validates `raw` and builds the catalog with the given version.
pub(super) fn build(mut raw: RawCatalog, version: Arc<str>) -> Result<Catalog, Vec<String>> {
    let mut p = Problems {
        format: raw.format.unwrap_or(1),
        ..Problems::default()
    };
    if p.format == 0 {
        p.push("format: 0 is not a format version (1, 2, ...)".to_string());
    }
    p.unknown("catalog", &raw.unknown);
    merge_keys(&mut raw, &mut p);
    let regions = regions(&raw, &mut p);
    let nodes = nodes(&raw, &regions, &mut p);

    let mut tenants: HashMap<Arc<str>, Arc<Tenant>> = HashMap::with_capacity(raw.tenants.len());
    let mut key_owner: HashMap<KeyHash, Arc<str>> = HashMap::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        p.id("tenants", i, &t.id);
        let tenant = tenant(t, &regions, &nodes, &mut p);
        for key in tenant.key_hashes.iter().chain(&tenant.write_key_hashes) {
            if let Some(owner) = key_owner.get(key) {
                if **owner != *tenant.id {
                    p.push(format!(
                        "tenant {:?}: api key hash {} is also a key of tenant {:?}; \
                         a key must belong to exactly one tenant",
                        t.id,
                        key.to_hex(),
                        owner
                    ));
                }
            } else {
                key_owner.insert(*key, tenant.id.clone());
            }
        }
        if tenants
            .insert(tenant.id.clone(), Arc::new(tenant))
            .is_some()
        {
            p.push(format!("tenant {:?}: duplicate tenant id", t.id));
        }
    }

    let warnings = std::mem::take(&mut p.warnings);
    let problems = p.finish();
    if !problems.is_empty() {
        return Err(problems);
    }
    let regions = raw
        .regions
        .iter()
        .map(|r| Region {
            id: r.id.as_str().into(),
            pair: r.pair.as_str().into(),
            dial: r.dial.map_or(100, |d| d.min(100) as u8),
            routers: raw
                .nodes
                .iter()
                .filter(|n| n.region == r.id && matches!(n.kind, RawKind::Router))
                .filter_map(|n| nodes.get(n.id.as_str()).cloned())
                .collect(),
        })
        .collect();
    Ok(Catalog {
        version,
        warnings,
        regions,
        nodes,
        tenants,
        key_owner,
    })
}

/// Region id -> pair id, after checking ids, duplicates and mutual pairing.
fn regions<'a>(raw: &'a RawCatalog, p: &mut Problems) -> HashMap<&'a str, &'a str> {
    if raw.regions.is_empty() {
        p.push("no [[regions]]: a catalog names at least one region pair".to_string());
    }
    let mut pairs: HashMap<&str, &str> = HashMap::new();
    for (i, r) in raw.regions.iter().enumerate() {
        p.id("regions", i, &r.id);
        p.unknown(&format!("region {:?}", r.id), &r.unknown);
        if pairs.insert(&r.id, &r.pair).is_some() {
            p.push(format!("region {:?}: duplicate region id", r.id));
        }
        if let Some(dial) = r.dial.filter(|d| *d > 100) {
            p.push(format!(
                "region {:?}: dial {dial} is not a percentage (0..=100)",
                r.id
            ));
        }
    }
    for r in &raw.regions {
        if r.pair == r.id {
            p.push(format!(
                "region {:?}: pair names the region itself; a region's pair is another region",
                r.id
            ));
            continue;
        }
        match pairs.get(r.pair.as_str()) {
            None => p.push(format!(
                "region {:?}: pair {:?} is not a region of this catalog",
                r.id, r.pair
            )),
            Some(back) if *back != r.id => p.push(format!(
                "region {:?}: pair {:?} is not mutual (region {:?} pairs with {:?})",
                r.id, r.pair, r.pair, back
            )),
            Some(_) => {}
        }
    }
    pairs
}

fn nodes(
    raw: &RawCatalog,
    regions: &HashMap<&str, &str>,
    p: &mut Problems,
) -> HashMap<Arc<str>, Arc<Node>> {
    let mut nodes = HashMap::with_capacity(raw.nodes.len());
    for (i, n) in raw.nodes.iter().enumerate() {
        p.id("nodes", i, &n.id);
        p.unknown(&format!("node {:?}", n.id), &n.unknown);
        if !regions.contains_key(n.region.as_str()) {
            p.push(format!(
                "node {:?}: region {:?} is not a region of this catalog",
                n.id, n.region
            ));
        }
        if let Err(why) = check_addr(&n.addr) {
            p.push(format!("node {:?}: addr {:?} {why}", n.id, n.addr));
        }
        let kind = match n.kind {
            RawKind::Index => NodeKind::Index,
            RawKind::Model => NodeKind::Model,
            RawKind::Router => NodeKind::Router,
        };
        let node = Node {
            id: n.id.as_str().into(),
            region: n.region.as_str().into(),
            kind,
            addr: n.addr.as_str().into(),
        };
        if nodes.insert(node.id.clone(), Arc::new(node)).is_some() {
            p.push(format!("node {:?}: duplicate node id", n.id));
        }
    }
    nodes
}

/// Checks that `addr` is something a gRPC channel can be built from.
fn check_addr(addr: &str) -> Result<(), &'static str> {
    let uri: http::Uri = addr
        .parse()
        .map_err(|_| "is not a URI (expected http://host:port)")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err("has no host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query (gRPC paths are per method)");
    }
    Ok(())
}

/// Adds each `[keys.<tenant>]` table's hashes to its tenant's lists; a
/// table for a tenant the catalog does not have is a warning.
fn merge_keys(raw: &mut RawCatalog, p: &mut Problems) {
    for (id, keys) in std::mem::take(&mut raw.keys) {
        p.unknown(&format!("keys of tenant {id:?}"), &keys.unknown);
        match raw.tenants.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                t.api_key_sha256.extend(keys.api_key_sha256);
                t.write_key_sha256.extend(keys.write_key_sha256);
            }
            // Logged, not refused: the keys file (a Secret) and the catalog
            // (a ConfigMap) change apart, so a deleted tenant's keys may
            // outlive it for a while, and a new tenant's may come first.
            None => p.warnings.push(format!(
                "keys: tenant {id:?} is not a tenant of this catalog; its keys are ignored"
            )),
        }
    }
}

/// Builds one tenant, pushing a problem for everything wrong with it. Returns
/// a tenant even when invalid so that later checks (duplicate ids, key
/// ownership) still run and report.
fn tenant(
    t: &RawTenant,
    regions: &HashMap<&str, &str>,
    nodes: &HashMap<Arc<str>, Arc<Node>>,
    p: &mut Problems,
) -> Tenant {
    p.unknown(&format!("tenant {:?}", t.id), &t.unknown);
    let home_pair = regions.get(t.home.as_str()).copied();
    if home_pair.is_none() {
        p.push(format!(
            "tenant {:?}: home {:?} is not a region of this catalog",
            t.id, t.home
        ));
    }
    if !(t.language.is_empty()
        || (t.language.len() == 2 && t.language.bytes().all(|b| b.is_ascii_lowercase())))
    {
        p.push(format!(
            "tenant {:?}: language {:?} is not an ISO 639-1 code (two lowercase letters) or \"\"",
            t.id, t.language
        ));
    }

    // Shard keys are strings in TOML; accept only canonical decimal numbers so
    // that "1" and "01" cannot both name shard 1.
    let mut numbered: BTreeMap<u32, &Vec<String>> = BTreeMap::new();
    for (key, ids) in &t.shards {
        match key.parse::<u32>() {
            Ok(n) if n.to_string() == *key => {
                numbered.insert(n, ids);
            }
            _ => p.push(format!(
                "tenant {:?}: shard key {key:?} is not a shard number (0, 1, 2, ...)",
                t.id
            )),
        }
    }
    if t.shards.is_empty() {
        p.push(format!("tenant {:?}: has no shards", t.id));
    }
    let mut shards = Vec::with_capacity(numbered.len());
    for (expected, (number, ids)) in (0u32..).zip(&numbered) {
        if *number != expected {
            p.push(format!(
                "tenant {:?}: shards must be numbered 0..{} without gaps, shard {expected} is missing",
                t.id,
                numbered.len()
            ));
            break;
        }
        let what = format!("tenant {:?} shard {number}", t.id);
        let replicas = replica_list(&what, "replicas", ids, NodeKind::Index, nodes, p);
        if ids.is_empty() {
            p.push(format!("{what}: has no replicas"));
        } else if let (false, Some(pair)) = (replicas.is_empty(), home_pair) {
            // (When every id was wrong the ids were already reported; a
            // region-coverage complaint on top would only add noise.)
            let has = |region: &str| replicas.iter().any(|n| &*n.region == region);
            if !has(&t.home) {
                p.push(format!("{what}: no replica in home region {:?}", t.home));
            }
            if t.active_active && !has(pair) {
                p.push(format!(
                    "{what}: tenant is active_active but has no replica in {pair:?}, \
                     the pair of its home region"
                ));
            }
        }
        let leader = leader(t, *number, &replicas, p);
        shards.push(Shard {
            number: *number,
            replicas,
            leader,
        });
    }
    for key in t.leaders.keys() {
        if !key
            .parse::<u32>()
            .is_ok_and(|n| n.to_string() == *key && numbered.contains_key(&n))
        {
            p.push(format!(
                "tenant {:?}: leaders names {key:?}, which is not one of its shard numbers",
                t.id
            ));
        }
    }

    let ramp = ramp(t, &shards, home_pair, p);
    let what = format!("tenant {:?}", t.id);
    let model_replicas = replica_list(
        &what,
        "model_replicas",
        &t.model_replicas,
        NodeKind::Model,
        nodes,
        p,
    );

    Tenant {
        id: t.id.as_str().into(),
        home: t.home.as_str().into(),
        active_active: t.active_active,
        language: t.language.as_str().into(),
        shards,
        model_replicas,
        ramp,
        allowed_origins: origins(t, p),
        quota: quota(t, p),
        key_hashes: key_hashes(&t.id, "api_key_sha256", &t.api_key_sha256, p),
        write_key_hashes: key_hashes(&t.id, "write_key_sha256", &t.write_key_sha256, p),
    }
}

/// The tenant's migration ramp: a percentage, for a tenant that is not
/// active-active yet and has a replica of every shard in its home's pair.
fn ramp(t: &RawTenant, shards: &[Shard], pair: Option<&str>, p: &mut Problems) -> u8 {
    let Some(ramp) = t.ramp.filter(|r| *r > 0) else {
        return 0;
    };
    let what = format!("tenant {:?}: ramp {ramp}", t.id);
    if ramp > 100 {
        p.push(format!("{what} is not a percentage (0..=100)"));
    } else if t.active_active {
        p.push(format!(
            "{what}: an active-active tenant has no ramp (remove it)"
        ));
    } else if let Some(pair) = pair {
        for s in shards {
            if !s.replicas.iter().any(|n| &*n.region == pair) {
                p.push(format!(
                    "{what}: shard {} has no replica in {pair:?} to ramp to",
                    s.number
                ));
            }
        }
    }
    ramp.min(100) as u8
}

/// The tenant's quota: a format-4 key; each limit, when given, at least 1.
fn quota(t: &RawTenant, p: &mut Problems) -> Option<Quota> {
    let raw = t.quota.as_ref()?;
    let what = format!("tenant {:?}: quota", t.id);
    if p.format < 4 {
        p.push(format!(
            "{what}: a key of catalog format 4 in a file of format {} (write `format = 4`)",
            p.format
        ));
        return None;
    }
    p.unknown(&what, &raw.unknown);
    for (name, v) in [
        ("searches_per_sec", raw.searches_per_sec),
        ("concurrent_searches", raw.concurrent_searches),
    ] {
        if v == Some(0) {
            p.push(format!(
                "{what}: {name} = 0 would refuse every search (leave it out for no limit)"
            ));
        }
    }
    Some(Quota {
        searches_per_sec: raw.searches_per_sec,
        concurrent_searches: raw.concurrent_searches,
    })
}

/// The tenant's allowed browser origins: `scheme://host[:port]` or `*`.
fn origins(t: &RawTenant, p: &mut Problems) -> Vec<Arc<str>> {
    for o in t.allowed_origins.iter().filter(|o| !is_origin(o)) {
        p.push(format!(
            "tenant {:?}: allowed origin {o:?} is not `scheme://host[:port]` (http or https, no path) or \"*\"",
            t.id
        ));
    }
    t.allowed_origins
        .iter()
        .map(|o| Arc::from(o.as_str()))
        .collect()
}

/// `*`, or `http(s)://host[:port]` without path, query or fragment.
fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Parses one list of key hashes, refusing malformed and repeated entries.
fn key_hashes(tenant: &str, field: &str, list: &[String], p: &mut Problems) -> Vec<KeyHash> {
    let mut hashes = Vec::with_capacity(list.len());
    for (i, hex) in list.iter().enumerate() {
        match KeyHash::from_hex(hex) {
            Some(h) if hashes.contains(&h) => {
                p.push(format!("tenant {tenant:?}: {field}[{i}] is listed twice"))
            }
            Some(h) => hashes.push(h),
            None => p.push(format!(
                "tenant {tenant:?}: {field}[{i}] is not 64 hex digits (a SHA-256 hash; \
                 keys themselves never go in the catalog)"
            )),
        }
    }
    hashes
}

/// The leader of shard `number`: the one `[tenants.leaders]` names (it must
/// be one of the shard's replicas, at an epoch >= 1), else the first replica
/// in the home region at epoch 1.
fn leader(t: &RawTenant, number: u32, replicas: &[Arc<Node>], p: &mut Problems) -> Leader {
    let what = format!("tenant {:?} shard {number}", t.id);
    if let Some(raw) = t.leaders.get(&number.to_string()) {
        p.unknown(&format!("{what} leader"), &raw.unknown);
        if raw.epoch == 0 {
            p.push(format!("{what}: leader epoch must be >= 1"));
        }
        match replicas.iter().find(|n| *n.id == *raw.node) {
            Some(node) => {
                return Leader {
                    node: node.clone(),
                    epoch: raw.epoch,
                }
            }
            None => p.push(format!(
                "{what}: leader {:?} is not one of the shard's replicas",
                raw.node
            )),
        }
    }
    let node = replicas
        .iter()
        .find(|n| *n.region == *t.home)
        .or(replicas.first())
        .cloned()
        .unwrap_or_else(|| {
            Arc::new(Node {
                id: "".into(),
                region: "".into(),
                kind: NodeKind::Index,
                addr: "".into(),
            })
        });
    Leader { node, epoch: 1 }
}

/// Resolves node ids of one list, checking existence, kind and duplicates.
fn replica_list(
    what: &str,
    field: &str,
    ids: &[String],
    kind: NodeKind,
    nodes: &HashMap<Arc<str>, Arc<Node>>,
    p: &mut Problems,
) -> Vec<Arc<Node>> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(id.as_str()) {
            p.push(format!("{what}: {field} lists node {id:?} twice"));
            continue;
        }
        match nodes.get(id.as_str()) {
            None => p.push(format!("{what}: {field} names unknown node {id:?}")),
            Some(n) if n.kind != kind => p.push(format!(
                "{what}: {field} names node {id:?} of kind {:?}, expected a {:?} node",
                n.kind.as_str(),
                kind.as_str()
            )),
            Some(n) => out.push(n.clone()),
        }
    }
    out
}
