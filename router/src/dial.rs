//! The traffic dial, with AWS Global Accelerator semantics.
//!
//! Each region has a dial from 0 to 100 (default 100): the share of the
//! traffic arriving at *this region's routers* that is served here. The rest
//! is forwarded to the paired region's routers, marked with
//! [`FORWARDED_HEADER`] so the receiving router serves it whatever its own
//! dial says: a call is forwarded at most once and never bounces. Turning
//! a region's dial to 0 drains it for active-active tenants without touching
//! DNS or clients.
//!
//! Rules of [`decide`], in order:
//! 1. Already forwarded: serve here.
//! 2. Tenant not active-active: serve here, reading the tenant's *home*
//!    replicas directly (the replica map puts them first, see
//!    `Tenant::preferred_region`). We read directly rather than forward to the
//!    home region's router because it needs one hop fewer, depends only on
//!    the home region's index and model nodes being up (not also on its router
//!    fleet), and reuses the same fallback path as any cross-region read, so
//!    when no home replica answers the standby copies are still tried. It
//!    also keeps "forwarded" meaning exactly one thing in routes and metrics:
//!    the dial moved this call. The dial does not apply to such a tenant: its
//!    serving region is fixed, only its entry router varies.
//! 3. The draw (uniform in 0..100) is below the dial: serve here.
//! 4. The paired region has no healthy router: serve here (a dial must never
//!    turn a healthy local region into failed calls).
//! 5. Otherwise forward.
//!
//! If a forwarded call then fails in a retryable way, the serving layer
//! serves it locally after all: the dial is a preference, not a wall.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::{Rng, RngExt};

use crate::catalog::Catalog;

/// gRPC metadata key marking a router-to-router forwarded call; its value is
/// the entry region. Anyone may set it; the worst a caller can do with it is
/// have its call served by the router it called, which it could anyway.
pub const FORWARDED_HEADER: &str = "x-tandem-forwarded-from";

/// Dial value meaning "serve everything here".
pub const FULL: u8 = 100;

/// Where to serve a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it from this router.
    ServeLocal,
    /// Forward it to a router of the paired region.
    Forward,
}

/// Why [`decide`] decided what it did, for metrics and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The call was forwarded to us; it is never forwarded again.
    AlreadyForwarded,
    /// The tenant is not active-active: it is read from its home replicas.
    HomeOnly,
    /// The draw fell within the dial (always so at 100).
    Dial,
    /// The draw said forward, but the paired region has no healthy router.
    PairedRouterDown,
    /// Forwarded by the dial.
    DialForward,
}

impl Reason {
    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AlreadyForwarded => "already_forwarded",
            Reason::HomeOnly => "home_only",
            Reason::Dial => "dial",
            Reason::PairedRouterDown => "paired_router_down",
            Reason::DialForward => "dial_forward",
        }
    }
}

/// What [`decide`] looks at, asked lazily and only as far as the rules
/// need: the serving layer answers from live state, where this region's
/// dial is a map lookup and the paired region's router health a catalog
/// read and more lookups, and most calls are settled by the first rules (a
/// tenant that is not active-active, a draw within a dial of 100) before
/// those are asked. Tests answer from a plain [`DialInput`].
pub trait DialFacts {
    /// The call carries [`FORWARDED_HEADER`].
    fn already_forwarded(&self) -> bool;
    /// The tenant is active-active.
    fn tenant_active_active(&self) -> bool;
    /// This region's dial, 0..=100 (larger values act as 100).
    fn dial_percent(&self) -> u8;
    /// A uniform draw in 0..100 (see [`draw`]); values >= 100 act as 99.
    fn draw(&self) -> u8;
    /// At least one router of the paired region is healthy.
    fn paired_router_healthy(&self) -> bool;
}

/// [`DialFacts`] as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialInput {
    /// See [`DialFacts::dial_percent`].
    pub dial_percent: u8,
    /// See [`DialFacts::already_forwarded`].
    pub already_forwarded: bool,
    /// See [`DialFacts::paired_router_healthy`].
    pub paired_router_healthy: bool,
    /// See [`DialFacts::tenant_active_active`].
    pub tenant_active_active: bool,
    /// See [`DialFacts::draw`].
    pub draw: u8,
}

impl DialFacts for DialInput {
    fn already_forwarded(&self) -> bool {
        self.already_forwarded
    }
    fn tenant_active_active(&self) -> bool {
        self.tenant_active_active
    }
    fn dial_percent(&self) -> u8 {
        self.dial_percent
    }
    fn draw(&self) -> u8 {
        self.draw
    }
    fn paired_router_healthy(&self) -> bool {
        self.paired_router_healthy
    }
}

/// A uniform draw in 0..100 for [`DialFacts::draw`].
pub fn draw<R: Rng + ?Sized>(rng: &mut R) -> u8 {
    rng.random_range(0..100)
}

