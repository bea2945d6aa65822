//! Distributed traces: spans exported over OTLP, and W3C `traceparent`
//! carried from the router to the nodes.
//!
//! Off by default, with nothing to install. Setting the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! on a process turns it on: every gRPC call it serves becomes a span (the
//! `grpc` span of [`crate::grpc_metrics`], with its method and request id),
//! exported in batches over OTLP/HTTP (protobuf) to that endpoint, e.g. a
//! collector beside the pod at `http://127.0.0.1:4318`. The service name is
//! `OTEL_SERVICE_NAME`, else the binary's name; the other `OTEL_*`
//! variables of the OTLP exporter and the batch processor apply
//! (`OTEL_BSP_SCHEDULE_DELAY`, ...).
//!
//! A server takes its span's parent from the caller's `traceparent`
//! ([`set_parent_from`]); the router puts its span's `traceparent` on every
//! call it makes to a node or to the paired router ([`traceparent`]), so a
//! search is one trace across both regions.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Whether spans are exported (an endpoint was configured).
static ON: AtomicBool = AtomicBool::new(false);

/// The export layer, when an OTLP endpoint is configured: it sees tandem's
/// spans only (not log events), at every level.
pub fn otlp_layer<S>() -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP export is off: {e}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tandem".into())
    });
    // Every call is recorded, whatever a caller's `traceparent` asks: an
    // outside caller must not be able to switch tracing off for its calls.
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("tandem");
    opentelemetry::global::set_tracer_provider(provider);
    ON.store(true, Ordering::Relaxed);
    let tandem_spans = FilterFn::new(|m| m.is_span() && m.target().starts_with("tandem"));
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tandem_spans),
    )
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the caller's `traceparent`, if it sent one.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// The `traceparent` of the current span, for the calls it makes (`None`
/// when spans are not exported).
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}
