//! Calling one shard (or one tenant's model) with fallback and hedging.
//!
//! [`Resilience::call`] is the heart of the router. Given a shard's replicas
//! it:
//!
//! 1. orders them ([`try_order`]: healthy local replicas first, least loaded
//!    by power of two choices, then the paired region's, ejected ones last);
//! 2. sends the call to the first, bounded by the per-try timeout and what is
//!    left of the caller's deadline;
//! 3. on a retryable failure ([`classify`]) moves to the next replica, and
//!    tells the outlier detectors whom to blame (the node, or only the node x
//!    tenant-shard pair);
//! 4. if the replica is slow — no answer after the hedging delay, about its
//!    recent p95 — asks the next replica too; the first answer wins and the
//!    others are cancelled (dropped). An earlier attempt that loses the race
//!    counts as a node failure (a timeout in all but name), so a frozen node
//!    is ejected after a few queries instead of after its health probes
//!    time out;
//! 5. pays for every retry and hedge from the [`RetryBudget`], so that a sick
//!    fleet is not hit by a storm; when the budget is empty it fails fast.
//!
//! Everything it learns (latency, in-flight, failures) feeds the statistics
//! that order the next call's replicas.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::budget::RetryBudget;
use crate::catalog::Node;
use crate::channels::{Channels, NodeChannel};
use crate::endpoint_stats::{InFlight, StatsRegistry};
use crate::hedge::HedgePolicy;
use crate::outlier::{Health, OutlierDetector, ShardKey, Transition};
use crate::replicas::{try_order, LiveView, Pick, Replica};
use crate::retry::{classify, AttemptFailure, CallerState, HealthSignal};

/// The shared failure-handling state of a router.
pub struct Resilience {
    /// Per-node load and latency.
    pub stats: StatsRegistry,
    /// Node-level outlier detection.
    pub nodes: OutlierDetector<Arc<str>>,
    /// Node x tenant-shard outlier detection.
    pub shards: OutlierDetector<ShardKey>,
    /// Retries + hedges allowance.
    pub budget: RetryBudget,
    /// Hedging delays.
    pub hedge: HedgePolicy,
    /// Channels to nodes.
    pub channels: Channels,
}

/// What to call: a shard's (or a model's) replicas for one tenant.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// Replicas in tier order (from the replica map).
    pub replicas: &'a [Replica],
    /// Tenant id.
    pub tenant: &'a Arc<str>,
    /// Shard number, or [`crate::replicas::MODEL_SCOPE`] for the model.
    pub scope: u32,
    /// "index" or "model", for metrics.
    pub kind: &'static str,
}

/// What a call came to.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The answer, or the error to report for this shard.
    pub result: Result<T, Status>,
    /// The node that answered (or was tried last).
    pub node: Option<Arc<Node>>,
    /// Attempts sent (first try + retries + hedges).
    pub attempts: u32,
    /// A hedge was sent.
    pub hedged: bool,
    /// The answer came from a replica other than the first choice.
    pub fallback: bool,
}

/// An attempt's failure, owned.
enum Failed {
    Status(Status),
    PerTryTimeout,
    Transport,
}

/// What the attempt loop waits for.
enum Event<R> {
    /// An attempt finished.
    Done(R),
    /// The hedging delay passed with no answer.
    Hedge,
    /// The caller's deadline passed.
    Deadline,
}

/// Attempts sent and not yet finished, as bits of their index in the try
/// order. A shard has a handful of replicas; an attempt past the 64th is not
/// tracked, which only spares it the blame for losing a hedge race.
#[derive(Clone, Copy, Debug, Default)]
struct Pending(u64);

impl Pending {
    fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    fn remove(&mut self, index: usize) {
        if index < 64 {
            self.0 &= !(1 << index);
        }
    }

    /// Pending attempts sent before the one at `index`.
    fn before(self, index: usize) -> impl Iterator<Item = usize> {
        (0..index.min(64)).filter(move |&i| self.0 & (1 << i) != 0)
    }
}

