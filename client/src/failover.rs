//! The failover policy: which router a call goes to, given the failures the
//! client has seen and the health probes it has made. Pure: no clock, no
//! I/O, so every transition is unit-tested without a network.
//!
//! States (see [`State`]):
//!
//! ```text
//!            home router fails a call (connection error / UNAVAILABLE)
//!   Home  ───────────────────────────────────────────────────────────▶  Away
//!     ▲                                                                   │
//!     └───────────── `return_after` consecutive SERVING probes ──────────┘
//!                    of the home router
//! ```
//!
//! Every transition bumps an epoch. A call remembers the [`Lease`] (router
//! and epoch) it started with, and its failure only moves the policy if
//! nothing moved since: otherwise a slow failure from before a transition
//! (a call stuck on the dead router) would undo a newer decision, such as
//! the return home that probes just earned.

/// Where the policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go to the home region's router. The initial state; nothing is
    /// probed because real calls show soon enough when the router fails.
    Home,
    /// The home router failed a call: calls go to router `active` (not the
    /// home one) while the home router is probed in the background;
    /// `serving_streak` counts its consecutive SERVING answers.
    Away {
        /// Index of the router calls go to now.
        active: usize,
        /// Consecutive SERVING probe answers from the home router so far.
        serving_streak: u32,
    },
}

/// The router a call was sent to and the policy epoch it was chosen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Index of the router (position in the client's region list).
    pub router: usize,
    /// Policy epoch when the router was chosen.
    pub epoch: u64,
}

/// What an event did to the policy, so the caller can log and count moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    Stay,
    /// Calls move from router `from` to router `to`.
    FailedOver {
        /// Router that failed.
        from: usize,
        /// Router calls go to from now on.
        to: usize,
    },
    /// The home router earned its way back: calls go to it again.
    Returned {
        /// The home router's index.
        to: usize,
    },
}

/// The failover state machine for one client (see the module docs).
#[derive(Debug, Clone)]
pub struct FailoverPolicy {
    routers: usize,
    home: usize,
    return_after: u32,
    state: State,
    epoch: u64,
}

