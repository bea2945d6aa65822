//! The attempt loop of one call to a shard's (or a model's) replicas, as a
//! state machine that decides and never waits: [`Resilience::call`] feeds
//! it what happened ([`Event`]) and does what it says ([`Step`]).
//!
//! States:
//!
//! - **Idle**: nothing sent yet. [`Attempts::start`] asks for the first try,
//!   or ends [`Ending::Exhausted`] when there is no replica to try.
//! - **Waiting**: attempts in flight. An answer ends the call
//!   ([`Ending::Answered`]); an error no other replica would change ends it
//!   too ([`Ending::Refused`]); a retryable failure asks for a retry once
//!   nothing else is in flight (a hedge still racing may yet answer),
//!   paid from the retry budget; a due hedge asks for the next replica
//!   while the first keeps running, paid from the budget too.
//! - **Done**: an [`Ending`]. Attempts still in flight are dropped
//!   (cancelled); those sent before the winner lost its race.
//!
//! A retry with the budget empty ends the call ([`Ending::BudgetSpent`]); a
//! hedge with the budget empty is not sent and the call waits on. No
//! replica left to retry: [`Ending::Exhausted`]; the caller's deadline:
//! [`Ending::DeadlinePassed`].
//!
//! [`Resilience::call`]: super::Resilience::call

/// Attempts sent and not yet finished, as bits of their index in the try
/// order, for blaming the losers of a hedge race. A shard has a handful of
/// replicas; an attempt past the 64th is not tracked here, which only
/// spares it that blame (how many are running is counted apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending(u64);

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
    pub fn before(self, index: usize) -> impl Iterator<Item = usize> {
        (0..index.min(64)).filter(move |&i| self.0 & (1 << i) != 0)
    }
}

/// What happened to the call since the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The attempt at this index of the try order answered.
    Answered(usize),
    /// The attempt at `index` failed; `retryable` as its verdict says.
    Failed {
        /// Its index in the try order.
        index: usize,
        /// Whether another replica might do better.
        retryable: bool,
        /// The next attempt costs no retry budget (a replica behind).
        free: bool,
    },
    /// The hedging delay of the latest attempt passed with no answer.
    HedgeDue,
    /// The caller's deadline passed.
    DeadlinePassed,
}

/// Why an attempt is to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The call's first attempt.
    First,
    /// A retry after a failure.
    Retry,
    /// A hedge beside a slow attempt.
    Hedge,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The attempt at this index answered.
    Answered(usize),
    /// The attempt at this index failed in a way no replica would change.
    Refused(usize),
    /// No replica was left to try.
    Exhausted,
    /// A retry was needed and the retry budget was empty.
    BudgetSpent,
    /// The caller's deadline passed.
    DeadlinePassed,
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the next usable replica's attempt, then report it with
    /// [`Attempts::sent`] or [`Attempts::none_left`].
    Send(Why),
    /// Wait for the next [`Event`].
    Wait,
    /// The call is over.
    Finish(Ending),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Attempts {
    replicas: usize,
    next: usize,
    in_flight: Pending,
    running: usize,
}

