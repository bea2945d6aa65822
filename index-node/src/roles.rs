//! What this node is for each shard, learned from the catalog: the shard's
//! leader, one of its followers, or (a shard the catalog does not assign)
//! standalone.
//!
//! With `--catalog FILE` the node reads the same catalog as the routers and
//! re-reads it every `catalog_poll_ms`; a file that does not validate is
//! refused and the last good one stays in force. Each round it reconciles:
//! - a shard assigned to this node that it does not have is created empty
//!   (with the tenant's language);
//! - a leader's writer is started (replaying its log) and its epoch stored;
//! - a follower's pull loop is started, or restarted when its leader or
//!   epoch changed, and stopped when the shard is no longer assigned here;
//! - each follower's health is set from its lag: NOT_SERVING while it is
//!   bootstrapping or more than `max_lag_ms` behind, so routers stop sending
//!   it searches (they learn it from `ListShards`, see the router's probe).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tandem_catalog::{Catalog, CatalogHandle, Node};
use tandem_proto::v1::ShardHealth;
use tokio::task::AbortHandle;

use crate::adopted;
use crate::follower::{self, Follow, FollowerStatus, Lag};
use crate::leader;
use crate::registry::ShardRegistry;
use crate::shard::ShardKey;
use crate::snapshot::SnapshotStore;
use tandem_common::faults::FaultRegistry;
use tandem_common::internal::InternalToken;
use tandem_common::latency::{InterRegion, Network};
use tandem_common::tls::Tls;

/// This node's part in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in the catalog (or no catalog): writes carry their own numbers.
    Standalone,
    /// Orders the shard's writes at this epoch.
    Leader {
        /// Leader epoch.
        epoch: u64,
    },
    /// Pulls from `leader` at this epoch.
    Follower {
        /// The leader.
        leader: Arc<Node>,
        /// Leader epoch.
        epoch: u64,
    },
}

struct Running {
    leader: Arc<str>,
    epoch: u64,
    task: AbortHandle,
    status: Arc<FollowerStatus>,
}

/// See the module documentation.
pub struct Roles {
    node_id: String,
    region: String,
    catalog_path: Option<PathBuf>,
    /// Set once the file has been read (it may appear after the node
    /// starts, as in `tandem dev`, which learns ports first).
    catalog: OnceLock<CatalogHandle>,
    roles: ArcSwap<HashMap<ShardKey, Role>>,
    followers: Mutex<HashMap<ShardKey, Running>>,
    /// Shards set up for their role (created, epoch stored, leader's writer
    /// started), so that a poll redoes nothing for them.
    set_up: Mutex<HashMap<ShardKey, Role>>,
    /// (shard, epoch) whose leadership was confirmed with the other replicas.
    confirmed: Mutex<HashSet<(ShardKey, u64)>>,
    /// Followers started by `Bootstrap` for shards the catalog does not yet
    /// give this node (`tandem replica add`), until it does.
    adopted: Mutex<HashMap<ShardKey, (Role, String)>>,
    store: Option<SnapshotStore>,
    /// Held by a reconciliation round.
    round: tokio::sync::Mutex<()>,
    /// The adoption markers on disk were read.
    markers_loaded: std::sync::atomic::AtomicBool,
    registry: Arc<ShardRegistry>,
    max_lag: Duration,
    /// Carried by this node's calls to other index-nodes.
    internal: InternalToken,
    /// This node's TLS, for `https://` peers.
    tls: Option<Tls>,
    /// The emulated distance to the other region's leaders, and the
    /// node's faults (a drill's partition of its pulls).
    network: (InterRegion, FaultRegistry),
}

