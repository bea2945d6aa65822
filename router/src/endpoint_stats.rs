//! Per-endpoint load and latency statistics, lock-free on the hot path.
//!
//! Every endpoint (node id) has an [`EndpointStats`] made of atomics: the
//! in-flight count (held by an RAII [`InFlight`] guard so an early return or
//! a cancelled hedge can never leak a count), a peak-EWMA latency estimate for
//! replica choice, a small ring of recent latencies for the p95 that sets the
//! hedging delay, and success/failure counters for the status page. The
//! [`StatsRegistry`] maps node ids to them in a `DashMap`; callers on the hot
//! path clone the `Arc<EndpointStats>` once per call and touch only atomics.
//!
//! Statistics are per node, not per tenant shard: load is a property of the
//! node, and a per-(node, tenant) map would not fit 100k tenants.
//!
//! The EWMA is the peak-EWMA of Finagle / linkerd / tower: a sample above the
//! estimate replaces it at once (a node turning slow is noticed on the first
//! slow answer), a sample below it pulls it down with a weight that depends on
//! the time since the previous sample (`1 - exp(-dt / decay)`), so recovery
//! takes about `decay` of wall time whatever the request rate. An estimate
//! older than `stale_after` is reported as absent, so a node that was slow
//! once and then got no traffic is not shunned forever: replica choice treats
//! "absent" as "like its peers" (see `replicas`). Concurrent updates may
//! interleave and lose a sample; statistics tolerate that, locks would not.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::IdMap;
use tokio::time::Instant;

/// Latencies kept for the p95 estimate. 64 answers are a few milliseconds of
/// traffic on a busy node and still "recent" on a quiet one; p95 of 64 is the
/// 4th-largest sample, so a single outlier does not move it.
pub const WINDOW: usize = 64;

/// Tunables of the estimators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsConfig {
    /// EWMA time constant (default 1 s: a recovered node looks recovered
    /// about a second later, in line with outlier re-admission).
    pub decay: Duration,
    /// Age after which the EWMA counts as absent (default 5 s: by then a new
    /// sample would outweigh the old estimate by e^5 anyway).
    pub stale_after: Duration,
    /// Samples needed before a p95 is reported (default 20); below that the
    /// hedging policy uses its default delay.
    pub min_p95_samples: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            decay: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
            min_p95_samples: 20,
        }
    }
}

/// Statistics of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    cfg: StatsConfig,
    /// Origin for the nanosecond timestamps stored in atomics.
    epoch: Instant,
    in_flight: AtomicU32,
    /// `f64` nanoseconds, as bits.
    ewma_bits: AtomicU64,
    ewma_at: AtomicU64,
    seeded: AtomicBool,
    window: [AtomicU32; WINDOW],
    recorded: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
}