/// Decides whether to serve a call here or forward it; see the module docs.
pub fn decide(facts: &impl DialFacts) -> (Decision, Reason) {
    if facts.already_forwarded() {
        return (Decision::ServeLocal, Reason::AlreadyForwarded);
    }
    if !facts.tenant_active_active() {
        return (Decision::ServeLocal, Reason::HomeOnly);
    }
    if facts.draw().min(99) < facts.dial_percent() {
        return (Decision::ServeLocal, Reason::Dial);
    }
    if !facts.paired_router_healthy() {
        return (Decision::ServeLocal, Reason::PairedRouterDown);
    }
    (Decision::Forward, Reason::DialForward)
}

/// Why a dial could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Not a region of the catalog in force.
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    /// Dials go from 0 to 100.
    #[error("dial must be 0..=100, got {0}")]
    OutOfRange(u32),
}

/// Every region's dial, read on the hot path without locks, set by the
/// admin API and by the catalog. The set of regions follows the catalog
/// ([`Dials::sync`]).
///
/// The catalog records each region's dial (`tandem dial` writes it, and
/// pushes the value to every router through the admin API at once). A
/// router takes the catalog's value when it starts and whenever that value
/// *changes* from one catalog to the next; between changes the value set
/// through the admin API stands. So a push is not undone by a catalog that
/// has not caught up yet (a ConfigMap takes a while to reach a pod), a
/// router that missed the push converges when the catalog arrives, and a
/// restarted router starts at the recorded dial instead of 100.
#[derive(Debug)]
pub struct Dials {
    by_region: ArcSwap<HashMap<Arc<str>, Arc<Slot>>>,
}

/// One region's dial and the catalog value it last took.
#[derive(Debug)]
struct Slot {
    value: AtomicU8,
    from_catalog: AtomicU8,
}

