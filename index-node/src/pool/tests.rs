use super::*;
use std::sync::mpsc;

fn pool(workers: usize, queue: usize) -> SearchPool {
    SearchPool::new(PoolLimits {
        workers,
        queue,
        max_wait: Duration::from_millis(50),
    })
}

/// A search of `tenant` queued on `pool`, as a task; its result says
/// which search got a worker in which order (through `order`).
fn queue_one(
    pool: &SearchPool,
    tenant: &'static str,
    order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> tokio::task::JoinHandle<Result<(), Shed>> {
    let (pool, order) = (pool.clone(), order.clone());
    tokio::spawn(async move {
        let worker = pool.worker(tenant).await?;
        let _ = order.send(tenant);
        drop(worker);
        Ok(())
    })
}

/// Waits until `tenant` has `n` searches waiting.
async fn queued(pool: &SearchPool, tenant: &str, n: usize) {
    let waiting = || {
        let state = pool.shared.state.lock().unwrap();
        state.queues.get(tenant).map_or(0, VecDeque::len)
    };
    while waiting() != n {
        tokio::task::yield_now().await;
    }
}

async fn settle(pool: &SearchPool, in_use: usize) {
    while pool.in_use() != in_use {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_jobs_and_sheds_past_the_queue() {
    let pool = pool(1, 1);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    // Occupy the only worker until told to finish.
    let busy = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.run("a", move || {
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
        async move { pool.run("a", || 2).await }
    });
    settle(&pool, 2).await;
    // ... the next of the same tenant is refused at once.
    assert_eq!(pool.run("a", || 3).await, Err(Shed::QueueFull));
    release_tx.send(()).unwrap();
    assert_eq!(busy.await.unwrap(), Ok(1));
    assert_eq!(queued.await.unwrap(), Ok(2));
    assert_eq!(pool.run("a", || 4).await, Ok(4));
    settle(&pool, 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_free_worker_goes_to_the_tenants_in_turn() {
    let pool = pool(1, 16);
    let held = pool.worker("flood").await.unwrap();
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut searches = Vec::new();
    for _ in 0..5 {
        searches.push(queue_one(&pool, "flood", &order_tx));
        settle(&pool, searches.len() + 1).await;
    }
    searches.push(queue_one(&pool, "quiet", &order_tx));
    queued(&pool, "quiet", 1).await;
    drop(held);
    for s in searches {
        assert_eq!(s.await.unwrap(), Ok(()));
    }
    let mut served = Vec::new();
    while let Ok(t) = order.try_recv() {
        served.push(t);
    }
    // The quiet tenant's search came after one flood search, not five.
    assert_eq!(
        served,
        ["flood", "quiet", "flood", "flood", "flood", "flood"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_pushes_out_the_longest_queues_newest() {
    let pool = pool(1, 4);
    let held = pool.worker("flood").await.unwrap();
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(queue_one(&pool, "flood", &order_tx));
        settle(&pool, flood.len() + 1).await;
    }
    // The queue is full: one more flood search is refused ...
    assert_eq!(pool.worker("flood").await.unwrap_err(), Shed::QueueFull);
    // ... but the quiet tenant's takes the place of the newest flood one.
    let quiet = queue_one(&pool, "quiet", &order_tx);
    queued(&pool, "quiet", 1).await;
    drop(held);
    assert_eq!(quiet.await.unwrap(), Ok(()));
    let results: Vec<_> = futures::future::join_all(flood)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        results[3],
        Err(Shed::QueueFull),
        "the newest was pushed out: {results:?}"
    );
    assert!(results[..3].iter().all(Result::is_ok));
    assert_eq!(order.recv().await, Some("flood"));
    assert_eq!(order.recv().await, Some("quiet"));
}

#[tokio::test(start_paused = true)]
async fn a_search_that_waited_too_long_is_shed_when_its_turn_comes() {
    let pool = pool(1, 4);
    let held = pool.worker("a").await.unwrap();
    let (order_tx, _order) = tokio::sync::mpsc::unbounded_channel();
    let late = queue_one(&pool, "a", &order_tx);
    settle(&pool, 2).await;
    tokio::time::advance(Duration::from_millis(51)).await;
    drop(held);
    assert_eq!(late.await.unwrap(), Err(Shed::QueueTimeout));
    // The worker it did not use is free again.
    settle(&pool, 0).await;
    assert!(pool.worker("a").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_search_that_gave_up_waiting_does_not_keep_the_worker() {
    let pool = pool(1, 4);
    let held = pool.worker("a").await.unwrap();
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let gone = queue_one(&pool, "a", &order_tx);
    settle(&pool, 2).await;
    let next = queue_one(&pool, "b", &order_tx);
    queued(&pool, "b", 1).await;
    gone.abort();
    drop(held);
    assert_eq!(next.await.unwrap(), Ok(()));
    assert_eq!(order.recv().await, Some("b"));
    settle(&pool, 0).await;
}

#[tokio::test(start_paused = true)]
async fn one_worker_is_always_left_for_the_other_tenants() {
    let pool = pool(3, 16);
    let a = pool.worker("flood").await.unwrap();
    let b = pool.worker("flood").await.unwrap();
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    // A third flood search waits, though a worker is free ...
    let third = queue_one(&pool, "flood", &order_tx);
    queued(&pool, "flood", 1).await;
    // ... which another tenant's search takes at once.
    let quiet = pool.worker("quiet").await.expect("the spare worker");
    drop(quiet);
    assert!(order.try_recv().is_err(), "the flood stays at its share");
    drop(a);
    assert_eq!(third.await.unwrap(), Ok(()));
    assert_eq!(order.recv().await, Some("flood"));
    drop(b);
    settle(&pool, 0).await;
}
