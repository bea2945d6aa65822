//! The shards a node hosts: which exist, which are healthy, and which are
//! open right now.
//!
//! A node may host thousands of tenant shards, so shards are opened lazily
//! and kept in a bounded LRU-ish cache (`moka`): memory and file handles are
//! bounded by the cache's capacity, not by the number of tenants. Every shard
//! found on disk at start (or created since) is *known*; a known shard that
//! fails to open is *failed*: it reports NOT_SERVING on its own health
//! service name and its searches get UNAVAILABLE, while every other shard
//! keeps serving. A failed shard is retried after [`REOPEN_AFTER`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::sync::Cache;
use tandem_catalog::ids::validate_tenant_id;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::quarantine;
use crate::shard::{Shard, ShardKey};
use crate::writer::{self, WriterConfig, WriterHandle};

/// How long a failed shard is left alone before the next open attempt.
pub const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// Why a shard cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The node does not host it (NOT_FOUND).
    #[error("shard {0} is not hosted on this node")]
    NotFound(ShardKey),
    /// It exists but cannot serve (UNAVAILABLE).
    #[error("shard {key} is not serving: {reason}")]
    Failed {
        /// The shard.
        key: ShardKey,
        /// Why it failed to open.
        reason: String,
    },
    /// Creating it conflicts with what is there (ALREADY_EXISTS).
    #[error("shard {key} already exists with language {existing:?}")]
    Conflict {
        /// The shard.
        key: ShardKey,
        /// Its language on disk.
        existing: String,
    },
    /// Disk or index trouble (INTERNAL).
    #[error("shard {key}: {reason}")]
    Internal {
        /// The shard.
        key: ShardKey,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Clone, Debug)]
enum Known {
    Healthy,
    Failed { reason: String, at: Instant },
}

/// See the module documentation.
pub struct ShardRegistry {
    data_dir: PathBuf,
    open: Cache<ShardKey, Arc<Shard>>,
    known: DashMap<ShardKey, Known>,
    write_locks: DashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>,
    /// Shards with a running writer: kept open (outside the cache) for as
    /// long as the node runs, so that searches see the writer's commits.
    writers: DashMap<ShardKey, WriterHandle>,
    /// Serialises the start of writers.
    writer_start: std::sync::Mutex<()>,
    writer_config: WriterConfig,
    /// Shards reported NOT_SERVING for lag or bootstrap (not failures).
    held_back: DashMap<ShardKey, ()>,
    /// Set on shutdown: health only goes NOT_SERVING from then on.
    draining: Arc<std::sync::atomic::AtomicBool>,
    health: HealthReporter,
    runtime: tokio::runtime::Handle,
}