/// Records the in-flight call as abandoned if its future is dropped before
/// it completes (the loser of a hedge race): a replica that keeps losing
/// looks slower, so the next calls prefer the winner.
struct AbandonOnDrop(Option<InFlight>);

impl AbandonOnDrop {
    fn take(&mut self) -> InFlight {
        self.0.take().expect("taken once, on completion")
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(in_flight) = self.0.take() {
            in_flight.abandon();
        }
    }
}

impl Resilience {
    /// Calls `call(node, channel, timeout)` on the target's replicas with fallback
    /// and hedging until one answers, the caller's `deadline` passes, or no
    /// replica is left.
    pub async fn call<T, F, Fut>(
        &self,
        target: Target<'_>,
        deadline: Instant,
        per_try: Duration,
        call: F,
    ) -> Outcome<T>
    where
        F: Fn(&Node, NodeChannel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let view = LiveView {
            stats: &self.stats,
            nodes: &self.nodes,
            shards: &self.shards,
            tenant: target.tenant,
            shard: target.scope,
        };
        let order: Vec<Pick<'_>> = try_order(target.replicas, &view, &mut rand::rng());
        let mut outcome = Outcome {
            // Replaced by whatever happens; built without formatting because
            // almost every call is answered.
            result: Err(Status::new(Code::Unavailable, String::new())),
            node: None,
            attempts: 0,
            hedged: false,
            fallback: false,
        };
        self.budget.deposit();
        let mut next = 0usize;
        let mut pending = Pending::default();
        let mut last_error: Option<Status>;

        // The next usable replica's attempt, counted and marked pending;
        // None when no replica is left.
        let launch = |next: &mut usize, outcome: &mut Outcome<T>, pending: &mut Pending| {
            while let Some(pick) = order.get(*next) {
                *next += 1;
                let replica = pick.replica;
                if !self.claim_trial(&view, replica) {
                    continue;
                }
                let stats = self.stats.get_or_create(replica.id());
                let guard = AbandonOnDrop(Some(stats.start()));
                // Never later than the caller's deadline.
                let try_timeout = per_try.min(deadline.saturating_duration_since(Instant::now()));
                let channel = self.channels.get(&replica.node);
                let index = *next - 1;
                // Boxed: a call's future is about 1.7 KB, and held inline
                // it made every search's state machine 9 KB, which was
                // copied whole each time a future was moved (callgrind:
                // 2.6K of memcpy per search).
                let attempt = match channel {
                    Ok(channel) => Some(Box::pin(call(&replica.node, channel, try_timeout))),
                    Err(_) => None,
                };
                outcome.attempts += 1;
                outcome.node = Some(replica.node.clone());
                pending.insert(index);
                return Some(async move {
                    let mut guard = guard;
                    let result = match attempt {
                        None => Err(Failed::Transport),
                        Some(fut) => match tokio::time::timeout(try_timeout, fut).await {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(status)) => Err(Failed::Status(status)),
                            Err(_) => Err(Failed::PerTryTimeout),
                        },
                    };
                    (index, guard.take(), result)
                });
            }
            None
        };

