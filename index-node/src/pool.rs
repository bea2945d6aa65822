//! A bounded pool for CPU-heavy searches.
//!
//! Searches run on blocking threads, at most `workers` at a time, with at
//! most `queue` more waiting. Past that a request is refused at once
//! ([`Overloaded`], sent as RESOURCE_EXHAUSTED) rather than queued without
//! bound: a router treats that as a reason to ask another replica, which is
//! better for the caller than waiting behind a backlog here.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// The pool is full; the request was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// See the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SearchPool {
    /// Permits for running plus queued work.
    admitted: Arc<Semaphore>,
    /// Permits for running work.
    running: Arc<Semaphore>,
}

impl SearchPool {
    /// A pool running `workers` jobs at once with `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Runs `job` on a blocking thread once a worker is free, or refuses at
    /// once when the queue is full. A caller that gives up while its job is
    /// running does not free the worker early: the job still uses the CPU.
    pub async fn run<F, R>(&self, job: F) -> Result<R, Overloaded>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Overloaded)?;
        let handle = tokio::task::spawn_blocking(move || {
            let result = job();
            drop((running, admitted));
            result
        });
        // The job never panics on input; a panic would be a bug, and is
        // surfaced as an overload rather than taking the node down.
        handle.await.map_err(|_| Overloaded)
    }

    /// Jobs running or queued right now.
    pub fn in_use(&self, workers_plus_queue: usize) -> usize {
        workers_plus_queue - self.admitted.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sheds_load_past_the_queue() {
        let pool = SearchPool::new(1, 1);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        // Occupy the only worker until told to finish.
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                    1
                })
                .await
            }
        });
        started_rx.await.unwrap();
        // One job may wait in the queue ...
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|| 2).await }
        });
        while pool.in_use(2) < 2 {
            tokio::task::yield_now().await;
        }
        // ... the next is refused at once.
        assert_eq!(pool.run(|| 3).await, Err(Overloaded));
        release_tx.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(1));
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(pool.run(|| 4).await, Ok(4));
    }
}