impl ShardRegistry {
    /// A registry over `data_dir` keeping at most `max_open` shards open.
    /// Must be created inside the tokio runtime (health updates use it).
    pub fn new(
        data_dir: &Path,
        max_open: u64,
        health: HealthReporter,
        writer_config: WriterConfig,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            open: Cache::builder().max_capacity(max_open.max(1)).build(),
            known: DashMap::new(),
            write_locks: DashMap::new(),
            writers: DashMap::new(),
            writer_start: std::sync::Mutex::new(()),
            writer_config,
            held_back: DashMap::new(),
            draining: Arc::default(),
            health,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Finds every shard on disk and checks that it opens (blocking).
    /// Directories that are not shards are skipped with a warning.
    pub fn scan(&self) -> anyhow::Result<usize> {
        let root = self.data_dir.join("shards");
        std::fs::create_dir_all(&root)?;
        for tenant_dir in std::fs::read_dir(&root)? {
            let tenant_dir = tenant_dir?;
            let tenant = tenant_dir.file_name().to_string_lossy().to_string();
            if validate_tenant_id(&tenant).is_err() || !tenant_dir.file_type()?.is_dir() {
                tracing::warn!(path = %tenant_dir.path().display(), "not a tenant directory; skipped");
                continue;
            }
            for shard_dir in std::fs::read_dir(tenant_dir.path())? {
                let shard_dir = shard_dir?;
                let Ok(shard) = shard_dir.file_name().to_string_lossy().parse::<u32>() else {
                    tracing::warn!(path = %shard_dir.path().display(), "not a shard directory; skipped");
                    continue;
                };
                let key = ShardKey {
                    tenant: tenant.clone(),
                    shard,
                };
                self.scan_one(key, &shard_dir.path())?;
            }
        }
        Ok(self.known.len())
    }

    /// Takes in one shard found at start in `dir`: removes an unfinished
    /// one, quarantines a corrupt one (see [`crate::quarantine`]), opens
    /// the rest (warming the cache) and marks them known.
    fn scan_one(&self, key: ShardKey, dir: &Path) -> anyhow::Result<()> {
        if quarantine::is_unfinished(dir) {
            tracing::warn!(shard = %key, path = %dir.display(),
                "removing a shard whose creation never finished (no tandem-shard.json)");
            std::fs::remove_dir_all(dir)?;
            return Ok(());
        }
        match Shard::open(&self.data_dir, key.clone()) {
            Ok(shard) => {
                self.open.insert(key.clone(), Arc::new(shard));
                self.known.insert(key.clone(), Known::Healthy);
                self.set_health(&key, ServingStatus::Serving);
            }
            Err(e) if quarantine::is_transient(&e) => {
                let reason = format!("{e:#}");
                tracing::error!(shard = %key, error = %reason, "shard failed to open");
                self.fail(&key, reason);
            }
            Err(e) => {
                let to = quarantine::quarantine(&self.data_dir, &key, dir)?;
                tracing::error!(shard = %key, error = %format!("{e:#}"), moved_to = %to.display(),
                    "shard quarantined: its files do not open; it is served by other replicas, \
                     a follower is bootstrapped again from a snapshot, the files are kept here");
                metrics::counter!("index_shards_quarantined_total").increment(1);
                self.fail(&key, format!("quarantined to {}: {e:#}", to.display()));
            }
        }
        Ok(())
    }

    /// The open shard for `key`, opening it if needed (blocking).
    pub fn get(&self, key: &ShardKey) -> Result<Arc<Shard>, ShardError> {
        if let Some(w) = self.writers.get(key) {
            return Ok(w.shard.clone());
        }
        if let Some(shard) = self.open.get(key) {
            metrics::counter!("index_searcher_cache_total", "result" => "hit").increment(1);
            return Ok(shard);
        }
        metrics::counter!("index_searcher_cache_total", "result" => "miss").increment(1);
        let state = self
            .known
            .get(key)
            .map(|k| k.clone())
            .ok_or_else(|| ShardError::NotFound(key.clone()))?;
        if let Known::Failed { reason, at } = &state {
            if at.elapsed() < REOPEN_AFTER {
                return Err(ShardError::Failed {
                    key: key.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let opened = self.open.try_get_with(key.clone(), || {
            Shard::open(&self.data_dir, key.clone()).map(Arc::new)
        });
        match opened {
            // A writer started while this was opening: its instance is the
            // one that sees the writes, and the one just opened must not
            // linger in the cache (it would serve once the writer stops).
            Ok(_) if self.writers.contains_key(key) => {
                self.open.invalidate(key);
                self.get(key)
            }
            Ok(shard) => {
                if matches!(state, Known::Failed { .. }) {
                    tracing::info!(shard = %key, "shard recovered");
                    self.known.insert(key.clone(), Known::Healthy);
                    if !self.is_held_back(key) {
                        self.set_health(key, ServingStatus::Serving);
                    }
                }
                metrics::gauge!("index_open_shards").set(self.open.entry_count() as f64);
                Ok(shard)
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(shard = %key, error = %reason, "shard failed to open");
                self.fail(key, reason.clone());
                Err(ShardError::Failed {
                    key: key.clone(),
                    reason,
                })
            }
        }
    }

    /// Marks `key` failed (NOT_SERVING; opened again on a request at least
    /// [`REOPEN_AFTER`] later).
    fn fail(&self, key: &ShardKey, reason: String) {
        self.known.insert(
            key.clone(),
            Known::Failed {
                reason,
                at: Instant::now(),
            },
        );
        self.set_health(key, ServingStatus::NotServing);
    }

    /// The shard if it is open right now; never opens one.
    pub fn peek(&self, key: &ShardKey) -> Option<Arc<Shard>> {
        if let Some(w) = self.writers.get(key) {
            return Some(w.shard.clone());
        }
        self.open.get(key)
    }

    /// The shard's writer, started (log opened and replayed) if it is not
    /// running yet. Blocking; must run on a thread of the node's runtime or
    /// a blocking thread of it.
    pub fn writer(&self, key: &ShardKey) -> Result<WriterHandle, ShardError> {
        if let Some(w) = self.writers.get(key) {
            return Ok(w.clone());
        }
        let _start = self.writer_start.lock().expect("writer start lock");
        if let Some(w) = self.writers.get(key) {
            return Ok(w.clone());
        }
        // Checked (known, not failed) through the cache, then opened
        // afresh: an instance in the cache may have been opened before the
        // directory was swapped (`replace`) and would carry its old reader
        // and applied sequence into the writer.
        self.get(key)?;
        let shard = Shard::open(&self.data_dir, key.clone())
            .map(Arc::new)
            .map_err(|e| ShardError::Internal {
                key: key.clone(),
                reason: format!("{e:#}"),
            })?;
        let handle =
            writer::start(shard, self.writer_config.clone(), &self.runtime).map_err(|e| {
                ShardError::Internal {
                    key: key.clone(),
                    reason: format!("{e:#}"),
                }
            })?;
        self.writers.insert(key.clone(), handle.clone());
        self.open.invalidate(key);
        Ok(handle)
    }

    /// [`ShardRegistry::writer`] from async code.
    pub async fn writer_async(
        self: &Arc<Self>,
        key: &ShardKey,
    ) -> Result<WriterHandle, ShardError> {
        if let Some(w) = self.writers.get(key) {
            return Ok(w.clone());
        }
        let (registry, key2) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || registry.writer(&key2))
            .await
            .map_err(|e| ShardError::Internal {
                key: key.clone(),
                reason: e.to_string(),
            })?
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Swaps the shard directory `staged` in for `key`'s (which may not
    /// exist yet): the shard's writer is stopped, the directories renamed,
    /// and the shard opened again with a new writer.
    pub async fn replace(self: &Arc<Self>, key: &ShardKey, staged: &Path) -> anyhow::Result<()> {
        if let Some((_, writer)) = self.writers.remove(key) {
            writer.close().await;
        }
        self.open.invalidate(key);
        let (registry, key2, staged) = (self.clone(), key.clone(), staged.to_path_buf());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let dir = key2.dir(&registry.data_dir);
            let aside = dir.with_extension("replaced");
            let _ = std::fs::remove_dir_all(&aside);
            if dir.exists() {
                std::fs::rename(&dir, &aside)?;
            }
            std::fs::create_dir_all(dir.parent().expect("shard dirs have a parent"))?;
            std::fs::rename(&staged, &dir)?;
            let _ = std::fs::remove_dir_all(&aside);
            registry.known.insert(key2.clone(), Known::Healthy);
            registry.writer(&key2)?;
            Ok(())
        })
        .await??;
        Ok(())
    }

    /// Removes a shard from this node: stops its writer, forgets it, clears
    /// its health name and deletes its directory. Returns the bytes removed
    /// (0 if the shard was not here). Searches holding the open shard
    /// finish on it; later ones get NOT_FOUND.
    pub async fn remove(self: &Arc<Self>, key: &ShardKey) -> anyhow::Result<u64> {
        if let Some((_, writer)) = self.writers.remove(key) {
            writer.close().await;
        }
        self.open.invalidate(key);
        self.known.remove(key);
        self.held_back.remove(key);
        self.write_locks.remove(key);
        let mut health = self.health.clone();
        health.clear_service_status(&key.health_service()).await;
        let dir = key.dir(&self.data_dir);
        let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            if !dir.exists() {
                return Ok(0);
            }
            let bytes = dir_bytes(&dir);
            // Renamed first: a crash half-way leaves no half shard that a
            // restart would find and open.
            let doomed = dir.with_extension("deleting");
            std::fs::rename(&dir, &doomed)?;
            std::fs::remove_dir_all(&doomed)?;
            Ok(bytes)
        })
        .await??;
        tracing::info!(shard = %key, bytes, "shard deleted");
        Ok(bytes)
    }

    /// Bytes of `key`'s files on disk (index and operation log; blocking).
    pub fn shard_bytes(&self, key: &ShardKey) -> u64 {
        dir_bytes(&key.dir(&self.data_dir))
    }

    /// Bytes of the operation logs of the shards with a writer.
    pub fn log_bytes(&self) -> u64 {
        self.writers.iter().map(|w| w.log.bytes()).sum()
    }

    /// The shard's writer if it runs.
    pub fn writer_if_started(&self, key: &ShardKey) -> Option<WriterHandle> {
        self.writers.get(key).map(|w| w.clone())
    }

    /// Reports a healthy shard SERVING or (lagging, bootstrapping) not;
    /// only changes are sent to the health service.
    pub fn set_serving(&self, key: &ShardKey, serving: bool) {
        let changed = if serving {
            self.held_back.remove(key).is_some()
        } else {
            self.held_back.insert(key.clone(), ()).is_none()
        };
        if changed && matches!(self.known.get(key).map(|k| k.clone()), Some(Known::Healthy)) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            self.set_health(key, status);
        }
    }

