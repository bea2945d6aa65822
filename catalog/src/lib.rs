//! The catalog: which regions exist and which is whose pair, which nodes live
//! where, and for every tenant its home, shards, replicas and API key hashes.
//!
//! The format is TOML; `catalog/catalog.example.toml` documents every field
//! ([`EMBEDDED_DEFAULT`] holds it, for tests and examples). A catalog is only ever
//! built by [`Catalog::parse`], which validates everything and reports *all*
//! problems at once, each naming the offending entry, so an operator fixes a
//! broken file in one round. A [`CatalogHandle`] holds the catalog in force
//! and swaps in a new one only when it is valid, which is how hot reload keeps
//! the last good catalog.
//!
//! The validated types share node records through `Arc`, so resolving a
//! tenant's replicas clones pointers, not strings, and a catalog of 100k
//! tenants stores every node address once.

#![warn(missing_docs)]

pub mod ids;
mod keys;
pub mod placement;
mod raw;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

pub use ids::is_valid_id;
pub use keys::{
    hash_key, verify_key, verify_key_hash, verify_scoped_key_hash, AuthOutcome, KeyCheck, KeyHash,
    KeyScope,
};

/// The catalog format this version writes and reads. A file of a newer
/// format is accepted with the keys this version does not know ignored (and
/// listed in [`Catalog::warnings`]); see `raw.rs`.
pub const FORMAT: u32 = 4;

/// The documented example catalog (a two-region loopback fleet), for tests
/// and examples; a router is never started on it implicitly.
pub const EMBEDDED_DEFAULT: &str = include_str!("../catalog.example.toml");

/// What a node is for. Validation checks that shards only name index nodes,
/// model replicas only model nodes, and that forwarding targets are routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// Hosts tenants' tantivy shards (`tandem.v1.IndexNode`).
    Index,
    /// Hosts tenants' models (`tandem.v1.ModelNode`).
    Model,
    /// A router (`tandem.v1.Search`); target of dial forwarding.
    Router,
}

impl NodeKind {
    /// The spelling used in the catalog file and in logs / admin output.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Index => "index",
            NodeKind::Model => "model",
            NodeKind::Router => "router",
        }
    }
}

/// One process of the fleet, as the catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique node id; also the key of endpoint statistics and ejections.
    pub id: Arc<str>,
    /// The region the node runs in.
    pub region: Arc<str>,
    /// What the node serves.
    pub kind: NodeKind,
    /// gRPC address (`http://host:port` or `https://...`), checked to parse as
    /// a URI so the serving layer's `Endpoint::from_shared` will not fail on
    /// syntax.
    pub addr: Arc<str>,
}

/// A region and its pair.
#[derive(Debug, Clone)]
pub struct Region {
    /// Region id.
    pub id: Arc<str>,
    /// The paired region (validated to exist, differ and pair back).
    pub pair: Arc<str>,
    /// The region's traffic dial as the catalog records it (`tandem dial`
    /// writes it; 100 when absent): what every router of the region takes
    /// on start and whenever the catalog's value changes.
    pub dial: u8,
    /// The region's routers (nodes of kind router in it), in file order; the
    /// paired region forwards dialled-away traffic to these.
    pub routers: Vec<Arc<Node>>,
}

/// One shard of a tenant: its number, its index replicas in file order,
/// and its leader.
#[derive(Debug, Clone)]
pub struct Shard {
    /// Shard number; shards are numbered `0..n` without gaps, so this is also
    /// the shard's index in [`Tenant::shards`].
    pub number: u32,
    /// Index nodes holding a replica (at least one; no duplicates).
    pub replicas: Vec<Arc<Node>>,
    /// The replica that orders the shard's writes.
    pub leader: Leader,
}

/// The leader of a shard and the epoch of its leadership. Each promotion
/// raises the epoch; nodes refuse writes and replication from a lower one,
/// which is what keeps a deposed leader that comes back from taking writes.
#[derive(Debug, Clone)]
pub struct Leader {
    /// One of the shard's replicas.
    pub node: Arc<Node>,
    /// >= 1.
    pub epoch: u64,
}

