//! A tower layer that gives every gRPC server the same metrics and log
//! context, in the style of go-grpc-prometheus:
//!
//! - `grpc_server_started_total{grpc_service, grpc_method}`
//! - `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{grpc_service, grpc_method}` (histogram)
//!
//! Label values come only from the methods this process serves (read once
//! from the descriptor sets of tandem, `grpc.health.v1` and reflection);
//! a call to any other path is labelled `unknown`, so that garbage requests
//! cannot create new time series (unbounded label cardinality).
//!
//! It also opens a `tracing` span per call (at DEBUG level) carrying the
//! `x-request-id` the caller sent (or a fresh one), so that a router's log
//! lines and the nodes' log lines for one query can be joined, and returns
//! that id to the caller in the response metadata (`x-request-id`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

/// Metadata key that carries a request id from the router to the nodes.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a header name: inserting a name given as text
/// copies it into a fresh allocation on every call.
pub const REQUEST_ID_HEADER_NAME: http::HeaderName =
    http::HeaderName::from_static(REQUEST_ID_HEADER);

/// Unary calls being handled right now in this process (all servers).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Calls being handled right now; graceful shutdown waits for this to reach
/// zero rather than for every idle client connection to close.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// Counts one call in flight for as long as it lives.
struct InFlightGuard;

impl InFlightGuard {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Layer adding [`GrpcMetrics`] around a gRPC server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<MetricsFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let metrics = method_metrics(req.uri().path());
        let request_id = match req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(id) => id.to_owned(),
            None => {
                // Handlers read the id from the request to pass it on.
                let id = next_request_id();
                if let Ok(value) = http::HeaderValue::from_bytes(id.as_bytes()) {
                    req.headers_mut().insert(REQUEST_ID_HEADER_NAME, value);
                }
                id
            }
        };
        metrics.handles().started.increment(1);
        // A DEBUG span: at the default INFO level it is disabled and costs
        // nothing, whereas an enabled span formats and books per call.
        // `RUST_LOG=debug` puts the request id on every log line of a call.
        let span = tracing::debug_span!("grpc", method = %metrics.method, request_id = %request_id,
            otel.name = %format_args!("{}/{}", metrics.service, metrics.method), otel.kind = "server");
        crate::trace::set_parent_from(&span, req.headers());
        MetricsFuture {
            inner: self.inner.call(req),
            metrics,
            started: Instant::now(),
            request_id: http::HeaderValue::from_str(&request_id).ok(),
            _in_flight: InFlightGuard::new(),
        }
        .instrument(span)
    }
}

pin_project! {
    /// Response future of [`GrpcMetrics`]: records the outcome when it resolves.
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: &'static MethodMetrics,
        started: Instant,
        // Returned to the caller in the response headers.
        request_id: Option<http::HeaderValue>,
        _in_flight: InFlightGuard,
    }
}

impl<F, ResBody, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(id)) = (result.as_mut(), this.request_id.take()) {
            resp.headers_mut()
                .entry(REQUEST_ID_HEADER_NAME)
                .or_insert(id);
        }
        // A unary error is a "trailers-only" response whose grpc-status sits
        // in the headers; a success carries grpc-status 0 in the trailers.
        let code = match &result {
            Ok(resp) => resp
                .headers()
                .get(&tonic::Status::GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok),
            Err(_) => tonic::Code::Unknown,
        };
        let handles = this.metrics.handles();
        handles.seconds.record(this.started.elapsed().as_secs_f64());
        this.metrics.handled(code).increment(1);
        Poll::Ready(result)
    }
}

/// The metrics of one method: its label values, and its metric handles
/// made on first use. The `metrics` macros build, hash and look up a key on
/// every update; a call updates three of these, so the handles are kept.
pub struct MethodMetrics {
    service: &'static str,
    method: &'static str,
    handles: OnceLock<MethodHandles>,
    /// `grpc_server_handled_total`, one per status code.
    handled: [OnceLock<metrics::Counter>; CODE_NAMES.len()],
}

/// Handles of the metrics every call of a method updates.
struct MethodHandles {
    started: metrics::Counter,
    seconds: metrics::Histogram,
}

/// The canonical name of `code` (`OK`, `Canceled`, `InvalidArgument`,
/// ...), as every code label of tandem's metrics spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    CODE_NAMES[(code as usize).min(CODE_NAMES.len() - 1)]
}

/// `grpc_code` label values, indexed by code: the canonical names that
/// go-grpc-prometheus writes (Go's `codes.Code.String()`), which dashboards
/// and alerts are written against; they differ from `tonic::Code`'s names
/// in `OK` and `Canceled`.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

