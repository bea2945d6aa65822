//! Migration ramps: a share of a single-region tenant's searches read from
//! the replicas in its home's pair, while `tandem migrate` opens the new
//! region gradually, and the counters its health gates read.
//!
//! A tenant whose catalog entry has `ramp = P` (1..=100; only a tenant that
//! is not active-active yet, with a replica of every shard in the pair) is
//! resolved twice ([`crate::replicas::ReplicaMap`] carries the second map):
//! preferring its home, as usual, and preferring the pair. Each search
//! draws: below `P` it takes the pair-first map (the **pair arm**), else
//! the home-first one (the **home arm**). Either arm falls back to the
//! other side's replicas as any read does, so a ramp never fails a search
//! that the other side could serve.
//!
//! Per ramped tenant and arm, the router counts searches, "errors" (a
//! search that failed, or that some shard answered from outside the arm's
//! region: what the arm could not serve itself) and a latency histogram,
//! in memory, since the ramp took its current percentage. The admin
//! `Status` reports them ([`RampStats::snapshot`]); no tenant label ever
//! reaches Prometheus.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tandem_proto::v1::{RampArm, RampStatus, Route};

use crate::catalog::Catalog;
use crate::replicas::ReplicaMap;

/// The map a search of `map`'s tenant uses, by a draw in 0..100 taken only
/// for a ramped tenant (see the module documentation), and which arm it
/// took (`None`: the tenant has no ramp).
pub fn choose(map: &Arc<ReplicaMap>, draw: impl FnOnce() -> u8) -> (&Arc<ReplicaMap>, Option<Arm>) {
    match &map.ramped {
        None => (map, None),
        Some(pair) if draw() < map.tenant.ramp => (pair, Some(Arm::Pair)),
        Some(_) => (map, Some(Arm::Home)),
    }
}

/// One side of a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The tenant's home region first (as without a ramp).
    Home,
    /// The home's pair first (the region being opened).
    Pair,
}

/// Latency buckets: upper bounds growing by 25 % from 100 us (the last one
/// holds everything slower than about 5 s).
const BUCKETS: usize = 50;

fn bucket_bound(i: usize) -> Duration {
    Duration::from_secs_f64(100e-6 * 1.25f64.powi(i as i32))
}

fn bucket_of(elapsed: Duration) -> usize {
    (0..BUCKETS - 1)
        .find(|i| elapsed <= bucket_bound(*i))
        .unwrap_or(BUCKETS - 1)
}