/// A tenant as the catalog defines it.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Tenant id (matches [`is_valid_id`]).
    pub id: Arc<str>,
    /// Home region: where the tenant is served from when it is not
    /// active-active.
    pub home: Arc<str>,
    /// Whether every region serves the tenant from its own replicas.
    pub active_active: bool,
    /// ISO 639-1 language code for the stemmer, or "" for none.
    pub language: Arc<str>,
    /// Shards in number order.
    pub shards: Vec<Shard>,
    /// Model nodes serving the tenant's suggestions and boosts (may be empty).
    pub model_replicas: Vec<Arc<Node>>,
    /// During a migration to active-active (`tandem migrate`): the share,
    /// 0..=100, of the tenant's searches read from the replicas in its home
    /// region's pair instead of its home region. 0 otherwise; only a tenant
    /// that is not active-active, with a replica of every shard in the
    /// pair, may have one.
    pub ramp: u8,
    /// Browser origins (`https://app.example.com`, or `*`) whose pages may
    /// call for this tenant with gRPC-Web; none: no browser may.
    pub allowed_origins: Vec<Arc<str>>,
    /// The tenant's search quota in each region (format 4; none: only the
    /// routers' own admission limits apply).
    pub quota: Option<Quota>,
    /// SHA-256 of each key with the search scope. Private so only
    /// [`verify_key`] (which compares in constant time) reads them.
    key_hashes: Vec<KeyHash>,
    /// SHA-256 of each key with the write scope.
    write_key_hashes: Vec<KeyHash>,
}

/// A tenant's search quota in each region: Search and Suggest calls per
/// second and at once, over all of the region's routers (each router
/// enforces its share, see the router's `admission` module). A tenant
/// searching past it gets RESOURCE_EXHAUSTED with `tandem-shed: quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Calls per second (none: no rate limit).
    pub searches_per_sec: Option<u32>,
    /// Calls in flight at once (none: no concurrency limit).
    pub concurrent_searches: Option<u32>,
}

impl Tenant {
    /// Whether a page from `origin` may call for this tenant.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| &**o == "*" || &**o == origin)
    }

    /// The region whose replicas should be tried first for a query arriving in
    /// `local_region`: the local region for an active-active tenant, the home
    /// region otherwise (a non-active-active tenant is read directly from its
    /// home replicas, see `dial`).
    pub fn preferred_region<'a>(&'a self, local_region: &'a str) -> &'a str {
        if self.active_active {
            local_region
        } else {
            &self.home
        }
    }

    /// How many API keys the tenant has (for status output; never the keys).
    pub fn key_count(&self) -> usize {
        self.key_hashes.len() + self.write_key_hashes.len()
    }

    /// The shard that owns document `id` (see [`placement`]).
    pub fn shard_of(&self, id: &str) -> &Shard {
        &self.shards[placement::shard_for(id, self.shards.len() as u32) as usize]
    }
}

/// Why a catalog was refused. `Display` is the log line an operator reads.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog file {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The bytes are not UTF-8 (TOML requires it).
    #[error("catalog is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// TOML syntax error or a field of the wrong shape; the message carries the
    /// line and column.
    #[error("catalog does not parse: {0}")]
    Syntax(#[from] toml::de::Error),
    /// The file parsed but is inconsistent; every problem is listed.
    #[error("catalog rejected, {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// A validated, immutable catalog.
#[derive(Debug)]
pub struct Catalog {
    version: Arc<str>,
    /// Keys of a newer format that were ignored, one line each.
    warnings: Vec<String>,
    regions: Vec<Region>,
    nodes: HashMap<Arc<str>, Arc<Node>>,
    tenants: HashMap<Arc<str>, Arc<Tenant>>,
    /// Which tenant owns each key hash, to tell "a key of another tenant"
    /// (PERMISSION_DENIED) from "no key of ours" (UNAUTHENTICATED).
    key_owner: HashMap<KeyHash, Arc<str>>,
}

impl Catalog {
    /// Parses and validates catalog bytes. The version is computed from the
    /// bytes themselves, so it changes with any edit and is equal across
    /// routers reading the same file.
    pub fn parse(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let text = std::str::from_utf8(bytes)?;
        let raw: raw::RawCatalog = toml::from_str(text)?;
        validate::build(raw, version_of(bytes)).map_err(CatalogError::Invalid)
    }

    /// Reads, parses and validates a catalog file.
    pub fn load_file(path: &Path) -> Result<Catalog, CatalogError> {
        let bytes = std::fs::read(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Catalog::parse(&bytes)
    }

    /// Reads the catalog file and, if given, the keys file that goes with
    /// it (see [`Catalog::with_keys`]): the bytes a catalog is parsed from.
    pub fn read_source(path: &Path, keys: Option<&Path>) -> Result<Vec<u8>, CatalogError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CatalogError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let catalog = read(path)?;
        match keys {
            Some(keys) => Catalog::with_keys(&catalog, &read(keys)?),
            None => Ok(catalog),
        }
    }

    /// The catalog `catalog` with the key hashes of the keys file `keys`:
    /// a TOML file of `[keys.<tenant>]` tables (`api_key_sha256`,
    /// `write_key_sha256`) and nothing else, so that hashes can live in a
    /// secret store (a Kubernetes Secret) while the rest of the catalog is
    /// plain configuration. A keys file that holds anything else is
    /// refused: a secret must not be able to add tenants or nodes.
    pub fn with_keys(catalog: &[u8], keys: &[u8]) -> Result<Vec<u8>, CatalogError> {
        let text = std::str::from_utf8(keys)?;
        let table: toml::Table = toml::from_str(text)?;
        if let Some(other) = table.keys().find(|k| *k != "keys") {
            return Err(CatalogError::Invalid(vec![format!(
                "keys file: {other:?} is not allowed; it holds only [keys.<tenant>] tables"
            )]));
        }
        let mut bytes = catalog.to_vec();
        bytes.push(b'\n');
        bytes.extend_from_slice(keys);
        Ok(bytes)
    }

    /// The embedded default catalog ([`EMBEDDED_DEFAULT`]).
    pub fn embedded_default() -> Result<Catalog, CatalogError> {
        Catalog::parse(EMBEDDED_DEFAULT.as_bytes())
    }

    /// Short content hash identifying this catalog (12 hex digits of SHA-256).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What was ignored in this file (keys of a newer catalog format): log
    /// these when the catalog is loaded.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether some tenant allows `origin` (how a CORS preflight, which
    /// names no tenant, is answered).
    pub fn any_tenant_allows_origin(&self, origin: &str) -> bool {
        self.tenants.values().any(|t| t.allows_origin(origin))
    }

    /// All regions, in file order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// A region by id.
    pub fn region(&self, id: &str) -> Option<&Region> {
        self.regions.iter().find(|r| &*r.id == id)
    }

    /// The paired region of `region`, if `region` is known.
    pub fn pair_of(&self, region: &str) -> Option<&Arc<str>> {
        self.region(region).map(|r| &r.pair)
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.get(id)
    }

    /// All nodes (unordered); e.g. for the active health prober.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// All tenants (unordered).
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    /// Number of tenants.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// The routers of `region` (empty if the region is unknown or has none).
    pub fn routers_of(&self, region: &str) -> &[Arc<Node>] {
        self.region(region).map_or(&[], |r| &r.routers)
    }
}

/// First 12 hex digits of SHA-256 of the catalog bytes: short enough for a
/// status line, long enough that two different catalogs never collide in
/// practice.
fn version_of(bytes: &[u8]) -> Arc<str> {
    let digest = Sha256::digest(bytes);
    let mut hex = hex::encode(digest);
    hex.truncate(12);
    hex.into()
}

/// What [`CatalogHandle::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new bytes have the version already in force; nothing was swapped
    /// (so caches keyed by catalog version stay warm).
    Unchanged {
        /// The version in force.
        version: Arc<str>,
    },
    /// The new catalog is now in force.
    Replaced {
        /// Version that was in force before.
        previous: Arc<str>,
        /// Version now in force.
        current: Arc<str>,
    },
}

