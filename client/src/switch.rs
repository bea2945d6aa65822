//! The failover policy shared by every clone of a client and by its
//! prober. The call path reads the current choice with one atomic load;
//! the mutex is taken only when something happened (a failed call, a
//! probe answer), which is rare and short.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::failover::{FailoverPolicy, Lease, Transition};

/// Routers are packed into the low bits of the atomic lease word.
const ROUTER_BITS: u32 = 16;
/// Most routers a client can be given (the rest of the word is the epoch).
pub(crate) const MAX_ROUTERS: usize = 1 << ROUTER_BITS;

/// A [`FailoverPolicy`] behind a lock, with its current lease mirrored in
/// an atomic so calls never wait for the lock.
pub(crate) struct Switch {
    policy: Mutex<FailoverPolicy>,
    lease: AtomicU64,
    /// Wakes the prober when the policy leaves the home router.
    wake: Notify,
    /// Router names, for log lines.
    names: Vec<Arc<str>>,
    /// The home router, fixed for the policy's life; kept here so reading
    /// it takes no lock.
    home: usize,
}

impl Switch {
    /// A switch over routers named `names` (index = position).
    pub(crate) fn new(policy: FailoverPolicy, names: Vec<Arc<str>>) -> Self {
        let lease = pack(policy.lease());
        let home = policy.home();
        Switch {
            home,
            policy: Mutex::new(policy),
            lease: AtomicU64::new(lease),
            wake: Notify::new(),
            names,
        }
    }

    /// The router a new call should use.
    pub(crate) fn lease(&self) -> Lease {
        unpack(self.lease.load(Ordering::Acquire))
    }

    /// Records that a call under `lease` failed with a connection error or
    /// UNAVAILABLE, and returns where to retry it (with the lease to report
    /// a second failure under), if anywhere.
    pub(crate) fn report_failure(&self, lease: Lease) -> Option<Lease> {
        let mut policy = self.lock();
        let transition = policy.on_call_failure(lease);
        self.publish(&policy, transition);
        let router = policy.retry_target(lease.router)?;
        Some(Lease {
            router,
            epoch: policy.epoch(),
        })
    }

    /// Records a health probe answer for `router`.
    pub(crate) fn report_probe(&self, router: usize, serving: bool) -> Transition {
        let mut policy = self.lock();
        let transition = policy.on_probe(router, serving);
        self.publish(&policy, transition);
        transition
    }

    /// The router the prober should check now, if any.
    pub(crate) fn probe_target(&self) -> Option<usize> {
        self.lock().probe_target()
    }

    /// Waits until there is a router to probe and returns it.
    pub(crate) async fn wait_for_probe_target(&self) -> usize {
        loop {
            if let Some(target) = self.probe_target() {
                return target;
            }
            // `notify_one` stores a permit when nobody waits, so a failover
            // between the check above and this await is not missed.
            self.wake.notified().await;
        }
    }

    /// The home router's index.
    pub(crate) fn home(&self) -> usize {
        self.home
    }

    /// Name of router `router` (empty if out of range).
    pub(crate) fn name(&self, router: usize) -> Arc<str> {
        self.names
            .get(router)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    fn publish(&self, policy: &FailoverPolicy, transition: Transition) {
        self.lease.store(pack(policy.lease()), Ordering::Release);
        match transition {
            Transition::Stay => {}
            Transition::FailedOver { from, to } => {
                tracing::warn!(
                    from = %self.name(from),
                    to = %self.name(to),
                    "router failed; sending calls to another region's router"
                );
                self.wake.notify_one();
            }
            Transition::Returned { to } => {
                tracing::info!(to = %self.name(to), "home router serving again; returning");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, FailoverPolicy> {
        // The policy has no panicking paths, so a poisoned lock still holds
        // a consistent policy.
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pack(lease: Lease) -> u64 {
    (lease.epoch << ROUTER_BITS) | (lease.router as u64 & (MAX_ROUTERS as u64 - 1))
}

fn unpack(word: u64) -> Lease {
    Lease {
        router: (word & (MAX_ROUTERS as u64 - 1)) as usize,
        epoch: word >> ROUTER_BITS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trips_through_the_atomic_word() {
        let lease = Lease {
            router: 3,
            epoch: 123_456,
        };
        assert_eq!(unpack(pack(lease)), lease);
    }

    #[test]
    fn failure_publishes_the_new_lease_and_retry_target() {
        let names = vec![Arc::from("a"), Arc::from("b")];
        let switch = Switch::new(FailoverPolicy::new(2, 0, 2), names);
        let first = switch.lease();
        let retry = switch.report_failure(first);
        assert_eq!(
            retry,
            Some(Lease {
                router: 1,
                epoch: 1
            })
        );
        assert_eq!(
            switch.lease(),
            Lease {
                router: 1,
                epoch: 1
            }
        );
        assert_eq!(switch.probe_target(), Some(0));
        assert_eq!(&*switch.name(1), "b");
        assert_eq!(&*switch.name(9), "");
    }
}
