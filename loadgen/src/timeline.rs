//! A load run over time: per bucket (100 ms by default) how many requests
//! were due, answered and failed, the bucket's p99 latency and which
//! regions served it, plus the drill events that happened. Written as CSV
//! and as an SVG plot (see [`crate::plot`]); [`crate::recovery`] reads the
//! time to recover from it.
//!
//! Requests count in the bucket in which they were *due*, not answered:
//! a request that hung for two seconds after a router died shows at the
//! moment of the failure, where the eye looks for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::sample::{Outcome, Sample};
use crate::summary::micros;

/// One time slice of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the slice, ms from the start of the run.
    pub start_ms: u64,
    /// Requests due in the slice.
    pub sent: u64,
    /// Of those, answered.
    pub ok: u64,
    /// Of those, failed.
    pub failed: u64,
    /// 99th percentile latency of the answered ones (none if none was).
    pub p99_us: Option<u64>,
    /// Answers by `route.served_region`.
    pub served: BTreeMap<String, u64>,
    /// Answers forwarded to the paired region's router.
    pub forwarded: u64,
    /// Answers from a router other than the client's home region's.
    pub client_failover: u64,
    /// Answers with something degraded.
    pub degraded: u64,
}

impl Bucket {
    /// Share of this bucket's answers served by `region`, 0..=1 (0 when
    /// nothing was answered).
    pub fn share(&self, region: &str) -> f64 {
        if self.ok == 0 {
            return 0.0;
        }
        self.served.get(region).copied().unwrap_or(0) as f64 / self.ok as f64
    }
}

/// Something that happened during the run, e.g. "router us-east-1 killed".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEvent {
    /// When, ms from the start of the run.
    pub at_ms: u64,
    /// What.
    pub label: String,
}

/// A run over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Width of a bucket, ms.
    pub bucket_ms: u64,
    /// Consecutive buckets from the start of the run (none skipped).
    pub buckets: Vec<Bucket>,
    /// Events, in time order.
    pub events: Vec<TimelineEvent>,
}

impl Timeline {
    /// Buckets `samples` into slices of `bucket` (at least 1 ms).
    pub fn from_samples(bucket: Duration, samples: &[Sample]) -> Self {
        let mut builder = TimelineBuilder::new(bucket);
        for sample in samples {
            builder.record(sample);
        }
        builder.finish()
    }

    /// Adds an event `at` from the start of the run, keeping time order.
    pub fn add_event(&mut self, at: Duration, label: impl Into<String>) {
        let at_ms = millis(at);
        let index = self.events.partition_point(|e| e.at_ms <= at_ms);
        self.events.insert(
            index,
            TimelineEvent {
                at_ms,
                label: label.into(),
            },
        );
    }

    /// When the first event labelled `label` happened.
    pub fn event_time(&self, label: &str) -> Option<Duration> {
        self.events
            .iter()
            .find(|e| e.label == label)
            .map(|e| Duration::from_millis(e.at_ms))
    }

    /// Every serving region seen, sorted.
    pub fn regions(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.buckets.iter().flat_map(|b| b.served.keys()).collect();
        set.into_iter().cloned().collect()
    }

    /// Length of the run covered by the buckets.
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.bucket_ms.saturating_mul(self.buckets.len() as u64))
    }

    /// The timeline as CSV: `t_s,sent,ok,failed,p99_ms,forwarded,
    /// client_failover,degraded`, one `share_<region>` column per region,
    /// and `events` (labels of the events inside the bucket, `;`-joined).
    pub fn to_csv(&self) -> String {
        let regions = self.regions();
        let mut out = String::from("t_s,sent,ok,failed,p99_ms,forwarded,client_failover,degraded");
        for region in &regions {
            let _ = write!(out, ",share_{}", csv_safe(region));
        }
        out.push_str(",events\n");
        for bucket in &self.buckets {
            let p99 = bucket
                .p99_us
                .map(|us| format!("{:.3}", us as f64 / 1000.0))
                .unwrap_or_default();
            let _ = write!(
                out,
                "{:.3},{},{},{},{},{},{},{}",
                bucket.start_ms as f64 / 1000.0,
                bucket.sent,
                bucket.ok,
                bucket.failed,
                p99,
                bucket.forwarded,
                bucket.client_failover,
                bucket.degraded
            );
            for region in &regions {
                let _ = write!(out, ",{:.4}", bucket.share(region));
            }
            let end = bucket.start_ms.saturating_add(self.bucket_ms);
            let labels: Vec<String> = self
                .events
                .iter()
                .filter(|e| e.at_ms >= bucket.start_ms && e.at_ms < end)
                .map(|e| csv_safe(&e.label))
                .collect();
            let _ = writeln!(out, ",{}", labels.join(";"));
        }
        out
    }

    /// Writes [`Timeline::to_csv`] to `path`.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_csv())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Collects samples as they arrive and folds them into a [`Timeline`].
/// Keeps each bucket's answered latencies so its p99 is exact; a run of
/// a minute at 5k QPS holds 300k of them, a few MB.
#[derive(Debug)]
pub struct TimelineBuilder {
    bucket: Duration,
    buckets: Vec<(Bucket, Vec<u64>)>,
}

impl TimelineBuilder {
    /// A builder for slices of `bucket` (at least 1 ms).
    pub fn new(bucket: Duration) -> Self {
        TimelineBuilder {
            bucket: bucket.max(Duration::from_millis(1)),
            buckets: Vec::new(),
        }
    }