    /// Whether the shard is held back from searches (lag, bootstrap).
    pub fn is_held_back(&self, key: &ShardKey) -> bool {
        self.held_back.contains_key(key)
    }

    /// Creates a shard, or returns the existing one if its language matches
    /// (so that a retried create succeeds). Blocking.
    pub fn create(&self, key: &ShardKey, language: &str) -> Result<Arc<Shard>, ShardError> {
        let gone = !key.dir(&self.data_dir).exists();
        if gone && matches!(self.known.get(key).as_deref(), Some(Known::Failed { .. })) {
            // A quarantined shard: its files went aside; make it anew.
            self.known.remove(key);
        }
        if self.known.contains_key(key) {
            let shard = self.get(key)?;
            if shard.language() != language {
                return Err(ShardError::Conflict {
                    key: key.clone(),
                    existing: shard.language().to_string(),
                });
            }
            return Ok(shard);
        }
        if key.dir(&self.data_dir).exists() {
            // Left over from an interrupted create: start again.
            std::fs::remove_dir_all(key.dir(&self.data_dir)).map_err(|e| ShardError::Internal {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        }
        let shard = Shard::create(&self.data_dir, key.clone(), language)
            .map(Arc::new)
            .map_err(|e| ShardError::Internal {
                key: key.clone(),
                reason: format!("{e:#}"),
            })?;
        self.open.insert(key.clone(), shard.clone());
        self.known.insert(key.clone(), Known::Healthy);
        self.set_health(key, ServingStatus::Serving);
        tracing::info!(shard = %key, language, "shard created");
        Ok(shard)
    }

    /// The lock that serialises creating a shard.
    pub fn write_lock(&self, key: &ShardKey) -> Arc<tokio::sync::Mutex<()>> {
        self.write_locks.entry(key.clone()).or_default().clone()
    }

    /// Every known shard with its failure reason, if it failed.
    pub fn known(&self) -> Vec<(ShardKey, Option<String>)> {
        let mut all: Vec<_> = self
            .known
            .iter()
            .map(|e| {
                let reason = match e.value() {
                    Known::Healthy => None,
                    Known::Failed { reason, .. } => Some(reason.clone()),
                };
                (e.key().clone(), reason)
            })
            .collect();
        all.sort();
        all
    }

    /// Open shards right now (approximate; the cache settles lazily).
    pub fn open_count(&self) -> u64 {
        self.open.run_pending_tasks();
        self.open.entry_count()
    }

    /// Reports every shard NOT_SERVING (graceful shutdown).
    pub async fn report_all_not_serving(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for (key, _) in self.known() {
            self.health
                .set_service_status(key.health_service(), ServingStatus::NotServing)
                .await;
        }
    }

    fn set_health(&self, key: &ShardKey, status: ServingStatus) {
        let health = self.health.clone();
        let name = key.health_service();
        let draining = self.draining.clone();
        self.runtime.spawn(async move {
            // Once draining, nothing reports SERVING again (a shard created
            // or recovered just before SIGTERM must not undo the drain).
            if status == ServingStatus::Serving
                && draining.load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            health.set_service_status(name, status).await;
        });
    }
}

/// Bytes of the files under `dir` (best effort).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
