//! Outlier detection: passive ejection on consecutive failures, re-admission
//! after a backoff by a sustained run of successful trials (and probes).
//!
//! One [`OutlierDetector`] tracks one kind of key. The serving layer keeps two:
//! one keyed by node id (the whole node is sick: transport errors, per-try
//! timeouts) and one keyed by [`ShardKey`] (only one tenant's shard on that
//! node fails, e.g. its index is missing), so a single broken tenant does not
//! eject a node that serves every other tenant fine. The replica order treats
//! a replica as unhealthy when either key is (see [`Health::worst`]).
//!
//! Each key moves through these states (keys never seen are `Healthy`):
//!
//! - **Healthy**: serving. Counts consecutive failures; a success resets the
//!   count. `consecutive_failures` in a row (or one `NotServing` probe) moves
//!   it to *Ejected*.
//! - **Ejected**: not chosen while healthier replicas exist, for a backoff of
//!   `base_ejection * 2^(n-1)` capped at `max_ejection`, where `n` counts this
//!   key's ejections (forgotten after `forget_after` of good health, so a node
//!   that flaps keeps getting longer breaks but a node that failed once last
//!   week starts again at the base). Results of calls started before the
//!   ejection are ignored. A `Serving` probe ends the backoff early (for
//!   nodes: a restarted process answering its health check), into
//!   *Probation*, counting as its first success.
//! - **Probation** (half-open): the backoff has elapsed. Trial requests are
//!   let through ([`OutlierDetector::try_begin_trial`]) one at a time and at
//!   most one per `trial_spacing`: bounded trial traffic, never none. It
//!   takes `readmit_successes` successes in a row (trials or `Serving`
//!   probes) to move to *Healthy*, so one lucky answer does not re-admit a
//!   replica that fails every other call; any failure (or failed probe)
//!   sends it back to *Ejected* with a doubled backoff. If a trial's result
//!   never arrives within `trial_timeout`, another trial is allowed.
//!
//! Time comes from `tokio::time::Instant`, so tests drive it with a paused
//! clock. State lives in a `DashMap` whose entries exist only for keys that
//! failed recently: the common "all healthy" case reads an absent key.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::IdMap;
use tokio::time::Instant;

/// A (node, tenant, shard) pair: the unit of ejection when only one tenant's
/// shard fails on an otherwise healthy node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardKey {
    /// Node id.
    pub node: Arc<str>,
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Shard number.
    pub shard: u32,
}

/// Tunables. The defaults aim at "detection and re-admission in about a
/// second" on a fleet where a healthy call takes well under a millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that eject (default 3: one failure is noise, three
    /// in a row at hundreds of queries per second is a pattern within ms).
    pub consecutive_failures: u32,
    /// First ejection's length (default 1 s).
    pub base_ejection: Duration,
    /// Longest ejection (default 30 s: a flapping node is still retried twice
    /// a minute, and probes can re-admit it sooner).
    pub max_ejection: Duration,
    /// How long a probation trial may stay unanswered before another trial
    /// is allowed (default 2 s, above any sane per-try timeout).
    pub trial_timeout: Duration,
    /// Least time between two trials' starts (default 25 ms): the trial
    /// traffic a replica on probation gets is bounded by it.
    pub trial_spacing: Duration,
    /// Successes in a row on probation that re-admit (default 3; 0 is
    /// treated as 1).
    pub readmit_successes: u32,
    /// Healthy time after which the ejection count is forgotten and the next
    /// ejection starts at the base again (default 60 s, twice the cap).
    pub forget_after: Duration,
    /// Whether a SERVING probe ends an ejection before its backoff is over
    /// (default true). Right for nodes: a restarted process answering its
    /// health check is back. Wrong for node x tenant-shard pairs, whose
    /// failures are errors the node itself sent while saying SERVING (a
    /// service answering wrongly): there a probe only counts on probation,
    /// or the pair would flap at the probe rate.
    pub probe_ends_ejection: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            trial_timeout: Duration::from_secs(2),
            trial_spacing: Duration::from_millis(25),
            readmit_successes: 3,
            forget_after: Duration::from_secs(60),
            probe_ends_ejection: true,
        }
    }
}

