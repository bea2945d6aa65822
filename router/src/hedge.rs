//! Adaptive hedging delay: how long to wait for a replica before asking the
//! next one too.
//!
//! The delay is the replica's recent p95 latency (so about one call in twenty
//! is hedged when the replica behaves as usual, and a replica that stops
//! answering is hedged after what its p95 said), clamped to a floor and a
//! ceiling, with a fixed default while the replica has too little history.
//!
//! Defaults, for this fleet (loopback or one zone: a unary gRPC round trip is
//! ~0.2 ms and a shard search ~0.1-0.3 ms, p95 under load a few ms):
//! - floor 2 ms: below that, a "slow" call is usually scheduler jitter on a
//!   busy 2-core box, and hedging it doubles work for nothing. At an idle
//!   p95 of ~0.5 ms it means a call is hedged once it is ~4x late.
//! - ceiling 50 ms: whatever the history says (a replica slow for a while, a
//!   p95 polluted by a GC pause), a hung replica costs at most this before
//!   the next one is asked; well under typical deadlines (hundreds of ms).
//! - default 10 ms without history (fewer than `StatsConfig::min_p95_samples`
//!   answers): cautious enough not to hedge a cold replica's first, slower
//!   calls (connection set-up, cold caches), quick enough for a hung one.
//!
//! Hedges also spend the retry budget (`budget`), so a fleet-wide slowdown
//! that pushes everything past its p95 cannot double the load.

use std::time::Duration;

use crate::endpoint_stats::EndpointStats;

/// Hedging delay policy. Construct with [`HedgePolicy::new`] to have the
/// bounds checked, or use the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    floor: Duration,
    ceiling: Duration,
    default_delay: Duration,
}

/// Inconsistent hedging bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hedging bounds must satisfy floor <= default <= ceiling, got floor {floor:?}, default {default_delay:?}, ceiling {ceiling:?}")]
pub struct HedgeConfigError {
    /// The floor given.
    pub floor: Duration,
    /// The default given.
    pub default_delay: Duration,
    /// The ceiling given.
    pub ceiling: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        HedgePolicy {
            floor: Duration::from_millis(2),
            ceiling: Duration::from_millis(50),
            default_delay: Duration::from_millis(10),
        }
    }
}

impl HedgePolicy {
    /// A policy with the given bounds; `floor <= default_delay <= ceiling`.
    pub fn new(
        floor: Duration,
        default_delay: Duration,
        ceiling: Duration,
    ) -> Result<Self, HedgeConfigError> {
        if floor <= default_delay && default_delay <= ceiling {
            Ok(HedgePolicy {
                floor,
                ceiling,
                default_delay,
            })
        } else {
            Err(HedgeConfigError {
                floor,
                default_delay,
                ceiling,
            })
        }
    }

    /// The floor.
    pub fn floor(&self) -> Duration {
        self.floor
    }

    /// The ceiling.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The delay used without history.
    pub fn default_delay(&self) -> Duration {
        self.default_delay
    }

    /// The hedging delay for a replica whose recent p95 is `p95` (`None`:
    /// not enough history).
    pub fn delay(&self, p95: Option<Duration>) -> Duration {
        match p95 {
            // max-then-min rather than `clamp`, which panics on bad bounds.
            Some(p95) => p95.max(self.floor).min(self.ceiling),
            None => self.default_delay,
        }
    }

    /// The hedging delay for a replica with these statistics (`None`: the
    /// replica has none yet).
    pub fn delay_for(&self, stats: Option<&EndpointStats>) -> Duration {
        self.delay(stats.and_then(EndpointStats::p95))
    }

    /// The delay if a hedge still has a chance to help: `None` when the
    /// delay is at least the time left of the caller's deadline (the hedge
    /// would start after the caller gave up).
    pub fn delay_within(&self, p95: Option<Duration>, remaining: Duration) -> Option<Duration> {
        let delay = self.delay(p95);
        (delay < remaining).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;
    use crate::endpoint_stats::StatsConfig;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn clamps_p95_and_defaults_without_history() {
        let p = HedgePolicy::default();
        assert_eq!(p.delay(None), ms(10));
        assert_eq!(p.delay(Some(Duration::from_micros(300))), ms(2));
        assert_eq!(p.delay(Some(ms(7))), ms(7));
        assert_eq!(p.delay(Some(Duration::from_secs(3))), ms(50));
        assert_eq!(p.delay_for(None), ms(10));
        assert_eq!(
            (p.floor(), p.default_delay(), p.ceiling()),
            (ms(2), ms(10), ms(50))
        );
    }

    #[test]
    fn bounds_are_checked() {
        assert!(HedgePolicy::new(ms(5), ms(4), ms(10)).is_err());
        assert!(HedgePolicy::new(ms(5), ms(20), ms(10)).is_err());
        let p = HedgePolicy::new(ms(1), ms(1), ms(1)).expect("equal bounds are fine");
        assert_eq!(p.delay(Some(ms(100))), ms(1));
    }

    #[test]
    fn no_hedge_past_the_deadline() {
        let p = HedgePolicy::default();
        assert_eq!(p.delay_within(Some(ms(4)), ms(100)), Some(ms(4)));
        assert_eq!(p.delay_within(Some(ms(4)), ms(4)), None);
        assert_eq!(p.delay_within(None, ms(3)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_replicas_recent_p95() {
        let p = HedgePolicy::default();
        let stats = Arc::new(EndpointStats::new(StatsConfig::default()));
        for _ in 0..19 {
            stats.record_success(ms(3));
        }
        assert_eq!(p.delay_for(Some(&stats)), ms(10), "too little history");
        stats.record_success(ms(3));
        assert_eq!(p.delay_for(Some(&stats)), ms(3));
        // The replica gets slower: within a window the p95 follows.
        for _ in 0..64 {
            stats.record_success(ms(20));
        }
        assert_eq!(p.delay_for(Some(&stats)), ms(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_is_hedged_after_the_delay() {
        let p = HedgePolicy::default();
        let stats = Arc::new(EndpointStats::new(StatsConfig::default()));
        for _ in 0..40 {
            stats.record_success(ms(4));
        }
        let delay = p.delay_for(Some(&stats));
        let start = Instant::now();
        let hung = std::future::pending::<()>();
        let outcome = tokio::select! {
            _ = hung => "answered",
            _ = tokio::time::sleep(delay) => "hedged",
        };
        assert_eq!(outcome, "hedged");
        assert_eq!(start.elapsed(), ms(4));
        // A call that answers before the delay is not hedged.
        let quick = async {
            tokio::time::sleep(ms(1)).await;
        };
        let outcome = tokio::select! {
            _ = quick => "answered",
            _ = tokio::time::sleep(delay) => "hedged",
        };
        assert_eq!(outcome, "answered");
    }
}
