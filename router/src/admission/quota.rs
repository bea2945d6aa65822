//! Per-tenant search quotas: calls per second and calls at once.
//!
//! A tenant's quota in the catalog is for a whole region; each of the
//! region's routers enforces an even share of it (rounded up, so a quota
//! is never zero on a router), which is exact when a load balancer spreads
//! calls evenly over the routers, as a region's Service does. The rate is
//! a token bucket holding at most one second's share (a burst of a second's
//! worth is allowed, a sustained excess is not); the concurrency a counter
//! of the tenant's calls in flight on this router.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tandem_catalog::Quota;
use tokio::time::Instant;

/// Why a call was over its tenant's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// More calls per second than the tenant's share on this router.
    Rate,
    /// More calls at once than the tenant's share on this router.
    Concurrency,
}

impl Over {
    /// The caller's explanation.
    pub fn message(self) -> &'static str {
        match self {
            Over::Rate => "the tenant's search quota (searches_per_sec) is spent; retry later",
            Over::Concurrency => {
                "the tenant has its quota of searches in flight (concurrent_searches); retry later"
            }
        }
    }
}

/// Every tenant's use of its quota on this router.
#[derive(Debug, Default)]
pub struct Quotas {
    tenants: DashMap<Arc<str>, Arc<TenantUse>>,
}

#[derive(Debug)]
struct TenantUse {
    bucket: Mutex<Bucket>,
    in_flight: AtomicU32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// A call counted against its tenant's concurrency until dropped.
#[derive(Debug)]
pub struct QuotaPermit {
    tenant: Option<Arc<TenantUse>>,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        if let Some(t) = self.tenant.take() {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// This router's share of `total` when the region has `routers` routers.
fn share(total: u32, routers: usize) -> u32 {
    let routers = u32::try_from(routers.max(1)).unwrap_or(u32::MAX);
    total.div_ceil(routers)
}

impl Quotas {
    /// Admits one call of `tenant` under `quota` (none: always), the
    /// region having `routers` routers.
    pub fn try_acquire(
        &self,
        tenant: &Arc<str>,
        quota: Option<Quota>,
        routers: usize,
    ) -> Result<QuotaPermit, Over> {
        let Some(quota) = quota else {
            return Ok(QuotaPermit { tenant: None });
        };
        let used = self
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| {
                Arc::new(TenantUse {
                    bucket: Mutex::new(Bucket {
                        tokens: f64::MAX,
                        refilled: Instant::now(),
                    }),
                    in_flight: AtomicU32::new(0),
                })
            })
            .clone();
        if let Some(total) = quota.concurrent_searches {
            let limit = share(total, routers);
            used.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .map_err(|_| Over::Concurrency)?;
        } else {
            used.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let permit = QuotaPermit { tenant: Some(used) };
        if let Some(total) = quota.searches_per_sec {
            let rate = f64::from(share(total, routers));
            let used = permit.tenant.as_ref().expect("set above");
            let mut bucket = used.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let earned = now.duration_since(bucket.refilled).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + earned).min(rate);
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                return Err(Over::Rate);
            }
            bucket.tokens -= 1.0;
        }
        Ok(permit)
    }

    /// Forgets tenants that are not in `keep` (after a catalog change).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.tenants.retain(|t, _| keep(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn quota(rate: Option<u32>, concurrent: Option<u32>) -> Option<Quota> {
        Some(Quota {
            searches_per_sec: rate,
            concurrent_searches: concurrent,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_allows_a_seconds_burst_then_its_share_per_second() {
        let q = Quotas::default();
        let t: Arc<str> = Arc::from("t");
        // 20 per second in a region of two routers: 10 here.
        let admitted = (0..30)
            .filter(|_| q.try_acquire(&t, quota(Some(20), None), 2).is_ok())
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(
            q.try_acquire(&t, quota(Some(20), None), 2).unwrap_err(),
            Over::Rate
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        let admitted = (0..30)
            .filter(|_| q.try_acquire(&t, quota(Some(20), None), 2).is_ok())
            .count();
        assert_eq!(admitted, 5, "half a second earns half the share");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_counts_calls_in_flight() {
        let q = Quotas::default();
        let t: Arc<str> = Arc::from("t");
        let held: Vec<_> = (0..3)
            .map(|_| q.try_acquire(&t, quota(None, Some(3)), 1).unwrap())
            .collect();
        assert_eq!(
            q.try_acquire(&t, quota(None, Some(3)), 1).unwrap_err(),
            Over::Concurrency
        );
        // Another tenant is not affected.
        let other: Arc<str> = Arc::from("other");
        assert!(q.try_acquire(&other, quota(None, Some(3)), 1).is_ok());
        drop(held);
        assert!(q.try_acquire(&t, quota(None, Some(3)), 1).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_refused_for_its_rate_does_not_hold_a_place() {
        let q = Quotas::default();
        let t: Arc<str> = Arc::from("t");
        let both = quota(Some(1), Some(1));
        let first = q.try_acquire(&t, both, 1).unwrap();
        drop(first);
        assert_eq!(q.try_acquire(&t, both, 1).unwrap_err(), Over::Rate);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(q.try_acquire(&t, both, 1).is_ok());
    }

    #[test]
    fn shares_round_up() {
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(1, 4), 1);
        assert_eq!(share(7, 0), 7);
    }
}
