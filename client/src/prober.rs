//! The background task that probes the home router while the client is
//! away from it, and hands each answer to the policy. The probe itself is
//! a function argument, so tests drive this loop with scripted answers on
//! tokio's paused clock; production passes a `grpc.health.v1` check.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::switch::Switch;

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeTiming {
    /// Pause before each probe (also after the failover, as the router
    /// just failed and an immediate probe would tell nothing new).
    pub interval: Duration,
    /// A probe that has not answered by then counts as not serving.
    pub timeout: Duration,
}

/// Runs until the task is aborted (when the last client clone is dropped).
/// Idle, without timers, while the policy is home.
pub(crate) async fn run<P, F>(switch: Arc<Switch>, timing: ProbeTiming, mut probe: P)
where
    P: FnMut(usize) -> F,
    F: Future<Output = bool>,
{
    loop {
        switch.wait_for_probe_target().await;
        tokio::time::sleep(timing.interval).await;
        let Some(target) = switch.probe_target() else {
            continue;
        };
        let serving = tokio::time::timeout(timing.timeout, probe(target))
            .await
            .unwrap_or(false);
        switch.report_probe(target, serving);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;
    use crate::failover::FailoverPolicy;

    const TIMING: ProbeTiming = ProbeTiming {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(100),
    };

    struct Harness {
        switch: Arc<Switch>,
        probes: Arc<Mutex<Vec<Duration>>>,
        start: Instant,
        task: tokio::task::JoinHandle<()>,
    }

    /// A switch over two routers (home 0) whose prober answers from
    /// `script` (`None` = hang past the timeout; empty = not serving).
    fn harness(script: Vec<Option<bool>>) -> Harness {
        let names = vec![Arc::from("home"), Arc::from("away")];
        let switch = Arc::new(Switch::new(FailoverPolicy::new(2, 0, 2), names));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (log, sw) = (probes.clone(), switch.clone());
        let task = tokio::spawn(run(sw, TIMING, move |_target| {
            let log = log.clone();
            let script = script.clone();
            async move {
                log.lock().unwrap().push(start.elapsed());
                let answer = script.lock().unwrap().pop_front().unwrap_or(Some(false));
                match answer {
                    Some(serving) => serving,
                    None => std::future::pending().await,
                }
            }
        }));
        Harness {
            switch,
            probes,
            start,
            task,
        }
    }

    async fn wait_home(h: &Harness) -> Duration {
        while h.switch.lease().router != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        h.start.elapsed()
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn no_probes_while_home() {
        let h = harness(vec![]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(h.probes.lock().unwrap().is_empty());
        h.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn returns_after_two_consecutive_serving_probes() {
        let h = harness(vec![Some(true), Some(true)]);
        h.switch.report_failure(h.switch.lease());
        assert_eq!(h.switch.lease().router, 1);
        let back = wait_home(&h).await;
        assert_eq!(*h.probes.lock().unwrap(), ms(&[200, 400]));
        assert!(back >= Duration::from_millis(400) && back < Duration::from_millis(410));
        // Home again: the prober goes idle.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(h.probes.lock().unwrap().len(), 2);
        h.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_answer_or_a_hung_probe_resets_the_streak() {
        let h = harness(vec![
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(true),
            Some(true),
        ]);
        h.switch.report_failure(h.switch.lease());
        wait_home(&h).await;
        // The hung probe (4th) costs its timeout before the next pause.
        assert_eq!(
            *h.probes.lock().unwrap(),
            ms(&[200, 400, 600, 800, 1100, 1300])
        );
        h.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn fails_over_again_after_returning() {
        let h = harness(vec![Some(true), Some(true), Some(true), Some(true)]);
        h.switch.report_failure(h.switch.lease());
        wait_home(&h).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.switch.report_failure(h.switch.lease());
        assert_eq!(h.switch.lease().router, 1);
        wait_home(&h).await;
        assert_eq!(h.probes.lock().unwrap().len(), 4);
        h.task.abort();
    }
}
