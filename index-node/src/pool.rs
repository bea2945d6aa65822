//! A bounded, fair pool for CPU-heavy searches.
//!
//! Searches run on blocking threads, at most `workers` at a time, and at
//! most `workers - 1` of them for one tenant: one worker is always left for
//! the other tenants, so a quiet tenant's search starts at once beside a
//! flood instead of waiting for one of its searches to end (the node runs
//! one more worker than it has CPUs, so a tenant alone still uses every
//! CPU). A search that cannot start waits in its tenant's own queue, and a
//! worker that comes free takes the next search from the tenants in turn
//! (round robin, skipping a tenant at its share), so a tenant flooding the
//! node gets its share of the workers and no more.
//!
//! Waiting is bounded twice, and past either bound a search is refused
//! ([`Shed`], sent as RESOURCE_EXHAUSTED with `tandem-shed: node`) rather
//! than queued without bound:
//!
//! - **length**: at most `queue` searches wait in all. When the queue is
//!   full, a search of a tenant with fewer waiting than the longest queue
//!   pushes out that queue's newest search (longest-queue drop), so a
//!   flood cannot fill the queue against everyone else;
//! - **time**: a search that waited longer than `max_wait` for a worker is
//!   refused when its turn comes (its caller has hedged or given up by
//!   then, and running it would only delay the searches behind it).
//!
//! A refusal is cheap and immediate; the router treats it as "the data is
//! overloaded here" (see the router's `retry` module).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a search was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The queue was full (or this search was pushed out of it).
    QueueFull,
    /// It waited longer than the pool's `max_wait` for a worker.
    QueueTimeout,
}

impl Shed {
    /// A label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

/// The pool's bounds.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Searches running at once.
    pub workers: usize,
    /// Searches waiting at most, over all tenants.
    pub queue: usize,
    /// Longest a search may wait for a worker.
    pub max_wait: Duration,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SearchPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: PoolLimits,
    state: Mutex<State>,
}

/// A waiting search: the worker is handed to it through `hand`.
#[derive(Debug)]
struct Waiter {
    hand: oneshot::Sender<Worker>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// Workers each tenant holds (tenants holding none are absent).
    held: HashMap<Arc<str>, usize>,
    waiting: usize,
    /// Each tenant's waiting searches, oldest first.
    queues: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Tenants with a waiting search, in the order they are served.
    turn: VecDeque<Arc<str>>,
}

/// A worker slot held for a tenant. Dropping it hands the worker to the
/// next waiting search (or frees it), wherever that happens: after the job
/// on its blocking thread, or inside a hand-over no one received.
#[derive(Debug)]
struct Worker {
    shared: Option<Arc<Shared>>,
    tenant: Arc<str>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            Shared::release(&shared, &self.tenant);
        }
    }
}

impl State {
    fn held_by(&self, tenant: &str) -> usize {
        self.held.get(tenant).copied().unwrap_or(0)
    }

    fn hold(&mut self, tenant: &Arc<str>) {
        self.running += 1;
        *self.held.entry(tenant.clone()).or_default() += 1;
    }

    fn unhold(&mut self, tenant: &str) {
        self.running -= 1;
        if let Some(n) = self.held.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(tenant);
            }
        }
    }

    /// The next waiting search in turn whose tenant is under `share`,
    /// taken out of its queue, with its tenant.
    fn next_waiter(&mut self, share: usize) -> Option<(Arc<str>, Waiter)> {
        for _ in 0..self.turn.len() {
            let tenant = self.turn.pop_front()?;
            if self.held_by(&tenant) >= share {
                self.turn.push_back(tenant);
                continue;
            }
            let Some(queue) = self.queues.get_mut(&tenant) else {
                continue;
            };
            let waiter = queue.pop_front();
            if queue.is_empty() {
                self.queues.remove(&tenant);
            } else {
                self.turn.push_back(tenant.clone());
            }
            if let Some(waiter) = waiter {
                self.waiting -= 1;
                return Some((tenant, waiter));
            }
        }
        None
    }

    /// Makes room for a search of `tenant` in a full queue by dropping the
    /// newest search of the longest queue, if that queue is longer than
    /// `tenant`'s would become. False: no room (the newcomer is shed).
    fn push_out_for(&mut self, tenant: &str) -> bool {
        let mine = self.queues.get(tenant).map_or(0, VecDeque::len);
        let Some((longest, len)) = self
            .queues
            .iter()
            .map(|(t, q)| (t.clone(), q.len()))
            .max_by_key(|(_, len)| *len)
        else {
            return false;
        };
        if len <= mine + 1 {
            return false;
        }
        if let Some(queue) = self.queues.get_mut(&longest) {
            // Dropping the sender tells that search it was shed.
            queue.pop_back();
            self.waiting -= 1;
        }
        true
    }
}

