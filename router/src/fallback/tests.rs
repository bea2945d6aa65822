//! Tests of [`Resilience::call`]'s hedging and blame against scripted
//! replicas, under tokio's paused clock (end to end: `tests/tests/router.rs`).

use super::*;
use crate::budget::RetryBudgetConfig;
use crate::catalog::NodeKind;
use crate::endpoint_stats::StatsConfig;
use crate::outlier::OutlierConfig;
use crate::replicas::Tier;

fn resilience() -> Resilience {
    Resilience {
        stats: StatsRegistry::new(StatsConfig::default()),
        nodes: OutlierDetector::new(OutlierConfig::default()),
        shards: OutlierDetector::new(OutlierConfig {
            probe_readmits_ejected: false,
            ..OutlierConfig::default()
        }),
        budget: RetryBudget::new(RetryBudgetConfig::default()),
        hedge: HedgePolicy::new(
            Duration::from_millis(2),
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .expect("valid delays"),
        channels: Channels::new(),
    }
}

fn replica(id: &str, region: &str, tier: Tier) -> Replica {
    Replica {
        node: Arc::new(Node {
            id: Arc::from(id),
            region: Arc::from(region),
            kind: NodeKind::Index,
            addr: Arc::from(format!("http://{id}.invalid:1").as_str()),
        }),
        tier,
    }
}

/// `local` (preferred) and a `remote` replica in the paired region.
fn local_and_remote(local: &str) -> [Replica; 2] {
    [
        replica(local, "r1", Tier::Preferred),
        replica("remote", "r2", Tier::Paired),
    ]
}

/// One call of tenant `t`'s shard 0 over `replicas` (deadline 2 s, 500 ms
/// per try), each attempt answered by `attempt`.
async fn call<T, F, Fut>(r: &Resilience, replicas: &[Replica], attempt: F) -> Outcome<T>
where
    F: Fn(&Node, NodeChannel, Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let tenant: Arc<str> = Arc::from("t");
    let target = Target {
        replicas,
        tenant: &tenant,
        scope: 0,
        kind: "index",
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    r.call(target, deadline, Duration::from_millis(500), attempt)
        .await
}

/// One call where `local` never answers and `remote` answers after 1 ms.
async fn call_with_frozen_local(r: &Resilience, replicas: &[Replica]) -> Outcome<&'static str> {
    call(r, replicas, |node, _, _| {
        let frozen = &*node.id == "local";
        async move {
            if frozen {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok("answer")
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_frozen_replica_is_hedged_then_ejected_after_three_lost_races() {
    let r = resilience();
    let replicas = local_and_remote("local");
    for n in 1..=3 {
        let started = Instant::now();
        let outcome = call_with_frozen_local(&r, &replicas).await;
        assert_eq!(outcome.result.expect("hedge answers"), "answer");
        assert!(outcome.hedged && outcome.fallback);
        assert_eq!(outcome.node.expect("answered").id.as_ref(), "remote");
        // The default hedging delay (no history yet) plus the remote's 1 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(11), "call {n}");
        let ejected = matches!(r.nodes.health(&Arc::from("local")), Health::Ejected { .. });
        assert_eq!(ejected, n == 3, "after call {n}");
    }
    // Ejected: the next call goes to the remote replica first, no hedge.
    let started = Instant::now();
    let outcome = call_with_frozen_local(&r, &replicas).await;
    assert_eq!(outcome.node.expect("answered").id.as_ref(), "remote");
    assert!(!outcome.hedged);
    assert_eq!(started.elapsed(), Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_loses_is_not_blamed() {
    let r = resilience();
    let replicas = local_and_remote("slowish");
    for _ in 0..5 {
        // The first replica answers after 12 ms: past the 10 ms hedging
        // delay, but before the hedge (10 + 5 ms) does.
        let outcome = call(&r, &replicas, |node, _, _| {
            let delay = if &*node.id == "slowish" { 12 } else { 5 };
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(())
            }
        })
        .await;
        assert_eq!(outcome.node.expect("answered").id.as_ref(), "slowish");
        assert!(outcome.hedged && !outcome.fallback);
    }
    assert_eq!(r.nodes.health(&Arc::from("remote")), Health::Healthy);
    assert_eq!(r.nodes.health(&Arc::from("slowish")), Health::Healthy);
}

#[test]
fn pending_attempts_are_tracked_by_index() {
    let mut pending = Pending::default();
    for i in [0, 2, 5, 70] {
        pending.insert(i);
    }
    pending.remove(2);
    assert_eq!(pending.before(6).collect::<Vec<_>>(), vec![0, 5]);
    assert_eq!(pending.before(0).count(), 0);
    // Past the 64th attempt nothing is tracked.
    assert_eq!(pending.before(100).collect::<Vec<_>>(), vec![0, 5]);
}