impl Dials {
    /// All of `catalog`'s regions at the catalog's dials.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let dials = Dials {
            by_region: ArcSwap::from_pointee(HashMap::new()),
        };
        dials.sync(catalog);
        dials
    }

    /// The dial of `region` (100 for a region the dials do not know, so an
    /// unknown region never loses traffic).
    pub fn get(&self, region: &str) -> u8 {
        self.by_region
            .load()
            .get(region)
            .map_or(FULL, |d| d.value.load(Relaxed))
    }

    /// Sets the dial of `region`; returns the previous value.
    pub fn set(&self, region: &str, percent: u32) -> Result<u8, DialError> {
        let value = u8::try_from(percent)
            .ok()
            .filter(|v| *v <= FULL)
            .ok_or(DialError::OutOfRange(percent))?;
        let map = self.by_region.load();
        let dial = map
            .get(region)
            .ok_or_else(|| DialError::UnknownRegion(region.to_string()))?;
        Ok(dial.value.swap(value, Relaxed))
    }

    /// Follows a catalog (at start and on every reload): new regions start
    /// at the catalog's dial, removed ones are dropped, and a region whose
    /// catalog dial changed takes the new value; the others keep theirs.
    pub fn sync(&self, catalog: &Catalog) {
        self.by_region.rcu(|current| {
            catalog
                .regions()
                .iter()
                .map(|r| {
                    let slot = current.get(&r.id).cloned().unwrap_or_else(|| {
                        Arc::new(Slot {
                            value: AtomicU8::new(r.dial),
                            from_catalog: AtomicU8::new(r.dial),
                        })
                    });
                    (Arc::clone(&r.id), slot)
                })
                .collect::<HashMap<_, _>>()
        });
        let map = self.by_region.load();
        for r in catalog.regions() {
            let Some(slot) = map.get(&r.id) else {
                continue;
            };
            let before = slot.from_catalog.swap(r.dial, Relaxed);
            if before != r.dial {
                let previous = slot.value.swap(r.dial, Relaxed);
                tracing::warn!(region = %r.id, from = previous, to = r.dial,
                    "traffic dial set from the catalog");
            }
            metrics::gauge!("router_dial_percent", "region" => r.id.to_string())
                .set(f64::from(slot.value.load(Relaxed)));
        }
    }

    /// Every region's dial, sorted by region, for status output.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u8)> {
        let mut out: Vec<(Arc<str>, u8)> = self
            .by_region
            .load()
            .iter()
            .map(|(k, v)| (Arc::clone(k), v.value.load(Relaxed)))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn input(dial: u8, draw: u8) -> DialInput {
        DialInput {
            dial_percent: dial,
            already_forwarded: false,
            paired_router_healthy: true,
            tenant_active_active: true,
            draw,
        }
    }

    #[test]
    fn the_dial_is_the_share_served_here() {
        for dial in [0u8, 1, 30, 50, 99, 100] {
            let local = (0..100)
                .filter(|d| decide(&input(dial, *d)).0 == Decision::ServeLocal)
                .count();
            assert_eq!(local, usize::from(dial), "dial {dial}");
        }
        assert_eq!(decide(&input(100, 255)).0, Decision::ServeLocal);
        assert_eq!(decide(&input(200, 99)).0, Decision::ServeLocal);
        assert_eq!(
            decide(&input(0, 0)),
            (Decision::Forward, Reason::DialForward)
        );
        assert_eq!(
            decide(&input(100, 99)),
            (Decision::ServeLocal, Reason::Dial)
        );
    }

    #[test]
    fn forwarded_calls_are_never_forwarded_again() {
        let i = DialInput {
            already_forwarded: true,
            ..input(0, 99)
        };
        assert_eq!(decide(&i), (Decision::ServeLocal, Reason::AlreadyForwarded));
    }

    #[test]
    fn unhealthy_paired_router_means_serve_here() {
        let i = DialInput {
            paired_router_healthy: false,
            ..input(0, 50)
        };
        assert_eq!(decide(&i), (Decision::ServeLocal, Reason::PairedRouterDown));
    }

    #[test]
    fn non_active_active_tenants_ignore_the_dial() {
        let i = DialInput {
            tenant_active_active: false,
            ..input(0, 99)
        };
        assert_eq!(decide(&i), (Decision::ServeLocal, Reason::HomeOnly));
        assert_eq!(Reason::HomeOnly.as_str(), "home_only");
    }

    /// A [`DialInput`] that records which facts were asked, in order.
    struct Asked {
        input: DialInput,
        asked: std::cell::RefCell<Vec<&'static str>>,
    }

    impl Asked {
        fn answer<T>(&self, fact: &'static str, value: T) -> T {
            self.asked.borrow_mut().push(fact);
            value
        }
    }

    impl DialFacts for Asked {
        fn already_forwarded(&self) -> bool {
            self.answer("forwarded", self.input.already_forwarded)
        }
        fn tenant_active_active(&self) -> bool {
            self.answer("active_active", self.input.tenant_active_active)
        }
        fn dial_percent(&self) -> u8 {
            self.answer("dial", self.input.dial_percent)
        }
        fn draw(&self) -> u8 {
            self.answer("draw", self.input.draw)
        }
        fn paired_router_healthy(&self) -> bool {
            self.answer("paired", self.input.paired_router_healthy)
        }
    }

    #[test]
    fn facts_are_asked_only_as_far_as_the_rules_need() {
        let asked = |input: DialInput| {
            let facts = Asked {
                input,
                asked: Default::default(),
            };
            decide(&facts);
            facts.asked.into_inner()
        };
        let home_only = DialInput {
            tenant_active_active: false,
            ..input(0, 0)
        };
        assert_eq!(asked(home_only), ["forwarded", "active_active"]);
        assert_eq!(
            asked(input(100, 42)),
            ["forwarded", "active_active", "draw", "dial"]
        );
        assert_eq!(
            asked(input(0, 42)),
            ["forwarded", "active_active", "draw", "dial", "paired"]
        );
    }

    #[test]
    fn seeded_draws_split_traffic_by_the_dial() {
        let mut rng = StdRng::seed_from_u64(2024);
        let forwarded = (0..10_000)
            .filter(|_| decide(&input(50, draw(&mut rng))).0 == Decision::Forward)
            .count();
        assert!((4_800..5_200).contains(&forwarded), "{forwarded}");
    }

    #[test]
    fn dials_are_set_per_region_and_survive_reloads() {
        let c = Catalog::embedded_default().expect("valid");
        let dials = Dials::from_catalog(&c);
        assert_eq!(dials.get("eu-west"), 100);
        assert_eq!(dials.get("nowhere"), 100);
        assert_eq!(dials.set("eu-west", 40), Ok(100));
        assert_eq!(dials.set("eu-west", 101), Err(DialError::OutOfRange(101)));
        assert_eq!(dials.set("eu-west", 300), Err(DialError::OutOfRange(300)));
        assert_eq!(
            dials.set("mars", 10),
            Err(DialError::UnknownRegion("mars".into()))
        );
        dials.sync(&c);
        assert_eq!(dials.get("eu-west"), 40);
        assert_eq!(
            dials.snapshot(),
            vec![("eu-west".into(), 40), ("us-east".into(), 100)]
        );
    }

    fn with_dial(eu_west: u8) -> Catalog {
        let text = tandem_catalog::EMBEDDED_DEFAULT.replacen(
            "pair = \"us-east\"",
            &format!("pair = \"us-east\"\ndial = {eu_west}"),
            1,
        );
        Catalog::parse(text.as_bytes()).expect("valid")
    }

    #[test]
    fn the_catalog_dial_is_taken_at_start_and_when_it_changes() {
        // A restarted router starts at the recorded dial.
        let dials = Dials::from_catalog(&with_dial(30));
        assert_eq!(dials.get("eu-west"), 30);
        // A push is not undone by a catalog that has not caught up.
        dials.set("eu-west", 60).unwrap();
        dials.sync(&with_dial(30));
        assert_eq!(dials.get("eu-west"), 60);
        // The catalog's new value is taken, once.
        dials.sync(&with_dial(0));
        assert_eq!(dials.get("eu-west"), 0);
        dials.set("eu-west", 100).unwrap();
        dials.sync(&with_dial(0));
        assert_eq!(dials.get("eu-west"), 100);
        assert_eq!(dials.get("us-east"), 100);
    }
}