impl Shared {
    /// Most workers one tenant may hold: all but one, when there are two
    /// or more.
    fn share(&self) -> usize {
        self.limits.workers.saturating_sub(1).max(1)
    }

    /// `tenant`'s worker finished: hand it to the next waiting search (of
    /// a tenant under its share) that still wants it, or free it.
    fn release(shared: &Arc<Shared>, tenant: &str) {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unhold(tenant);
        while let Some((next, waiter)) = state.next_waiter(shared.share()) {
            state.hold(&next);
            let worker = Worker {
                shared: Some(shared.clone()),
                tenant: next,
            };
            match waiter.hand.send(worker) {
                Ok(()) => return,
                // The search went away while waiting: disarm the returned
                // worker (its drop would lock again), give its place
                // back, and try the next.
                Err(mut unwanted) => {
                    unwanted.shared = None;
                    state.unhold(&unwanted.tenant);
                }
            }
        }
    }
}

impl SearchPool {
    /// A pool within `limits` (zero workers count as one).
    pub fn new(limits: PoolLimits) -> Self {
        let limits = PoolLimits {
            workers: limits.workers.max(1),
            ..limits
        };
        Self {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Takes a worker for `tenant`: at once if one is free and no search
    /// waits, else after waiting in the tenant's queue.
    async fn worker(&self, tenant: &str) -> Result<Worker, Shed> {
        let limits = self.shared.limits;
        let waiting = {
            let mut guard = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            // Free to start: a worker is free, the tenant is under its
            // share, and none of its own searches waits before this one.
            // (Other tenants' waiting searches are at their share, or a
            // free worker would have been handed to them.)
            let tenant: Arc<str> = Arc::from(tenant);
            if state.running < limits.workers
                && state.held_by(&tenant) < self.shared.share()
                && !state.queues.contains_key(&tenant)
            {
                state.hold(&tenant);
                return Ok(Worker {
                    shared: Some(self.shared.clone()),
                    tenant,
                });
            }
            if state.waiting >= limits.queue && !state.push_out_for(&tenant) {
                return Err(Shed::QueueFull);
            }
            let (hand, waiting) = oneshot::channel();
            let queue = state.queues.entry(tenant.clone()).or_default();
            if queue.is_empty() {
                state.turn.push_back(tenant);
            }
            queue.push_back(Waiter { hand });
            state.waiting += 1;
            waiting
        };
        let queued_at = Instant::now();
        let worker = waiting.await.map_err(|_| Shed::QueueFull)?;
        if queued_at.elapsed() > limits.max_wait {
            // Dropping the worker passes it on to the next search.
            return Err(Shed::QueueTimeout);
        }
        Ok(worker)
    }

    /// Runs `job` for `tenant` on a blocking thread once a worker is
    /// free, or refuses it (see the module documentation). A caller that
    /// gives up while its job is running does not free the worker early:
    /// the job still uses the CPU.
    pub async fn run<F, R>(&self, tenant: &str, job: F) -> Result<R, Shed>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let worker = self.worker(tenant).await?;
        let handle = tokio::task::spawn_blocking(move || {
            let result = job();
            drop(worker);
            result
        });
        // The job never panics on input; a panic would be a bug, and is
        // surfaced as a refusal rather than taking the node down.
        handle.await.map_err(|_| Shed::QueueFull)
    }

    /// Searches running or waiting right now.
    pub fn in_use(&self) -> usize {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running + state.waiting
    }
}

#[cfg(test)]
mod tests;
