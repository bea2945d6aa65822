//! The load generator: drives a target (normally the public API through
//! [`tandem_client::TandemClient`]) open-loop at a fixed rate or
//! closed-loop at a concurrency, and folds every request into a
//! [`Summary`] and a [`Timeline`].
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened
//! to the ones before, so a slow system cannot slow the generator down and
//! hide its slowness (coordinated omission). Latency is measured from the
//! due time, or from the actual send if that was earlier: tokio's timer
//! fires a millisecond or two late, so the generator asks to be woken a
//! little early rather than adding its timer's lateness to every
//! sub-millisecond answer. At most `max_outstanding`
//! requests are in flight; a due request beyond that is not sent and
//! counts as failed with error `overload`.
//!
//! Drills: a drill runner starts [`run_load`] in a task, breaks something
//! meanwhile and calls [`EventLog::mark`]; the events end up on the
//! timeline (and its plot) at the moment they happened.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tandem_client::TandemClient;
use tandem_proto::v1::SearchRequest;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::recovery::{Recovery, RecoveryCriteria};
use crate::sample::{Outcome, Sample, ABANDONED, OVERLOAD};
use crate::summary::{Summary, SummaryBuilder};
use crate::timeline::{Timeline, TimelineBuilder};

/// Default cap on requests in flight in open loop: enough for 2k QPS
/// against a two-second timeout, small enough that a hung system cannot
/// make the generator run out of memory.
pub const DEFAULT_MAX_OUTSTANDING: usize = 4096;

/// How early the open-loop generator asks to be woken (see the module
/// docs): tokio rounds a deadline up to its next millisecond tick and the
/// poller's timeout up again, so a timer fires 1-2 ms late; asking 2 ms
/// early lands the send just before its due time.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadMode {
    /// A fixed rate, regardless of answers.
    OpenLoop {
        /// Requests per second.
        rate: f64,
        /// Requests in flight at most; further due requests fail as
        /// `overload`.
        max_outstanding: usize,
    },
    /// `concurrency` callers, each sending its next request when the
    /// previous one is answered.
    ClosedLoop {
        /// Concurrent callers.
        concurrency: usize,
    },
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Pacing.
    pub mode: LoadMode,
    /// How long requests are sent for.
    pub duration: Duration,
    /// Timeline bucket width.
    pub bucket: Duration,
    /// How long to wait for outstanding answers after the sending window;
    /// those still unanswered then fail as `abandoned`.
    pub drain: Duration,
    /// Queries, used round-robin.
    pub queries: Arc<Vec<String>>,
    /// Tenant to search (used by [`run_load`]).
    pub tenant: String,
    /// Hits per search, 0 = the server's default (used by [`run_load`]).
    pub top_k: u32,
}

impl LoadConfig {
    /// A config with 100 ms buckets, a 5 s drain and default `top_k`.
    pub fn new(
        mode: LoadMode,
        duration: Duration,
        tenant: impl Into<String>,
        queries: Vec<String>,
    ) -> Self {
        LoadConfig {
            mode,
            duration,
            bucket: Duration::from_millis(100),
            drain: Duration::from_secs(5),
            queries: Arc::new(queries),
            tenant: tenant.into(),
            top_k: 0,
        }
    }
}

/// Events (drill steps) marked while a run goes on; cheap to clone, so the
/// drill runner keeps one and hands one to [`run_load`].
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `label` as happening now.
    pub fn mark(&self, label: impl Into<String>) {
        self.mark_at(Instant::now(), label);
    }

    /// Marks `label` as happening at `at`.
    pub fn mark_at(&self, at: Instant, label: impl Into<String>) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.push((at, label.into()));
    }

    /// The events relative to `start` (earlier ones at zero).
    fn relative_to(&self, start: Instant) -> Vec<(Duration, String)> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .map(|(at, label)| (at.saturating_duration_since(start), label.clone()))
            .collect()
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The whole run in numbers.
    pub summary: Summary,
    /// The run over time, with the marked events.
    pub timeline: Timeline,
}

impl LoadReport {
    /// Time to recover from the first event labelled `fault` (none if no
    /// such event was marked).
    pub fn recovery(&self, fault: &str, criteria: &RecoveryCriteria) -> Option<Recovery> {
        let at = self.timeline.event_time(fault)?;
        Some(self.timeline.time_to_recover(at, criteria))
    }
}

/// Runs `config` against the public API through `client`: searches of
/// `config.tenant` with the queries round-robin.
pub async fn run_load(
    client: &TandemClient,
    config: &LoadConfig,
    events: &EventLog,
) -> anyhow::Result<LoadReport> {
    let client = client.clone();
    let tenant: Arc<str> = Arc::from(config.tenant.as_str());
    let top_k = config.top_k;
    run_load_with(config, events, move |query| {
        let client = client.clone();
        let request = SearchRequest {
            tenant: tenant.to_string(),
            query,
            top_k,
            ..Default::default()
        };
        async move { Outcome::from_search(&client.search(request).await) }
    })
    .await
}

