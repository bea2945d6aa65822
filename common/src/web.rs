//! gRPC-Web for browsers: HTTP/1.1 accepted, gRPC-Web requests translated
//! to gRPC (`tonic-web`), and CORS (`tower-http`) so that a page on an
//! allowed origin may call.
//!
//! Which origins are allowed is the server's business (the router takes
//! them from the catalog: the union of the tenants' `allowed_origins`
//! answers preflights; each call is then checked against its own tenant's
//! list). The predicate is asked on every preflight and call, so a catalog
//! reload applies at once.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Whether a browser page from an origin may call at all.
#[derive(Clone)]
pub struct OriginPolicy(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginPolicy")
    }
}

/// Request headers a gRPC-Web client sends.
const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "x-request-id",
];

/// Response headers a page may read.
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// The CORS layer for `policy`: preflights answered for allowed origins
/// (POST, the gRPC-Web headers, cached for an hour), the gRPC status
/// headers readable by the page.
pub fn cors(policy: OriginPolicy) -> CorsLayer {
    let names = |list: &[&str]| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| (policy.0)(o))
        }))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(names(&ALLOWED_HEADERS))
        .expose_headers(names(&EXPOSED_HEADERS))
        .max_age(Duration::from_secs(3600))
}

/// The `origin` a call carries, if a browser sent it.
pub fn origin(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get(header::ORIGIN.as_str())
        .and_then(|v| v.to_str().ok())
}
