//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the router and the
//! index-node export their spans over OTLP/HTTP to a receiver the test
//! runs, and a search sent with a W3C `traceparent` is one trace: the
//! router's span is the caller's child, and the index-node's span is the
//! router's child.
//!
//! One test in its own binary: the processes take the OTLP settings from
//! the environment this test sets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tandem_e2e::cluster::Cluster;
use tandem_proto::v1::SearchRequest;

/// A span as received: (service, trace id, span id, parent span id, name).
type Received = (String, Vec<u8>, Vec<u8>, Vec<u8>, String);

/// An OTLP/HTTP trace receiver on a loopback port.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for s in scope.spans {
                            sink.lock().expect("lock").push((
                                service.clone(),
                                s.trace_id,
                                s.span_id,
                                s.parent_span_id,
                                s.name,
                            ));
                        }
                    }
                }
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_is_one_trace_from_the_caller_through_the_router_to_the_index_node() {
    let (endpoint, spans) = receiver().await;
    // Inherited by every process the cluster starts.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let cluster = Cluster::leader_and_follower().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(SearchRequest {
        tenant: "t".into(),
        query: "file".into(),
        ..Default::default()
    });
    let md = request.metadata_mut();
    md.insert(
        "authorization",
        format!("Bearer {}", cluster.tenant("t").key())
            .parse()
            .expect("key"),
    );
    md.insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("traceparent"),
    );
    cluster
        .search_client(0)
        .await
        .search(request)
        .await
        .expect("search");

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (router, node) = loop {
        let got: Vec<Received> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| hex(&s.1) == trace_id)
            .cloned()
            .collect();
        let router = got
            .iter()
            .find(|s| s.0.contains("tandem-router") && s.4.ends_with("Search/Search"))
            .cloned();
        let node = got
            .iter()
            .find(|s| s.0.contains("tandem-index-node") && s.4.ends_with("/SearchShard"))
            .cloned();
        if let (Some(r), Some(n)) = (router, node) {
            break (r, n);
        }
        assert!(
            Instant::now() < deadline,
            "spans of the trace received: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        hex(&router.3),
        caller_span,
        "the router's span is the caller's child"
    );
    assert_eq!(
        node.3, router.2,
        "the index-node's span is the router's child"
    );
}