/// How a key looks to replica selection right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serve normally.
    Healthy,
    /// Backoff over; `trial_available` says whether a trial request may be
    /// sent now (false while one is in flight).
    Probation {
        /// Whether [`OutlierDetector::try_begin_trial`] would succeed now.
        trial_available: bool,
    },
    /// Ejected until the given instant.
    Ejected {
        /// When the backoff ends (then the key is on probation).
        until: Instant,
    },
}

impl Health {
    /// The less healthy of two views (node-level and shard-level): ejected
    /// beats probation beats healthy; between two ejections the later end
    /// wins; a probation without a free trial beats one with.
    pub fn worst(self, other: Health) -> Health {
        use Health::*;
        match (self, other) {
            (Ejected { until: a }, Ejected { until: b }) => Ejected { until: a.max(b) },
            (e @ Ejected { .. }, _) | (_, e @ Ejected { .. }) => e,
            (Probation { trial_available: a }, Probation { trial_available: b }) => Probation {
                trial_available: a && b,
            },
            (p @ Probation { .. }, _) | (_, p @ Probation { .. }) => p,
            (Healthy, Healthy) => Healthy,
        }
    }

    /// Whether a request may be sent without first winning a trial.
    pub fn is_healthy(self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// Result of an active health probe (`grpc.health.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// `SERVING`: re-admits an ejected key at once.
    Serving,
    /// `NOT_SERVING` / `SERVICE_UNKNOWN`: the key says it is down; ejects at
    /// once (no need to wait for three failed queries).
    NotServing,
    /// The probe itself failed (timeout, connection refused): counts as one
    /// failure, like a failed request.
    Error,
}

/// A state change worth a log line or a metric (see [`report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed state (counts may have moved).
    None,
    /// The key was ejected for `backoff`; `ejections` counts this one.
    Ejected {
        /// Length of this ejection.
        backoff: Duration,
        /// How many ejections in a row (since the count was last forgotten).
        ejections: u32,
    },
    /// The key was ejected or on probation and is healthy again.
    Readmitted,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Healthy {
        failures: u32,
    },
    Ejected {
        until: Instant,
    },
    Probation {
        /// The start of the trial in flight, if any.
        trial_started: Option<Instant>,
        /// The start of the latest trial (for `trial_spacing`).
        last_trial: Option<Instant>,
        /// Successes in a row since the probation began.
        successes: u32,
    },
}

/// A probation that has seen `successes` successes and no trial yet.
fn probation(successes: u32) -> State {
    State::Probation {
        trial_started: None,
        last_trial: None,
        successes,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    ejections: u32,
    healthy_since: Option<Instant>,
}

impl Entry {
    /// Ejected turns into Probation by the passing of time alone; doing it
    /// lazily here means no timer per key.
    fn settle(&mut self, now: Instant) {
        if let State::Ejected { until } = self.state {
            if now >= until {
                self.state = probation(0);
            }
        }
    }

    fn eject(&mut self, cfg: &OutlierConfig, now: Instant) -> Transition {
        if self
            .healthy_since
            .is_some_and(|since| now.saturating_duration_since(since) >= cfg.forget_after)
        {
            self.ejections = 0;
        }
        self.ejections = self.ejections.saturating_add(1);
        let doublings = self.ejections.saturating_sub(1).min(31);
        let backoff = cfg
            .base_ejection
            .saturating_mul(1u32 << doublings)
            .min(cfg.max_ejection);
        // checked: a configured `max_ejection` of years must not panic.
        let until = now
            .checked_add(backoff)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        self.state = State::Ejected { until };
        self.healthy_since = None;
        Transition::Ejected {
            backoff,
            ejections: self.ejections,
        }
    }

    fn readmit(&mut self, now: Instant) -> Transition {
        self.state = State::Healthy { failures: 0 };
        self.healthy_since = Some(now);
        Transition::Readmitted
    }

    /// One more success on probation (a trial's, or a probe's): re-admits
    /// after `readmit_successes` in a row, else frees the next trial.
    fn succeed_on_probation(&mut self, cfg: &OutlierConfig, now: Instant) -> Transition {
        let State::Probation {
            successes,
            last_trial,
            ..
        } = self.state
        else {
            return Transition::None;
        };
        let successes = successes.saturating_add(1);
        if successes >= cfg.readmit_successes {
            return self.readmit(now);
        }
        self.state = State::Probation {
            trial_started: None,
            last_trial,
            successes,
        };
        Transition::None
    }

    fn health(&self, cfg: &OutlierConfig, now: Instant) -> Health {
        match self.state {
            State::Healthy { .. } => Health::Healthy,
            State::Ejected { until } if now < until => Health::Ejected { until },
            State::Ejected { .. } => Health::Probation {
                trial_available: true,
            },
            State::Probation {
                trial_started,
                last_trial,
                ..
            } => Health::Probation {
                trial_available: trial_started
                    .is_none_or(|t| now.saturating_duration_since(t) >= cfg.trial_timeout)
                    && last_trial
                        .is_none_or(|t| now.saturating_duration_since(t) >= cfg.trial_spacing),
            },
        }
    }

    /// Whether the entry carries no information and can be dropped.
    fn is_blank(&self, cfg: &OutlierConfig, now: Instant) -> bool {
        matches!(self.state, State::Healthy { failures: 0 })
            && (self.ejections == 0
                || self
                    .healthy_since
                    .is_some_and(|s| now.saturating_duration_since(s) >= cfg.forget_after))
    }
}

/// One key's state for the admin status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSnapshot<K> {
    /// The key.
    pub key: K,
    /// Its health now.
    pub health: Health,
    /// Failures in a row while healthy.
    pub consecutive_failures: u32,
    /// Ejections counted towards the backoff.
    pub ejections: u32,
}