impl Roles {
    /// Roles from the catalog at `catalog_path` (none: every shard is
    /// standalone). Fails if the file exists but is invalid; a file that does
    /// not exist yet leaves every shard standalone until it appears.
    pub fn new(
        node_id: String,
        region: String,
        catalog_path: Option<PathBuf>,
        registry: Arc<ShardRegistry>,
        max_lag: Duration,
        store: Option<SnapshotStore>,
        (internal, tls, network): (InternalToken, Option<Tls>, (InterRegion, FaultRegistry)),
    ) -> anyhow::Result<Arc<Roles>> {
        let catalog = OnceLock::new();
        if let Some(path) = catalog_path.as_ref().filter(|p| p.exists()) {
            let c = Catalog::load_file(path)?;
            for w in c.warnings() {
                tracing::warn!(catalog = %path.display(), "{w}");
            }
            let _ = catalog.set(CatalogHandle::new(c));
        }
        Ok(Arc::new(Roles {
            node_id,
            region,
            catalog_path,
            catalog,
            roles: ArcSwap::default(),
            followers: Mutex::default(),
            confirmed: Mutex::default(),
            set_up: Mutex::default(),
            adopted: Mutex::default(),
            store,
            round: tokio::sync::Mutex::new(()),
            markers_loaded: Default::default(),
            registry,
            max_lag,
            internal,
            tls,
            network,
        }))
    }

    /// This node's role for `key`.
    pub fn role(&self, key: &ShardKey) -> Role {
        self.roles
            .load()
            .get(key)
            .cloned()
            .unwrap_or(Role::Standalone)
    }

    /// The region of node `id` per the catalog (for cross-region metrics).
    pub fn region_of(&self, id: &str) -> Option<String> {
        let catalog = self.catalog.get()?.current();
        catalog.node(id).map(|n| n.region.to_string())
    }

    /// This node's region label.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A follower's lag (`None` for leaders and standalone shards) and the
    /// shard's health beyond "open" (lagging or bootstrapping followers),
    /// from one look at the log.
    pub fn assess(&self, key: &ShardKey, applied: u64) -> (Option<Lag>, ShardHealth) {
        let Some(status) = self.status(key) else {
            return (None, ShardHealth::Serving);
        };
        let lag = self
            .registry
            .writer_if_started(key)
            .map(|w| status.lag(applied, &w.log));
        let health = if status.bootstrap_reason().is_some() {
            ShardHealth::Bootstrapping
        } else if lag.is_some_and(|l| l.millis > self.max_lag.as_millis() as u64) {
            ShardHealth::Lagging
        } else {
            ShardHealth::Serving
        };
        (lag, health)
    }

    fn status(&self, key: &ShardKey) -> Option<Arc<FollowerStatus>> {
        let followers = self.followers.lock().expect("followers lock");
        followers.get(key).map(|r| r.status.clone())
    }

