//! What a drill found, per tenant under load: failed queries (all, and
//! after the fault), errors by code, which region served before, during
//! and after the fault, the time until p99 was back to normal after the
//! fault and after the heal, and one query's full route in the middle of
//! the fault and after the heal. Printed as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tandem_client::CallInfo;
use tandem_loadgen::{LoadReport, Recovery, RecoveryCriteria, Summary, Timeline};
use tandem_proto::v1::SearchResponse;
use tonic::Status;

/// Buckets at the end of the run that count as "after recovery" for
/// [`TenantReport::last`]: half a second with the default 100 ms buckets.
const LAST_BUCKETS: usize = 5;

/// A whole drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Scenario name, e.g. `index-killed`.
    pub scenario: String,
    /// What the scenario does.
    pub description: String,
    /// The load's home region (where the client and targets are).
    pub home_region: String,
    /// Load per tenant, requests per second.
    pub rate: f64,
    /// Length of the load, seconds.
    pub duration_s: f64,
    /// Timeline label of the fault (also in each timeline's events).
    pub fault: String,
    /// Timeline label of the start of the heal.
    pub heal: String,
    /// Timeline label of the end of the heal.
    pub healed: String,
    /// The fault could not be (fully) inflicted.
    pub fault_error: Option<String>,
    /// What could not be healed (the cluster needs a hand).
    pub heal_error: Option<String>,
    /// One entry per tenant under load, the drill's tenant first.
    pub tenants: Vec<TenantReport>,
}

/// One tenant's load through the drill.
#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    /// Tenant id.
    pub tenant: String,
    /// Served from both regions.
    pub active_active: bool,
    /// The whole run: counts, latency, errors by code, regions.
    pub summary: Summary,
    /// Answers per phase.
    pub phases: Phases,
    /// Answers in the last half second of the run.
    pub last: Phase,
    /// Time to normal p99 after the fault (and failed queries after it).
    pub after_fault: Option<Recovery>,
    /// Time to normal p99 after the start of the heal.
    pub after_heal: Option<Recovery>,
    /// One query just before the heal, while the fault was in force.
    pub during_fault_query: Option<Probe>,
    /// One query after the load ended.
    pub after_heal_query: Option<Probe>,
    /// Per-bucket timeline (100 ms buckets), with the drill events.
    pub timeline: Timeline,
}

/// Answers in the three phases of a drill: before the fault, between the
/// fault and the start of the heal, after the end of the heal. Buckets
/// holding an event, and the heal itself (e.g. a restart), belong to none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Before the fault.
    pub before: Phase,
    /// Between fault and heal.
    pub during: Phase,
    /// After the heal.
    pub after: Phase,
}

/// Answers in a stretch of the timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phase {
    /// Requests due in it.
    pub sent: u64,
    /// Answered.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Answers by serving region.
    pub served: BTreeMap<String, u64>,
    /// Answers with something degraded.
    pub degraded: u64,
}

impl Phase {
    /// Share of the answers served by `region`, 0..=1 (0 without answers).
    pub fn share(&self, region: &str) -> f64 {
        if self.ok == 0 {
            return 0.0;
        }
        self.served.get(region).copied().unwrap_or(0) as f64 / self.ok as f64
    }

    /// Share of the answers that were degraded.
    pub fn degraded_share(&self) -> f64 {
        if self.ok == 0 {
            return 0.0;
        }
        self.degraded as f64 / self.ok as f64
    }

    fn of<'a>(buckets: impl Iterator<Item = &'a tandem_loadgen::Bucket>) -> Phase {
        let mut p = Phase::default();
        for b in buckets {
            p.sent += b.sent;
            p.ok += b.ok;
            p.failed += b.failed;
            p.degraded += b.degraded;
            for (region, n) in &b.served {
                *p.served.entry(region.clone()).or_default() += n;
            }
        }
        p
    }
}

/// One query's answer, in full.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Probe {
    /// The error code name, if it failed.
    pub error: Option<String>,
    /// Region whose router the client reached.
    pub client_region: String,
    /// `route.entry_region`.
    pub entry_region: String,
    /// `route.served_region`.
    pub served_region: String,
    /// Node per shard.
    pub shard_nodes: Vec<String>,
    /// The model node that boosted the answer (empty: none).
    pub model_node: String,
    /// `degraded`, e.g. `["model"]`.
    pub degraded: Vec<String>,
}

impl Probe {
    /// The probe of one search result.
    pub fn of(result: &Result<(SearchResponse, CallInfo), Status>) -> Probe {
        match result {
            Err(status) => Probe {
                error: Some(format!("{:?}: {}", status.code(), status.message())),
                ..Default::default()
            },
            Ok((response, info)) => {
                let route = response.route.clone().unwrap_or_default();
                Probe {
                    error: None,
                    client_region: info.region.to_string(),
                    entry_region: route.entry_region,
                    served_region: route.served_region,
                    shard_nodes: route.shards.into_iter().map(|s| s.node).collect(),
                    model_node: route.model_node,
                    degraded: response.degraded.clone(),
                }
            }
        }
    }
}

