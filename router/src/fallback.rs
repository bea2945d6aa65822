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
//! What to do next is decided by the state machine in [`attempts`]; this
//! file sends, waits, and keeps the books. Everything it learns (latency,
//! in-flight, failures) feeds the statistics that order the next call's
//! replicas.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tonic::{Code, Status};

use tandem_common::latency::Network;

use crate::budget::RetryBudget;
use crate::catalog::Node;
use crate::channels::{Channels, NodeChannel};
use crate::endpoint_stats::{InFlight, StatsRegistry};
use crate::hedge::HedgePolicy;
use crate::outlier::escalation::Escalation;
use crate::outlier::{self, Health, OutlierDetector, ShardKey, Transition};
use crate::replicas::{try_order, LiveView, Pick, Replica};
use crate::retry::{classify, AttemptFailure, CallerState, HealthSignal};

mod attempts;

use attempts::{Attempts, Ending, Event, Step, Why};

/// The shared failure-handling state of a router.
pub struct Resilience {
    /// Per-node load and latency.
    pub stats: StatsRegistry,
    /// Node-level outlier detection.
    pub nodes: OutlierDetector<Arc<str>>,
    /// Node x tenant-shard outlier detection.
    pub shards: OutlierDetector<ShardKey>,
    /// Which pairs' timeouts blame their node too.
    pub escalation: Escalation,
    /// Retries + hedges allowance.
    pub budget: RetryBudget,
    /// Hedging delays.
    pub hedge: HedgePolicy,
    /// Channels to nodes.
    pub channels: Channels,
    /// The way to the other region: its emulated distance (added to each
    /// attempt on a node there, within the per-try timeout) and a drill's
    /// partition.
    pub network: Network,
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
    /// The call's request id, for the log lines of fallbacks and hedges.
    pub request_id: &'a str,
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

/// What one attempt came to: its index in the try order, its in-flight
/// record, and its result.
type Finished<T> = (usize, InFlight, Result<T, Failed>);

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
    /// Calls `call(node, channel, timeout)` on the target's replicas with
    /// fallback and hedging until one answers, the caller's `deadline`
    /// passes, or no replica is left.
    pub async fn call<T, F, Fut>(
        &self,
        target: Target<'_>,
        deadline: Instant,
        per_try: Duration,
        call: F,
    ) -> Outcome<T>
    where
        F: Fn(&Node, NodeChannel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>> + Send,
        T: Send,
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
            result: Err(Status::unavailable("")),
            node: None,
            attempts: 0,
            hedged: false,
            fallback: false,
        };
        self.budget.deposit();
        let mut attempts = Attempts::new(order.len());
        let mut running = FuturesUnordered::new();
        let mut hedge_at = None;
        let mut last_error: Option<(Status, &'static str)> = None;
        let mut step = attempts.start();
        let ending = loop {
            step = match step {
                Step::Send(why) => {
                    let from = attempts.next().checked_sub(1).map(|i| order[i].replica);
                    match self.launch(&view, &order, &mut attempts, deadline, per_try, &call) {
                        None => attempts.none_left(),
                        Some((index, attempt)) => {
                            running.push(attempt);
                            let to = order[index].replica;
                            outcome.attempts += 1;
                            outcome.node = Some(to.node.clone());
                            outcome.hedged |= why == Why::Hedge;
                            if let Some(from) = from.filter(|_| why != Why::First) {
                                let reason = last_error.as_ref().map(|(_, r)| *r);
                                count_extra_attempt(why, target.kind, from, to, reason);
                                tracing::debug!(request_id = target.request_id,
                                    tenant = %target.tenant, scope = target.scope,
                                    from = %from.node.id, to = %to.node.id, ?why, reason,
                                    "another replica tried");
                            }
                            hedge_at = self.hedge_deadline(&order, index, deadline);
                            Step::Wait
                        }
                    }
                }
                Step::Wait => {
                    let hedge_timer = async {
                        match hedge_at {
                            Some(at) if attempts.has_next() => tokio::time::sleep_until(at).await,
                            _ => std::future::pending().await,
                        }
                    };
                    let event = tokio::select! {
                        biased;
                        Some(done) = running.next() => {
                            self.judge(&view, &order, target.kind, deadline, done, &mut outcome, &mut last_error)
                        }
                        _ = hedge_timer => {
                            hedge_at = None;
                            Event::HedgeDue
                        }
                        _ = tokio::time::sleep_until(deadline) => Event::DeadlinePassed,
                    };
                    // A shed answer says the data is overloaded: another
                    // replica is tried only while the budget has headroom,
                    // so that retries do not feed an overload.
                    let after_shed = matches!(last_error, Some((_, SHED_REASON)));
                    let mut pay = || {
                        if after_shed && !self.budget.has_headroom() {
                            return budget_exhausted();
                        }
                        self.budget.try_withdraw() || budget_exhausted()
                    };
                    attempts.on(event, &mut pay)
                }
                Step::Finish(ending) => break ending,
            };
        };
        if let Ending::Answered(winner) = ending {
            // Attempts sent before the winner and still silent lost a hedge
            // race (they are dropped with `running`).
            for slow in attempts.in_flight().before(winner) {
                let verdict = classify(AttemptFailure::LostRace, CallerState::default());
                self.record_signal(&view, order[slow].replica, verdict.signal, target.kind);
                metrics::counter!("router_attempt_failures_total",
                    "kind" => target.kind, "reason" => verdict.reason)
                .increment(1);
            }
            outcome.node = Some(order[winner].replica.node.clone());
            outcome.fallback = winner > 0;
        }
        if let (Some((status, reason)), false) = (&last_error, outcome.result.is_ok()) {
            // The last attempt's own words (addresses, paths) go to the
            // log; the caller's answer names only the reason.
            tracing::debug!(request_id = target.request_id, tenant = %target.tenant,
                scope = target.scope, reason, error = status.message(), "last attempt failed");
        }
        if let Some(status) = ending_status(ending, &target, &outcome, last_error) {
            outcome.result = Err(status);
        }
        outcome
    }

