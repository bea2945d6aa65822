//! The catalog file's shape as serde reads it, before validation.
//!
//! Kept apart from the validated types so that nothing outside the catalog
//! module can hold a half-checked catalog: these structs only exist between
//! `toml::from_str` and `validate::build`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. Unknown keys are refused everywhere: a misspelt
/// `active_activ = true` must be an error, not a silently different routing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
}

/// One `[[regions]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    pub id: String,
    pub pair: String,
}

/// One `[[nodes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: String,
    pub region: String,
    pub kind: RawKind,
    pub addr: String,
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
#[serde(deny_unknown_fields)]
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
}
