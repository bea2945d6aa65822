//! The serving side: every tenant's current model, swapped atomically on
//! reload. This is the API a gRPC service calls.
//!
//! Each tenant's model sits in an [`ArcSwap`]. A call takes a snapshot (an
//! `Arc<TenantModel>`) and answers from it; a reload builds the new model
//! completely, off to the side, and then swaps the pointer. In-flight calls
//! keep their snapshot, so a reload never pauses or fails them, and a failed
//! reload (corrupt or truncated artifact) changes nothing: the previous
//! version keeps serving.
//!
//! Loading reads files and decodes models (tens of milliseconds for large
//! models): call [`ModelStore::load`] and [`ModelStore::load_all`] from
//! `tokio::task::spawn_blocking`. `suggest`, `boosts` and `list` are
//! non-blocking and cheap.
//!
//! # Request limits
//!
//! - prefix / query: empty or whitespace-only, or longer than
//!   the router's limit (`tandem_common::limits`: 256 bytes for a prefix,
//!   4096 for a query): INVALID_ARGUMENT. Text that normalises to
//!   nothing (only punctuation) is valid and has no suggestions or boosts.
//! - `k`: 0 means [`DEFAULT_K`]; more than [`MAX_K`] is clamped to it.
//! - `max` boosts: 0 means [`DEFAULT_MAX_BOOSTS`]; more than [`MAX_BOOSTS`] is
//!   clamped to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tandem_catalog::ids::validate_tenant_id;

pub use crate::relevance::MAX_BOOSTS;
pub use crate::suggest::MAX_K;

use crate::artifact::{self, ArtifactError};
use crate::error::ModelError;
use crate::model::{ModelInfo, TenantModel};
use crate::relevance::{Boost, BoostSource};
use crate::suggest::Suggestion;

/// Completions returned when the request asks for `k = 0`.
pub const DEFAULT_K: usize = 10;

/// Boosts returned when the request asks for `max = 0`.
pub const DEFAULT_MAX_BOOSTS: usize = 20;

pub use tandem_common::limits::{MAX_PREFIX_BYTES, MAX_QUERY_BYTES};

/// The answer to a suggest call.
#[derive(Debug, Clone, PartialEq)]
pub struct SuggestAnswer {
    /// The model version that answered.
    pub version: Arc<str>,
    /// Completions, best first.
    pub suggestions: Vec<Suggestion>,
}

/// The answer to a boosts call.
#[derive(Debug, Clone, PartialEq)]
pub struct BoostsAnswer {
    /// The model version that answered.
    pub version: Arc<str>,
    /// Boosts, strongest first.
    pub boosts: Vec<Boost>,
    /// Whether they matched the query or backed off to its terms.
    pub source: BoostSource,
}

/// What [`ModelStore::refresh`] (and [`ModelStore::load_all`]) did for one
/// tenant.
#[derive(Debug)]
pub struct LoadReport {
    /// The tenant.
    pub tenant: String,
    /// The model now served, or why none could be loaded.
    pub result: Result<ModelInfo, ModelError>,
    /// Newer artifacts that were refused before an older one loaded.
    pub skipped: Vec<ArtifactError>,
    /// Whether a different version was swapped in (false when the newest
    /// version was already served, or nothing loaded), so callers can tell
    /// a reload from a no-op for their metrics and logs.
    pub changed: bool,
}

/// Every tenant's current model (see the module docs).
#[derive(Debug)]
pub struct ModelStore {
    model_dir: PathBuf,
    tenants: DashMap<String, Arc<ArcSwap<TenantModel>>>,
    /// Serialises loads so that two concurrent reloads cannot install an
    /// older version after a newer one.
    load_lock: Mutex<()>,
}

