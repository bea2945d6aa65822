use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::*;
use crate::catalog::NodeKind;
use crate::endpoint_stats::StatsConfig;
use crate::outlier::OutlierConfig;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn replica(id: &str, tier: Tier) -> Replica {
    Replica {
        node: Arc::new(Node {
            id: id.into(),
            region: "r".into(),
            kind: NodeKind::Index,
            addr: "http://127.0.0.1:1".into(),
        }),
        tier,
    }
}

fn ids(order: &[Pick<'_>]) -> Vec<String> {
    order.iter().map(|p| p.replica.id().to_string()).collect()
}

/// A view backed by a table; unknown replicas are healthy with no stats.
fn table(states: &[(&str, ReplicaState)]) -> impl Fn(&Replica) -> ReplicaState {
    let map: HashMap<String, ReplicaState> =
        states.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    move |r: &Replica| map.get(&**r.id()).copied().unwrap_or_default()
}

fn st(in_flight: u32, ewma_ms: Option<u64>) -> ReplicaState {
    ReplicaState {
        health: Health::Healthy,
        in_flight,
        ewma: ewma_ms.map(ms),
    }
}

fn with(health: Health) -> ReplicaState {
    ReplicaState {
        health,
        ..ReplicaState::default()
    }
}

#[test]
fn resolve_orders_local_region_first() {
    let c = Catalog::embedded_default().expect("valid");
    let m = ReplicaMap::resolve(&c, "acme", "us-east").expect("acme");
    assert_eq!(&*m.preferred_region, "us-east");
    assert_eq!(&*m.catalog_version, c.version());
    let shard0: Vec<(&str, Tier)> = m.shards[0]
        .replicas
        .iter()
        .map(|r| (&**r.id(), r.tier))
        .collect();
    assert_eq!(
        shard0,
        vec![
            ("us-idx-1", Tier::Preferred),
            ("us-idx-2", Tier::Preferred),
            ("eu-idx-1", Tier::Paired),
            ("eu-idx-2", Tier::Paired),
        ]
    );
    assert_eq!(&**m.shard(1).expect("shard 1").replicas[0].id(), "us-idx-2");
    assert!(m.shard(2).is_none());
    assert_eq!(&**m.models[0].id(), "us-model-1");
    assert_eq!(m.models[1].tier, Tier::Paired);
}

#[test]
fn non_active_active_tenant_prefers_its_home_from_anywhere() {
    let c = Catalog::embedded_default().expect("valid");
    let m = ReplicaMap::resolve(&c, "globex", "eu-west").expect("globex");
    assert_eq!(&*m.local_region, "eu-west");
    assert_eq!(&*m.preferred_region, "us-east");
    let order: Vec<&str> = m.shards[0].replicas.iter().map(|r| &**r.id()).collect();
    assert_eq!(order, vec!["us-idx-1", "us-idx-2", "eu-idx-1"]);
    assert_eq!(m.shards[0].replicas[2].tier, Tier::Paired);
}

#[test]
fn resolve_errors() {
    let c = Catalog::embedded_default().expect("valid");
    assert_eq!(
        ReplicaMap::resolve(&c, "nope", "eu-west").map(|_| ()),
        Err(ResolveError::UnknownTenant("nope".into()))
    );
    assert_eq!(
        ReplicaMap::resolve(&c, "acme", "mars").map(|_| ()),
        Err(ResolveError::UnknownRegion("mars".into()))
    );
}

#[test]
fn healthy_paired_replicas_come_before_ejected_local_ones() {
    let rs = [
        replica("l1", Tier::Preferred),
        replica("l2", Tier::Preferred),
        replica("p1", Tier::Paired),
        replica("o1", Tier::Other),
    ];
    let now = Instant::now();
    let view = table(&[
        (
            "l1",
            with(Health::Ejected {
                until: now + ms(500),
            }),
        ),
        (
            "l2",
            with(Health::Ejected {
                until: now + ms(100),
            }),
        ),
    ]);
    let mut rng = StdRng::seed_from_u64(1);
    let order = try_order(&rs, &view, &mut rng);
    assert_eq!(ids(&order), vec!["p1", "o1", "l2", "l1"]);
    assert!(matches!(order[2].state.health, Health::Ejected { .. }));
}

#[test]
fn probation_trial_goes_first_in_its_tier_and_a_taken_trial_goes_last() {
    let rs = [
        replica("l1", Tier::Preferred),
        replica("l2", Tier::Preferred),
        replica("l3", Tier::Preferred),
        replica("p1", Tier::Paired),
    ];
    let free = Health::Probation {
        trial_available: true,
    };
    let busy = Health::Probation {
        trial_available: false,
    };
    let view = table(&[("l2", with(free)), ("l3", with(busy))]);
    let order = try_order(&rs, &view, &mut StdRng::seed_from_u64(7));
    assert_eq!(ids(&order), vec!["l2", "l1", "p1", "l3"]);
}

#[test]
fn the_least_loaded_of_two_always_wins() {
    let rs = [
        replica("a", Tier::Preferred),
        replica("b", Tier::Preferred),
        replica("p", Tier::Paired),
    ];
    let mut rng = StdRng::seed_from_u64(3);
    // Same latency, more in flight on a.
    let view = table(&[("a", st(4, Some(1))), ("b", st(1, Some(1)))]);
    for _ in 0..100 {
        assert_eq!(ids(&try_order(&rs, &view, &mut rng)), vec!["b", "a", "p"]);
    }
    // Same in flight, a is slower.
    let view = table(&[("a", st(0, Some(5))), ("b", st(0, Some(1)))]);
    for _ in 0..100 {
        assert_eq!(ids(&try_order(&rs, &view, &mut rng))[0], "b");
    }
}

#[test]
fn power_of_two_choices_never_picks_the_worst_of_three_and_spreads_ties() {
    let rs = [
        replica("a", Tier::Preferred),
        replica("b", Tier::Preferred),
        replica("c", Tier::Preferred),
    ];
    let mut rng = StdRng::seed_from_u64(42);
    let busy = table(&[
        ("a", st(0, Some(1))),
        ("b", st(0, Some(2))),
        ("c", st(9, Some(3))),
    ]);
    let mut firsts: HashMap<String, u32> = HashMap::new();
    for _ in 0..3000 {
        let order = try_order(&rs, &busy, &mut rng);
        *firsts.entry(ids(&order)[0].clone()).or_default() += 1;
        // After the p2c winner, the rest is by cost.
        assert_eq!(ids(&order).last().map(String::as_str), Some("c"));
    }
    assert_eq!(firsts.get("c"), None);
    // a wins whenever drawn (2/3 of pairs), b only against c (1/3).
    let a = firsts.get("a").copied().unwrap_or(0);
    assert!((1800..2200).contains(&a), "{firsts:?}");

    let idle = table(&[]);
    let mut firsts: HashMap<String, u32> = HashMap::new();
    for _ in 0..3000 {
        *firsts
            .entry(ids(&try_order(&rs, &idle, &mut rng))[0].clone())
            .or_default() += 1;
    }
    for id in ["a", "b", "c"] {
        let n = firsts.get(id).copied().unwrap_or(0);
        assert!((850..1150).contains(&n), "ties spread evenly: {firsts:?}");
    }
}

#[test]
fn a_fresh_replica_is_costed_like_its_peers_and_is_not_flooded() {
    let rs = [
        replica("a", Tier::Preferred),
        replica("b", Tier::Preferred),
        replica("new", Tier::Preferred),
    ];
    // Median of 1 ms and 3 ms is 2 ms: new (idle) ranks between a and b.
    let view = table(&[("a", st(0, Some(1))), ("b", st(0, Some(3)))]);
    for seed in 0..20 {
        let order = ids(&try_order(&rs, &view, &mut StdRng::seed_from_u64(seed)));
        assert_eq!(order.last().map(String::as_str), Some("b"), "{order:?}");
    }

    // Simulate a burst: every pick adds one in-flight call, none completes.
    let mut in_flight: HashMap<&str, u32> = HashMap::new();
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..60 {
        let view = |r: &Replica| {
            let id = &**r.id();
            let ewma = match id {
                "a" | "b" => Some(ms(1)),
                _ => None,
            };
            st(
                in_flight.get(id).copied().unwrap_or(0),
                ewma.map(|d| d.as_millis() as u64),
            )
        };
        let first = ids(&try_order(&rs, &view, &mut rng))[0].clone();
        let key = match first.as_str() {
            "a" => "a",
            "b" => "b",
            _ => "new",
        };
        *in_flight.entry(key).or_default() += 1;
    }
    let got = |k| in_flight.get(k).copied().unwrap_or(0);
    assert!(got("new") <= 25, "fresh replica flooded: {in_flight:?}");
    assert!(got("new") >= 15, "fresh replica starved: {in_flight:?}");
}

#[test]
fn same_seed_same_order() {
    let rs: Vec<Replica> = (0..5)
        .map(|i| replica(&format!("n{i}"), Tier::Preferred))
        .collect();
    let view = table(&[]);
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..20)
            .map(|_| ids(&try_order(&rs, &view, &mut rng)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert!(try_order(&[], &view, &mut StdRng::seed_from_u64(1)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn live_view_combines_node_and_shard_health() {
    let c = Catalog::embedded_default().expect("valid");
    let m = ReplicaMap::resolve(&c, "acme", "eu-west").expect("acme");
    let stats = StatsRegistry::new(StatsConfig::default());
    let nodes: OutlierDetector<Arc<str>> = OutlierDetector::new(OutlierConfig::default());
    let shards: OutlierDetector<ShardKey> = OutlierDetector::new(OutlierConfig::default());
    let tenant: Arc<str> = "acme".into();
    let view = |shard| LiveView {
        stats: &stats,
        nodes: &nodes,
        shards: &shards,
        tenant: &tenant,
        shard,
    };
    let g = stats.get_or_create(&"eu-idx-2".into()).start();
    // eu-idx-1 fails only for acme shard 0.
    let key = view(0).shard_key(&m.shards[0].replicas[0]);
    for _ in 0..3 {
        shards.record_failure(&key);
    }
    let mut rng = StdRng::seed_from_u64(1);
    let order0 = ids(&try_order(&m.shards[0].replicas, &view(0), &mut rng));
    assert_eq!(order0[0], "eu-idx-2");
    assert_eq!(order0[3], "eu-idx-1", "shard-level ejection puts it last");
    assert_eq!(view(0).state(&m.shards[0].replicas[1]).in_flight, 1);
    // Shard 1 on the same node is unaffected: eu-idx-1 is idle, eu-idx-2 busy.
    let order1 = ids(&try_order(&m.shards[1].replicas, &view(1), &mut rng));
    assert_eq!(order1[0], "eu-idx-1");
    // A node-level ejection affects every shard.
    for _ in 0..3 {
        nodes.record_failure(m.shards[1].replicas[1].id());
    }
    let order1 = ids(&try_order(&m.shards[1].replicas, &view(1), &mut rng));
    assert_eq!(order1.last().map(String::as_str), Some("eu-idx-1"));
    drop(g);
    let models = try_order(&m.models, &view(MODEL_SCOPE), &mut rng);
    assert_eq!(ids(&models), vec!["eu-model-1", "us-model-1"]);
}
