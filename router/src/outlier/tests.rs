use super::*;
use tokio::time::advance;

fn detector() -> OutlierDetector<&'static str> {
    OutlierDetector::new(OutlierConfig::default())
}

fn fail_n(d: &OutlierDetector<&'static str>, key: &'static str, n: u32) -> Transition {
    let mut last = Transition::None;
    for _ in 0..n {
        last = d.record_failure(&key);
    }
    last
}

/// `n` SERVING probes; the last one's transition.
fn serve_probes(d: &OutlierDetector<&'static str>, key: &'static str, n: u32) -> Transition {
    let mut last = Transition::None;
    for _ in 0..n {
        last = d.record_probe(&key, ProbeResult::Serving);
    }
    last
}

fn ejected_for(t: Transition) -> Duration {
    match t {
        Transition::Ejected { backoff, .. } => backoff,
        other => panic!("expected an ejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_success_resets_the_count() {
    let d = detector();
    assert_eq!(fail_n(&d, "n1", 2), Transition::None);
    assert_eq!(d.health(&"n1"), Health::Healthy);
    d.record_success(&"n1");
    assert_eq!(fail_n(&d, "n1", 2), Transition::None, "count was reset");
    let t = d.record_failure(&"n1");
    assert_eq!(ejected_for(t), Duration::from_secs(1));
    assert!(matches!(d.health(&"n1"), Health::Ejected { .. }));
    assert_eq!(d.health(&"other"), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn ejection_ends_in_probation_with_paced_trials() {
    let d = detector();
    fail_n(&d, "n1", 3);
    assert!(!d.try_begin_trial(&"n1"), "no trial while ejected");
    advance(Duration::from_millis(999)).await;
    assert!(matches!(d.health(&"n1"), Health::Ejected { .. }));
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        d.health(&"n1"),
        Health::Probation {
            trial_available: true
        }
    );
    assert!(d.try_begin_trial(&"n1"));
    assert!(!d.try_begin_trial(&"n1"), "only one trial at a time");
    assert_eq!(
        d.health(&"n1"),
        Health::Probation {
            trial_available: false
        }
    );
    // One success is not enough: a run of three, each trial at least
    // 25 ms after the last, re-admits.
    assert_eq!(d.record_success(&"n1"), Transition::None);
    assert!(!d.try_begin_trial(&"n1"), "the next trial waits its turn");
    for _ in 0..2 {
        advance(Duration::from_millis(25)).await;
        assert!(d.try_begin_trial(&"n1"), "bounded, never no trial traffic");
        assert!(matches!(d.health(&"n1"), Health::Probation { .. }));
        d.record_success(&"n1");
    }
    assert_eq!(d.health(&"n1"), Health::Healthy);
    assert!(d.try_begin_trial(&"n1"), "healthy keys need no trial");
}

#[tokio::test(start_paused = true)]
async fn a_replica_failing_every_other_call_does_not_flap_back_in() {
    let d = detector();
    fail_n(&d, "n1", 3);
    let mut backoff = Duration::from_secs(1);
    let mut readmitted = 0;
    for round in 0..5 {
        advance(backoff).await;
        // On probation it answers once, then fails: back out, longer.
        assert!(d.try_begin_trial(&"n1"), "round {round}");
        readmitted += u32::from(d.record_success(&"n1") == Transition::Readmitted);
        advance(Duration::from_millis(25)).await;
        assert!(d.try_begin_trial(&"n1"));
        backoff = ejected_for(d.record_failure(&"n1"));
    }
    assert_eq!(readmitted, 0, "never healthy, never served as such");
    assert_eq!(backoff, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn repeated_ejections_double_up_to_the_cap() {
    let d = detector();
    let mut backoff = ejected_for(fail_n(&d, "n1", 3));
    let mut seen = vec![backoff];
    for _ in 0..6 {
        advance(backoff).await;
        assert!(d.try_begin_trial(&"n1"));
        backoff = ejected_for(d.record_failure(&"n1"));
        seen.push(backoff);
    }
    let secs: Vec<u64> = seen.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_trial_is_retried_after_the_trial_timeout() {
    let d = detector();
    fail_n(&d, "n1", 3);
    advance(Duration::from_secs(1)).await;
    assert!(d.try_begin_trial(&"n1"));
    advance(Duration::from_millis(1999)).await;
    assert!(!d.try_begin_trial(&"n1"));
    advance(Duration::from_millis(1)).await;
    assert!(d.try_begin_trial(&"n1"));
}

#[tokio::test(start_paused = true)]
async fn failures_of_calls_in_flight_do_not_extend_an_ejection() {
    let d = detector();
    fail_n(&d, "n1", 3);
    advance(Duration::from_millis(500)).await;
    assert_eq!(fail_n(&d, "n1", 5), Transition::None);
    advance(Duration::from_millis(500)).await;
    assert!(matches!(d.health(&"n1"), Health::Probation { .. }));
    // Late successes during the ejection do not re-admit either.
    fail_n(&d, "n2", 3);
    assert_eq!(d.record_success(&"n2"), Transition::None);
    assert!(matches!(d.health(&"n2"), Health::Ejected { .. }));
}

#[tokio::test(start_paused = true)]
async fn probes_end_an_ejection_early_and_eject_at_once() {
    let d = detector();
    fail_n(&d, "n1", 3);
    advance(Duration::from_millis(100)).await;
    // A SERVING probe ends the backoff (a restarted node) and counts as
    // one success of the run that re-admits.
    assert_eq!(serve_probes(&d, "n1", 1), Transition::None);
    assert!(matches!(d.health(&"n1"), Health::Probation { .. }));
    assert_eq!(serve_probes(&d, "n1", 2), Transition::Readmitted);
    assert_eq!(d.health(&"n1"), Health::Healthy);

    let t = d.record_probe(&"n2", ProbeResult::NotServing);
    assert_eq!(ejected_for(t), Duration::from_secs(1));
    assert_eq!(
        d.record_probe(&"n2", ProbeResult::NotServing),
        Transition::None,
        "already ejected"
    );

    assert_eq!(d.record_probe(&"n3", ProbeResult::Error), Transition::None);
    assert_eq!(d.record_probe(&"n3", ProbeResult::Error), Transition::None);
    assert!(matches!(
        d.record_probe(&"n3", ProbeResult::Error),
        Transition::Ejected { .. }
    ));
    // A serving probe on a healthy key with failures does not erase them.
    fail_n(&d, "n4", 2);
    d.record_probe(&"n4", ProbeResult::Serving);
    assert!(matches!(
        d.record_failure(&"n4"),
        Transition::Ejected { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn pair_probes_only_end_probation() {
    let d: OutlierDetector<&str> = OutlierDetector::new(OutlierConfig {
        probe_ends_ejection: false,
        ..OutlierConfig::default()
    });
    fail_n(&d, "pair", 3);
    advance(Duration::from_millis(100)).await;
    assert_eq!(
        d.record_probe(&"pair", ProbeResult::Serving),
        Transition::None
    );
    assert!(matches!(d.health(&"pair"), Health::Ejected { .. }));
    advance(Duration::from_secs(1)).await;
    assert_eq!(serve_probes(&d, "pair", 2), Transition::None);
    assert_eq!(serve_probes(&d, "pair", 1), Transition::Readmitted);
    assert_eq!(d.health(&"pair"), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_in_probation_ejects_again_longer() {
    let d = detector();
    fail_n(&d, "n1", 3);
    advance(Duration::from_secs(1)).await;
    let t = d.record_probe(&"n1", ProbeResult::NotServing);
    assert_eq!(ejected_for(t), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn ejection_count_is_forgotten_after_a_healthy_minute() {
    let d = detector();
    fail_n(&d, "n1", 3);
    serve_probes(&d, "n1", 3);
    advance(Duration::from_secs(59)).await;
    assert_eq!(ejected_for(fail_n(&d, "n1", 3)), Duration::from_secs(2));
    serve_probes(&d, "n1", 3);
    advance(Duration::from_secs(60)).await;
    assert_eq!(ejected_for(fail_n(&d, "n1", 3)), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn healthy_keys_leave_no_entries() {
    let d = detector();
    fail_n(&d, "n1", 2);
    assert_eq!(d.snapshot().len(), 1);
    assert_eq!(d.snapshot()[0].consecutive_failures, 2);
    d.record_success(&"n1");
    assert!(d.snapshot().is_empty());

    fail_n(&d, "n2", 3);
    serve_probes(&d, "n2", 3);
    d.record_success(&"n2");
    assert_eq!(d.snapshot().len(), 1, "ejection count is kept for a while");
    advance(Duration::from_secs(60)).await;
    d.record_success(&"n2");
    assert!(d.snapshot().is_empty());

    fail_n(&d, "n3", 1);
    d.retain(|k| *k != "n3");
    assert!(d.snapshot().is_empty());
    fail_n(&d, "n4", 1);
    d.forget(&"n4");
    assert!(d.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shard_keys_are_independent_of_each_other() {
    let d: OutlierDetector<ShardKey> = OutlierDetector::default();
    let key = |tenant: &str, shard| ShardKey {
        node: "n1".into(),
        tenant: tenant.into(),
        shard,
    };
    for _ in 0..3 {
        d.record_failure(&key("acme", 0));
    }
    assert!(matches!(d.health(&key("acme", 0)), Health::Ejected { .. }));
    assert_eq!(d.health(&key("acme", 1)), Health::Healthy);
    assert_eq!(d.health(&key("globex", 0)), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn zero_threshold_means_one() {
    let d = OutlierDetector::new(OutlierConfig {
        consecutive_failures: 0,
        ..OutlierConfig::default()
    });
    assert_eq!(d.config().consecutive_failures, 1);
    assert!(matches!(d.record_failure(&"n"), Transition::Ejected { .. }));
}

#[tokio::test(start_paused = true)]
async fn worst_of_two_views() {
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    let free = Health::Probation {
        trial_available: true,
    };
    let busy = Health::Probation {
        trial_available: false,
    };
    let ej = |until| Health::Ejected { until };
    assert_eq!(Health::Healthy.worst(Health::Healthy), Health::Healthy);
    assert_eq!(Health::Healthy.worst(free), free);
    assert_eq!(busy.worst(free), busy);
    assert_eq!(free.worst(ej(now)), ej(now));
    assert_eq!(ej(later).worst(ej(now)), ej(later));
    assert!(Health::Healthy.is_healthy());
    assert!(!free.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn absurd_backoffs_do_not_panic() {
    let d = OutlierDetector::new(OutlierConfig {
        base_ejection: Duration::MAX,
        max_ejection: Duration::MAX,
        ..OutlierConfig::default()
    });
    assert!(matches!(fail_n(&d, "n", 3), Transition::Ejected { .. }));
    assert!(matches!(d.health(&"n"), Health::Ejected { .. }));
}
