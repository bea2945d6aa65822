//! An adaptive limit on the searches a router serves at once.
//!
//! A router past its capacity that keeps accepting calls serves them all
//! late: each waits behind the others for the CPU and the index-nodes'
//! queues, the successful ones' latency climbs to the callers' deadline
//! and the goodput falls. Refusing the excess at once, while the calls
//! admitted run at the latency of a busy but not drowning router, keeps
//! the goodput close to capacity.
//!
//! The limit moves with what the router sees, one window (100 ms by
//! default) at a time, in the manner of Netflix's gradient limiter:
//!
//! - **baseline**: the window's average latency when the router was not
//!   held back by the limit (fewer than half of the permits in use). It
//!   falls at once to a lower average and rises slowly (a tenth of the
//!   difference per window) to a higher one, and never moves while the
//!   limit binds, so a sustained overload cannot teach it that drowning is
//!   normal;
//! - **shrink** when an index-node shed one of the window's calls (by a
//!   tenth), or when the window's average exceeds `tolerance` x the
//!   baseline (toward the concurrency that would bring it back, by at most
//!   a tenth per window);
//! - **grow** by the limit's square root when the window used at least half
//!   of the permits and latency was within tolerance;
//! - never below `min` (the concurrency at which a router of this kind is
//!   known to serve well) nor above `max`.
//!
//! [`AdaptiveLimit::try_acquire`] takes a permit or refuses at once; the
//! permit reports the call's latency and whether it was shed when it is
//! finished.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The limit's tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    /// The limit never goes below this.
    pub min: usize,
    /// ... nor above this.
    pub max: usize,
    /// Where it starts.
    pub initial: usize,
    /// How long one window of samples lasts.
    pub window: Duration,
    /// How many times the baseline latency a window's average may reach
    /// before the limit shrinks.
    pub tolerance: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            min: 16,
            max: 1000,
            initial: 64,
            window: Duration::from_millis(100),
            tolerance: 2.0,
        }
    }
}

/// A window closes only with at least this many samples (a quiet router's
/// odd call says little).
const MIN_SAMPLES: u32 = 8;

/// How a finished call went, for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Answered, or ran out of its deadline: its latency is the router's.
    Served,
    /// An index-node shed it: the data is overloaded.
    Shed,
    /// Failed otherwise (UNAVAILABLE after per-try timeouts on an
    /// unreachable region, a bad request): its latency says nothing of
    /// the router's load, and is not counted. A tenant whose replicas hang
    /// must not make the router shed everyone else.
    Failed,
}

/// See the module documentation.
#[derive(Debug)]
pub struct AdaptiveLimit {
    cfg: LimitConfig,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    samples: u32,
    total: Duration,
    shed: bool,
    peak_in_flight: usize,
    baseline: Option<Duration>,
    /// The limit as a real number (the atomic holds it rounded).
    limit: f64,
}

/// A call admitted under the limit. [`Permit::finish`] reports it; a
/// permit dropped unfinished (the caller went away) frees its place and
/// reports nothing.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<AdaptiveLimit>,
    started: Instant,
    in_flight: usize,
}

impl AdaptiveLimit {
    /// A limit with the given tunables (`min` at least 1, `initial` and
    /// `max` at least `min`).
    pub fn new(cfg: LimitConfig) -> Arc<Self> {
        let min = cfg.min.max(1);
        let max = cfg.max.max(min);
        let cfg = LimitConfig {
            min,
            max,
            initial: cfg.initial.clamp(min, max),
            ..cfg
        };
        Arc::new(Self {
            cfg,
            limit: AtomicUsize::new(cfg.initial),
            in_flight: AtomicUsize::new(0),
            window: Mutex::new(Window {
                started: Instant::now(),
                samples: 0,
                total: Duration::ZERO,
                shed: false,
                peak_in_flight: 0,
                baseline: None,
                limit: cfg.initial as f64,
            }),
        })
    }

