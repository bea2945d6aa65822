//! Time to recover: how long after a fault the tail latency is back to
//! what it was before, for long enough that it is not a lucky bucket.
//!
//! Baseline: the median of the p99s of the buckets that ended before the
//! fault (the median, so one slow bucket at start-up does not raise the
//! bar). Recovered: the first bucket, from the one holding the fault on,
//! that starts a run of `consecutive` buckets each with answers, a p99
//! within `factor` x baseline and (by default) no failed request. A
//! bucket where every request failed fast is not a recovered one.

use std::time::Duration;

use serde::Serialize;

use crate::timeline::{quantile, Bucket, Timeline};

/// What "back to normal" means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryCriteria {
    /// A bucket is normal when its p99 is at most `factor` x baseline.
    pub factor: f64,
    /// Normal buckets needed in a row.
    pub consecutive: usize,
    /// A bucket with a failed request is not normal.
    pub require_no_failures: bool,
}

impl Default for RecoveryCriteria {
    /// 1.5 x baseline p99 for 5 buckets in a row, without failures.
    fn default() -> Self {
        RecoveryCriteria {
            factor: 1.5,
            consecutive: 5,
            require_no_failures: true,
        }
    }
}

/// The answer, with the numbers behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Recovery {
    /// When the fault happened, ms from the start of the run.
    pub fault_ms: u64,
    /// Median p99 of the pre-fault buckets (none: no pre-fault answers).
    pub baseline_p99_us: Option<u64>,
    /// The p99 a bucket may have to count as normal.
    pub threshold_us: Option<u64>,
    /// Start of the first normal run of buckets, ms from the run start.
    pub recovered_at_ms: Option<u64>,
    /// `recovered_at - fault` (zero if latency never left normal); none if
    /// it did not recover before the run ended or there was no baseline.
    pub time_to_recover_ms: Option<u64>,
    /// Requests due at or after the fault's bucket that failed.
    pub failed_after_fault: u64,
}

impl Recovery {
    /// [`Recovery::time_to_recover_ms`] as a duration.
    pub fn time_to_recover(&self) -> Option<Duration> {
        self.time_to_recover_ms.map(Duration::from_millis)
    }
}

impl Timeline {
    /// Time until p99 latency is back to normal after a fault at `fault`
    /// (see the module docs).
    pub fn time_to_recover(&self, fault: Duration, criteria: &RecoveryCriteria) -> Recovery {
        time_to_recover(self, fault, criteria)
    }
}