impl Attempts {
    /// A call over a try order of `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self {
            replicas,
            next: 0,
            in_flight: Pending::default(),
            running: 0,
        }
    }

    /// The first step.
    pub fn start(&self) -> Step {
        if self.replicas == 0 {
            Step::Finish(Ending::Exhausted)
        } else {
            Step::Send(Why::First)
        }
    }

    /// Index of the next replica to consider sending to.
    pub fn next(&self) -> usize {
        self.next
    }

    /// Whether some replica is left to send to.
    pub fn has_next(&self) -> bool {
        self.next < self.replicas
    }

    /// The driver sent the attempt at `index` (replicas before it were
    /// skipped: a trial already taken).
    pub fn sent(&mut self, index: usize) {
        self.in_flight.insert(index);
        self.running += 1;
        self.next = index + 1;
    }

    /// The attempt at `index` finished.
    fn finished(&mut self, index: usize) {
        self.in_flight.remove(index);
        self.running = self.running.saturating_sub(1);
    }

    /// The driver found no usable replica to send to.
    pub fn none_left(&mut self) -> Step {
        self.next = self.replicas;
        if self.running == 0 {
            Step::Finish(Ending::Exhausted)
        } else {
            Step::Wait
        }
    }

    /// Attempts still in flight (those tracked: see [`Pending`]).
    pub fn in_flight(&self) -> Pending {
        self.in_flight
    }

    /// The step after `event`; `budget` is asked (and pays) for a retry or
    /// a hedge.
    pub fn on(&mut self, event: Event, budget: &mut impl FnMut() -> bool) -> Step {
        match event {
            Event::Answered(index) => {
                self.finished(index);
                Step::Finish(Ending::Answered(index))
            }
            Event::Failed {
                index,
                retryable: false,
                ..
            } => {
                self.finished(index);
                Step::Finish(Ending::Refused(index))
            }
            Event::Failed {
                index,
                retryable: true,
                free,
            } => {
                self.finished(index);
                if self.running > 0 {
                    Step::Wait
                } else if !self.has_next() {
                    Step::Finish(Ending::Exhausted)
                } else if !free && !budget() {
                    Step::Finish(Ending::BudgetSpent)
                } else {
                    Step::Send(Why::Retry)
                }
            }
            Event::HedgeDue if self.has_next() && budget() => Step::Send(Why::Hedge),
            Event::HedgeDue => Step::Wait,
            Event::DeadlinePassed => Step::Finish(Ending::DeadlinePassed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes() -> bool {
        true
    }

    fn no() -> bool {
        false
    }

    fn failed(index: usize) -> Event {
        Event::Failed {
            index,
            retryable: true,
            free: false,
        }
    }

    #[test]
    fn no_replica_is_exhausted_at_once() {
        assert_eq!(Attempts::new(0).start(), Step::Finish(Ending::Exhausted));
    }

    #[test]
    fn a_first_answer_ends_the_call() {
        let mut a = Attempts::new(2);
        assert_eq!(a.start(), Step::Send(Why::First));
        a.sent(0);
        assert_eq!(
            a.on(Event::Answered(0), &mut yes),
            Step::Finish(Ending::Answered(0))
        );
    }

    #[test]
    fn a_retryable_failure_retries_paid_by_the_budget() {
        let mut a = Attempts::new(3);
        a.sent(0);
        assert_eq!(a.on(failed(0), &mut yes), Step::Send(Why::Retry));
        a.sent(1);
        assert_eq!(a.on(failed(1), &mut no), Step::Finish(Ending::BudgetSpent));
    }

    #[test]
    fn the_last_replicas_failure_is_exhaustion() {
        let mut a = Attempts::new(2);
        a.sent(0);
        assert_eq!(a.on(failed(0), &mut yes), Step::Send(Why::Retry));
        a.sent(1);
        assert_eq!(a.on(failed(1), &mut yes), Step::Finish(Ending::Exhausted));
    }

    #[test]
    fn a_refusal_ends_the_call_whatever_is_left() {
        let mut a = Attempts::new(3);
        a.sent(0);
        let refused = Event::Failed {
            index: 0,
            retryable: false,
            free: false,
        };
        assert_eq!(a.on(refused, &mut yes), Step::Finish(Ending::Refused(0)));
    }

    #[test]
    fn a_replica_behind_moves_on_without_budget() {
        let mut a = Attempts::new(2);
        a.sent(0);
        let behind = Event::Failed {
            index: 0,
            retryable: true,
            free: true,
        };
        assert_eq!(a.on(behind, &mut no), Step::Send(Why::Retry));
    }

    #[test]
    fn a_due_hedge_is_sent_if_a_replica_is_left_and_paid_for() {
        let mut a = Attempts::new(2);
        a.sent(0);
        assert_eq!(a.on(Event::HedgeDue, &mut no), Step::Wait);
        assert_eq!(a.on(Event::HedgeDue, &mut yes), Step::Send(Why::Hedge));
        a.sent(1);
        assert_eq!(a.on(Event::HedgeDue, &mut yes), Step::Wait, "none left");
    }

    #[test]
    fn a_failure_while_another_attempt_races_waits_for_it() {
        let mut a = Attempts::new(3);
        a.sent(0);
        assert_eq!(a.on(Event::HedgeDue, &mut yes), Step::Send(Why::Hedge));
        a.sent(1);
        // The hedge fails first: the slow first attempt may still answer.
        assert_eq!(a.on(failed(1), &mut yes), Step::Wait);
        assert_eq!(
            a.on(Event::Answered(0), &mut yes),
            Step::Finish(Ending::Answered(0))
        );
    }

    #[test]
    fn a_winner_after_earlier_attempts_leaves_them_as_losers() {
        let mut a = Attempts::new(3);
        a.sent(0);
        a.on(Event::HedgeDue, &mut yes);
        a.sent(1);
        a.on(Event::HedgeDue, &mut yes);
        a.sent(2);
        assert_eq!(
            a.on(Event::Answered(2), &mut yes),
            Step::Finish(Ending::Answered(2))
        );
        assert_eq!(a.in_flight().before(2).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn skipped_replicas_count_as_tried() {
        let mut a = Attempts::new(3);
        a.sent(2);
        assert!(!a.has_next());
        assert_eq!(a.on(failed(2), &mut yes), Step::Finish(Ending::Exhausted));
        let mut b = Attempts::new(2);
        assert_eq!(b.none_left(), Step::Finish(Ending::Exhausted));
    }

    #[test]
    fn nothing_left_to_send_while_one_races_waits() {
        let mut a = Attempts::new(2);
        a.sent(0);
        assert_eq!(a.on(Event::HedgeDue, &mut yes), Step::Send(Why::Hedge));
        assert_eq!(a.none_left(), Step::Wait);
        assert_eq!(a.on(failed(0), &mut yes), Step::Finish(Ending::Exhausted));
    }

    #[test]
    fn the_deadline_ends_the_call() {
        let mut a = Attempts::new(2);
        a.sent(0);
        assert_eq!(
            a.on(Event::DeadlinePassed, &mut yes),
            Step::Finish(Ending::DeadlinePassed)
        );
    }

    #[test]
    fn attempts_past_the_64th_still_count_as_running() {
        let mut a = Attempts::new(70);
        a.sent(0);
        a.on(Event::HedgeDue, &mut yes);
        a.sent(65);
        assert_eq!(a.on(failed(0), &mut yes), Step::Wait, "65 still runs");
    }

    #[test]
    fn pending_attempts_are_tracked_by_index() {
        let mut pending = Pending::default();
        for i in [0, 2, 5, 70] {
            pending.insert(i);
        }
        pending.remove(2);
        assert_eq!(pending.before(6).collect::<Vec<_>>(), [0, 5]);
        assert_eq!(pending.before(100).count(), 2, "index 70 untracked");
    }
}