/// One arm's counters.
#[derive(Debug)]
struct ArmStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for ArmStats {
    fn default() -> Self {
        ArmStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ArmStats {
    fn record(&self, error: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.errors.fetch_add(u64::from(error), Relaxed);
        self.latency[bucket_of(elapsed)].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> RampArm {
        let counts: Vec<u64> = self.latency.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let mut seen = 0;
        let p99 = counts
            .iter()
            .position(|c| {
                seen += c;
                total > 0 && seen * 100 >= total * 99
            })
            .map_or(Duration::ZERO, bucket_bound);
        RampArm {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            p99_micros: p99.as_micros() as u64,
        }
    }
}

/// A tenant's counters at one ramp percentage.
#[derive(Debug, Default)]
struct TenantRamp {
    percent: u8,
    home: ArmStats,
    pair: ArmStats,
}

/// Every ramped tenant's counters (see the module documentation).
#[derive(Debug, Default)]
pub struct RampStats {
    tenants: DashMap<Arc<str>, Arc<TenantRamp>>,
}

impl RampStats {
    /// Records one search of `map`'s tenant that took `arm`: whether it
    /// failed, its route (where its shards were answered) and its time.
    pub fn record(
        &self,
        map: &ReplicaMap,
        arm: Arm,
        failed: bool,
        route: Option<&Route>,
        elapsed: Duration,
    ) {
        let stats = self.at_step(&map.tenant.id, map.tenant.ramp);
        let elsewhere =
            route.is_some_and(|r| r.shards.iter().any(|s| *s.region != *map.preferred_region));
        let side = match arm {
            Arm::Home => &stats.home,
            Arm::Pair => &stats.pair,
        };
        side.record(failed || elsewhere, elapsed);
    }

    /// `tenant`'s counters at ramp `percent`: a shared read while the step
    /// holds; a new step (or a first search) counts afresh.
    fn at_step(&self, tenant: &Arc<str>, percent: u8) -> Arc<TenantRamp> {
        if let Some(stats) = self.tenants.get(tenant).filter(|s| s.percent == percent) {
            return Arc::clone(&stats);
        }
        let mut entry = self.tenants.entry(Arc::clone(tenant)).or_default();
        if entry.percent != percent {
            *entry = Arc::new(TenantRamp {
                percent,
                ..TenantRamp::default()
            });
        }
        Arc::clone(&entry)
    }

    /// Every ramp `catalog` puts in force, with its counters (zero for a
    /// ramp that has no search yet or has just changed). Counters of
    /// tenants no longer ramped are dropped.
    pub fn snapshot(&self, catalog: &Catalog) -> Vec<RampStatus> {
        self.tenants
            .retain(|id, _| catalog.tenant(id).is_some_and(|t| t.ramp > 0));
        let mut out: Vec<RampStatus> = catalog
            .tenants()
            .filter(|t| t.ramp > 0)
            .map(|t| {
                let pair = catalog.pair_of(&t.home).map(|p| p.to_string());
                let stats = self
                    .tenants
                    .get(&t.id)
                    .map(|e| Arc::clone(&e))
                    .filter(|s| s.percent == t.ramp)
                    .unwrap_or_default();
                RampStatus {
                    tenant: t.id.to_string(),
                    percent: u32::from(t.ramp),
                    home_region: t.home.to_string(),
                    pair_region: pair.unwrap_or_default(),
                    home: Some(stats.home.snapshot()),
                    pair: Some(stats.pair.snapshot()),
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
    use tandem_proto::v1::ShardRoute;

    fn ramped(percent: u8) -> Catalog {
        let text = tandem_catalog::EMBEDDED_DEFAULT.replacen(
            "language = \"es\"",
            &format!("language = \"es\"\nramp = {percent}"),
            1,
        );
        Catalog::parse(text.as_bytes()).expect("valid")
    }

    fn route(region: &str) -> Route {
        Route {
            shards: vec![ShardRoute {
                region: region.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_draw_picks_the_arm_by_the_ramp() {
        let catalog = ramped(25);
        let map = Arc::new(ReplicaMap::resolve(&catalog, "globex", "eu-west").unwrap());
        assert_eq!(&*map.preferred_region, "us-east");
        let pair = (0..100)
            .filter(|d| choose(&map, || *d).1 == Some(Arm::Pair))
            .count();
        assert_eq!(pair, 25);
        let (chosen, arm) = choose(&map, || 0);
        assert_eq!(
            (&*chosen.preferred_region, arm),
            ("eu-west", Some(Arm::Pair))
        );
        let plain = Arc::new(ReplicaMap::resolve(&catalog, "acme", "eu-west").unwrap());
        assert_eq!(choose(&plain, || panic!("no draw without a ramp")).1, None);
    }

    #[test]
    fn counters_per_arm_restart_with_each_step() {
        let stats = RampStats::default();
        let catalog = ramped(5);
        let map = Arc::new(ReplicaMap::resolve(&catalog, "globex", "us-east").unwrap());
        let (pair_map, _) = choose(&map, || 0);
        let ms = Duration::from_millis;
        for i in 0..100 {
            stats.record(&map, Arm::Home, false, Some(&route("us-east")), ms(2));
            // One in ten pair searches is answered from home: an error.
            let region = if i % 10 == 0 { "us-east" } else { "eu-west" };
            stats.record(pair_map, Arm::Pair, false, Some(&route(region)), ms(4));
        }
        stats.record(pair_map, Arm::Pair, true, None, ms(900));
        let status = &stats.snapshot(&catalog)[0];
        assert_eq!((status.tenant.as_str(), status.percent), ("globex", 5));
        let (home, pair) = (status.home.unwrap(), status.pair.unwrap());
        assert_eq!((home.requests, home.errors), (100, 0));
        assert_eq!((pair.requests, pair.errors), (101, 11));
        assert!((2_000..2_600).contains(&home.p99_micros), "{home:?}");
        assert!((4_000..5_000).contains(&pair.p99_micros), "{pair:?}");

        // The next step counts afresh; a tenant without a ramp is dropped.
        let next = ramped(25);
        let map = Arc::new(ReplicaMap::resolve(&next, "globex", "us-east").unwrap());
        assert_eq!(stats.snapshot(&next)[0].pair.unwrap().requests, 0);
        stats.record(&map, Arm::Home, false, None, ms(1));
        assert_eq!(stats.snapshot(&next)[0].home.unwrap().requests, 1);
        let done = Catalog::embedded_default().unwrap();
        assert!(stats.snapshot(&done).is_empty());
        assert!(stats.tenants.is_empty());
    }
}
