//! Tests of [`Resilience::call`]'s hedging, blame and every way a call
//! ends, against scripted replicas under tokio's paused clock (the state
//! machine alone: `attempts.rs`; end to end: `tests/tests/router.rs`).

use super::*;
use crate::budget::RetryBudgetConfig;
use crate::catalog::NodeKind;
use crate::endpoint_stats::StatsConfig;
use crate::outlier::OutlierConfig;
use crate::replicas::Tier;
use tandem_common::latency::Network;

fn resilience() -> Resilience {
    Resilience {
        stats: StatsRegistry::new(StatsConfig::default()),
        nodes: OutlierDetector::new(OutlierConfig::default()),
        shards: OutlierDetector::new(OutlierConfig {
            probe_ends_ejection: false,
            ..OutlierConfig::default()
        }),
        escalation: Default::default(),
        budget: RetryBudget::new(RetryBudgetConfig::default()),
        hedge: HedgePolicy::new(
            Duration::from_millis(2),
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .expect("valid delays"),
        channels: Channels::new(None),
        network: Network::local("r1"),
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
    Fut: Future<Output = Result<T, Status>> + Send,
    T: Send,
{
    call_for(r, "t", replicas, attempt).await
}

/// [`call`] for tenant `tenant`.
async fn call_for<T, F, Fut>(
    r: &Resilience,
    tenant: &str,
    replicas: &[Replica],
    attempt: F,
) -> Outcome<T>
where
    F: Fn(&Node, NodeChannel, Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send,
    T: Send,
{
    let tenant: Arc<str> = Arc::from(tenant);
    let target = Target {
        replicas,
        tenant: &tenant,
        scope: 0,
        kind: "index",
        request_id: "test",
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    r.call(target, deadline, Duration::from_millis(500), attempt)
        .await
}

/// One call where `local` never answers and `remote` answers after 1 ms.
async fn call_with_frozen_local(r: &Resilience, replicas: &[Replica]) -> Outcome<&'static str> {
    frozen_local_for(r, "t", replicas).await
}

/// [`call_with_frozen_local`] for tenant `tenant`.
async fn frozen_local_for(
    r: &Resilience,
    tenant: &str,
    replicas: &[Replica],
) -> Outcome<&'static str> {
    call_for(r, tenant, replicas, |node, _, _| {
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

fn pair(tenant: &str) -> ShardKey {
    ShardKey {
        node: Arc::from("local"),
        tenant: Arc::from(tenant),
        shard: 0,
    }
}

/// Lost races blame the node x tenant-shard pair: one tenant's silent shard
/// moves that tenant away after three, and leaves the node in.
#[tokio::test(start_paused = true)]
async fn a_silent_replica_is_hedged_then_its_pair_ejected_after_three_lost_races() {
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
        let ejected = matches!(r.shards.health(&pair("t")), Health::Ejected { .. });
        assert_eq!(ejected, n == 3, "after call {n}");
    }
    assert!(r.nodes.health(&Arc::from("local")).is_healthy());
    // Ejected: the next call goes to the remote replica first, no hedge.
    let started = Instant::now();
    let outcome = call_with_frozen_local(&r, &replicas).await;
    assert_eq!(outcome.node.expect("answered").id.as_ref(), "remote");
    assert!(!outcome.hedged);
    assert_eq!(started.elapsed(), Duration::from_millis(1));
}

/// A frozen process is silent for every tenant: two tenants' pairs timing
/// out together blame the node, which is ejected after as many queries as
/// before (so the index-frozen drill's node still leaves at once), before
/// either pair is.
#[tokio::test(start_paused = true)]
async fn a_node_silent_for_several_tenants_is_ejected_as_a_node() {
    let r = resilience();
    let replicas = local_and_remote("local");
    let local: Arc<str> = Arc::from("local");
    for (n, tenant) in ["t", "u", "t", "u"].into_iter().enumerate() {
        let outcome = frozen_local_for(&r, tenant, &replicas).await;
        assert_eq!(outcome.result.expect("hedge answers"), "answer");
        let ejected = matches!(r.nodes.health(&local), Health::Ejected { .. });
        assert_eq!(ejected, n == 3, "after call {n}");
    }
    assert!(r.shards.health(&pair("t")).is_healthy());
    // Every tenant now starts at the remote replica.
    let outcome = frozen_local_for(&r, "v", &replicas).await;
    assert!(!outcome.hedged);
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

/// A resilience whose retry budget is always empty.
fn broke() -> Resilience {
    Resilience {
        budget: RetryBudget::new(RetryBudgetConfig {
            ratio_percent: 0,
            min_per_sec: 0,
            window: Duration::from_secs(10),
        }),
        ..resilience()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_with_the_budget_empty_fails_fast() {
    let r = broke();
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(Status::unavailable("down"))
    })
    .await;
    let status = outcome.result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().starts_with("retry budget exhausted"),
        "{status:?}"
    );
    assert_eq!(outcome.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_moves_to_the_next_replica_and_the_last_ends_exhausted() {
    let r = resilience();
    let replicas = local_and_remote("local");
    let outcome = call(&r, &replicas, |node, _, _| {
        let local = &*node.id == "local";
        async move {
            if local {
                Err(Status::unavailable("down"))
            } else {
                Ok("remote")
            }
        }
    })
    .await;
    assert_eq!(outcome.result.unwrap(), "remote");
    assert!(outcome.fallback && !outcome.hedged);
    assert_eq!(outcome.attempts, 2);

    let outcome: Outcome<()> = call(&r, &replicas, |_, _, _| async {
        Err(Status::unavailable("down"))
    })
    .await;
    let status = outcome.result.unwrap_err();
    assert!(
        status.message().starts_with("no replica of index shard 0"),
        "{status:?}"
    );
    assert_eq!(outcome.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_returned_without_trying_another_replica() {
    let r = resilience();
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(Status::invalid_argument("bad query"))
    })
    .await;
    assert_eq!(outcome.result.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(outcome.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn no_replica_at_all_is_unavailable_without_an_attempt() {
    let r = resilience();
    let outcome: Outcome<()> = call(&r, &[], |_, _, _| async { Ok(()) }).await;
    let status = outcome.result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().ends_with("has no replica"), "{status:?}");
    assert_eq!(outcome.attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn every_replica_ejected_is_still_tried_as_a_last_resort() {
    let r = resilience();
    let replicas = local_and_remote("local");
    for id in ["local", "remote"] {
        for _ in 0..3 {
            r.nodes.record_failure(&Arc::from(id));
        }
        assert!(matches!(
            r.nodes.health(&Arc::from(id)),
            Health::Ejected { .. }
        ));
    }
    let outcome = call(&r, &replicas, |_, _, _| async { Ok("answer") }).await;
    assert_eq!(outcome.result.unwrap(), "answer");
    assert_eq!(outcome.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_fails_first_leaves_the_slow_attempt_to_answer() {
    let r = resilience();
    // One replica per tier, so the try order is fixed.
    let replicas = [
        replica("slow", "r1", Tier::Preferred),
        replica("broken", "r2", Tier::Paired),
        replica("spare", "r3", Tier::Other),
    ];
    // The first replica answers after 12 ms, past the 10 ms hedging delay;
    // the hedge fails at once. No retry goes to the spare while the first
    // attempt may still answer, and it does.
    let outcome = call(&r, &replicas, |node, _, _| {
        let id = node.id.clone();
        async move {
            match &*id {
                "broken" => Err(Status::unavailable("down")),
                _ => {
                    tokio::time::sleep(Duration::from_millis(12)).await;
                    Ok(id)
                }
            }
        }
    })
    .await;
    assert_eq!(&*outcome.result.unwrap(), "slow");
    assert_eq!(outcome.attempts, 2);
    assert!(outcome.hedged && !outcome.fallback);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_call_nobody_answers() {
    let r = resilience();
    let tenant: Arc<str> = Arc::from("t");
    let replicas = local_and_remote("local");
    let target = Target {
        replicas: &replicas,
        tenant: &tenant,
        scope: 0,
        kind: "index",
        request_id: "test",
    };
    let started = Instant::now();
    let deadline = started + Duration::from_millis(100);
    let outcome: Outcome<()> = r
        .call(
            target,
            deadline,
            Duration::from_millis(500),
            |_, _, _| async {
                std::future::pending::<()>().await;
                Ok(())
            },
        )
        .await;
    assert_eq!(outcome.result.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(outcome.hedged, "the hedge went out at 10 ms");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

fn shed() -> Status {
    tandem_proto::shed::status(tandem_proto::shed::NODE, "queue full")
}

#[tokio::test(start_paused = true)]
async fn replicas_that_all_shed_give_a_shed_answer_not_unavailable() {
    let r = resilience();
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(shed())
    })
    .await;
    let status = outcome.result.unwrap_err();
    assert_eq!(
        tandem_proto::shed::who(&status),
        Some(tandem_proto::shed::NODE)
    );
    assert_eq!(
        outcome.attempts, 2,
        "one more replica, the budget having headroom"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shed_is_not_retried_when_the_budget_is_half_spent() {
    let r = resilience();
    // Spend more than half of what the window earned (the floor: 10/s
    // over 10 s, no deposits yet).
    for _ in 0..60 {
        assert!(r.budget.try_withdraw());
    }
    assert!(!r.budget.has_headroom());
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(shed())
    })
    .await;
    let status = outcome.result.unwrap_err();
    assert_eq!(
        tandem_proto::shed::who(&status),
        Some(tandem_proto::shed::NODE)
    );
    assert_eq!(outcome.attempts, 1, "no retry feeds the overload");
    // Another failure is still retried with what is left.
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(Status::unavailable("down"))
    })
    .await;
    assert_eq!(outcome.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_calls_answer_names_no_address() {
    let r = resilience();
    let outcome: Outcome<()> = call(&r, &local_and_remote("local"), |_, _, _| async {
        Err(Status::unavailable(
            "tcp connect error: 10.1.2.3:7101: connection refused (/var/lib/tandem/x)",
        ))
    })
    .await;
    let message = outcome.result.unwrap_err().message().to_string();
    assert!(
        !message.contains("10.1.2.3") && !message.contains("/var/lib"),
        "{message}"
    );
    assert!(message.ends_with("last failure: unavailable"), "{message}");
}