/// A point-in-time copy for the admin status page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    /// Calls in flight now.
    pub in_flight: u32,
    /// Current latency estimate, if fresh.
    pub ewma: Option<Duration>,
    /// Recent p95, if enough samples.
    pub p95: Option<Duration>,
    /// Successful calls since start.
    pub successes: u64,
    /// Failed calls since start.
    pub failures: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl EndpointStats {
    /// Fresh statistics (no samples, nothing in flight).
    pub fn new(cfg: StatsConfig) -> Self {
        EndpointStats {
            cfg,
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            ewma_bits: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            seeded: AtomicBool::new(false),
            window: std::array::from_fn(|_| AtomicU32::new(0)),
            recorded: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Marks a call as started; the count drops when the guard does.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight {
            stats: Arc::clone(self),
            started: Instant::now(),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Records a successful call's latency (EWMA, p95 window, counter).
    pub fn record_success(&self, latency: Duration) {
        self.successes.fetch_add(1, Relaxed);
        self.observe(latency, false);
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let slot = self.recorded.fetch_add(1, Relaxed) % WINDOW as u64;
        self.window[slot as usize].store(micros, Relaxed);
    }

    /// Records a failed call. Its latency, when known, may raise the EWMA (a
    /// node that fails slowly is also slow) but never lowers it: a node that
    /// fails fast must not look fast and attract more traffic. It does not
    /// enter the p95 window, which describes answers worth waiting for.
    pub fn record_failure(&self, latency: Option<Duration>) {
        self.failures.fetch_add(1, Relaxed);
        if let Some(latency) = latency {
            self.observe(latency, true);
        }
    }

    /// Records that a call was abandoned after `elapsed` (a hedge loser or a
    /// caller cancellation): its latency is at least `elapsed`, so it may
    /// raise the estimate but never lower it.
    pub fn record_abandoned(&self, elapsed: Duration) {
        self.observe(elapsed, true);
    }

    fn observe(&self, latency: Duration, lower_bound: bool) {
        let now = nanos(Instant::now().saturating_duration_since(self.epoch));
        let sample = nanos(latency) as f64;
        let seeded = self.seeded.load(Relaxed);
        if lower_bound {
            // A lower bound may only raise an existing estimate; seeding from
            // one would make an unknown endpoint look falsely fast.
            if !seeded {
                return;
            }
            let mut current = self.ewma_bits.load(Relaxed);
            while sample > f64::from_bits(current) {
                match self.ewma_bits.compare_exchange_weak(
                    current,
                    sample.to_bits(),
                    Relaxed,
                    Relaxed,
                ) {
                    Ok(_) => {
                        self.ewma_at.store(now, Relaxed);
                        return;
                    }
                    Err(actual) => current = actual,
                }
            }
            return;
        }
        let decay = nanos(self.cfg.decay).max(1) as f64;
        let prev_at = self.ewma_at.swap(now, Relaxed);
        let weight = (-(now.saturating_sub(prev_at) as f64) / decay).exp();
        let mut current = self.ewma_bits.load(Relaxed);
        loop {
            let estimate = f64::from_bits(current);
            let next = if !seeded || sample > estimate {
                sample
            } else {
                estimate * weight + sample * (1.0 - weight)
            };
            match self
                .ewma_bits
                .compare_exchange_weak(current, next.to_bits(), Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.seeded.store(true, Relaxed);
    }

    /// The latency estimate, or `None` when there is no sample younger than
    /// `stale_after` (replica choice then treats the endpoint like its peers).
    pub fn ewma(&self) -> Option<Duration> {
        if !self.seeded.load(Relaxed) {
            return None;
        }
        let now = nanos(Instant::now().saturating_duration_since(self.epoch));
        let age = now.saturating_sub(self.ewma_at.load(Relaxed));
        if age > nanos(self.cfg.stale_after) {
            return None;
        }
        let ns = f64::from_bits(self.ewma_bits.load(Relaxed));
        // `as` saturates for huge or NaN values instead of panicking.
        Some(Duration::from_nanos(ns as u64))
    }

    /// The `q` quantile (0..=1) of the recent-latency window, or `None` with
    /// fewer than `min_p95_samples` samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = usize::try_from(self.recorded.load(Relaxed))
            .unwrap_or(usize::MAX)
            .min(WINDOW);
        if n == 0 || n < self.cfg.min_p95_samples {
            return None;
        }
        let mut samples = [0u32; WINDOW];
        for (dst, src) in samples.iter_mut().zip(&self.window).take(n) {
            *dst = src.load(Relaxed);
        }
        let samples = &mut samples[..n];
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Nearest-rank: the smallest sample with at least q of them at or
        // below it.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        let (_, v, _) = samples.select_nth_unstable(rank);
        Some(Duration::from_micros(u64::from(*v)))
    }

    /// Recent p95 latency (see [`EndpointStats::quantile`]).
    pub fn p95(&self) -> Option<Duration> {
        self.quantile(0.95)
    }

    /// A copy of everything, for status output.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            in_flight: self.in_flight(),
            ewma: self.ewma(),
            p95: self.p95(),
            successes: self.successes.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// An in-flight call. Dropping it decrements the count without recording an
/// outcome (a cancelled call says nothing about the endpoint); the consuming
/// methods record one and report the latency they measured.
#[derive(Debug)]
#[must_use = "dropping the guard at once ends the call's in-flight count"]
pub struct InFlight {
    stats: Arc<EndpointStats>,
    started: Instant,
}

impl InFlight {
    /// Time since the call started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The endpoint's statistics.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }

    /// Ends the call as a success; returns its latency.
    pub fn success(self) -> Duration {
        let latency = self.elapsed();
        self.stats.record_success(latency);
        latency
    }

    /// Ends the call as a failure that blames the endpoint; returns its
    /// latency.
    pub fn failure(self) -> Duration {
        let latency = self.elapsed();
        self.stats.record_failure(Some(latency));
        latency
    }

    /// Ends a call that was abandoned (hedge loser, caller gone); see
    /// [`EndpointStats::record_abandoned`].
    pub fn abandon(self) -> Duration {
        let elapsed = self.elapsed();
        self.stats.record_abandoned(elapsed);
        elapsed
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Node id -> statistics.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    cfg: StatsConfig,
    map: IdMap<Arc<str>, Arc<EndpointStats>>,
}

impl StatsRegistry {
    /// An empty registry whose endpoints use `cfg`.
    pub fn new(cfg: StatsConfig) -> Self {
        StatsRegistry {
            cfg,
            map: IdMap::default(),
        }
    }

    /// The statistics of `node`, if it has any yet.
    pub fn get(&self, node: &str) -> Option<Arc<EndpointStats>> {
        self.map.get(node).map(|s| Arc::clone(&s))
    }

    /// The statistics of `node`, created on first use.
    pub fn get_or_create(&self, node: &Arc<str>) -> Arc<EndpointStats> {
        if let Some(s) = self.map.get(&**node) {
            return Arc::clone(&s);
        }
        Arc::clone(
            &self
                .map
                .entry(Arc::clone(node))
                .or_insert_with(|| Arc::new(EndpointStats::new(self.cfg))),
        )
    }

    /// Drops nodes for which `keep` is false (catalog reload clean-up).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    /// Every node's statistics, for status output.
    pub fn snapshot(&self) -> Vec<(Arc<str>, StatsSnapshot)> {
        self.map
            .iter()
            .map(|e| (Arc::clone(e.key()), e.value().snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