/// The labels of a drill's events on the timelines.
#[derive(Debug, Clone, Copy)]
pub struct Marks<'a> {
    /// The fault was inflicted.
    pub fault: &'a str,
    /// The heal started.
    pub heal: &'a str,
    /// The heal ended.
    pub healed: &'a str,
}

impl TenantReport {
    /// Folds one tenant's load report, whose timeline holds the `marks`.
    pub fn new(tenant: &str, active_active: bool, load: LoadReport, marks: Marks) -> TenantReport {
        let criteria = RecoveryCriteria::default();
        let t = &load.timeline;
        let width = t.bucket_ms.max(1);
        let len = t.buckets.len();
        // An event missing from the timeline (after its end) is at its end.
        let index_of = |label: &str| {
            t.event_time(label).map_or(len, |d| {
                usize::try_from(d.as_millis() as u64 / width).unwrap_or(len)
            })
        };
        let (fault_at, heal_at, healed_at) = (
            index_of(marks.fault),
            index_of(marks.heal),
            index_of(marks.healed),
        );
        let phases = Phases {
            before: Phase::of(t.buckets.iter().take(fault_at)),
            during: Phase::of(
                t.buckets
                    .iter()
                    .take(heal_at)
                    .skip(fault_at.saturating_add(1)),
            ),
            after: Phase::of(t.buckets.iter().skip(healed_at.saturating_add(1))),
        };
        let last = Phase::of(t.buckets.iter().skip(len.saturating_sub(LAST_BUCKETS)));
        TenantReport {
            tenant: tenant.to_string(),
            active_active,
            after_fault: load.recovery(marks.fault, &criteria),
            after_heal: load.recovery(marks.heal, &criteria),
            summary: load.summary,
            phases,
            last,
            during_fault_query: None,
            after_heal_query: None,
            timeline: load.timeline,
        }
    }

    /// Queries that failed after the fault.
    pub fn failed_after_fault(&self) -> u64 {
        self.after_fault.map_or(0, |r| r.failed_after_fault)
    }
}

fn mix(phase: &Phase) -> String {
    if phase.ok == 0 {
        return if phase.sent == 0 {
            "-".into()
        } else {
            "nothing answered".into()
        };
    }
    let mut parts: Vec<String> = phase
        .served
        .keys()
        .map(|region| {
            let name = if region.is_empty() { "?" } else { region };
            format!("{name} {:.0}%", phase.share(region) * 100.0)
        })
        .collect();
    if phase.degraded > 0 {
        parts.push(format!("degraded {:.0}%", phase.degraded_share() * 100.0));
    }
    if phase.failed > 0 {
        parts.push(format!("{} failed", phase.failed));
    }
    parts.join(", ")
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |us| format!("{:.1} ms", us as f64 / 1000.0))
}

fn recovered(r: &Option<Recovery>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match r.time_to_recover_ms {
            Some(ms) => format!("{ms} ms"),
            None => "not within the run".into(),
        },
    }
}

fn probe(p: &Option<Probe>) -> String {
    let Some(p) = p else { return "-".into() };
    if let Some(e) = &p.error {
        return format!("failed: {e}");
    }
    format!(
        "via {} router, served by {} (shards on {}), model {}, degraded [{}]",
        p.client_region,
        p.served_region,
        p.shard_nodes.join(", "),
        if p.model_node.is_empty() {
            "-"
        } else {
            &p.model_node
        },
        p.degraded.join(", ")
    )
}

/// Rows of the region mix over time: the timeline folded into about
/// `rows` rows.
fn timeline_rows(t: &Timeline, rows: usize) -> String {
    let mut out = String::new();
    let per_row = t.buckets.len().div_ceil(rows.max(1)).max(1);
    let regions = t.regions();
    let _ = write!(
        out,
        "    {:>6} {:>5} {:>6} {:>9}",
        "t (s)", "sent", "failed", "p99"
    );
    for r in &regions {
        let _ = write!(out, " {:>10}", if r.is_empty() { "?" } else { r });
    }
    let _ = writeln!(out, " {:>9}  events", "degraded");
    for chunk in t.buckets.chunks(per_row) {
        let Some(first) = chunk.first() else { continue };
        let phase = Phase::of(chunk.iter());
        let p99 = chunk.iter().filter_map(|b| b.p99_us).max();
        let end = first.start_ms + t.bucket_ms * chunk.len() as u64;
        let events: Vec<&str> = t
            .events
            .iter()
            .filter(|e| e.at_ms >= first.start_ms && e.at_ms < end)
            .map(|e| e.label.as_str())
            .collect();
        let _ = write!(
            out,
            "    {:>6.1} {:>5} {:>6} {:>9}",
            first.start_ms as f64 / 1000.0,
            phase.sent,
            phase.failed,
            ms(p99)
        );
        for r in &regions {
            let _ = write!(out, " {:>9.0}%", phase.share(r) * 100.0);
        }
        let _ = writeln!(
            out,
            " {:>8.0}%  {}",
            phase.degraded_share() * 100.0,
            events.join("; ")
        );
    }
    out
}