impl FailoverPolicy {
    /// A policy over `routers` routers (indexes `0..routers`) that prefers
    /// `home` and returns to it after `return_after` consecutive SERVING
    /// probes (0 is taken as 1: a return needs at least one proof of life).
    /// An out-of-range `home` is clamped to the last router rather than
    /// panicking later; callers validate their configuration first.
    pub fn new(routers: usize, home: usize, return_after: u32) -> Self {
        let routers = routers.max(1);
        FailoverPolicy {
            routers,
            home: home.min(routers - 1),
            return_after: return_after.max(1),
            state: State::Home,
            epoch: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The home router's index.
    pub fn home(&self) -> usize {
        self.home
    }

    /// The current epoch; bumped by every transition.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The router new calls should use, with the epoch to report back.
    pub fn lease(&self) -> Lease {
        let router = match self.state {
            State::Home => self.home,
            State::Away { active, .. } => active,
        };
        Lease {
            router,
            epoch: self.epoch,
        }
    }

    /// The router to probe in the background, if any: the home router
    /// while the policy is away from it.
    pub fn probe_target(&self) -> Option<usize> {
        match self.state {
            State::Home => None,
            State::Away { .. } => Some(self.home),
        }
    }

    /// Where to retry a call that just failed on router `failed`: the
    /// current choice if that is another router, else the first other
    /// router in preference order (home first). `None` with one router.
    pub fn retry_target(&self, failed: usize) -> Option<usize> {
        let current = self.lease().router;
        if current != failed {
            return Some(current);
        }
        self.preference_order().find(|&r| r != failed)
    }

    /// A call made under `lease` failed with a connection error or
    /// UNAVAILABLE. Moves away from the leased router if it is still the
    /// current choice; a stale lease (the policy moved since) changes
    /// nothing.
    pub fn on_call_failure(&mut self, lease: Lease) -> Transition {
        if lease.epoch != self.epoch || lease.router != self.lease().router {
            return Transition::Stay;
        }
        let from = lease.router;
        // The next router after the failed one, never the home router
        // (it only comes back through probes). With two routers an away
        // router that fails has nowhere better to send calls: stay.
        let to = (1..self.routers)
            .map(|step| (from + step) % self.routers)
            .find(|&r| r != self.home);
        match to {
            Some(to) if to != from => {
                self.state = State::Away {
                    active: to,
                    serving_streak: 0,
                };
                self.epoch += 1;
                Transition::FailedOver { from, to }
            }
            _ => Transition::Stay,
        }
    }

    /// A health probe of `router` answered SERVING (`serving`) or anything
    /// else (not serving, error, timeout). Only probes of the home router
    /// while away count; one bad answer resets the streak, so a router
    /// that is still starting up or flapping does not get traffic back.
    pub fn on_probe(&mut self, router: usize, serving: bool) -> Transition {
        let State::Away {
            active,
            serving_streak,
        } = self.state
        else {
            return Transition::Stay;
        };
        if router != self.home {
            return Transition::Stay;
        }
        if !serving {
            self.state = State::Away {
                active,
                serving_streak: 0,
            };
            return Transition::Stay;
        }
        let streak = serving_streak.saturating_add(1);
        if streak >= self.return_after {
            self.state = State::Home;
            self.epoch += 1;
            Transition::Returned { to: self.home }
        } else {
            self.state = State::Away {
                active,
                serving_streak: streak,
            };
            Transition::Stay
        }
    }

    /// Home first, then the others in configuration order.
    fn preference_order(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.home).chain((0..self.routers).filter(move |&r| r != self.home))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> FailoverPolicy {
        FailoverPolicy::new(2, 0, 2)
    }

    #[test]
    fn starts_home_and_probes_nothing() {
        let p = two();
        assert_eq!(p.state(), State::Home);
        assert_eq!(
            p.lease(),
            Lease {
                router: 0,
                epoch: 0
            }
        );
        assert_eq!(p.probe_target(), None);
    }

    #[test]
    fn home_failure_moves_away_and_probes_home() {
        let mut p = two();
        let lease = p.lease();
        assert_eq!(
            p.on_call_failure(lease),
            Transition::FailedOver { from: 0, to: 1 }
        );
        assert_eq!(
            p.lease(),
            Lease {
                router: 1,
                epoch: 1
            }
        );
        assert_eq!(p.probe_target(), Some(0));
    }

    #[test]
    fn many_concurrent_failures_move_once() {
        let mut p = two();
        let lease = p.lease();
        assert_ne!(p.on_call_failure(lease), Transition::Stay);
        for _ in 0..100 {
            assert_eq!(p.on_call_failure(lease), Transition::Stay);
        }
        assert_eq!(p.epoch(), 1);
    }

    #[test]
    fn returns_after_consecutive_serving_probes_only() {
        let mut p = two();
        let lease = p.lease();
        p.on_call_failure(lease);
        assert_eq!(p.on_probe(0, true), Transition::Stay);
        // A failed probe in between resets the streak.
        assert_eq!(p.on_probe(0, false), Transition::Stay);
        assert_eq!(p.on_probe(0, true), Transition::Stay);
        assert_eq!(p.on_probe(0, true), Transition::Returned { to: 0 });
        assert_eq!(p.state(), State::Home);
        assert_eq!(
            p.lease(),
            Lease {
                router: 0,
                epoch: 2
            }
        );
        assert_eq!(p.probe_target(), None);
    }

    #[test]
    fn stale_failure_does_not_undo_the_return_home() {
        let mut p = two();
        let before = p.lease();
        p.on_call_failure(before);
        p.on_probe(0, true);
        p.on_probe(0, true);
        // A call sent to the home router before it died fails only now.
        assert_eq!(p.on_call_failure(before), Transition::Stay);
        assert_eq!(p.state(), State::Home);
    }

    #[test]
    fn away_router_failing_with_two_routers_stays() {
        let mut p = two();
        p.on_call_failure(p.lease());
        let away = p.lease();
        assert_eq!(p.on_call_failure(away), Transition::Stay);
        assert_eq!(p.lease(), away);
        // The retry goes to the home router, the only other one.
        assert_eq!(p.retry_target(1), Some(0));
    }

    #[test]
    fn retry_target_is_the_new_choice_after_a_move() {
        let mut p = two();
        p.on_call_failure(p.lease());
        assert_eq!(p.retry_target(0), Some(1));
    }

    #[test]
    fn probes_are_ignored_when_home_or_of_other_routers() {
        let mut p = two();
        assert_eq!(p.on_probe(0, true), Transition::Stay);
        assert_eq!(p.epoch(), 0);
        p.on_call_failure(p.lease());
        assert_eq!(p.on_probe(1, true), Transition::Stay);
        assert_eq!(p.on_probe(1, true), Transition::Stay);
        assert_eq!(
            p.state(),
            State::Away {
                active: 1,
                serving_streak: 0
            }
        );
    }

    #[test]
    fn three_routers_rotate_among_the_others() {
        let mut p = FailoverPolicy::new(3, 1, 1);
        assert_eq!(
            p.on_call_failure(p.lease()),
            Transition::FailedOver { from: 1, to: 2 }
        );
        assert_eq!(
            p.on_call_failure(p.lease()),
            Transition::FailedOver { from: 2, to: 0 }
        );
        assert_eq!(p.on_probe(1, true), Transition::Returned { to: 1 });
    }

    #[test]
    fn single_router_never_moves() {
        let mut p = FailoverPolicy::new(1, 0, 2);
        assert_eq!(p.on_call_failure(p.lease()), Transition::Stay);
        assert_eq!(p.retry_target(0), None);
        assert_eq!(p.probe_target(), None);
    }

    #[test]
    fn degenerate_parameters_are_clamped() {
        let mut p = FailoverPolicy::new(0, 7, 0);
        assert_eq!(p.lease().router, 0);
        assert_eq!(p.on_call_failure(p.lease()), Transition::Stay);
        let mut p = FailoverPolicy::new(2, 0, 0);
        p.on_call_failure(p.lease());
        assert_eq!(p.on_probe(0, true), Transition::Returned { to: 0 });
    }
}
