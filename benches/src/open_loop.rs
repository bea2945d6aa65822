//! Open-loop load for the overload and fairness benchmarks: calls start on
//! a fixed schedule whatever the answers, as a crowd of independent users'
//! would, each with its own deadline, and every call's outcome is kept.
//!
//! (The closed loop of [`crate::measure`] cannot overload anything: a slow
//! answer delays the next call. `tandem-loadgen`'s open loop reports
//! through the client library, which fails over and retries; here each
//! call is one plain gRPC call, so that what the router answered is what
//! is counted.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Code;

/// One call's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it started, from the start of the load.
    pub at: Duration,
    /// How long its answer took.
    pub latency: Duration,
    /// Its status (`Ok` for an answer).
    pub code: Code,
}

/// A call taking one query and answering its status.
pub type StatusCall = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>> + Send + Sync,
>;

/// A search of `tenant` with `key` through `channel`, `top_k` hits from
/// `offset`, with the client deadline `deadline`.
pub fn search(
    channel: tonic::transport::Channel,
    (tenant, key): (&'static str, &str),
    (offset, top_k): (u32, u32),
    deadline: Duration,
) -> StatusCall {
    let client = tandem_proto::v1::search_client::SearchClient::new(channel);
    let key = crate::bearer(key);
    Arc::new(move |q: String| {
        let (mut client, key) = (client.clone(), key.clone());
        Box::pin(async move {
            let mut request = crate::search_request(tenant, q, (offset, top_k), &key);
            request.set_timeout(deadline);
            match tokio::time::timeout(deadline, client.search(request)).await {
                Ok(answer) => answer.map(|_| ()),
                Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
            }
        })
    })
}

/// Starts `rate` calls per second for `duration` (at most `max_outstanding`
/// unanswered at once; past that a call is counted as CANCELLED without
/// being sent) and returns every call's record once all have answered.
pub async fn run(
    rate: f64,
    duration: Duration,
    queries: Arc<Vec<String>>,
    call: StatusCall,
) -> Vec<Record> {
    let max_outstanding = 8192;
    let outstanding = Arc::new(Semaphore::new(max_outstanding));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent = 0usize;
    while start.elapsed() < duration {
        ticks.tick().await;
        let query = queries[sent % queries.len()].clone();
        sent += 1;
        let at = start.elapsed();
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            let _ = tx.send(Record {
                at,
                latency: Duration::ZERO,
                code: Code::Cancelled,
            });
            continue;
        };
        let (call, tx) = (call.clone(), tx.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let result = call(query).await;
            let code = result.err().map_or(Code::Ok, |s| s.code());
            let _ = tx.send(Record {
                at,
                latency: began.elapsed(),
                code,
            });
            drop(permit);
        });
    }
    drop(tx);
    let mut records = Vec::with_capacity(sent);
    while let Some(r) = rx.recv().await {
        records.push(r);
    }
    records.sort_by_key(|r| r.at);
    records
}

/// The 99th percentile latency of `records` that `keep`, in µs (0 if none).
pub fn p99_us(records: &[Record], keep: impl Fn(&Record) -> bool) -> u64 {
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    for r in records.iter().filter(|r| keep(r)) {
        let _ = hist.record(r.latency.as_micros() as u64);
    }
    if hist.is_empty() {
        0
    } else {
        hist.value_at_quantile(0.99)
    }
}

/// The failures of `records` other than sheds, by code (`-` if none).
pub fn other_failures(records: &[Record]) -> String {
    let mut by_code = std::collections::BTreeMap::new();
    for r in records {
        if r.code != Code::Ok && r.code != Code::ResourceExhausted {
            *by_code.entry(format!("{:?}", r.code)).or_insert(0) += 1;
        }
    }
    if by_code.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
    parts.join(", ")
}

/// How many `records` ended with `code`.
pub fn count(records: &[Record], code: Code) -> usize {
    records.iter().filter(|r| r.code == code).count()
}

/// How long after `from` the load was served again: the start of the first
/// 100 ms bucket from which on no call failed and each bucket's p99 stayed
/// under `p99_bound_us`. `None` if that never happened.
pub fn recovered_after(records: &[Record], from: Duration, p99_bound_us: u64) -> Option<Duration> {
    let bucket = Duration::from_millis(100);
    let after: Vec<&Record> = records.iter().filter(|r| r.at >= from).collect();
    let last = after.last()?.at;
    let buckets = ((last - from).as_millis() / bucket.as_millis()) as u32 + 1;
    let healthy = |b: u32| {
        let (lo, hi) = (from + bucket * b, from + bucket * (b + 1));
        let inside: Vec<Record> = after
            .iter()
            .filter(|r| r.at >= lo && r.at < hi)
            .map(|r| (*r).clone())
            .collect();
        inside.iter().all(|r| r.code == Code::Ok) && p99_us(&inside, |_| true) <= p99_bound_us
    };
    let mut first_good = None;
    for b in 0..buckets {
        match (healthy(b), first_good) {
            (true, None) => first_good = Some(b),
            (false, Some(_)) => first_good = None,
            _ => {}
        }
    }
    first_good.map(|b| bucket * b)
}