/// The catalog in force, swappable without locks: readers on the hot path get
/// an `Arc<Catalog>` snapshot; a reload replaces it only when the new bytes
/// are valid, so a broken file never takes effect.
#[derive(Debug)]
pub struct CatalogHandle {
    current: ArcSwap<Catalog>,
}

impl CatalogHandle {
    /// Starts with `catalog` in force.
    pub fn new(catalog: Catalog) -> Self {
        CatalogHandle {
            current: ArcSwap::from_pointee(catalog),
        }
    }

    /// The catalog in force.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Parses `bytes` and, if valid and different, puts them in force. On
    /// error the catalog in force is untouched and the error says why (log it).
    pub fn reload(&self, bytes: &[u8]) -> Result<Reload, CatalogError> {
        self.reload_checked(bytes, |_| Ok(()))
    }

    /// Like [`CatalogHandle::reload`], refusing also a catalog that `accept`
    /// refuses (its message becomes the one problem listed), e.g. one that
    /// no longer names the router's own region.
    ///
    /// Bytes that hash to the version in force are not parsed at all:
    /// hashing is far cheaper than parsing (a 100,000-tenant catalog takes
    /// over a second to parse), so a poll of an unchanged file stops there.
    pub fn reload_checked(
        &self,
        bytes: &[u8],
        accept: impl FnOnce(&Catalog) -> Result<(), String>,
    ) -> Result<Reload, CatalogError> {
        let version = version_of(bytes);
        let previous = self.current.load_full();
        if previous.version == version {
            return Ok(Reload::Unchanged { version });
        }
        let candidate = Catalog::parse(bytes)?;
        accept(&candidate).map_err(|problem| CatalogError::Invalid(vec![problem]))?;
        let current = candidate.version.clone();
        self.current.store(Arc::new(candidate));
        Ok(Reload::Replaced {
            previous: previous.version.clone(),
            current,
        })
    }

    /// Reads `path` and reloads from it (see [`CatalogHandle::reload`]).
    pub fn reload_file(&self, path: &Path) -> Result<Reload, CatalogError> {
        let bytes = std::fs::read(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.reload(&bytes)
    }
}

#[cfg(test)]
mod tests;
