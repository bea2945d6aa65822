//! Training: from an event log to a tenant's model set and its artifact.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tandem_catalog::ids::validate_tenant_id;

use crate::artifact::{self, ArtifactError, Written};
use crate::events::Event;
use crate::model::{ModelMeta, ModelSet};
use crate::observe::{join, JoinStats};
use crate::relevance::{RelevanceConfig, RelevanceModel};
use crate::suggest::{score_queries, SuggestConfig, SuggestError, SuggestModel};

/// Parameters of both models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainConfig {
    /// Suggestion scoring.
    pub suggest: SuggestConfig,
    /// Relevance tuning.
    pub relevance: RelevanceConfig,
}

/// What training saw and produced, for the operator's log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainStats {
    /// How clicks joined searches, including everything ignored.
    pub join: JoinStats,
    /// Distinct suggestible queries.
    pub suggestions: usize,
    /// Queries with boosts.
    pub boosted_queries: usize,
    /// Back-off terms with boosts.
    pub boosted_terms: usize,
    /// Newest event time (Unix seconds), 0 for an empty log.
    pub trained_through: u64,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The tenant id is not acceptable.
    #[error("invalid tenant id: {0}")]
    InvalidTenant(String),
    /// The suggestion model could not be built.
    #[error(transparent)]
    Suggest(#[from] SuggestError),
    /// The artifact could not be written.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// Trains both models of `tenant` from its events. An empty log gives empty
/// (but valid) models.
pub fn train(
    events: &[Event],
    tenant: &str,
    cfg: &TrainConfig,
) -> Result<(ModelSet, TrainStats), TrainError> {
    validate_tenant_id(tenant).map_err(TrainError::InvalidTenant)?;
    let (searches, join_stats) = join(events);
    let suggest = SuggestModel::build(&score_queries(&searches, &cfg.suggest))?;
    let relevance = RelevanceModel::learn(&searches, &cfg.relevance);
    let trained_through = events.iter().map(Event::ts).max().unwrap_or(0);
    let stats = TrainStats {
        join: join_stats,
        suggestions: suggest.len(),
        boosted_queries: relevance.query_count(),
        boosted_terms: relevance.term_count(),
        trained_through,
    };
    let set = ModelSet {
        meta: ModelMeta {
            tenant: tenant.to_string(),
            trained_through,
            events: events.len() as u64,
        },
        suggest,
        relevance,
    };
    Ok((set, stats))
}

/// Trains `tenant` and writes the result as its newest artifact version
/// under `model_dir` (what `tandem-model-node train` does).
pub fn train_to_dir(
    events: &[Event],
    tenant: &str,
    cfg: &TrainConfig,
    model_dir: &Path,
    now_millis: u64,
) -> Result<(Written, TrainStats), TrainError> {
    let (set, stats) = train(events, tenant, cfg)?;
    let written = artifact::write_new_version(model_dir, &set, now_millis)?;
    Ok((written, stats))
}

/// The wall clock in Unix milliseconds, for naming artifact versions (0 if
/// the clock is before 1970, which only shifts the version number).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, SynthConfig};
    use crate::test_support::toy_pages;

    #[test]
    fn trains_both_models_from_a_log() {
        let events = generate(&toy_pages(), &SynthConfig::new(2000, 11));
        let (set, stats) = train(&events, "en", &TrainConfig::default()).expect("train");
        assert_eq!(stats.join.orphan_clicks, 0);
        assert_eq!(stats.join.clicks_not_shown, 0);
        assert!(stats.suggestions > 50, "{stats:?}");
        assert!(stats.boosted_queries > 10, "{stats:?}");
        assert_eq!(set.meta.events, events.len() as u64);
        assert_eq!(set.meta.trained_through, events.last().map_or(0, Event::ts));
        assert!(!set.suggest.complete("ext", 5).is_empty());
    }

    #[test]
    fn empty_log_gives_empty_models_and_bad_tenant_is_refused() {
        let (set, stats) = train(&[], "en", &TrainConfig::default()).expect("train");
        assert!(set.suggest.is_empty());
        assert_eq!(stats.boosted_queries, 0);
        assert!(matches!(
            train(&[], "../etc", &TrainConfig::default()),
            Err(TrainError::InvalidTenant(_))
        ));
    }

    #[test]
    fn writes_a_loadable_artifact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = generate(&toy_pages(), &SynthConfig::new(300, 2));
        let (written, _) =
            train_to_dir(&events, "en", &TrainConfig::default(), dir.path(), 1_000).expect("train");
        assert_eq!(written.file.version, "v1000");
        let (set, size) = artifact::read(&written.file.path, "en").expect("read back");
        assert_eq!(size, written.size_bytes);
        assert_eq!(set.meta.tenant, "en");
    }
}
