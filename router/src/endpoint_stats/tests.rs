use super::*;
use tokio::time::advance;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn stats() -> Arc<EndpointStats> {
    Arc::new(EndpointStats::new(StatsConfig::default()))
}

#[tokio::test(start_paused = true)]
async fn in_flight_guard_counts_and_measures() {
    let s = stats();
    let a = s.start();
    let b = s.start();
    assert_eq!(s.in_flight(), 2);
    advance(ms(3)).await;
    assert_eq!(a.success(), ms(3));
    assert_eq!(s.in_flight(), 1);
    drop(b);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.ewma(), Some(ms(3)));
    let snap = s.snapshot();
    assert_eq!((snap.successes, snap.failures, snap.in_flight), (1, 0, 0));
    let c = s.start();
    assert!(Arc::ptr_eq(c.stats(), &s));
    advance(ms(1)).await;
    assert_eq!(c.failure(), ms(1));
    assert_eq!(s.snapshot().failures, 1);
    assert_eq!(s.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn ewma_jumps_up_and_decays_down_with_time() {
    let s = stats();
    assert_eq!(s.ewma(), None);
    s.record_success(ms(1));
    s.record_success(ms(10));
    assert_eq!(s.ewma(), Some(ms(10)), "peak: a slow answer counts at once");
    // A fast answer right after barely moves the estimate...
    s.record_success(ms(1));
    assert_eq!(s.ewma(), Some(ms(10)));
    // ...one a decay period later moves it about 63% of the way.
    advance(Duration::from_secs(1)).await;
    s.record_success(ms(1));
    let e = s.ewma().expect("fresh");
    assert!(e > ms(4) && e < ms(5), "{e:?}");
    // With no samples for longer than stale_after the estimate is absent.
    advance(Duration::from_secs(5)).await;
    assert_eq!(s.ewma(), Some(e), "5 s is not yet stale");
    advance(ms(1)).await;
    assert_eq!(s.ewma(), None);
    // The next sample after a long pause nearly replaces the old estimate.
    s.record_success(ms(1));
    let e = s.ewma().expect("fresh");
    assert!(e < Duration::from_micros(1100), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_and_abandoned_calls_only_raise_the_estimate() {
    let s = stats();
    s.record_failure(Some(ms(1)));
    s.record_abandoned(ms(1));
    assert_eq!(s.ewma(), None, "a lower bound does not seed");
    s.record_success(ms(5));
    s.record_failure(Some(Duration::from_micros(10)));
    assert_eq!(s.ewma(), Some(ms(5)), "fast failure does not look fast");
    s.record_abandoned(ms(2));
    assert_eq!(s.ewma(), Some(ms(5)));
    s.record_abandoned(ms(50));
    assert_eq!(s.ewma(), Some(ms(50)));
    s.record_failure(Some(ms(80)));
    assert_eq!(s.ewma(), Some(ms(80)));
    s.record_failure(None);
    assert_eq!(s.snapshot().failures, 4);
    assert_eq!(s.p95(), None, "failures never enter the window");
}

#[tokio::test(start_paused = true)]
async fn p95_needs_samples_and_keeps_only_recent_ones() {
    let s = stats();
    for us in 1..=19 {
        s.record_success(Duration::from_micros(us));
    }
    assert_eq!(s.p95(), None);
    s.record_success(Duration::from_micros(20));
    // 20 samples 1..=20 us: nearest rank ceil(0.95 * 20) = 19.
    assert_eq!(s.p95(), Some(Duration::from_micros(19)));
    for us in 21..=100 {
        s.record_success(Duration::from_micros(us));
    }
    // The window holds 37..=100; rank ceil(0.95 * 64) = 61 -> 97 us.
    assert_eq!(s.p95(), Some(Duration::from_micros(97)));
    assert_eq!(s.quantile(0.0), Some(Duration::from_micros(37)));
    assert_eq!(s.quantile(1.0), Some(Duration::from_micros(100)));
    assert_eq!(s.quantile(f64::NAN), Some(Duration::from_micros(100)));
    assert_eq!(s.quantile(7.0), Some(Duration::from_micros(100)));
    s.record_success(Duration::from_secs(u64::MAX / 4));
    assert!(s.quantile(1.0).is_some(), "huge latencies saturate");
}

#[tokio::test(start_paused = true)]
async fn registry_shares_one_stats_per_node() {
    let r = StatsRegistry::new(StatsConfig::default());
    let id: Arc<str> = "n1".into();
    assert!(r.get("n1").is_none());
    let a = r.get_or_create(&id);
    let b = r.get_or_create(&id);
    assert!(Arc::ptr_eq(&a, &b));
    let _guard = a.start();
    assert_eq!(r.get("n1").map(|s| s.in_flight()), Some(1));
    r.get_or_create(&"n2".into());
    assert_eq!(r.snapshot().len(), 2);
    r.retain(|id| id != "n2");
    assert_eq!(r.snapshot().len(), 1);
    assert_eq!(r.snapshot()[0].1.in_flight, 1);
}