        let Some(first) = launch(&mut next, &mut outcome, &mut pending) else {
            outcome.result = Err(Status::unavailable(format!(
                "{} {} of tenant {} has no replica",
                target.kind,
                scope_name(target.scope),
                target.tenant
            )));
            return outcome;
        };
        let mut hedge_at = self.hedge_deadline(&order, next - 1, deadline);
        let mut running = FuturesUnordered::new();
        // Fast path: the first replica nearly always answers before its
        // hedging delay. Await it directly, with the hedge's timer only (its
        // own per-try timeout ends by the caller's deadline), before any set
        // of racing attempts exists: every timer and allocation here is paid
        // by every query.
        let mut ready = Some(match hedge_at {
            None => Event::Done(first.await),
            Some(at) => {
                let mut first = Box::pin(first);
                match tokio::time::timeout_at(at, first.as_mut()).await {
                    Ok(done) => Event::Done(done),
                    Err(_) => {
                        running.push(first);
                        Event::Hedge
                    }
                }
            }
        });
        loop {
            let event = match ready.take() {
                Some(event) => event,
                None => {
                    let hedge_timer = async {
                        match hedge_at {
                            Some(at) if next < order.len() => tokio::time::sleep_until(at).await,
                            _ => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        Some(done) = running.next() => Event::Done(done),
                        _ = hedge_timer => Event::Hedge,
                        _ = tokio::time::sleep_until(deadline) => Event::Deadline,
                    }
                }
            };
            match event {
                Event::Done((index, in_flight, result)) => {
                    let replica = order[index].replica;
                    pending.remove(index);
                    match result {
                        Ok(value) => {
                            in_flight.success();
                            self.record_signal(&view, replica, HealthSignal::Healthy, target.kind);
                            // Attempts sent before this one and still silent
                            // lost a hedge race (dropped with `running`).
                            for slow in pending.before(index) {
                                let verdict =
                                    classify(AttemptFailure::LostRace, CallerState::default());
                                self.record_signal(
                                    &view,
                                    order[slow].replica,
                                    verdict.signal,
                                    target.kind,
                                );
                                metrics::counter!("router_attempt_failures_total",
                                    "kind" => target.kind, "reason" => verdict.reason)
                                .increment(1);
                            }
                            outcome.result = Ok(value);
                            outcome.node = Some(replica.node.clone());
                            outcome.fallback = index > 0;
                            return outcome;
                        }
                        Err(failed) => {
                            in_flight.failure();
                            let caller = CallerState {
                                deadline_expired: Instant::now() >= deadline,
                                cancelled: false,
                            };
                            let (verdict, status) = match &failed {
                                Failed::Status(s) => {
                                    (classify(AttemptFailure::Status(s), caller), s.clone())
                                }
                                Failed::PerTryTimeout => (
                                    classify(AttemptFailure::PerTryTimeout, caller),
                                    Status::deadline_exceeded(format!(
                                        "no answer from {} within the per-try timeout",
                                        replica.id()
                                    )),
                                ),
                                Failed::Transport => (
                                    classify(AttemptFailure::Transport, caller),
                                    Status::unavailable(format!("no channel to {}", replica.id())),
                                ),
                            };
                            self.record_signal(&view, replica, verdict.signal, target.kind);
                            metrics::counter!("router_attempt_failures_total",
                                "kind" => target.kind, "reason" => verdict.reason)
                            .increment(1);
                            if !verdict.retryable {
                                outcome.result = Err(status);
                                outcome.node = Some(replica.node.clone());
                                return outcome;
                            }
                            last_error = Some(status);
                            if running.is_empty() {
                                if next >= order.len() {
                                    break;
                                }
                                if !self.budget.try_withdraw() {
                                    metrics::counter!("router_retry_budget_exhausted_total")
                                        .increment(1);
                                    outcome.result = Err(Status::unavailable(format!(
                                        "retry budget exhausted; last error from {}: {}",
                                        replica.id(),
                                        last_error.as_ref().map_or("", |s| s.message())
                                    )));
                                    return outcome;
                                }
                                let from = replica.node.region.clone();
                                let Some(retry) = launch(&mut next, &mut outcome, &mut pending)
                                else {
                                    break;
                                };
                                running.push(Box::pin(retry));
                                let to = order[next - 1].replica.node.region.clone();
                                metrics::counter!("router_fallbacks_total", "kind" => target.kind,
                                    "reason" => verdict.reason, "from_region" => from.to_string(),
                                    "to_region" => to.to_string())
                                .increment(1);
                                hedge_at = self.hedge_deadline(&order, next - 1, deadline);
                            }
                        }
                    }
                }
                Event::Hedge => {
                    hedge_at = None;
                    if !self.budget.try_withdraw() {
                        metrics::counter!("router_retry_budget_exhausted_total").increment(1);
                        continue;
                    }
                    let from = order[next - 1].replica.node.region.clone();
                    if let Some(hedge) = launch(&mut next, &mut outcome, &mut pending) {
                        running.push(Box::pin(hedge));
                        outcome.hedged = true;
                        let to = order[next - 1].replica.node.region.clone();
                        metrics::counter!("router_hedges_total", "kind" => target.kind,
                            "from_region" => from.to_string(), "to_region" => to.to_string())
                        .increment(1);
                        hedge_at = self.hedge_deadline(&order, next - 1, deadline);
                    }
                }
                Event::Deadline => {
                    outcome.result = Err(Status::deadline_exceeded(format!(
                        "deadline exceeded after {} attempt(s) on {} {} of tenant {}",
                        outcome.attempts,
                        target.kind,
                        scope_name(target.scope),
                        target.tenant
                    )));
                    return outcome;
                }
            }
        }
        outcome.result = Err(Status::unavailable(format!(
            "no replica of {} {} of tenant {} answered; last error: {}",
            target.kind,
            scope_name(target.scope),
            target.tenant,
            last_error.as_ref().map_or("none", |s| s.message())
        )));
        outcome
    }

