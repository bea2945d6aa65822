//! Usage per tenant: what each tenant asked of this router (searches,
//! suggests, errors, documents written) and what it cost across regions
//! (calls answered by the paired region and their bytes).
//!
//! Kept as counters in memory, one small record per tenant that has used
//! this router since it started, never as Prometheus labels (thousands of
//! tenants would be thousands of series per metric). The admin `Usage`
//! call reports them; `tandem usage` sums them over a region's routers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;
use tandem_proto::v1::TenantUsage;

/// What one tenant used.
#[derive(Debug, Default)]
struct Counters {
    searches: AtomicU64,
    suggests: AtomicU64,
    errors: AtomicU64,
    documents: AtomicU64,
    cross_region_calls: AtomicU64,
    cross_region_bytes: AtomicU64,
}

/// One kind of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A search answered.
    Search,
    /// A suggest answered.
    Suggest,
    /// A public call that failed.
    Error,
    /// Documents written (upserts + deletes).
    Documents(u64),
    /// A call answered by the paired region, with its bytes.
    CrossRegion(u64),
}

/// Every tenant's counters (see the module documentation).
#[derive(Debug, Default)]
pub struct Usage {
    tenants: DashMap<Arc<str>, Arc<Counters>>,
}

impl Usage {
    /// Counts `what` for `tenant` (a catalog tenant: callers pass the id
    /// from the replica map, never an unauthenticated name).
    pub fn record(&self, tenant: &Arc<str>, what: Use) {
        let counters = match self.tenants.get(tenant) {
            Some(c) => Arc::clone(&c),
            None => Arc::clone(&self.tenants.entry(Arc::clone(tenant)).or_default()),
        };
        match what {
            Use::Search => counters.searches.fetch_add(1, Relaxed),
            Use::Suggest => counters.suggests.fetch_add(1, Relaxed),
            Use::Error => counters.errors.fetch_add(1, Relaxed),
            Use::Documents(n) => counters.documents.fetch_add(n, Relaxed),
            Use::CrossRegion(bytes) => {
                counters.cross_region_bytes.fetch_add(bytes, Relaxed);
                counters.cross_region_calls.fetch_add(1, Relaxed)
            }
        };
    }

    /// The counters of `tenant` (every tenant when empty), by tenant id.
    pub fn snapshot(&self, tenant: &str) -> Vec<TenantUsage> {
        let mut out: Vec<TenantUsage> = self
            .tenants
            .iter()
            .filter(|e| tenant.is_empty() || &**e.key() == tenant)
            .map(|e| {
                let c = e.value();
                TenantUsage {
                    tenant: e.key().to_string(),
                    searches: c.searches.load(Relaxed),
                    suggests: c.suggests.load(Relaxed),
                    errors: c.errors.load(Relaxed),
                    documents: c.documents.load(Relaxed),
                    cross_region_calls: c.cross_region_calls.load(Relaxed),
                    cross_region_bytes: c.cross_region_bytes.load(Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_tenant() {
        let usage = Usage::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..3 {
            usage.record(&a, Use::Search);
        }
        usage.record(&a, Use::Suggest);
        usage.record(&a, Use::CrossRegion(100));
        usage.record(&a, Use::CrossRegion(50));
        usage.record(&b, Use::Documents(7));
        usage.record(&b, Use::Error);
        let all = usage.snapshot("");
        assert_eq!(all.len(), 2);
        let a = &all[0];
        assert_eq!((a.searches, a.suggests, a.errors), (3, 1, 0));
        assert_eq!((a.cross_region_calls, a.cross_region_bytes), (2, 150));
        let b = &usage.snapshot("b")[0];
        assert_eq!((b.documents, b.errors, b.searches), (7, 1, 0));
        assert!(usage.snapshot("c").is_empty());
    }
}