impl MethodMetrics {
    fn new(service: &'static str, method: &'static str) -> Self {
        Self {
            service,
            method,
            handles: OnceLock::new(),
            handled: Default::default(),
        }
    }

    /// The label values (`grpc_service`, `grpc_method`).
    pub fn labels(&self) -> (&'static str, &'static str) {
        (self.service, self.method)
    }

    /// Made on first use rather than at start, so that they come from the
    /// recorder the process installed (which it does before serving).
    fn handles(&self) -> &MethodHandles {
        self.handles.get_or_init(|| {
            let labels = [("grpc_service", self.service), ("grpc_method", self.method)];
            MethodHandles {
                started: metrics::counter!("grpc_server_started_total", &labels),
                seconds: metrics::histogram!("grpc_server_handling_seconds", &labels),
            }
        })
    }

    fn handled(&self, code: tonic::Code) -> &metrics::Counter {
        // `Code::from_i32` maps anything out of range to `Unknown`.
        let index = (code as usize).min(CODE_NAMES.len() - 1);
        self.handled[index].get_or_init(|| {
            metrics::counter!("grpc_server_handled_total",
                "grpc_service" => self.service, "grpc_method" => self.method,
                "grpc_code" => code_name(code))
        })
    }
}

/// The metrics of the method a request path names:
/// `/tandem.v1.IndexNode/SearchShard` -> (`tandem.v1.IndexNode`,
/// `SearchShard`) for a served method, else (`unknown`, `unknown`).
pub fn method_metrics(path: &str) -> &'static MethodMetrics {
    static UNKNOWN: OnceLock<MethodMetrics> = OnceLock::new();
    known_methods()
        .get(path)
        .unwrap_or_else(|| UNKNOWN.get_or_init(|| MethodMetrics::new("unknown", "unknown")))
}

/// Every method of every service a tandem process may serve, by path (built
/// once; the strings live for the process).
fn known_methods() -> &'static HashMap<String, MethodMetrics> {
    static KNOWN: OnceLock<HashMap<String, MethodMetrics>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message as _;
        let sets = [
            tandem_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ];
        let mut known = HashMap::new();
        for set in sets {
            // The sets are compiled in; one that does not decode only means
            // its calls are labelled `unknown`.
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    let full: &'static str = Box::leak(
                        format!("{}.{}", file.package(), service.name()).into_boxed_str(),
                    );
                    for method in &service.method {
                        let name: &'static str =
                            Box::leak(method.name().to_string().into_boxed_str());
                        known.insert(format!("/{full}/{name}"), MethodMetrics::new(full, name));
                    }
                }
            }
        }
        known
    })
}

/// A process-unique request id: the process id and a counter, cheap and
/// enough to join log lines (not a secret, not globally unique).
fn next_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    format!("{pid:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(path: &str) -> (&'static str, &'static str) {
        method_metrics(path).labels()
    }

    #[test]
    fn code_names_are_the_canonical_grpc_names() {
        for (i, name) in CODE_NAMES.iter().enumerate() {
            let tonic_name = format!("{:?}", tonic::Code::from_i32(i as i32));
            let canonical = match tonic_name.as_str() {
                "Ok" => "OK",
                "Cancelled" => "Canceled",
                other => other,
            };
            assert_eq!(canonical, *name);
        }
    }

    #[test]
    fn served_methods_get_their_labels_and_anything_else_is_unknown() {
        assert_eq!(
            labels("/tandem.v1.Search/Search"),
            ("tandem.v1.Search", "Search")
        );
        assert_eq!(
            labels("/tandem.v1.IndexNode/SearchShard"),
            ("tandem.v1.IndexNode", "SearchShard")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            labels("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            (
                "grpc.reflection.v1.ServerReflection",
                "ServerReflectionInfo"
            )
        );
        use tandem_proto::paths;
        for path in [
            paths::SEARCH,
            paths::SUGGEST,
            paths::SEARCH_SHARD,
            paths::BOOSTS,
            paths::MODEL_SUGGEST,
            paths::HEALTH_CHECK,
        ] {
            assert_ne!(labels(path).0, "unknown", "{path} is not a served method");
        }
        for garbage in [
            "/x",
            "/tandem.v1.Search/Nope",
            "/a/b",
            "",
            "/tandem.v1.Search/Search/extra",
        ] {
            assert_eq!(labels(garbage), ("unknown", "unknown"), "{garbage}");
        }
    }
}