    /// When to hedge the attempt just sent to `order[index]`: after about
    /// its recent p95, if that is before the caller's deadline.
    fn hedge_deadline(
        &self,
        order: &[Pick<'_>],
        index: usize,
        deadline: Instant,
    ) -> Option<Instant> {
        if index + 1 >= order.len() {
            return None;
        }
        let p95 = self
            .stats
            .get(order[index].replica.id())
            .and_then(|s| s.p95());
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.hedge
            .delay_within(p95, remaining)
            .map(|d| Instant::now() + d)
    }

    /// A replica on probation may get one trial call; false if another call
    /// holds the trial (then the replica is skipped without an attempt).
    fn claim_trial(&self, view: &LiveView<'_>, replica: &Replica) -> bool {
        let id = replica.id();
        if matches!(self.nodes.health(id), Health::Probation { .. })
            && !self.nodes.try_begin_trial(id)
        {
            return false;
        }
        let key = view.shard_key(replica);
        if matches!(self.shards.health(&key), Health::Probation { .. })
            && !self.shards.try_begin_trial(&key)
        {
            return false;
        }
        true
    }

    fn record_signal(
        &self,
        view: &LiveView<'_>,
        replica: &Replica,
        signal: HealthSignal,
        kind: &'static str,
    ) {
        let transition = match signal {
            HealthSignal::Healthy => {
                let a = self.nodes.record_success(replica.id());
                let b = self.shards.record_success(&view.shard_key(replica));
                if a == Transition::None {
                    b
                } else {
                    a
                }
            }
            HealthSignal::NodeFailure => self.nodes.record_failure(replica.id()),
            HealthSignal::ShardFailure => self.shards.record_failure(&view.shard_key(replica)),
            HealthSignal::Neutral => Transition::None,
        };
        log_transition(transition, replica, view, signal, kind);
    }
}

/// Logs and counts ejections and re-admissions.
pub fn log_transition(
    transition: Transition,
    replica: &Replica,
    view: &LiveView<'_>,
    signal: HealthSignal,
    kind: &'static str,
) {
    let scope = if signal == HealthSignal::ShardFailure {
        "shard"
    } else {
        "node"
    };
    match transition {
        Transition::Ejected { backoff, ejections } => {
            metrics::counter!("router_ejections_total", "kind" => kind, "scope" => scope)
                .increment(1);
            tracing::warn!(node = %replica.id(), tenant = %view.tenant, shard = view.shard, scope,
                backoff_ms = backoff.as_millis() as u64, ejections, "endpoint ejected");
        }
        Transition::Readmitted => {
            metrics::counter!("router_readmissions_total", "kind" => kind).increment(1);
            tracing::info!(node = %replica.id(), tenant = %view.tenant, shard = view.shard, "endpoint re-admitted");
        }
        Transition::None => {}
    }
}

fn scope_name(scope: u32) -> String {
    if scope == crate::replicas::MODEL_SCOPE {
        "model".to_string()
    } else {
        format!("shard {scope}")
    }
}

/// Whether a shard's failure means "nothing could answer" (then partial
/// results may be allowed) rather than "the request itself is bad".
pub fn is_unavailability(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Cancelled
            | Code::Aborted
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests;