/// Computes the [`Recovery`] from a fault at `fault` (see the module docs).
pub fn time_to_recover(
    timeline: &Timeline,
    fault: Duration,
    criteria: &RecoveryCriteria,
) -> Recovery {
    let width = timeline.bucket_ms.max(1);
    let fault_ms = u64::try_from(fault.as_millis()).unwrap_or(u64::MAX);
    let fault_index = usize::try_from(fault_ms / width).unwrap_or(usize::MAX);
    let mut pre_fault: Vec<u64> = timeline
        .buckets
        .iter()
        .filter(|b| b.start_ms.saturating_add(width) <= fault_ms)
        .filter_map(|b| b.p99_us)
        .collect();
    let mut recovery = Recovery {
        fault_ms,
        failed_after_fault: timeline
            .buckets
            .iter()
            .skip(fault_index)
            .map(|b| b.failed)
            .sum(),
        ..Default::default()
    };
    let Some(baseline) = quantile(&mut pre_fault, 0.5) else {
        return recovery;
    };
    let threshold = (baseline as f64 * criteria.factor.max(0.0)).round() as u64;
    recovery.baseline_p99_us = Some(baseline);
    recovery.threshold_us = Some(threshold);
    let normal = |b: &Bucket| {
        b.ok > 0
            && b.p99_us.is_some_and(|p99| p99 <= threshold)
            && !(criteria.require_no_failures && b.failed > 0)
    };
    let needed = criteria.consecutive.max(1);
    let mut run = 0;
    for (index, bucket) in timeline.buckets.iter().enumerate().skip(fault_index) {
        run = if normal(bucket) { run + 1 } else { 0 };
        if run == needed {
            // `run == needed` means the `needed` buckets up to `index`.
            let first_ms = (index + 1 - needed) as u64 * width;
            let at = first_ms.max(fault_ms);
            recovery.recovered_at_ms = Some(at);
            recovery.time_to_recover_ms = Some(at - fault_ms);
            break;
        }
    }
    recovery
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline of 100 ms buckets with the given p99s (ms; 0 = nothing
    /// answered) and failed counts.
    fn timeline(p99_ms: &[u64], failed: &[(usize, u64)]) -> Timeline {
        let buckets = p99_ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| Bucket {
                start_ms: i as u64 * 100,
                sent: 10,
                ok: if ms == 0 { 0 } else { 10 },
                p99_us: (ms > 0).then_some(ms * 1000),
                failed: failed.iter().find(|f| f.0 == i).map_or(0, |f| f.1),
                ..Default::default()
            })
            .collect();
        Timeline {
            bucket_ms: 100,
            buckets,
            events: Vec::new(),
        }
    }

    const FAULT: Duration = Duration::from_millis(500);

    #[test]
    fn recovers_after_the_spike() {
        // Baseline median 10 ms (threshold 15); fault at 500 ms; slow until
        // 800 ms, then normal for 5 buckets.
        let t = timeline(
            &[10, 9, 30, 11, 10, 10, 400, 200, 14, 10, 10, 10, 12, 10],
            &[],
        );
        let r = t.time_to_recover(FAULT, &RecoveryCriteria::default());
        assert_eq!(r.baseline_p99_us, Some(10_000));
        assert_eq!(r.threshold_us, Some(15_000));
        assert_eq!(r.recovered_at_ms, Some(800));
        assert_eq!(r.time_to_recover(), Some(Duration::from_millis(300)));
    }

    #[test]
    fn no_impact_is_zero() {
        let t = timeline(&[10; 12], &[]);
        let fault = Duration::from_millis(550);
        let r = t.time_to_recover(fault, &RecoveryCriteria::default());
        assert_eq!(r.recovered_at_ms, Some(550));
        assert_eq!(r.time_to_recover_ms, Some(0));
    }

    #[test]
    fn a_short_dip_is_not_recovery() {
        // Normal for 3 buckets, slow again, then normal for good.
        let t = timeline(
            &[10, 10, 10, 10, 10, 100, 10, 10, 10, 100, 10, 10, 10, 10, 10],
            &[],
        );
        let r = t.time_to_recover(FAULT, &RecoveryCriteria::default());
        assert_eq!(r.recovered_at_ms, Some(1000));
    }

    #[test]
    fn failures_and_empty_buckets_are_not_normal() {
        // Fast failures at 600 ms, nothing answered at 700 ms.
        let t = timeline(
            &[10, 10, 10, 10, 10, 10, 10, 0, 10, 10, 10, 10, 10],
            &[(6, 3)],
        );
        let r = t.time_to_recover(FAULT, &RecoveryCriteria::default());
        assert_eq!(r.failed_after_fault, 3);
        assert_eq!(r.recovered_at_ms, Some(800));
        let lenient = RecoveryCriteria {
            require_no_failures: false,
            consecutive: 2,
            ..Default::default()
        };
        assert_eq!(
            t.time_to_recover(FAULT, &lenient).recovered_at_ms,
            Some(500)
        );
    }

    #[test]
    fn never_recovering_or_no_baseline_is_none() {
        let t = timeline(&[10, 10, 10, 10, 10, 100, 100, 100, 10, 10], &[]);
        assert_eq!(
            t.time_to_recover(FAULT, &RecoveryCriteria::default())
                .time_to_recover_ms,
            None
        );
        let r = t.time_to_recover(Duration::ZERO, &RecoveryCriteria::default());
        assert_eq!((r.baseline_p99_us, r.time_to_recover_ms), (None, None));
        let r = t.time_to_recover(Duration::from_secs(100), &RecoveryCriteria::default());
        assert_eq!(r.time_to_recover_ms, None);
    }
}