impl ModelStore {
    /// A store serving artifacts from `model_dir`, with nothing loaded yet.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        ModelStore {
            model_dir: model_dir.into(),
            tenants: DashMap::new(),
            load_lock: Mutex::new(()),
        }
    }

    /// The model directory.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// Loads every tenant found in the model directory (startup, or a rescan).
    ///
    /// A tenant already served is reloaded like [`ModelStore::load`]. A
    /// tenant not yet served falls back from a corrupt newest artifact to
    /// the newest one that loads, listing the refused ones in
    /// [`LoadReport::skipped`], so one bad file does not leave a tenant with
    /// no model at startup. Fails only if the directory cannot be listed.
    pub fn load_all(&self) -> Result<Vec<LoadReport>, ModelError> {
        let tenants = artifact::tenants(&self.model_dir)?;
        Ok(tenants.iter().map(|tenant| self.refresh(tenant)).collect())
    }

    /// Loads the newest artifact of `tenant`, like [`ModelStore::load`], but
    /// if the tenant is not served yet falls back past refused newer
    /// artifacts to the newest one that loads (what startup and the model
    /// directory watcher want: serve the best model there is).
    pub fn refresh(&self, tenant: &str) -> LoadReport {
        if let Err(e) = validate_tenant_id(tenant) {
            return LoadReport {
                tenant: tenant.to_string(),
                result: Err(ModelError::InvalidArgument(e)),
                skipped: Vec::new(),
                changed: false,
            };
        }
        let _guard = self
            .load_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fallback = !self.tenants.contains_key(tenant);
        self.load_locked(tenant, fallback)
    }

    /// Loads (or reloads) the newest artifact of `tenant` and swaps it in.
    ///
    /// Reloading the version already served is a no-op. If the newest
    /// artifact is corrupt or unreadable the error says why and the model
    /// served so far (if any) stays in place.
    pub fn load(&self, tenant: &str) -> Result<ModelInfo, ModelError> {
        validate_tenant_id(tenant).map_err(ModelError::InvalidArgument)?;
        let _guard = self
            .load_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.load_locked(tenant, false).result
    }

    fn load_locked(&self, tenant: &str, fallback: bool) -> LoadReport {
        let report = |result, skipped, changed| LoadReport {
            tenant: tenant.to_string(),
            result,
            skipped,
            changed,
        };
        let mut versions = match artifact::list_versions(&self.model_dir, tenant) {
            Ok(v) => v,
            Err(e) => return report(Err(e.into()), Vec::new(), false),
        };
        let Some(newest) = versions.last() else {
            let dir = self.model_dir.join(tenant);
            let missing = ModelError::NoArtifact {
                tenant: tenant.to_string(),
                dir,
            };
            return report(Err(missing), Vec::new(), false);
        };
        if let Some(current) = self.current(tenant) {
            if **current.version() == *newest.version {
                return report(Ok(current.info()), Vec::new(), false);
            }
        }
        let mut refused: Vec<ArtifactError> = Vec::new();
        while let Some(file) = versions.pop() {
            match artifact::read(&file.path, tenant) {
                Ok((set, size)) => {
                    // Never the version already served: that one is the
                    // newest (returned above), and a served tenant does not
                    // fall back to older ones.
                    let model = TenantModel::new(set, file.version, size);
                    let info = model.info();
                    self.install(tenant, model);
                    return report(Ok(info), refused, true);
                }
                Err(e) => {
                    refused.push(e);
                    if !fallback {
                        break;
                    }
                }
            }
        }
        // Every candidate failed: report the newest artifact's error, and the
        // rest as skipped. (The loop ran at least once: `versions` was not
        // empty, so the fallback error below is never used.)
        let mut refused = refused.into_iter();
        let newest_error = refused.next().map_or_else(
            || ModelError::NoArtifact {
                tenant: tenant.to_string(),
                dir: self.model_dir.join(tenant),
            },
            ModelError::from,
        );
        report(Err(newest_error), refused.collect(), false)
    }

    /// Serves `model` for its tenant right away, replacing any previous one.
    /// For models built in memory (tests, benchmarks, offline evaluation);
    /// the version string is the model's own.
    pub fn insert(&self, model: TenantModel) -> Result<ModelInfo, ModelError> {
        validate_tenant_id(model.tenant()).map_err(ModelError::InvalidArgument)?;
        let _guard = self
            .load_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let info = model.info();
        let tenant = model.tenant().to_string();
        self.install(&tenant, model);
        Ok(info)
    }

    /// Stops serving `tenant` and deletes its artifact directory (blocking);
    /// returns the version that was served, if any, and how many artifact
    /// files were removed. Removing a tenant with nothing left is not an
    /// error, so a retried delete succeeds.
    pub fn remove(&self, tenant: &str) -> Result<(Option<Arc<str>>, usize), ModelError> {
        validate_tenant_id(tenant).map_err(ModelError::InvalidArgument)?;
        let _guard = self
            .load_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let artifacts = artifact::list_versions(&self.model_dir, tenant)?.len();
        let dir = artifact::tenant_dir(&self.model_dir, tenant)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(ArtifactError::Io { path: dir, error }.into());
            }
        }
        // The directory goes first: a watcher poll waiting for the lock
        // then finds nothing to load again.
        let served = self
            .tenants
            .remove(tenant)
            .map(|(_, slot)| Arc::clone(slot.load().version()));
        Ok((served, artifacts))
    }

    fn install(&self, tenant: &str, model: TenantModel) {
        let model = Arc::new(model);
        match self.tenants.get(tenant) {
            Some(slot) => slot.store(model),
            None => {
                self.tenants
                    .insert(tenant.to_string(), Arc::new(ArcSwap::new(model)));
            }
        }
    }

    fn current(&self, tenant: &str) -> Option<Arc<TenantModel>> {
        self.tenants.get(tenant).map(|slot| slot.load_full())
    }

    /// A snapshot of the tenant's current model. It stays valid (and
    /// unchanged) however many reloads happen while it is held.
    pub fn get(&self, tenant: &str) -> Result<Arc<TenantModel>, ModelError> {
        validate_tenant_id(tenant).map_err(ModelError::InvalidArgument)?;
        self.current(tenant)
            .ok_or_else(|| ModelError::UnknownTenant(tenant.to_string()))
    }

    /// Top-`k` completions of `prefix` for `tenant` (see the module docs for
    /// limits).
    pub fn suggest(&self, tenant: &str, prefix: &str, k: u32) -> Result<SuggestAnswer, ModelError> {
        check_text("prefix", prefix, MAX_PREFIX_BYTES)?;
        let model = self.get(tenant)?;
        let k = match k as usize {
            0 => DEFAULT_K,
            k => k.min(MAX_K),
        };
        Ok(SuggestAnswer {
            version: Arc::clone(model.version()),
            suggestions: model.suggest(prefix, k),
        })
    }

    /// Up to `max` document boosts for `query` for `tenant` (see the module
    /// docs for limits).
    pub fn boosts(&self, tenant: &str, query: &str, max: u32) -> Result<BoostsAnswer, ModelError> {
        check_text("query", query, MAX_QUERY_BYTES)?;
        let model = self.get(tenant)?;
        let max = match max as usize {
            0 => DEFAULT_MAX_BOOSTS,
            m => m.min(MAX_BOOSTS),
        };
        let found = model.boosts(query, max);
        Ok(BoostsAnswer {
            version: Arc::clone(model.version()),
            boosts: found.boosts,
            source: found.source,
        })
    }

    /// How many tenants have a model served (for the loaded-models gauge,
    /// without building every [`ModelInfo`]).
    pub fn served_count(&self) -> usize {
        self.tenants.len()
    }

    /// Every served model, sorted by tenant.
    pub fn list(&self) -> Vec<ModelInfo> {
        let mut out: Vec<ModelInfo> = self
            .tenants
            .iter()
            .map(|entry| entry.value().load().info())
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), ModelError> {
    if text.trim().is_empty() {
        return Err(ModelError::InvalidArgument(format!("{what} is empty")));
    }
    if text.len() > max {
        return Err(ModelError::InvalidArgument(format!(
            "{what} is {} bytes long; at most {max} are allowed",
            text.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use crate::test_support::write_version;

    #[test]
    fn serves_what_it_loaded_with_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = write_version(dir.path(), "en", 1, 1_000);
        let store = ModelStore::new(dir.path());
        let info = store.load("en").expect("load");
        assert_eq!(info.version, v1);
        assert!(info.suggestions > 0 && info.size_bytes > 0);
        let s = store.suggest("en", "Ext", 3).expect("suggest");
        assert_eq!(&*s.version, v1.as_str());
        assert!(!s.suggestions.is_empty() && s.suggestions.len() <= 3);
        assert!(s.suggestions.iter().all(|x| x.text.starts_with("ext")));
        let b = store
            .boosts("en", &s.suggestions[0].text, 0)
            .expect("boosts");
        assert_eq!(&*b.version, v1.as_str());
        assert!(b.boosts.len() <= DEFAULT_MAX_BOOSTS);
        assert_eq!(store.list(), vec![info]);
    }

    #[test]
    fn bad_requests_are_invalid_or_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_version(dir.path(), "en", 1, 1_000);
        let store = ModelStore::new(dir.path());
        store.load("en").expect("load");
        let code = |r: Result<SuggestAnswer, ModelError>| r.err().map(|e| e.grpc_code());
        let long = "a".repeat(1024);
        assert_eq!(
            code(store.suggest("en", "", 5)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(store.suggest("en", "  \t", 5)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(store.suggest("en", &long, 5)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(store.suggest("../x", "ext", 5)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(store.suggest("fr", "ext", 5)),
            Some(tonic::Code::NotFound)
        );
        // A query as long as the router takes is served; longer is not.
        let routers_longest = "tar ".repeat(MAX_QUERY_BYTES / 4);
        assert!(store.boosts("en", &routers_longest, 5).is_ok());
        assert!(store
            .boosts("en", &format!("{routers_longest}x"), 5)
            .is_err());
        // Clamps, not errors.
        assert_eq!(
            store.suggest("en", "e", 0).expect("k=0").suggestions.len(),
            DEFAULT_K
        );
        assert!(
            store
                .suggest("en", "e", u32::MAX)
                .expect("huge k")
                .suggestions
                .len()
                <= MAX_K
        );
        assert!(store
            .suggest("en", "?!", 5)
            .expect("punctuation")
            .suggestions
            .is_empty());
        assert!(
            store
                .boosts("en", "extract", u32::MAX)
                .expect("huge max")
                .boosts
                .len()
                <= MAX_BOOSTS
        );
        // Loading a tenant with no artifact, or an unsafe id.
        assert_eq!(
            store.load("fr").err().map(|e| e.grpc_code()),
            Some(tonic::Code::NotFound)
        );
        assert_eq!(
            store.load("../en").err().map(|e| e.grpc_code()),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn corrupt_or_truncated_newest_is_refused_and_previous_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = write_version(dir.path(), "en", 1, 1_000);
        let store = ModelStore::new(dir.path());
        store.load("en").expect("load v1");
        let before = store.suggest("en", "ext", 5).expect("suggest");

        let v2 = write_version(dir.path(), "en", 2, 2_000);
        let v2_path = dir.path().join("en").join(format!("{v2}.tmodel"));
        let bytes = fs::read(&v2_path).expect("read v2");
        fs::write(&v2_path, &bytes[..bytes.len() / 2]).expect("truncate v2");
        let err = store.load("en").expect_err("truncated");
        assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(
            store.suggest("en", "ext", 5).expect("still serving"),
            before
        );

        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        fs::write(&v2_path, &flipped).expect("corrupt v2");
        let err = store.load("en").expect_err("corrupt");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(
            &*store.get("en").expect("get").version().clone(),
            v1.as_str()
        );

        fs::write(&v2_path, &bytes).expect("repair v2");
        assert_eq!(store.load("en").expect("load v2").version, v2);
        assert_eq!(store.load("en").expect("no-op").version, v2);
    }

    #[test]
    fn startup_falls_back_past_a_corrupt_newest_artifact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = write_version(dir.path(), "en", 1, 1_000);
        let v2 = write_version(dir.path(), "en", 2, 2_000);
        write_version(dir.path(), "es", 3, 1_000);
        fs::write(
            dir.path().join("en").join(format!("{v2}.tmodel")),
            b"garbage",
        )
        .expect("corrupt");
        fs::create_dir_all(dir.path().join("empty")).expect("mkdir");
        let store = ModelStore::new(dir.path());
        let reports = store.load_all().expect("load all");
        let by_tenant: HashMap<&str, &LoadReport> =
            reports.iter().map(|r| (r.tenant.as_str(), r)).collect();
        assert_eq!(
            by_tenant["en"]
                .result
                .as_ref()
                .map(|i| i.version.clone())
                .ok(),
            Some(v1)
        );
        assert_eq!(by_tenant["en"].skipped.len(), 1);
        assert!(by_tenant["es"].result.is_ok());
        assert!(matches!(
            by_tenant["empty"].result,
            Err(ModelError::NoArtifact { .. })
        ));
        assert_eq!(store.list().len(), 2);
        // Once serving, a rescan no longer falls back: the error is reported.
        let again = store.load_all().expect("rescan");
        assert!(again.iter().any(|r| r.tenant == "en" && r.result.is_err()));
        assert!(store.get("en").is_ok());
    }

    #[test]
    fn refresh_says_whether_the_version_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ModelStore::new(dir.path());
        let none = store.refresh("en");
        assert!(!none.changed);
        assert!(matches!(none.result, Err(ModelError::NoArtifact { .. })));
        let v1 = write_version(dir.path(), "en", 1, 1_000);
        let first = store.refresh("en");
        assert!(first.changed);
        assert_eq!(first.result.expect("v1").version, v1);
        let again = store.refresh("en");
        assert!(!again.changed);
        assert_eq!(again.result.expect("still v1").version, v1);
        let v2 = write_version(dir.path(), "en", 2, 2_000);
        fs::write(dir.path().join("en").join(format!("{v2}.tmodel")), b"bad").expect("corrupt");
        let refused = store.refresh("en");
        assert!(!refused.changed && refused.result.is_err());
        assert_eq!(&**store.get("en").expect("get").version(), v1.as_str());
        let bad_id = store.refresh("../en");
        assert_eq!(
            bad_id.result.err().map(|e| e.grpc_code()),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn reload_under_concurrent_calls_never_fails_a_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_version(dir.path(), "en", 1, 1_000);
        let store = ModelStore::new(dir.path());
        store.load("en").expect("load");
        let stop = AtomicBool::new(false);
        let calls = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let mut last_version = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let s = store.suggest("en", "ext", 5).expect("suggest never fails");
                            let b = store
                                .boosts("en", "extract a archive", 5)
                                .expect("boosts never fail");
                            let v: u64 =
                                s.version.trim_start_matches('v').parse().expect("version");
                            assert!(v >= last_version, "versions only move forward");
                            last_version = v;
                            assert!(!b.version.is_empty());
                            calls.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for i in 0..8u64 {
                write_version(dir.path(), "en", 10 + i, 2_000 + i);
                store.load("en").expect("reload");
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                r.join().expect("reader thread");
            }
        });
        assert!(calls.load(Ordering::Relaxed) > 0);
        assert_eq!(store.list()[0].version, "v2007");
    }
}
