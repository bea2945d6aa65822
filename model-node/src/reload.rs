//! Loading models while serving: every tenant at startup, one tenant on a
//! `LoadModel` call, and whatever is new in the model directory each time
//! the watcher polls it (so that `tandem-model-node train` alone is enough
//! to get a new version served).
//!
//! File work runs on the blocking pool; the swap itself is the store's
//! (atomic, never pausing a call). Every attempt is logged and counted:
//!
//! - `model_reloads_total{result="ok"|"unchanged"|"refused", trigger="startup"|"api"|"watch"}`
//!   (`refused`: an artifact failed to load; the previous model, if any,
//!   keeps serving; one count per refused file);
//! - `model_load_seconds{trigger}`: time to read, check and decode;
//! - `model_loaded_models`: tenants with a model served.
//!
//! Startup loads happen before the metrics recorder exists (it is installed
//! when the server starts, and readiness must mean "models loaded"), so they
//! show in the logs and in `model_loaded_models` (which every watcher poll
//! refreshes), not in the counters.
//!
//! # The watcher
//!
//! Each poll lists the tenants' directories and compares every tenant's
//! newest artifact with the version served: only a tenant whose newest
//! version differs is reloaded, so an idle poll reads no artifact. A newest
//! artifact that was refused is remembered by (version, size, mtime) and not
//! retried until the file changes or a newer one appears: a corrupt file
//! costs one error log, not one per poll. An explicit `LoadModel` always
//! tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::time::MissedTickBehavior;

use crate::artifact::{self, ArtifactFile};
use crate::error::ModelError;
use crate::health::TenantHealth;
use crate::model::ModelInfo;
use crate::store::{LoadReport, ModelStore};

/// What caused a load; a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The node starting up.
    Startup,
    /// A `LoadModel` call.
    Api,
    /// The model-directory watcher.
    Watch,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Api => "api",
            Trigger::Watch => "watch",
        }
    }
}

/// What one pass over tenants did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Tenants a load was attempted for.
    pub tried: usize,
    /// Tenants now serving a different version.
    pub loaded: usize,
    /// Tenants whose newest version was already served.
    pub unchanged: usize,
    /// Tenants left without a new version because loading failed.
    pub failed: usize,
}