    /// Sends the next usable replica's attempt (a replica on probation whose
    /// trial another call holds is skipped), counted and marked in flight.
    #[allow(clippy::type_complexity)]
    fn launch<'o, T, F, Fut>(
        &self,
        view: &LiveView<'_>,
        order: &'o [Pick<'o>],
        attempts: &mut Attempts,
        deadline: Instant,
        per_try: Duration,
        call: &F,
    ) -> Option<(
        usize,
        Pin<Box<dyn Future<Output = Finished<T>> + Send + 'o>>,
    )>
    where
        F: Fn(&Node, NodeChannel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>> + Send + 'o,
        T: Send + 'o,
    {
        let index =
            (attempts.next()..order.len()).find(|&i| self.claim_trial(view, order[i].replica))?;
        attempts.sent(index);
        let replica = order[index].replica;
        let in_flight = AbandonOnDrop(Some(self.stats.get_or_create(replica.id()).start()));
        // Never later than the caller's deadline.
        let timeout = per_try.min(deadline.saturating_duration_since(Instant::now()));
        let sent = self
            .channels
            .get(&replica.node)
            .ok()
            .map(|channel| call(&replica.node, channel, timeout));
        let (network, there) = (self.network.clone(), replica.node.region.clone());
        Some((
            index,
            Box::pin(async move {
                let mut in_flight = in_flight;
                // A partitioned way out fails like a refused connection.
                let attempt = async move {
                    network.cross(&there).await.map_err(|_| Failed::Transport)?;
                    sent.ok_or(Failed::Transport)?.await.map_err(Failed::Status)
                };
                let result = match tokio::time::timeout(timeout, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(Failed::PerTryTimeout),
                };
                (index, in_flight.take(), result)
            }),
        ))
    }

    /// Books one finished attempt (statistics, blame, metrics) and says what
    /// it means for the call: an answer (kept in `outcome`) or a failure.
    #[allow(clippy::too_many_arguments)]
    fn judge<T>(
        &self,
        view: &LiveView<'_>,
        order: &[Pick<'_>],
        kind: &'static str,
        deadline: Instant,
        (index, in_flight, result): Finished<T>,
        outcome: &mut Outcome<T>,
        last_error: &mut Option<(Status, &'static str)>,
    ) -> Event {
        let replica = order[index].replica;
        let failed = match result {
            Ok(value) => {
                in_flight.success();
                self.record_signal(view, replica, HealthSignal::Healthy, kind);
                outcome.result = Ok(value);
                return Event::Answered(index);
            }
            Err(failed) => failed,
        };
        in_flight.failure();
        let caller = CallerState {
            deadline_expired: Instant::now() >= deadline,
            cancelled: false,
        };
        let (verdict, status) = match failed {
            Failed::Status(s) => (classify(AttemptFailure::Status(&s), caller), s),
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
        self.record_signal(view, replica, verdict.signal, kind);
        metrics::counter!("router_attempt_failures_total",
            "kind" => kind, "reason" => verdict.reason)
        .increment(1);
        outcome.node = Some(replica.node.clone());
        *last_error = Some((status, verdict.reason));
        Event::Failed {
            index,
            retryable: verdict.retryable,
            free: verdict.free,
        }
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
            HealthSignal::Timeout => {
                let key = view.shard_key(replica);
                let pair = self.shards.record_failure(&key);
                let at = (&**view.tenant, view.shard);
                outlier::report(pair, kind, replica.id(), at, outlier::Scope::Shard);
                if !self.escalation.timed_out(&key) {
                    return;
                }
                self.nodes.record_failure(replica.id())
            }
            HealthSignal::Neutral => Transition::None,
        };
        let scope = match signal {
            HealthSignal::ShardFailure => outlier::Scope::Shard,
            _ => outlier::Scope::Node,
        };
        outlier::report(
            transition,
            kind,
            replica.id(),
            (view.tenant, view.shard),
            scope,
        );
    }
}

/// The status a call that did not end answered fails with (`None` for an
/// answer).
///
/// A message names the kind, shard and tenant and the last attempt's
/// reason, never the attempt's own message (which may carry a node's
/// address or a file path). When the replicas shed the call, the answer is
/// the shed (RESOURCE_EXHAUSTED, `tandem-shed: node`), not UNAVAILABLE.
fn ending_status<T>(
    ending: Ending,
    target: &Target<'_>,
    outcome: &Outcome<T>,
    last_error: Option<(Status, &'static str)>,
) -> Option<Status> {
    let what = || {
        format!(
            "{} {} of tenant {}",
            target.kind,
            scope_name(target.scope),
            target.tenant
        )
    };
    let last = || last_error.as_ref().map_or("none", |(_, reason)| *reason);
    let shed = last_error
        .as_ref()
        .is_some_and(|(s, _)| tandem_proto::shed::who(s) == Some(tandem_proto::shed::NODE));
    Some(match ending {
        Ending::Answered(_) => return None,
        Ending::Refused(_) => last_error
            .map(|(s, _)| s)
            .unwrap_or_else(|| Status::internal("refused")),
        Ending::Exhausted | Ending::BudgetSpent if shed => tandem_proto::shed::status(
            tandem_proto::shed::NODE,
            format!("the replicas of {} are overloaded; retry later", what()),
        ),
        Ending::Exhausted if outcome.attempts == 0 => {
            Status::unavailable(format!("{} has no replica", what()))
        }
        Ending::Exhausted => Status::unavailable(format!(
            "no replica of {} answered; last failure: {}",
            what(),
            last()
        )),
        Ending::BudgetSpent => {
            Status::unavailable(format!("retry budget exhausted; last failure: {}", last()))
        }
        Ending::DeadlinePassed => Status::deadline_exceeded(format!(
            "deadline exceeded after {} attempt(s) on {}",
            outcome.attempts,
            what()
        )),
    })
}

/// Counts a retry (after a failure for `reason`) or a hedge, from the
/// replica tried before to `to`.
fn count_extra_attempt(
    why: Why,
    kind: &'static str,
    from: &Replica,
    to: &Replica,
    reason: Option<&'static str>,
) {
    let (from, to) = (from.node.region.to_string(), to.node.region.to_string());
    match (why, reason) {
        (Why::Hedge, _) => metrics::counter!("router_hedges_total", "kind" => kind,
            "from_region" => from, "to_region" => to)
        .increment(1),
        (_, Some(reason)) => metrics::counter!("router_fallbacks_total", "kind" => kind,
            "reason" => reason, "from_region" => from, "to_region" => to)
        .increment(1),
        (_, None) => {}
    }
}

/// The [`classify`] reason of a shed answer (RESOURCE_EXHAUSTED).
const SHED_REASON: &str = "resource_exhausted";

/// Counts an empty retry budget; always false (nothing to pay with).
fn budget_exhausted() -> bool {
    metrics::counter!("router_retry_budget_exhausted_total").increment(1);
    false
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
