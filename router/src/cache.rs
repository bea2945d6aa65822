//! The hot cache of resolved replica maps, one per tenant.
//!
//! Resolving a tenant (looking it up in the catalog and ordering its
//! replicas for this region) is cheap, but it is done for every query, so
//! the result is kept in a bounded `moka` cache:
//!
//! - bounded by `max_tenants` entries (a fleet of 100k tenants does not keep
//!   100k maps in every router; the busy ones stay);
//! - entries live for `ttl`, unknown tenants for `negative_ttl`: a flood of
//!   bad tenant ids is answered from the cache instead of the catalog;
//! - every entry carries the catalog version it was resolved from, and an
//!   entry of an older catalog is a miss, so a reload takes effect on the
//!   very next query even before [`ReplicaMapCache::invalidate_all`] runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Counter;
use moka::sync::Cache;
use moka::Expiry;

use crate::catalog::Catalog;
use crate::replicas::ReplicaMap;

/// A cached lookup: the map, or `None` for "no such tenant".
#[derive(Clone, Debug)]
struct Entry {
    map: Option<Arc<ReplicaMap>>,
    catalog_version: Arc<str>,
}

/// Gives unknown tenants their own, shorter, time to live.
struct TtlPolicy {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<Arc<str>, Entry> for TtlPolicy {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.map.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }
}

/// Hit and miss counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries now (approximate).
    pub entries: u64,
    /// Lookups answered with a map.
    pub hits: u64,
    /// Lookups that resolved from the catalog.
    pub misses: u64,
    /// Lookups answered "unknown tenant" from the cache.
    pub negative_hits: u64,
}

/// See the module documentation. Made after the process installed its
/// metrics recorder (its metric handles come from the recorder in force).
pub struct ReplicaMapCache {
    cache: Cache<Arc<str>, Entry>,
    hits: AtomicU64,
    misses: AtomicU64,
    negative_hits: AtomicU64,
    /// `router_replica_cache_total` by result, made once (the macro would
    /// look the key up on every query).
    hit_metric: Counter,
    negative_hit_metric: Counter,
    miss_metric: Counter,
}

impl ReplicaMapCache {
    /// A cache of at most `max_tenants` maps.
    pub fn new(max_tenants: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_tenants)
                .expire_after(TtlPolicy { ttl, negative_ttl })
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            negative_hits: AtomicU64::new(0),
            hit_metric: metrics::counter!("router_replica_cache_total", "result" => "hit"),
            negative_hit_metric: metrics::counter!("router_replica_cache_total",
                "result" => "negative_hit"),
            miss_metric: metrics::counter!("router_replica_cache_total", "result" => "miss"),
        }
    }

    /// The replica map of `tenant` as seen from `local_region`, or `None`
    /// if the catalog has no such tenant.
    pub fn get(
        &self,
        catalog: &Catalog,
        tenant: &str,
        local_region: &str,
    ) -> Option<Arc<ReplicaMap>> {
        if let Some(entry) = self.cache.get(tenant) {
            if *entry.catalog_version == *catalog.version() {
                let (count, metric) = if entry.map.is_some() {
                    (&self.hits, &self.hit_metric)
                } else {
                    (&self.negative_hits, &self.negative_hit_metric)
                };
                count.fetch_add(1, Relaxed);
                metric.increment(1);
                return entry.map;
            }
        }
        self.misses.fetch_add(1, Relaxed);
        self.miss_metric.increment(1);
        let map = ReplicaMap::resolve(catalog, tenant, local_region)
            .ok()
            .map(Arc::new);
        self.cache.insert(
            Arc::from(tenant),
            Entry {
                map: map.clone(),
                catalog_version: Arc::from(catalog.version()),
            },
        );
        map
    }

    /// Drops every entry (after a catalog reload).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Counts since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.cache.entry_count(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_maps_and_unknown_tenants() {
        let catalog = Catalog::embedded_default().unwrap();
        let region = catalog.regions()[0].id.to_string();
        let tenant = catalog.tenants().next().unwrap().id.to_string();
        let cache = ReplicaMapCache::new(100, Duration::from_secs(60), Duration::from_secs(5));
        let first = cache.get(&catalog, &tenant, &region).unwrap();
        let second = cache.get(&catalog, &tenant, &region).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "second lookup is a hit");
        assert!(cache.get(&catalog, "nobody", &region).is_none());
        assert!(cache.get(&catalog, "nobody", &region).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.negative_hits), (1, 2, 1));
    }
}