    /// The limit now.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Calls admitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A permit if fewer than the limit are in flight, else `None` at once.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.current();
        let in_flight = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Permit {
            limit: self.clone(),
            started: Instant::now(),
            in_flight: in_flight + 1,
        })
    }

    fn record(&self, latency: Duration, how: Finished, in_flight: usize) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.samples += 1;
        w.total += latency;
        w.shed |= how == Finished::Shed;
        w.peak_in_flight = w.peak_in_flight.max(in_flight);
        let now = Instant::now();
        if now.duration_since(w.started) < self.cfg.window || w.samples < MIN_SAMPLES {
            return;
        }
        self.adjust(&mut w);
        self.limit
            .store(w.limit.round() as usize, Ordering::Relaxed);
        metrics::gauge!("router_admission_limit").set(w.limit.round());
        w.started = now;
        w.samples = 0;
        w.total = Duration::ZERO;
        w.shed = false;
        w.peak_in_flight = 0;
    }

    /// Closes a window: the rules of the module documentation.
    fn adjust(&self, w: &mut Window) {
        let average = w.total / w.samples;
        let limit = w.limit;
        let bound = w.peak_in_flight as f64 * 2.0 >= limit;
        let baseline = match w.baseline {
            None => average,
            Some(b) if average < b => average,
            Some(b) if !bound => b + (average - b) / 10,
            Some(b) => b,
        };
        w.baseline = Some(baseline);
        let allowed = baseline.as_secs_f64() * self.cfg.tolerance;
        let next = if w.shed {
            limit * 0.9
        } else if average.as_secs_f64() > allowed {
            let gradient = (allowed / average.as_secs_f64()).max(0.5);
            limit * 0.9 + limit * gradient * 0.1
        } else if bound {
            limit + limit.sqrt()
        } else {
            limit
        };
        w.limit = next.clamp(self.cfg.min as f64, self.cfg.max as f64);
    }
}

impl Permit {
    /// Reports the call's outcome and frees its place.
    pub fn finish(self, how: Finished) {
        if how != Finished::Failed {
            self.limit
                .record(self.started.elapsed(), how, self.in_flight);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> Arc<AdaptiveLimit> {
        AdaptiveLimit::new(LimitConfig {
            min: 4,
            max: 100,
            initial: 16,
            ..LimitConfig::default()
        })
    }

    /// One window: idle, then `n` calls at once (as many as the limit
    /// admits), each taking `latency`, finished as the window ends.
    async fn window(l: &Arc<AdaptiveLimit>, n: usize, latency: Duration, how: Finished) {
        tokio::time::advance(l.cfg.window.saturating_sub(latency)).await;
        let permits: Vec<_> = (0..n).filter_map(|_| l.try_acquire()).collect();
        tokio::time::advance(latency).await;
        for p in permits {
            p.finish(how);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_past_the_limit_and_frees_places() {
        let l = limit();
        let held: Vec<_> = (0..16).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none(), "the 17th call is refused");
        assert_eq!(l.in_flight(), 16);
        drop(held);
        assert_eq!(l.in_flight(), 0);
        assert!(l.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn grows_while_used_and_fast() {
        let l = limit();
        for _ in 0..5 {
            let n = l.current();
            window(&l, n, Duration::from_millis(2), Finished::Served).await;
        }
        assert!(l.current() > 16, "grew to {}", l.current());
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_grow_when_not_used() {
        let l = limit();
        for _ in 0..5 {
            window(&l, 7, Duration::from_millis(2), Finished::Served).await;
        }
        assert_eq!(l.current(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn shrinks_when_latency_climbs_and_stops_at_min() {
        let l = limit();
        window(&l, 8, Duration::from_millis(2), Finished::Served).await;
        for _ in 0..40 {
            let n = l.current();
            window(&l, n, Duration::from_millis(20), Finished::Served).await;
        }
        assert_eq!(l.current(), 4, "down to min");
        // A sustained overload did not raise the baseline: the limit stays
        // down while the latency stays up.
        for _ in 0..40 {
            window(&l, 4, Duration::from_millis(20), Finished::Served).await;
        }
        assert_eq!(l.current(), 4);
        // Latency back to normal: the limit grows again.
        for _ in 0..10 {
            let n = l.current();
            window(&l, n.max(8), Duration::from_millis(2), Finished::Served).await;
        }
        assert!(l.current() > 4, "recovered to {}", l.current());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shed_from_a_node_shrinks_the_limit() {
        let l = limit();
        window(&l, 16, Duration::from_millis(2), Finished::Shed).await;
        assert_eq!(l.current(), 14, "16 x 0.9, rounded");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_failures_say_nothing_of_load() {
        let l = limit();
        window(&l, 8, Duration::from_millis(2), Finished::Served).await;
        let before = l.current();
        // Calls hanging on an unreachable region until they fail.
        for _ in 0..20 {
            let n = l.current();
            window(&l, n, Duration::from_millis(90), Finished::Failed).await;
        }
        assert_eq!(l.current(), before);
        // The same latency on answered calls is the router's own.
        for _ in 0..20 {
            let n = l.current();
            window(&l, n, Duration::from_millis(90), Finished::Served).await;
        }
        assert!(l.current() < before, "limit {}", l.current());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowly_slower_workload_moves_the_baseline() {
        let l = limit();
        window(&l, 8, Duration::from_millis(2), Finished::Served).await;
        // Unhurried windows at 5 ms (not held back by the limit) teach the
        // baseline the new normal; the limit does not shrink for it.
        for _ in 0..60 {
            window(&l, 8, Duration::from_millis(5), Finished::Served).await;
        }
        let n = l.current();
        window(&l, n, Duration::from_millis(5), Finished::Served).await;
        assert!(l.current() >= 16, "limit {}", l.current());
    }
}