/// Tracks health per key; see the module docs for the state machine.
#[derive(Debug)]
pub struct OutlierDetector<K: Eq + Hash> {
    cfg: OutlierConfig,
    entries: IdMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> OutlierDetector<K> {
    /// A detector with the given tunables. A `consecutive_failures` of 0 is
    /// treated as 1.
    pub fn new(cfg: OutlierConfig) -> Self {
        OutlierDetector {
            cfg: OutlierConfig {
                consecutive_failures: cfg.consecutive_failures.max(1),
                readmit_successes: cfg.readmit_successes.max(1),
                ..cfg
            },
            entries: IdMap::default(),
        }
    }

    /// The tunables in force.
    pub fn config(&self) -> &OutlierConfig {
        &self.cfg
    }

    /// The key's health now (read-only; cheap when the key is healthy).
    pub fn health(&self, key: &K) -> Health {
        match self.entries.get(key) {
            None => Health::Healthy,
            Some(e) => e.health(&self.cfg, Instant::now()),
        }
    }

    /// Claims the probation trial. Call before sending to a key whose health
    /// is `Probation`; only one caller gets `true` per trial. Healthy keys
    /// always return `true`, ejected keys `false`.
    pub fn try_begin_trial(&self, key: &K) -> bool {
        let Some(mut e) = self.entries.get_mut(key) else {
            return true;
        };
        let now = Instant::now();
        e.settle(now);
        match e.health(&self.cfg, now) {
            Health::Healthy => true,
            Health::Ejected { .. }
            | Health::Probation {
                trial_available: false,
            } => false,
            Health::Probation {
                trial_available: true,
            } => {
                if let State::Probation { successes, .. } = e.state {
                    e.state = State::Probation {
                        trial_started: Some(now),
                        last_trial: Some(now),
                        successes,
                    };
                }
                true
            }
        }
    }

    /// A call to `key` succeeded (or failed in a way that proves the key
    /// works, like INVALID_ARGUMENT; see `retry::HealthSignal`).
    pub fn record_success(&self, key: &K) -> Transition {
        // Fast path: nothing recorded means nothing to reset.
        if !self.entries.contains_key(key) {
            return Transition::None;
        }
        let now = Instant::now();
        let mut drop_entry = false;
        let transition = match self.entries.get_mut(key) {
            None => Transition::None,
            Some(mut e) => {
                e.settle(now);
                let t = match e.state {
                    State::Healthy { .. } => {
                        e.state = State::Healthy { failures: 0 };
                        Transition::None
                    }
                    // A late answer to a call sent before the ejection says
                    // little about the node now; wait for the trial or probe.
                    State::Ejected { .. } => Transition::None,
                    State::Probation { .. } => e.succeed_on_probation(&self.cfg, now),
                };
                drop_entry = e.is_blank(&self.cfg, now);
                t
            }
        };
        if drop_entry {
            self.entries
                .remove_if(key, |_, e| e.is_blank(&self.cfg, now));
        }
        transition
    }

    /// A call to `key` failed in a way that blames it.
    pub fn record_failure(&self, key: &K) -> Transition {
        let now = Instant::now();
        let mut e = self.entries.entry(key.clone()).or_insert(Entry {
            state: State::Healthy { failures: 0 },
            ejections: 0,
            healthy_since: None,
        });
        e.settle(now);
        match e.state {
            State::Healthy { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.cfg.consecutive_failures {
                    e.eject(&self.cfg, now)
                } else {
                    e.state = State::Healthy { failures };
                    Transition::None
                }
            }
            // Already ejected: failures of calls in flight before the
            // ejection must not extend it.
            State::Ejected { .. } => Transition::None,
            State::Probation { .. } => e.eject(&self.cfg, now),
        }
    }

    /// Applies an active probe's result.
    pub fn record_probe(&self, key: &K, result: ProbeResult) -> Transition {
        match result {
            ProbeResult::Error => self.record_failure(key),
            ProbeResult::Serving => {
                let now = Instant::now();
                match self.entries.get_mut(key) {
                    None => Transition::None,
                    Some(mut e) => {
                        e.settle(now);
                        match e.state {
                            // A probe says the process answers, not that
                            // queries work, so it does not reset a run of
                            // query failures.
                            State::Healthy { .. } => Transition::None,
                            State::Ejected { .. } if !self.cfg.probe_ends_ejection => {
                                Transition::None
                            }
                            State::Ejected { .. } => {
                                e.state = probation(0);
                                e.succeed_on_probation(&self.cfg, now)
                            }
                            State::Probation { .. } => e.succeed_on_probation(&self.cfg, now),
                        }
                    }
                }
            }
            ProbeResult::NotServing => {
                let now = Instant::now();
                let mut e = self.entries.entry(key.clone()).or_insert(Entry {
                    state: State::Healthy { failures: 0 },
                    ejections: 0,
                    healthy_since: None,
                });
                e.settle(now);
                match e.state {
                    State::Ejected { .. } => Transition::None,
                    State::Healthy { .. } | State::Probation { .. } => e.eject(&self.cfg, now),
                }
            }
        }
    }

    /// Forgets `key` (e.g. a node removed from the catalog).
    pub fn forget(&self, key: &K) {
        self.entries.remove(key);
    }

    /// Keeps only keys for which `keep` is true (catalog reload clean-up).
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    /// Every key with recorded state (healthy keys without failures are
    /// absent), for the admin status page.
    pub fn snapshot(&self) -> Vec<OutlierSnapshot<K>> {
        let now = Instant::now();
        self.entries
            .iter()
            .map(|e| OutlierSnapshot {
                key: e.key().clone(),
                health: e.health(&self.cfg, now),
                consecutive_failures: match e.state {
                    State::Healthy { failures } => failures,
                    _ => 0,
                },
                ejections: e.ejections,
            })
            .collect()
    }
}

impl<K: Eq + Hash + Clone> Default for OutlierDetector<K> {
    fn default() -> Self {
        OutlierDetector::new(OutlierConfig::default())
    }
}

/// Whether a transition is about a whole node or one node x tenant-shard
/// pair (the `scope` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole node.
    Node,
    /// The node's replica of one tenant shard.
    Shard,
}

/// Logs and counts an ejection or a re-admission. `by` says what noticed
/// it (a query to an `index` or `model` node, or a health `probe`);
/// `(tenant, shard)` is the call's, for the log line, whatever the scope.
pub fn report(
    transition: Transition,
    by: &'static str,
    node: &str,
    (tenant, shard): (&str, u32),
    scope: Scope,
) {
    let scope = match scope {
        Scope::Node => "node",
        Scope::Shard => "shard",
    };
    match transition {
        Transition::Ejected { backoff, ejections } => {
            metrics::counter!("router_ejections_total", "kind" => by, "scope" => scope)
                .increment(1);
            tracing::warn!(
                node,
                tenant,
                shard,
                scope,
                by,
                backoff_ms = backoff.as_millis() as u64,
                ejections,
                "endpoint ejected"
            );
        }
        Transition::Readmitted => {
            metrics::counter!("router_readmissions_total", "kind" => by).increment(1);
            tracing::info!(node, tenant, shard, scope, by, "endpoint re-admitted");
        }
        Transition::None => {}
    }
}

pub mod escalation;

#[cfg(test)]
mod tests;
