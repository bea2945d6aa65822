//! The catalog file's shape as serde reads it, before validation.
//!
//! Kept apart from the validated types so that nothing outside the catalog
//! module can hold a half-checked catalog: these structs only exist between
//! `toml::from_str` and `validate::build`.
//!
//! Every table keeps the keys it does not know in `unknown`, and validation
//! decides: in a file of this format version or older an unknown key is a
//! typo and refused (a misspelt `active_activ = true` must be an error, not
//! a silently different routing); in a file of a newer format it is a field
//! this version does not know yet, logged and ignored, so that a fleet can be
//! upgraded one process at a time.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Keys of a table that this version does not know.
pub(super) type Unknown = BTreeMap<String, toml::Value>;

/// The whole file.
#[derive(Debug, Deserialize)]
pub(super) struct RawCatalog {
    /// Format version of the file (absent: 1).
    #[serde(default)]
    pub format: Option<u32>,
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// `[keys.<tenant>]`: key hashes kept apart from the tenants (a
    /// separate keys file, a Kubernetes Secret; see `Catalog::with_keys`).
    #[serde(default)]
    pub keys: BTreeMap<String, RawKeys>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[keys.<tenant>]` table: more key hashes of that tenant.
#[derive(Debug, Deserialize)]
pub(super) struct RawKeys {
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    #[serde(default)]
    pub write_key_sha256: Vec<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[regions]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawRegion {
    pub id: String,
    pub pair: String,
    /// The region's traffic dial, 0..=100 (format 3; absent: 100).
    #[serde(default)]
    pub dial: Option<u32>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[nodes]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawNode {
    pub id: String,
    pub region: String,
    pub kind: RawKind,
    pub addr: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `kind = "index" | "model" | "router"`; serde's error for anything else
/// already lists the accepted values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawKind {
    Index,
    Model,
    Router,
}

/// One `[[tenants]]` entry. `active_active` has no default on purpose: whether
/// a tenant may be served from the other region is a decision to write down.
#[derive(Debug, Deserialize)]
pub(super) struct RawTenant {
    pub id: String,
    pub home: String,
    pub active_active: bool,
    #[serde(default)]
    pub language: String,
    /// TOML keys are strings; they are parsed (and checked for canonical
    /// spelling) as shard numbers during validation.
    pub shards: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub model_replicas: Vec<String>,
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    /// Hashes of keys with the write scope (format 2).
    #[serde(default)]
    pub write_key_sha256: Vec<String>,
    /// Shard number -> its leader (format 2; default: see validation).
    #[serde(default)]
    pub leaders: BTreeMap<String, RawLeader>,
    /// Share of searches served by the home's pair during a migration
    /// (format 3; absent: 0).
    #[serde(default)]
    pub ramp: Option<u32>,
    /// Browser origins allowed to call with gRPC-Web (format 3).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The tenant's search quota in each region (format 4).
    #[serde(default)]
    pub quota: Option<RawQuota>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `quota = { searches_per_sec = 200, concurrent_searches = 32 }`.
#[derive(Debug, Deserialize)]
pub(super) struct RawQuota {
    #[serde(default)]
    pub searches_per_sec: Option<u32>,
    #[serde(default)]
    pub concurrent_searches: Option<u32>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One entry of `[tenants.leaders]`: `0 = { node = "x", epoch = 3 }`.
#[derive(Debug, Deserialize)]
pub(super) struct RawLeader {
    pub node: String,
    pub epoch: u64,
    #[serde(flatten)]
    pub unknown: Unknown,
}