impl DrillReport {
    /// The report for people: a few lines per tenant and the region mix
    /// over time.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "drill {}: {}", self.scenario, self.description);
        let _ = writeln!(
            out,
            "load: {} QPS per tenant for {:.1} s through the client library, home region {}; events \"{}\", \"{}\", \"{}\"",
            self.rate, self.duration_s, self.home_region, self.fault, self.heal, self.healed
        );
        if let Some(e) = &self.fault_error {
            let _ = writeln!(out, "FAULT NOT (FULLY) INFLICTED: {e}");
        }
        for t in &self.tenants {
            let s = &t.summary;
            let errors = if s.errors.is_empty() {
                "none".to_string()
            } else {
                s.errors
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "\ntenant {} ({}): {} sent, {} failed ({} after the fault); errors: {}",
                t.tenant,
                if t.active_active {
                    "active-active"
                } else {
                    "single-region"
                },
                s.sent,
                s.failed,
                t.failed_after_fault(),
                errors
            );
            let _ = writeln!(
                out,
                "  served: before {} | during {} | after {} | last 0.5 s {}",
                mix(&t.phases.before),
                mix(&t.phases.during),
                mix(&t.phases.after),
                mix(&t.last)
            );
            let baseline = t.after_fault.and_then(|r| r.baseline_p99_us);
            let _ = writeln!(
                out,
                "  p99: baseline {}, whole run {}; back to normal (<= {}) {} after the fault, {} after the heal",
                ms(baseline),
                ms(Some(s.latency_us.p99)),
                ms(t.after_fault.and_then(|r| r.threshold_us)),
                recovered(&t.after_fault),
                recovered(&t.after_heal)
            );
            let _ = writeln!(
                out,
                "  query during the fault: {}",
                probe(&t.during_fault_query)
            );
            let _ = writeln!(
                out,
                "  query after the heal:   {}",
                probe(&t.after_heal_query)
            );
            let _ = writeln!(out, "  timeline:");
            out += &timeline_rows(&t.timeline, 20);
        }
        if let Some(e) = &self.heal_error {
            let _ = writeln!(out, "\nNOT HEALED: {e}");
        } else {
            let _ = writeln!(out, "\nhealed: {}", self.healed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tandem_loadgen::{Outcome, Sample};

    fn sample(due_ms: u64, region: &str) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(2),
            send_lag: Duration::ZERO,
            outcome: if region.is_empty() {
                Outcome::Failed("UNAVAILABLE".into())
            } else {
                Outcome::served_by(region)
            },
        }
    }

    #[test]
    fn splits_the_run_into_phases() {
        // 0-1 s us-east-1, 1-2 s us-east-2 with one failure, 2-3 s
        // us-east-1 again; fault at 1.05 s, heal at 2.05 s.
        let mut samples = Vec::new();
        for ms in (0..3000).step_by(20) {
            let region = match ms {
                0..1000 => "us-east-1",
                1000..2000 if ms == 1500 => "",
                1000..2000 => "us-east-2",
                _ => "us-east-1",
            };
            samples.push(sample(ms, region));
        }
        let mut timeline = Timeline::from_samples(Duration::from_millis(100), &samples);
        timeline.add_event(Duration::from_millis(1050), "fault");
        timeline.add_event(Duration::from_millis(2010), "heal");
        timeline.add_event(Duration::from_millis(2150), "healed");
        let summary = Summary {
            sent: 150,
            ..Default::default()
        };
        let load = LoadReport { summary, timeline };
        let marks = Marks {
            fault: "fault",
            heal: "heal",
            healed: "healed",
        };
        let r = TenantReport::new("t", true, load, marks);
        assert_eq!(r.phases.before.sent, 50);
        assert_eq!(r.phases.before.share("us-east-1"), 1.0);
        // 1.1 s to 2.0 s: nine buckets; after: from 2.2 s.
        assert_eq!(r.phases.during.sent, 45);
        assert_eq!(r.phases.during.failed, 1);
        assert_eq!(r.phases.during.share("us-east-2"), 1.0);
        assert_eq!(r.phases.after.sent, 40);
        assert_eq!(r.phases.after.share("us-east-1"), 1.0);
        assert_eq!(r.last.sent, 25);
        assert_eq!(r.failed_after_fault(), 1);
        assert!(r.after_fault.is_some());
        let text = DrillReport {
            scenario: "x".into(),
            description: "y".into(),
            home_region: "us-east-1".into(),
            rate: 50.0,
            duration_s: 3.0,
            fault: "fault".into(),
            heal: "heal".into(),
            healed: "healed".into(),
            fault_error: None,
            heal_error: None,
            tenants: vec![r],
        }
        .to_text();
        assert!(text.contains("(1 after the fault)"), "{text}");
        assert!(text.contains("during us-east-2 100%, 1 failed"), "{text}");
    }

    #[test]
    fn probes_show_the_route_or_the_error() {
        let p = Probe::of(&Err(Status::unavailable("no replica")));
        assert_eq!(p.error.as_deref(), Some("Unavailable: no replica"));
        assert!(probe(&Some(p)).starts_with("failed"));
        assert_eq!(probe(&None), "-");
    }
}
