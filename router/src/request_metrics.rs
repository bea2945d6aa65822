//! The router's per-call metrics, `router_requests_total{method, outcome,
//! served_region}` and `router_request_seconds{method}`, with their handles
//! kept.
//!
//! The `metrics` macros build a key, hash it and look it up in the
//! recorder's registry on every update: a few thousand instructions per
//! call on a path that costs a couple of hundred thousand. The label sets
//! here are few (two methods, a handful of outcomes, two regions), so their
//! handles live in a short list that readers scan without a lock and that
//! grows, rarely, by copy-on-write.

use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use tonic::Status;

use crate::method::{Answer, PublicMethod};

/// See the module documentation.
#[derive(Default)]
pub struct RequestMetrics {
    /// By (method, outcome, served region).
    requests: FewHandles<(&'static str, &'static str, String), Counter>,
    /// By method.
    seconds: FewHandles<&'static str, Histogram>,
}

impl RequestMetrics {
    /// Counts one call of `M` by outcome and served region, and its time.
    pub fn record<M: PublicMethod>(&self, result: &Result<M::Answer, Status>, took: Duration) {
        let (outcome, region) = match result {
            Ok(answer) => (
                if answer.degraded() { "degraded" } else { "ok" },
                answer.route().map_or("", |r| r.served_region.as_str()),
            ),
            Err(status) => (code_label(status.code()), ""),
        };
        self.requests.with(
            |(m, o, r)| *m == M::NAME && *o == outcome && r == region,
            || {
                let counter = metrics::counter!("router_requests_total", "method" => M::NAME,
                    "outcome" => outcome, "served_region" => region.to_string());
                ((M::NAME, outcome, region.to_string()), counter)
            },
            |counter| counter.increment(1),
        );
        self.seconds.with(
            |m| *m == M::NAME,
            || {
                let histogram = metrics::histogram!("router_request_seconds", "method" => M::NAME);
                (M::NAME, histogram)
            },
            |histogram| histogram.record(took.as_secs_f64()),
        );
    }
}

/// The `outcome` label of a failed call.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        InvalidArgument => "invalid_argument",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission_denied",
        NotFound => "not_found",
        DeadlineExceeded => "deadline_exceeded",
        Unavailable => "unavailable",
        _ => "error",
    }
}

/// A short list of metric handles by label set.
struct FewHandles<K, H> {
    list: ArcSwap<Vec<(K, H)>>,
}

impl<K, H> Default for FewHandles<K, H> {
    fn default() -> Self {
        Self {
            list: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<K: Clone, H: Clone> FewHandles<K, H> {
    /// Calls `use_it` with the handle whose key `matches`, made by `make`
    /// if there is none yet.
    fn with(
        &self,
        matches: impl Fn(&K) -> bool,
        make: impl FnOnce() -> (K, H),
        use_it: impl FnOnce(&H),
    ) {
        if let Some((_, handle)) = self.list.load().iter().find(|(k, _)| matches(k)) {
            return use_it(handle);
        }
        let made = make();
        use_it(&made.1);
        // Two racing callers may both add the same key: harmless, since both
        // handles are the recorder's one metric, and the scan finds the first.
        self.list.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(made.clone());
            list
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_made_once_per_key() {
        let handles = FewHandles::<&str, usize>::default();
        let mut made = 0;
        for key in ["a", "b", "a", "a", "b"] {
            handles.with(
                |k| *k == key,
                || {
                    made += 1;
                    (key, made)
                },
                |_| {},
            );
        }
        assert_eq!(made, 2);
        let mut seen = 0;
        handles.with(|k| *k == "b", || unreachable!(), |h| seen = *h);
        assert_eq!(seen, 2);
    }
}
