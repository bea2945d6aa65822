//! The JSON summary of a load run: counts, latency percentiles from an HDR
//! histogram, errors by gRPC code, and which regions served the answers.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::sample::{Outcome, Sample};

/// The whole run in numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// `open-loop` or `closed-loop`.
    pub mode: String,
    /// Requests per second asked for (open loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Concurrent callers (closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Length of the sending window, seconds.
    pub duration_s: f64,
    /// Requests due (those not sent because of overload included).
    pub sent: u64,
    /// Requests answered.
    pub ok: u64,
    /// Requests not answered (`sent - ok`).
    pub failed: u64,
    /// Answers per second over the sending window.
    pub qps: f64,
    /// Latency of the answered requests, from when each was due.
    pub latency_us: Percentiles,
    /// How late the generator sent requests (a high value means the load
    /// generator itself could not keep up: its numbers include that wait).
    pub send_lag_us: Percentiles,
    /// Failed requests by gRPC code name, `overload` and `abandoned`.
    pub errors: BTreeMap<String, u64>,
    /// Answers by `route.served_region`.
    pub served_region: BTreeMap<String, RegionShare>,
    /// Answers that went through the paired region's router.
    pub forwarded: u64,
    /// Answers from a router other than the client's home region's.
    pub client_failover: u64,
    /// Answers that needed the client's retry on another router.
    pub client_retried: u64,
    /// Answers with something degraded (e.g. no model).
    pub degraded: u64,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// One region's part of the answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RegionShare {
    /// Answers it served.
    pub count: u64,
    /// `count` over all answers, 0..=1.
    pub share: f64,
}

/// Folds samples into a [`Summary`].
#[derive(Debug)]
pub struct SummaryBuilder {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    summary: Summary,
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SummaryBuilder {
    /// An empty summary.
    pub fn new() -> Self {
        SummaryBuilder {
            latency: new_histogram(),
            send_lag: new_histogram(),
            summary: Summary::default(),
        }
    }

    /// Adds one request.
    pub fn record(&mut self, sample: &Sample) {
        let s = &mut self.summary;
        s.sent += 1;
        match &sample.outcome {
            Outcome::Ok(answer) => {
                s.ok += 1;
                // Auto-resizing histograms only fail on values beyond
                // u64 range, which microseconds of a run cannot reach.
                let _ = self.latency.record(micros(sample.latency).max(1));
                s.served_region
                    .entry(answer.served_region.clone())
                    .or_default()
                    .count += 1;
                s.forwarded += u64::from(answer.forwarded);
                s.client_failover += u64::from(answer.client_failover);
                s.client_retried += u64::from(answer.client_retried);
                s.degraded += u64::from(answer.degraded);
            }
            Outcome::Failed(code) => {
                s.failed += 1;
                *s.errors.entry(code.clone()).or_default() += 1;
            }
        }
        let _ = self.send_lag.record(micros(sample.send_lag));
    }

    /// The summary of what was recorded, for a sending window `duration`.
    pub fn finish(mut self, duration: Duration) -> Summary {
        let s = &mut self.summary;
        s.duration_s = duration.as_secs_f64();
        s.qps = if s.duration_s > 0.0 {
            s.ok as f64 / s.duration_s
        } else {
            0.0
        };
        let ok = s.ok;
        for region in s.served_region.values_mut() {
            region.share = region.count as f64 / ok.max(1) as f64;
        }
        s.latency_us = percentiles(&self.latency);
        s.send_lag_us = percentiles(&self.send_lag);
        self.summary
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits, auto-resizing: no bound to guess up front.
    // `new` fails only for more than 5 digits, so this cannot panic.
    Histogram::new(3).expect("3 significant digits are supported")
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

/// Whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Answered;

    fn sample(latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            due: Duration::ZERO,
            latency: Duration::from_millis(latency_ms),
            send_lag: Duration::ZERO,
            outcome,
        }
    }

    #[test]
    fn counts_percentiles_errors_and_regions() {
        let mut b = SummaryBuilder::new();
        for ms in 1..=100 {
            b.record(&sample(ms, Outcome::served_by("us-east-1")));
        }
        let away = Answered {
            served_region: "us-east-2".into(),
            forwarded: true,
            client_failover: true,
            client_retried: true,
            degraded: true,
        };
        for _ in 0..100 {
            b.record(&sample(1, Outcome::Ok(away.clone())));
        }
        b.record(&sample(0, Outcome::Failed("UNAVAILABLE".into())));
        b.record(&sample(0, Outcome::Failed("overload".into())));
        let s = b.finish(Duration::from_secs(2));
        assert_eq!((s.sent, s.ok, s.failed), (202, 200, 2));
        assert_eq!(s.qps, 100.0);
        assert_eq!(s.errors.get("UNAVAILABLE"), Some(&1));
        assert_eq!(s.errors.get("overload"), Some(&1));
        assert_eq!(s.served_region["us-east-1"].count, 100);
        assert_eq!(s.served_region["us-east-2"].share, 0.5);
        assert_eq!(
            (s.forwarded, s.client_failover, s.client_retried, s.degraded),
            (100, 100, 100, 100)
        );
        // Half the answers took 1 ms, the rest 1..=100 ms.
        assert!((1000..=1001).contains(&s.latency_us.p50));
        assert!((98_000..=99_100).contains(&s.latency_us.p99));
        assert_eq!(s.latency_us.max / 1000, 100);
    }

    #[test]
    fn an_empty_run_is_all_zero() {
        let s = SummaryBuilder::new().finish(Duration::ZERO);
        assert_eq!(s.qps, 0.0);
        assert_eq!(s.latency_us, Percentiles::default());
    }
}