/// Runs `config` against any target: `call` sends one query and says how
/// it went (e.g. a direct index-node call, to compare with the router).
pub async fn run_load_with<F, Fut>(
    config: &LoadConfig,
    events: &EventLog,
    call: F,
) -> anyhow::Result<LoadReport>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    validate(config)?;
    let (tx, mut rx) = unbounded_channel::<Sample>();
    let bucket = config.bucket;
    let collector = tokio::spawn(async move {
        let mut summary = SummaryBuilder::new();
        let mut timeline = TimelineBuilder::new(bucket);
        while let Some(sample) = rx.recv().await {
            summary.record(&sample);
            timeline.record(&sample);
        }
        (summary, timeline)
    });
    let start = Instant::now();
    match config.mode {
        LoadMode::OpenLoop {
            rate,
            max_outstanding,
        } => open_loop(config, start, rate, max_outstanding, call, tx).await,
        LoadMode::ClosedLoop { concurrency } => {
            closed_loop(config, start, concurrency, call, tx).await
        }
    }
    let (summary, timeline) = collector.await.context("the sample collector failed")?;
    let mut summary = summary.finish(config.duration);
    match config.mode {
        LoadMode::OpenLoop { rate, .. } => {
            summary.mode = "open-loop".into();
            summary.target_rate = Some(rate);
        }
        LoadMode::ClosedLoop { concurrency } => {
            summary.mode = "closed-loop".into();
            summary.concurrency = Some(concurrency);
        }
    }
    let mut timeline = timeline.finish();
    for (at, label) in events.relative_to(start) {
        timeline.add_event(at, label);
    }
    Ok(LoadReport { summary, timeline })
}

fn validate(config: &LoadConfig) -> anyhow::Result<()> {
    if config.queries.is_empty() {
        bail!("no queries to send");
    }
    match config.mode {
        LoadMode::OpenLoop {
            rate,
            max_outstanding,
        } => {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                bail!("the rate must be a number of requests per second above 0, got {rate}");
            }
            if max_outstanding == 0 {
                bail!("max outstanding requests must be at least 1");
            }
        }
        LoadMode::ClosedLoop { concurrency } => {
            if concurrency == 0 {
                bail!("concurrency must be at least 1");
            }
        }
    }
    Ok(())
}

async fn open_loop<F, Fut>(
    config: &LoadConfig,
    start: Instant,
    rate: f64,
    max_outstanding: usize,
    call: F,
    tx: UnboundedSender<Sample>,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    // `as` saturates; the rate was validated finite and positive.
    let total = (rate * config.duration.as_secs_f64()).floor() as u64;
    let permits = Arc::new(Semaphore::new(max_outstanding));
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let due = Duration::try_from_secs_f64(i as f64 / rate).unwrap_or(config.duration);
        let due_at = start + due;
        let wake = due_at.checked_sub(TIMER_SLACK).unwrap_or(start).max(start);
        tokio::time::sleep_until(wake).await;
        let query = nth_query(&config.queries, i);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let pending = Pending::new(&tx, due);
                let call = call.clone();
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let outcome = call(query).await;
                    let from = sent.min(due_at);
                    pending.finish(
                        from.elapsed(),
                        sent.saturating_duration_since(due_at),
                        outcome,
                    );
                    drop(permit);
                });
            }
            Err(_) => {
                let _ = tx.send(Sample {
                    due,
                    latency: Duration::ZERO,
                    send_lag: due_at.elapsed(),
                    outcome: Outcome::Failed(OVERLOAD.into()),
                });
            }
        }
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    drain(tasks, Instant::now() + config.drain).await;
}

async fn closed_loop<F, Fut>(
    config: &LoadConfig,
    start: Instant,
    concurrency: usize,
    call: F,
    tx: UnboundedSender<Sample>,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let end = start + config.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (call, tx, next, queries) = (
            call.clone(),
            tx.clone(),
            next.clone(),
            config.queries.clone(),
        );
        tasks.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let query = nth_query(&queries, next.fetch_add(1, Ordering::Relaxed) as u64);
                let pending = Pending::new(&tx, sent - start);
                let outcome = call(query).await;
                pending.finish(sent.elapsed(), Duration::ZERO, outcome);
            }
        });
    }
    drop(tx);
    drain(tasks, end + config.drain).await;
}

/// Waits for the tasks until `deadline`, then cancels the rest (their
/// [`Pending`] guards report them as abandoned).
async fn drain(mut tasks: JoinSet<()>, deadline: Instant) {
    let _ = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
}

fn nth_query(queries: &[String], i: u64) -> String {
    let len = queries.len().max(1) as u64;
    usize::try_from(i % len)
        .ok()
        .and_then(|i| queries.get(i))
        .cloned()
        .unwrap_or_default()
}

/// A request in flight: reports its sample once, either when it finishes
/// or, if it is cancelled first, as abandoned when dropped.
struct Pending {
    tx: Option<UnboundedSender<Sample>>,
    due: Duration,
}

impl Pending {
    fn new(tx: &UnboundedSender<Sample>, due: Duration) -> Self {
        Pending {
            tx: Some(tx.clone()),
            due,
        }
    }

    fn finish(mut self, latency: Duration, send_lag: Duration, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Sample {
                due: self.due,
                latency,
                send_lag,
                outcome,
            });
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Sample {
                due: self.due,
                latency: Duration::ZERO,
                send_lag: Duration::ZERO,
                outcome: Outcome::Failed(ABANDONED.into()),
            });
        }
    }
}
