//! A per-tenant token bucket for clicks: `rate` per second on average,
//! bursts up to one second's worth. Each router limits on its own, so a
//! tenant's ceiling in a region is the rate times its routers.
//!
//! States of one tenant's bucket: **full** (`rate` tokens), **draining**
//! (clicks take tokens faster than they refill), **empty** (a click is
//! refused until a token has refilled).

use std::sync::Mutex;

use dashmap::DashMap;
use tokio::time::Instant;

/// See the module documentation.
#[derive(Debug)]
pub struct ClickLimiter {
    rate: f64,
    buckets: DashMap<String, Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ClickLimiter {
    /// A limiter allowing `rate_per_sec` clicks per tenant (0: none).
    pub fn new(rate_per_sec: u32) -> Self {
        Self {
            rate: f64::from(rate_per_sec),
            buckets: DashMap::new(),
        }
    }

    /// Takes a token of `tenant`'s bucket; false when it is empty.
    pub fn allow(&self, tenant: &str) -> bool {
        let now = Instant::now();
        // A tenant's first clicks race to make its bucket: one wins.
        let entry = match self.buckets.get(tenant) {
            Some(entry) => entry,
            None => self
                .buckets
                .entry(tenant.to_string())
                .or_insert_with(|| {
                    Mutex::new(Bucket {
                        tokens: self.rate,
                        at: now,
                    })
                })
                .downgrade(),
        };
        let mut b = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_one_seconds_worth_then_the_rate() {
        let limiter = ClickLimiter::new(10);
        let allowed = (0..25).filter(|_| limiter.allow("t1")).count();
        assert_eq!(allowed, 10, "full bucket, then empty");
        assert!(limiter.allow("t2"), "tenants have buckets of their own");
        tokio::time::advance(Duration::from_millis(500)).await;
        let allowed = (0..25).filter(|_| limiter.allow("t1")).count();
        assert_eq!(allowed, 5, "half a second refills half");
        tokio::time::advance(Duration::from_secs(60)).await;
        let allowed = (0..25).filter(|_| limiter.allow("t1")).count();
        assert_eq!(allowed, 10, "never more than a second's worth");
        assert!(!ClickLimiter::new(0).allow("t1"), "rate 0 refuses all");
    }
}