    /// Reconciles now, then every `poll` (re-reading the catalog file).
    pub async fn run(self: Arc<Self>, poll: Duration) {
        loop {
            if let Err(e) = self.clone().reconcile().await {
                tracing::error!(error = %format!("{e:#}"), "roles not reconciled");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One round (see the module documentation); rounds never overlap.
    pub async fn reconcile(self: Arc<Self>) -> anyhow::Result<()> {
        let _round = self.round.lock().await;
        let Some(path) = &self.catalog_path else {
            return Ok(());
        };
        let Some(handle) = self.catalog_handle(path) else {
            return Ok(());
        };
        match handle.reload_file(path) {
            Ok(tandem_catalog::Reload::Replaced { current, .. }) => {
                tracing::info!(version = %current, "catalog reloaded");
                for w in handle.current().warnings() {
                    tracing::warn!("{w}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "catalog refused; the last good one stays in force")
            }
        }
        let catalog = handle.current();
        let mut assigned = self.assigned(&catalog);
        self.load_markers(&catalog);
        {
            let mut adopted = self.adopted.lock().expect("adopted lock");
            adopted.retain(|key, _| {
                let listed = assigned.contains_key(key);
                if listed {
                    adopted::remove(&key.dir(self.registry.data_dir()));
                }
                !listed
            });
            for (key, entry) in adopted.iter() {
                assigned.insert(key.clone(), entry.clone());
            }
        }
        for (key, (role, language)) in &assigned {
            if self.set_up.lock().expect("set-up lock").get(key) == Some(role) {
                // Created, epoch stored, writer running: nothing to redo.
                continue;
            }
            let registry = self.registry.clone();
            let (key2, language, role2) = (key.clone(), language.clone(), role.clone());
            let ready = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let shard = registry.create(&key2, &language)?;
                match role2 {
                    Role::Leader { epoch } => {
                        shard.raise_epoch(epoch)?;
                        registry.writer(&key2)?;
                    }
                    Role::Follower { epoch, .. } => {
                        shard.raise_epoch(epoch)?;
                    }
                    Role::Standalone => {}
                }
                Ok(())
            })
            .await?;
            match ready {
                Ok(()) => {
                    self.set_up
                        .lock()
                        .expect("set-up lock")
                        .insert(key.clone(), role.clone());
                }
                Err(e) => {
                    tracing::error!(shard = %key, error = %format!("{e:#}"), "assigned shard not ready")
                }
            }
            if let Role::Leader { epoch } = role {
                self.confirm_leadership(&catalog, key, *epoch).await;
            }
        }
        self.roles.store(Arc::new(
            assigned
                .iter()
                .map(|(k, (role, _))| (k.clone(), role.clone()))
                .collect(),
        ));
        self.start_and_stop_followers(&assigned);
        self.report_health(&assigned);
        Ok(())
    }

    /// Before a node leads a shard at an epoch for the first time, it asks
    /// the shard's other replicas which epoch they have seen: a node that was
    /// down while another was promoted, and comes back with a stale catalog,
    /// learns the newer epoch here and refuses writes (its stored epoch is
    /// then above the one it would lead). Replicas that do not answer within
    /// a second are not waited for.
    async fn confirm_leadership(&self, catalog: &Catalog, key: &ShardKey, epoch: u64) {
        if self
            .confirmed
            .lock()
            .expect("confirmed lock")
            .contains(&(key.clone(), epoch))
        {
            return;
        }
        let others: Vec<Arc<Node>> = catalog
            .tenant(&key.tenant)
            .and_then(|t| t.shards.get(key.shard as usize))
            .map(|s| {
                s.replicas
                    .iter()
                    .filter(|n| *n.id != *self.node_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let asks = others
            .iter()
            .map(|node| leader::epoch_of(node, key, &self.internal, self.tls.clone()));
        let seen = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .max();
        if let Some(newer) = seen.filter(|e| *e > epoch) {
            tracing::warn!(shard = %key, epoch, newer,
                "a replica has seen a newer leader epoch: this node does not lead the shard");
            if let Some(shard) = self.registry.peek(key) {
                let _ = tokio::task::spawn_blocking(move || shard.raise_epoch(newer)).await;
            }
        }
        self.confirmed
            .lock()
            .expect("confirmed lock")
            .insert((key.clone(), epoch));
    }

    /// Makes this node a new follower of `key` (led by node `leader` at
    /// `epoch`), built from a snapshot: `tandem replica add` calls this on
    /// the node before the catalog lists it as a replica. Errors are for the
    /// caller (FAILED_PRECONDITION).
    pub async fn adopt(
        self: &Arc<Self>,
        key: &ShardKey,
        language: &str,
        leader: &str,
        epoch: u64,
    ) -> Result<(), String> {
        let catalog = self
            .catalog
            .get()
            .ok_or("this node has no catalog")?
            .current();
        let leader = catalog
            .node(leader)
            .filter(|n| n.kind == tandem_catalog::NodeKind::Index)
            .ok_or_else(|| format!("{leader} is not an index node of the catalog"))?
            .clone();
        if *leader.id == *self.node_id {
            return Err("a node cannot follow itself".into());
        }
        let role = Role::Follower {
            leader: leader.clone(),
            epoch,
        };
        let again = self
            .adopted
            .lock()
            .expect("adopted lock")
            .get(key)
            .is_some_and(|(r, _)| *r == role);
        if again {
            return Ok(());
        }
        if self.role(key) != Role::Standalone {
            return Err(format!("this node already holds {key} as a replica"));
        }
        if self.store.is_none() {
            return Err("this node has no snapshot store".into());
        }
        self.adopted
            .lock()
            .expect("adopted lock")
            .insert(key.clone(), (role, language.to_string()));
        self.clone()
            .reconcile()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let marker = adopted::Marker {
            leader: leader.id.to_string(),
            epoch,
            language: language.to_string(),
        };
        adopted::save(&key.dir(self.registry.data_dir()), &marker).map_err(|e| e.to_string())
    }

    /// Once, after a start: the followers being built (markers on disk)
    /// are adopted again.
    fn load_markers(&self, catalog: &Catalog) {
        if self
            .markers_loaded
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let mut adopted = self.adopted.lock().expect("adopted lock");
        for (key, _) in self.registry.known() {
            let Some(marker) = adopted::load(&key.dir(self.registry.data_dir())) else {
                continue;
            };
            let Some(leader) = catalog.node(&marker.leader).cloned() else {
                continue;
            };
            tracing::info!(shard = %key, leader = %leader.id, "resuming a replica being added");
            let role = Role::Follower {
                leader,
                epoch: marker.epoch,
            };
            adopted.insert(key, (role, marker.language));
        }
    }

    /// Whether this node's catalog lists `tenant` (never, without one).
    pub fn lists_tenant(&self, tenant: &str) -> bool {
        self.catalog
            .get()
            .is_some_and(|c| c.current().tenant(tenant).is_some())
    }

    /// Holds reconciliation rounds off while the guard lives (a tenant's
    /// shards being removed must not be set up again half-way).
    pub async fn hold_rounds(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.round.lock().await
    }

    /// Forgets everything set up for `tenant`'s shards: followers stop,
    /// adoptions and confirmed leaderships are dropped.
    pub fn forget_tenant(&self, tenant: &str) {
        let ours = |key: &ShardKey| key.tenant == tenant;
        self.set_up
            .lock()
            .expect("set-up lock")
            .retain(|k, _| !ours(k));
        self.confirmed
            .lock()
            .expect("confirmed lock")
            .retain(|(k, _)| !ours(k));
        self.adopted
            .lock()
            .expect("adopted lock")
            .retain(|k, _| !ours(k));
        self.followers
            .lock()
            .expect("followers lock")
            .retain(|k, running| {
                if ours(k) {
                    running.task.abort();
                }
                !ours(k)
            });
    }

    /// Shards this node leads.
    pub fn led(&self) -> Vec<ShardKey> {
        self.roles
            .load()
            .iter()
            .filter(|(_, r)| matches!(r, Role::Leader { .. }))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Why a follower's last bootstrap attempt failed, if it is failing.
    pub fn bootstrap_error(&self, key: &ShardKey) -> Option<String> {
        self.status(key)?.bootstrap_error()
    }

    /// Bytes of the snapshot a follower is installing or last installed:
    /// (done, total, still installing).
    pub fn bootstrap_progress(&self, key: &ShardKey) -> Option<(u64, u64, bool)> {
        let status = self.status(key)?;
        let p = &status.progress;
        let total = p.total.load(std::sync::atomic::Ordering::Relaxed);
        let installing = status.bootstrap_reason().is_some();
        (installing || total > 0).then(|| {
            (
                p.done.load(std::sync::atomic::Ordering::Relaxed),
                total,
                installing,
            )
        })
    }

    /// The catalog, read for the first time if it was not yet.
    fn catalog_handle(&self, path: &std::path::Path) -> Option<&CatalogHandle> {
        if let Some(handle) = self.catalog.get() {
            return Some(handle);
        }
        match Catalog::load_file(path) {
            Ok(c) => {
                tracing::info!(catalog = %path.display(), version = %c.version(), "catalog read");
                Some(self.catalog.get_or_init(|| CatalogHandle::new(c)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "no catalog yet; every shard is standalone");
                None
            }
        }
    }

    /// The shards the catalog gives this node, with role and language.
    fn assigned(&self, catalog: &Catalog) -> HashMap<ShardKey, (Role, String)> {
        let mut out = HashMap::new();
        for tenant in catalog.tenants() {
            for shard in &tenant.shards {
                if !shard.replicas.iter().any(|n| *n.id == *self.node_id) {
                    continue;
                }
                let key = ShardKey {
                    tenant: tenant.id.to_string(),
                    shard: shard.number,
                };
                let role = if *shard.leader.node.id == *self.node_id {
                    Role::Leader {
                        epoch: shard.leader.epoch,
                    }
                } else {
                    Role::Follower {
                        leader: shard.leader.node.clone(),
                        epoch: shard.leader.epoch,
                    }
                };
                out.insert(key, (role, tenant.language.to_string()));
            }
        }
        out
    }

    /// This node's region as the catalog names it (else `--region`).
    fn own_region(&self) -> String {
        self.catalog
            .get()
            .and_then(|c| {
                c.current()
                    .node(&self.node_id)
                    .map(|n| n.region.to_string())
            })
            .unwrap_or_else(|| self.region.clone())
    }

    fn start_and_stop_followers(&self, assigned: &HashMap<ShardKey, (Role, String)>) {
        let mut followers = self.followers.lock().expect("followers lock");
        followers.retain(|key, running| {
            let keep = matches!(assigned.get(key), Some((Role::Follower { leader, epoch }, _))
                if leader.id == running.leader && *epoch == running.epoch);
            if !keep {
                running.task.abort();
            }
            keep
        });
        for (key, (role, _)) in assigned {
            let Role::Follower { leader, epoch } = role else {
                continue;
            };
            if followers.contains_key(key) {
                continue;
            }
            let status = Arc::new(FollowerStatus::default());
            if self.adopted.lock().expect("adopted lock").contains_key(key) {
                status.must_bootstrap("a new replica".to_string());
            }
            let task = tokio::spawn(follower::run(Follow {
                key: key.clone(),
                leader: leader.clone(),
                epoch: *epoch,
                node_id: self.node_id.clone(),
                registry: self.registry.clone(),
                status: status.clone(),
                store: self.store.clone(),
                internal: self.internal.clone(),
                tls: self.tls.clone(),
                network: Network::new(self.own_region(), self.network.0, self.network.1.clone()),
            }));
            tracing::info!(shard = %key, leader = %leader.id, epoch, "following");
            followers.insert(
                key.clone(),
                Running {
                    leader: leader.id.clone(),
                    epoch: *epoch,
                    task: task.abort_handle(),
                    status,
                },
            );
        }
    }

    /// Sets each follower's health from its lag, and the node's gauges:
    /// the largest lag among its followers (no tenant labels: per shard,
    /// `ListShards` has it), log bytes, bootstraps running.
    fn report_health(&self, assigned: &HashMap<ShardKey, (Role, String)>) {
        let (mut worst_ops, mut worst_millis, mut bootstrapping) = (0u64, 0u64, 0usize);
        for (key, (role, _)) in assigned {
            if !matches!(role, Role::Follower { .. }) {
                continue;
            }
            let Some(shard) = self.registry.peek(key) else {
                continue;
            };
            let applied = shard.applied_seq();
            let (lag, health) = self.assess(key, applied);
            if let Some(lag) = lag {
                worst_ops = worst_ops.max(lag.ops);
                worst_millis = worst_millis.max(lag.millis);
            }
            bootstrapping += usize::from(health == ShardHealth::Bootstrapping);
            self.registry
                .set_serving(key, health == ShardHealth::Serving);
        }
        metrics::gauge!("index_replication_lag_ops").set(worst_ops as f64);
        metrics::gauge!("index_replication_lag_seconds").set(worst_millis as f64 / 1000.0);
        metrics::gauge!("index_bootstraps_in_progress").set(bootstrapping as f64);
        metrics::gauge!("index_oplog_bytes").set(self.registry.log_bytes() as f64);
    }
}
