//! A tenant's models as trained (`ModelSet`) and as served (`TenantModel`).

use std::sync::Arc;

use crate::normalize::{normalize, normalize_prefix};
use crate::relevance::{Boosts, RelevanceModel};
use crate::suggest::{SuggestModel, Suggestion};

/// Facts about how a model set was trained, stored in its artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMeta {
    /// The tenant the models belong to.
    pub tenant: String,
    /// Unix time (seconds) of the newest event trained on; recency in the
    /// suggestion scores is relative to it.
    pub trained_through: u64,
    /// Number of events trained on.
    pub events: u64,
}

/// Everything one artifact holds: both models of a tenant and their meta.
#[derive(Debug)]
pub struct ModelSet {
    /// Training facts.
    pub meta: ModelMeta,
    /// Query completions.
    pub suggest: SuggestModel,
    /// Per-query document boosts.
    pub relevance: RelevanceModel,
}

/// Summary of a served model, as `ListModels`/`LoadModel` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The tenant.
    pub tenant: String,
    /// The artifact version being served (e.g. `v1767225600000`).
    pub version: String,
    /// Distinct queries that can be suggested.
    pub suggestions: u64,
    /// Queries with learned boosts.
    pub boosted_queries: u64,
    /// Size of the artifact file in bytes.
    pub size_bytes: u64,
}

/// A tenant's model set as served: immutable, shared by in-flight calls
/// through an `Arc`, replaced as a whole on reload.
#[derive(Debug)]
pub struct TenantModel {
    version: Arc<str>,
    size_bytes: u64,
    set: ModelSet,
}

impl TenantModel {
    /// Wraps a model set loaded from (or written as) artifact `version` of
    /// `size_bytes` bytes.
    pub fn new(set: ModelSet, version: impl Into<Arc<str>>, size_bytes: u64) -> Self {
        TenantModel {
            version: version.into(),
            size_bytes,
            set,
        }
    }

    /// Completions of what the user typed (normalised here), best first, at
    /// most `k` (clamped to [`crate::suggest::MAX_K`]).
    pub fn suggest(&self, raw_prefix: &str, k: usize) -> Vec<Suggestion> {
        self.set.suggest.complete(&normalize_prefix(raw_prefix), k)
    }

    /// Boosts for a query as typed (normalised here), at most `max`
    /// (clamped to [`crate::relevance::MAX_BOOSTS`]).
    pub fn boosts(&self, raw_query: &str, max: usize) -> Boosts {
        self.set.relevance.boosts(&normalize(raw_query), max)
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.set.meta.tenant
    }

    /// The artifact version.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The trained models and their meta.
    pub fn set(&self) -> &ModelSet {
        &self.set
    }

    /// Approximate heap memory held by the models, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.set.suggest.heap_bytes() + self.set.relevance.heap_bytes()
    }

    /// The summary reported by `ListModels`/`LoadModel`.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            tenant: self.set.meta.tenant.clone(),
            version: self.version.to_string(),
            suggestions: self.set.suggest.len() as u64,
            boosted_queries: self.set.relevance.query_count() as u64,
            size_bytes: self.size_bytes,
        }
    }
}