/// Identifies an artifact file's content well enough to notice it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    number: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn of(file: &ArtifactFile) -> Option<Fingerprint> {
        let meta = std::fs::metadata(&file.path).ok()?;
        Some(Fingerprint {
            number: file.number,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Loads models into a [`ModelStore`] and keeps the tenants' health in step
/// (see the module docs).
#[derive(Debug)]
pub struct Reloader {
    store: Arc<ModelStore>,
    health: TenantHealth,
    /// Per tenant, the newest artifact last refused.
    refused: Mutex<HashMap<String, Fingerprint>>,
}

impl Reloader {
    /// Loads into `store`, reporting tenants' health through `health`.
    pub fn new(store: Arc<ModelStore>, health: TenantHealth) -> Self {
        Self {
            store,
            health,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// The store models are loaded into.
    pub fn store(&self) -> &Arc<ModelStore> {
        &self.store
    }

    /// The tenants' health.
    pub fn health(&self) -> &TenantHealth {
        &self.health
    }

    /// Loads every tenant in the model directory (startup). A tenant whose
    /// newest artifact is corrupt falls back to an older one; a tenant with
    /// nothing loadable is reported NOT_SERVING. Fails only if the directory
    /// cannot be listed.
    pub async fn load_all(self: &Arc<Self>, trigger: Trigger) -> Result<ScanSummary, ModelError> {
        let this = Arc::clone(self);
        let reports = blocking(move || -> Result<Vec<LoadReport>, ModelError> {
            let tenants = artifact::tenants(this.store.model_dir())?;
            Ok(tenants
                .iter()
                .map(|t| this.refresh_blocking(t, trigger))
                .collect())
        })
        .await??;
        Ok(self.finish(reports).await)
    }

    /// Loads `tenant`'s newest artifact now (`LoadModel`). An error says why
    /// it was refused; the model served before, if any, keeps serving.
    pub async fn load(self: &Arc<Self>, tenant: &str) -> Result<ModelInfo, ModelError> {
        let this = Arc::clone(self);
        let name = tenant.to_string();
        let report = blocking(move || this.refresh_blocking(&name, Trigger::Api)).await?;
        let served = self.store.get(tenant).is_ok();
        // A tenant id nobody has artifacts for gets no health entry, so
        // arbitrary `LoadModel` calls cannot grow the health map.
        if served || matches!(report.result, Err(ModelError::Artifact(_))) {
            self.health.set(tenant, served).await;
        }
        self.publish_gauge();
        report.result
    }

    /// Stops serving `tenant` and deletes its artifacts (`DeleteModels`);
    /// returns the version that was served, if any, and the number of
    /// artifact files removed.
    pub async fn remove(
        self: &Arc<Self>,
        tenant: &str,
    ) -> Result<(Option<Arc<str>>, usize), ModelError> {
        let this = Arc::clone(self);
        let name = tenant.to_string();
        let removed = blocking(move || this.store.remove(&name)).await??;
        self.refused_lock().remove(tenant);
        self.health.forget(tenant).await;
        self.publish_gauge();
        tracing::info!(tenant, served = ?removed.0, artifacts = removed.1, "tenant models deleted");
        Ok(removed)
    }

    /// One watcher poll: reloads the tenants whose newest artifact is not the
    /// one served (nor one already refused).
    pub async fn scan(self: &Arc<Self>) -> Result<ScanSummary, ModelError> {
        let this = Arc::clone(self);
        let reports = blocking(move || -> Result<Vec<LoadReport>, ModelError> {
            let due = this.due_tenants()?;
            Ok(due
                .iter()
                .map(|t| this.refresh_blocking(t, Trigger::Watch))
                .collect())
        })
        .await??;
        Ok(self.finish(reports).await)
    }

    /// Polls the model directory every `every` until the task is aborted.
    /// The first poll is one interval after the call (startup just loaded).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let start = tokio::time::Instant::now() + every;
        let mut tick = tokio::time::interval_at(start, every);
        // A slow poll (huge artifacts) must not be followed by a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.scan().await {
                tracing::warn!(error = %e, "model directory poll failed");
            }
        }
    }

    /// Tenants whose newest artifact should be tried (blocking: lists
    /// directories).
    fn due_tenants(&self) -> Result<Vec<String>, ModelError> {
        let mut due = Vec::new();
        for tenant in artifact::tenants(self.store.model_dir())? {
            let newest = match artifact::newest(self.store.model_dir(), &tenant) {
                Ok(Some(newest)) => newest,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "cannot list model versions");
                    continue;
                }
            };
            let served = self.store.get(&tenant).ok();
            if served.is_some_and(|m| **m.version() == *newest.version) {
                continue;
            }
            let refused = self.refused_lock().get(&tenant).cloned();
            if refused.is_some() && refused == Fingerprint::of(&newest) {
                continue;
            }
            due.push(tenant);
        }
        Ok(due)
    }

    /// Loads one tenant, then logs, counts and remembers a refusal
    /// (blocking: reads files).
    fn refresh_blocking(&self, tenant: &str, trigger: Trigger) -> LoadReport {
        // Taken before loading: if a newer file appears meanwhile, the
        // remembered refusal is of an older one and the newer is retried.
        let newest = artifact::newest(self.store.model_dir(), tenant)
            .ok()
            .flatten()
            .and_then(|f| Fingerprint::of(&f));
        let previous = self.store.get(tenant).ok().map(|m| Arc::clone(m.version()));
        let started = Instant::now();
        let report = self.store.refresh(tenant);
        let elapsed = started.elapsed();
        let label = trigger.label();
        metrics::histogram!("model_load_seconds", "trigger" => label).record(elapsed.as_secs_f64());
        for refused in &report.skipped {
            metrics::counter!("model_reloads_total", "result" => "refused", "trigger" => label)
                .increment(1);
            tracing::warn!(tenant, error = %refused, "model artifact refused; falling back to an older version");
        }
        let refused_newest = !report.skipped.is_empty() || report.result.is_err();
        match &report.result {
            Ok(info) if report.changed => {
                metrics::counter!("model_reloads_total", "result" => "ok", "trigger" => label)
                    .increment(1);
                tracing::info!(
                    tenant,
                    version = %info.version,
                    previous = previous.as_deref().unwrap_or("none"),
                    suggestions = info.suggestions,
                    boosted_queries = info.boosted_queries,
                    size_bytes = info.size_bytes,
                    trigger = label,
                    ms = elapsed.as_millis() as u64,
                    "model loaded"
                );
            }
            Ok(info) => {
                metrics::counter!("model_reloads_total", "result" => "unchanged", "trigger" => label)
                    .increment(1);
                tracing::debug!(tenant, version = %info.version, trigger = label, "model unchanged");
            }
            Err(e @ ModelError::Artifact(_)) | Err(e @ ModelError::Internal(_)) => {
                metrics::counter!("model_reloads_total", "result" => "refused", "trigger" => label)
                    .increment(1);
                tracing::error!(
                    tenant,
                    error = %e,
                    serving = previous.as_deref().unwrap_or("nothing"),
                    trigger = label,
                    "model artifact refused; the previous version keeps serving"
                );
            }
            // Bad tenant ids and tenants without artifacts: nothing was loaded
            // or refused, the caller gets the error.
            Err(e) => tracing::debug!(tenant, error = %e, trigger = label, "nothing to load"),
        }
        let mut remembered = self.refused_lock();
        match newest {
            Some(fingerprint) if refused_newest => {
                remembered.insert(tenant.to_string(), fingerprint);
            }
            _ => {
                remembered.remove(tenant);
            }
        }
        report
    }

    /// Updates health and the gauge after a pass over the tenants found in
    /// the model directory, and sums it up.
    async fn finish(&self, reports: Vec<LoadReport>) -> ScanSummary {
        let mut summary = ScanSummary::default();
        for report in &reports {
            summary.tried += 1;
            match &report.result {
                Ok(_) if report.changed => summary.loaded += 1,
                Ok(_) => summary.unchanged += 1,
                Err(_) => summary.failed += 1,
            }
            // Every tenant here has a directory: one with nothing loadable
            // is NOT_SERVING (the catalog may send it traffic).
            let served = self.store.get(&report.tenant).is_ok();
            self.health.set(&report.tenant, served).await;
        }
        self.publish_gauge();
        summary
    }

    fn publish_gauge(&self) {
        metrics::gauge!("model_loaded_models").set(self.store.served_count() as f64);
    }

    fn refused_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fingerprint>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs file work on the blocking pool; a panicking worker becomes an
/// INTERNAL error instead of taking the caller down.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ModelError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ModelError::Internal(format!("load worker failed: {e}")))
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