    /// Adds one request.
    pub fn record(&mut self, sample: &Sample) {
        let bucket_ms = millis(self.bucket).max(1);
        let Ok(index) = usize::try_from(millis(sample.due) / bucket_ms) else {
            return;
        };
        while self.buckets.len() <= index {
            let start_ms = self.buckets.len() as u64 * bucket_ms;
            self.buckets.push((
                Bucket {
                    start_ms,
                    ..Default::default()
                },
                Vec::new(),
            ));
        }
        let Some((bucket, latencies)) = self.buckets.get_mut(index) else {
            return;
        };
        bucket.sent += 1;
        match &sample.outcome {
            Outcome::Ok(answer) => {
                bucket.ok += 1;
                latencies.push(micros(sample.latency));
                *bucket
                    .served
                    .entry(answer.served_region.clone())
                    .or_default() += 1;
                bucket.forwarded += u64::from(answer.forwarded);
                bucket.client_failover += u64::from(answer.client_failover);
                bucket.degraded += u64::from(answer.degraded);
            }
            Outcome::Failed(_) => bucket.failed += 1,
        }
    }

    /// The timeline, without events (add them with [`Timeline::add_event`]).
    pub fn finish(self) -> Timeline {
        let buckets = self
            .buckets
            .into_iter()
            .map(|(mut bucket, mut latencies)| {
                bucket.p99_us = quantile(&mut latencies, 0.99);
                bucket
            })
            .collect();
        Timeline {
            bucket_ms: millis(self.bucket).max(1),
            buckets,
            events: Vec::new(),
        }
    }
}

/// Nearest-rank quantile `q` of `values` (sorts them); `None` if empty.
pub fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    values
        .get(rank.saturating_sub(1).min(values.len() - 1))
        .copied()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn csv_safe(text: &str) -> String {
    text.replace([',', ';', '\n', '\r', '"'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Answered;

    fn sample(due_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(latency_ms),
            send_lag: Duration::ZERO,
            outcome,
        }
    }

    #[test]
    fn buckets_by_due_time_with_exact_p99() {
        let mut samples = Vec::new();
        // Bucket 0: 100 answers of 1..=100 ms from us-east-1.
        for i in 0..100 {
            samples.push(sample(i, i + 1, Outcome::served_by("us-east-1")));
        }
        // Bucket 2 (200..300 ms): a failure and a failed-over answer; the
        // 5 s answer stays in the bucket it was due in.
        samples.push(sample(250, 0, Outcome::Failed("UNAVAILABLE".into())));
        samples.push(sample(
            299,
            5000,
            Outcome::Ok(Answered {
                served_region: "us-east-2".into(),
                client_failover: true,
                ..Default::default()
            }),
        ));
        let t = Timeline::from_samples(Duration::from_millis(100), &samples);
        assert_eq!(t.buckets.len(), 3);
        let b0 = &t.buckets[0];
        assert_eq!((b0.sent, b0.ok, b0.failed), (100, 100, 0));
        assert_eq!(b0.p99_us, Some(99_000));
        // An empty bucket between is still there, without a p99.
        assert_eq!(t.buckets[1].start_ms, 100);
        assert_eq!((t.buckets[1].sent, t.buckets[1].p99_us), (0, None));
        let b2 = &t.buckets[2];
        assert_eq!(
            (b2.sent, b2.ok, b2.failed, b2.client_failover),
            (2, 1, 1, 1)
        );
        assert_eq!(b2.p99_us, Some(5_000_000));
        assert_eq!(b2.share("us-east-2"), 1.0);
        assert_eq!(b2.share("us-east-1"), 0.0);
        assert_eq!(t.regions(), vec!["us-east-1", "us-east-2"]);
        assert_eq!(t.span(), Duration::from_millis(300));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&mut [], 0.99), None);
        assert_eq!(quantile(&mut [7], 0.99), Some(7));
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        assert_eq!(quantile(&mut v, 0.99), Some(990));
        assert_eq!(quantile(&mut v, 0.5), Some(500));
        assert_eq!(quantile(&mut v, 1.0), Some(1000));
        assert_eq!(quantile(&mut v, 0.0), Some(1));
    }

    #[test]
    fn events_are_ordered_and_found() {
        let mut t = Timeline::from_samples(Duration::from_millis(100), &[]);
        t.add_event(Duration::from_millis(900), "healed");
        t.add_event(Duration::from_millis(300), "router killed");
        assert_eq!(t.events[0].label, "router killed");
        assert_eq!(t.event_time("healed"), Some(Duration::from_millis(900)));
        assert_eq!(t.event_time("nothing"), None);
    }

    #[test]
    fn csv_has_a_row_per_bucket_and_a_share_per_region() {
        let samples = vec![
            sample(10, 2, Outcome::served_by("us-east-1")),
            sample(120, 3, Outcome::served_by("us-east-2")),
            sample(130, 0, Outcome::Failed("UNAVAILABLE".into())),
        ];
        let mut t = Timeline::from_samples(Duration::from_millis(100), &samples);
        t.add_event(Duration::from_millis(110), "router, killed");
        let csv = t.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "t_s,sent,ok,failed,p99_ms,forwarded,client_failover,degraded,share_us-east-1,share_us-east-2,events"
        );
        assert_eq!(lines[1], "0.000,1,1,0,2.000,0,0,0,1.0000,0.0000,");
        assert_eq!(
            lines[2],
            "0.100,2,1,1,3.000,0,0,0,0.0000,1.0000,router_ killed"
        );
        assert_eq!(lines.len(), 3);
    }
}
