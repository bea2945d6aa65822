//! The load generator's pacing and accounting, against scripted targets on
//! tokio's paused clock: every number below is exact, not a timing guess.

use std::sync::Arc;
use std::time::Duration;

use tandem_loadgen::{
    run_load_with, Answered, EventLog, LoadConfig, LoadMode, Outcome, RecoveryCriteria,
};
use tokio::time::{sleep, Instant};

fn config(mode: LoadMode, secs: u64) -> LoadConfig {
    LoadConfig::new(
        mode,
        Duration::from_secs(secs),
        "en",
        vec!["a".into(), "b".into(), "c".into()],
    )
}

fn open(rate: f64, max_outstanding: usize) -> LoadMode {
    LoadMode::OpenLoop {
        rate,
        max_outstanding,
    }
}

#[tokio::test(start_paused = true)]
async fn open_loop_sends_on_schedule_and_measures_each_answer() {
    let cfg = config(open(100.0, 1000), 2);
    let report = run_load_with(&cfg, &EventLog::new(), |_q| async {
        sleep(Duration::from_millis(10)).await;
        Outcome::served_by("us-east-1")
    })
    .await
    .unwrap();
    let s = &report.summary;
    assert_eq!((s.sent, s.ok, s.failed), (200, 200, 0));
    assert_eq!(s.mode, "open-loop");
    assert_eq!(s.qps, 100.0);
    assert!(
        (9_990..=10_010).contains(&s.latency_us.p99),
        "{:?}",
        s.latency_us
    );
    assert_eq!(s.served_region["us-east-1"].share, 1.0);
    assert_eq!(report.timeline.buckets.len(), 20);
    assert!(report
        .timeline
        .buckets
        .iter()
        .all(|b| b.sent == 10 && b.ok == 10));
}

#[tokio::test(start_paused = true)]
async fn slow_answers_do_not_slow_the_schedule() {
    // A target that takes 500 ms: a closed loop would send 2 per second
    // per caller; the open loop still sends 100 per second.
    let cfg = config(open(100.0, 1000), 1);
    let report = run_load_with(&cfg, &EventLog::new(), |_q| async {
        sleep(Duration::from_millis(500)).await;
        Outcome::served_by("us-east-1")
    })
    .await
    .unwrap();
    assert_eq!(report.summary.ok, 100);
    assert!((499_000..=501_000).contains(&report.summary.latency_us.p50));
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_max_outstanding_fail_as_overload() {
    let cfg = config(open(100.0, 5), 1);
    let report = run_load_with(&cfg, &EventLog::new(), |_q| async {
        sleep(Duration::from_secs(2)).await;
        Outcome::served_by("us-east-1")
    })
    .await
    .unwrap();
    let s = &report.summary;
    assert_eq!((s.sent, s.ok, s.failed), (100, 5, 95));
    assert_eq!(s.errors.get("overload"), Some(&95));
}

#[tokio::test(start_paused = true)]
async fn unanswered_requests_are_abandoned_after_the_drain() {
    let mut cfg = config(open(10.0, 100), 1);
    cfg.drain = Duration::from_secs(1);
    let start = Instant::now();
    let report = run_load_with(&cfg, &EventLog::new(), |_q| std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.summary.errors.get("abandoned"), Some(&10));
    // Virtual time (paused clock): the run ended one drain after the last
    // send instead of waiting for answers that never come.
    assert!(Instant::now() <= start + Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn closed_loop_keeps_n_callers_busy() {
    let cfg = config(LoadMode::ClosedLoop { concurrency: 4 }, 1);
    let report = run_load_with(&cfg, &EventLog::new(), |_q| async {
        sleep(Duration::from_millis(10)).await;
        Outcome::Failed("UNAVAILABLE".into())
    })
    .await
    .unwrap();
    let s = &report.summary;
    assert_eq!((s.mode.as_str(), s.concurrency), ("closed-loop", Some(4)));
    assert_eq!((s.sent, s.failed), (400, 400));
    assert_eq!(s.errors.get("UNAVAILABLE"), Some(&400));
}

#[tokio::test(start_paused = true)]
async fn a_drill_shows_on_the_timeline_with_its_recovery() {
    // Baseline 5 ms from us-east-1; the drill breaks it at 1 s: 300 ms of
    // failures, then 300 ms of slow answers from us-east-2, then normal.
    let events = EventLog::new();
    let base = Instant::now();
    let drill = {
        let events = events.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(995)).await;
            events.mark("router killed");
        })
    };
    let cfg = config(open(100.0, 1000), 3);
    let report = run_load_with(&cfg, &events, move |_q| async move {
        let t = base.elapsed();
        if t >= Duration::from_millis(995) && t < Duration::from_millis(1295) {
            return Outcome::Failed("UNAVAILABLE".into());
        }
        if t >= Duration::from_millis(1295) && t < Duration::from_millis(1595) {
            sleep(Duration::from_millis(50)).await;
            return Outcome::Ok(Answered {
                served_region: "us-east-2".into(),
                client_failover: true,
                ..Default::default()
            });
        }
        sleep(Duration::from_millis(5)).await;
        Outcome::served_by("us-east-1")
    })
    .await
    .unwrap();
    drill.await.unwrap();
    let s = &report.summary;
    assert_eq!((s.sent, s.failed), (300, 30));
    assert_eq!(s.served_region["us-east-2"].count, 30);
    assert_eq!(s.client_failover, 30);
    let recovery = report
        .recovery("router killed", &RecoveryCriteria::default())
        .unwrap();
    assert_eq!(recovery.fault_ms, 995);
    assert_eq!(recovery.failed_after_fault, 30);
    assert_eq!(recovery.baseline_p99_us, Some(5_000));
    assert_eq!(recovery.recovered_at_ms, Some(1600));
    assert_eq!(recovery.time_to_recover(), Some(Duration::from_millis(605)));
    assert!(report
        .recovery("no such event", &RecoveryCriteria::default())
        .is_none());
    let shares: Vec<f64> = report
        .timeline
        .buckets
        .iter()
        .map(|b| b.share("us-east-2"))
        .collect();
    assert_eq!(&shares[12..16], &[0.0, 1.0, 1.0, 1.0]);
}

#[tokio::test(start_paused = true)]
async fn bad_configs_are_errors() {
    let call = |_q: String| async { Outcome::served_by("x") };
    for mode in [
        open(0.0, 10),
        open(f64::NAN, 10),
        open(-5.0, 10),
        open(10.0, 0),
        LoadMode::ClosedLoop { concurrency: 0 },
    ] {
        assert!(run_load_with(&config(mode, 1), &EventLog::new(), call)
            .await
            .is_err());
    }
    let mut cfg = config(open(10.0, 10), 1);
    cfg.queries = Arc::new(Vec::new());
    assert!(run_load_with(&cfg, &EventLog::new(), call).await.is_err());
}
