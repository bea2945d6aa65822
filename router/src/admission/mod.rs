//! What a router refuses before it reads a call's body: calls without a
//! valid key, calls past their tenant's quota, and calls past the router's
//! own admission limit.
//!
//! A call's headers name its key, and a key belongs to one tenant, so the
//! router knows who calls before it has read (up to 4 MiB of) the body.
//! [`Gate`] wraps the public services and asks [`Admission::admit`]:
//!
//! 1. **key**: none, or a key of no tenant → UNAUTHENTICATED. Whether the
//!    key may act for the tenant the body names, and with which scope, is
//!    checked after the body is read (`service.rs`); this step only keeps
//!    strangers from making the router read bodies;
//! 2. **quota** (Search and Suggest): the key's tenant over its quota in
//!    this region ([`quota`]) → RESOURCE_EXHAUSTED, `tandem-shed: quota`.
//!    A call the paired region's router forwarded was counted there and is
//!    not counted again;
//! 3. **limit** (Search and Suggest): the router serving as many searches
//!    as its [`limit::AdaptiveLimit`] allows → RESOURCE_EXHAUSTED,
//!    `tandem-shed: router`, answered at once.
//!
//! Refusals are counted in `router_shed_total{by}`, and so are searches the
//! index-nodes shed (`by="node"`), which also shrink the limit.

pub mod limit;
pub mod quota;

mod gate;

use std::sync::Arc;

use http::HeaderMap;
use tandem_proto::shed;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::catalog::KeyHash;
use crate::dial::FORWARDED_HEADER;
use crate::state::RouterState;

pub use gate::Gate;
use limit::{AdaptiveLimit, Finished, LimitConfig, Permit};
use quota::{QuotaPermit, Quotas};

/// Which checks a service's calls go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Key, quota and limit (Search, Suggest).
    Search,
    /// The key only (Documents, Events).
    Key,
}

/// The router's admission state: its limit and its tenants' quota use.
#[derive(Debug)]
pub struct Admission {
    /// Searches at once.
    pub limit: Arc<AdaptiveLimit>,
    /// Tenants' quota use on this router.
    pub quotas: Quotas,
}

/// A call let in: its places under the limit and the quota, held until
/// the answer is sent.
#[derive(Debug)]
pub struct Admitted {
    /// The presented key's hash, handed to the service in the request's
    /// extensions so that it is not hashed twice.
    pub key: KeyHash,
    limit: Option<Permit>,
    _quota: Option<QuotaPermit>,
}

impl Admitted {
    /// Reports how the call ended (its answer's headers) to the limit.
    pub fn finish(self, answer: &HeaderMap) {
        let how = ending(answer);
        if how == Finished::Shed {
            metrics::counter!("router_shed_total", "by" => shed::NODE).increment(1);
        }
        if let Some(permit) = self.limit {
            permit.finish(how);
        }
    }
}

/// How a call ended, from its answer's headers: an error answer carries
/// its `grpc-status` there (a success carries it in the trailers).
fn ending(answer: &HeaderMap) -> Finished {
    if answer
        .get(tandem_proto::SHED_KEY)
        .is_some_and(|v| v.as_bytes() == shed::NODE.as_bytes())
    {
        return Finished::Shed;
    }
    let ok_or_late = |code: &[u8]| {
        code == b"0"
            || code
                == (tonic::Code::DeadlineExceeded as i32)
                    .to_string()
                    .as_bytes()
    };
    match answer.get("grpc-status") {
        Some(code) if !ok_or_late(code.as_bytes()) => Finished::Failed,
        _ => Finished::Served,
    }
}

impl Admission {
    /// Admission with the given limit.
    pub fn new(limit: LimitConfig) -> Self {
        metrics::gauge!("router_admission_limit").set(limit.initial as f64);
        for by in [shed::ROUTER, shed::NODE, shed::QUOTA] {
            metrics::counter!("router_shed_total", "by" => by).increment(0);
        }
        Self {
            limit: AdaptiveLimit::new(limit),
            quotas: Quotas::default(),
        }
    }

    /// The checks of the module documentation, on a call's headers (and,
    /// for a forwarded call, its connection's `extensions`).
    pub fn admit(
        &self,
        state: &RouterState,
        (headers, extensions): (&HeaderMap, &http::Extensions),
        checks: Checks,
    ) -> Result<Admitted, Status> {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(tandem_common::auth::parse_bearer)
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <api key>`"))?;
        let catalog = state.catalog.current();
        let key = KeyHash::of_key(key);
        let tenant = catalog
            .key_owner(&key)
            .ok_or_else(|| Status::unauthenticated("API key not accepted"))?;
        if checks == Checks::Key {
            return Ok(Admitted {
                key,
                limit: None,
                _quota: None,
            });
        }
        let quota = if forwarded_by_a_router(state, headers, extensions) {
            None
        } else {
            let routers = catalog.routers_of(&state.region).len();
            let quota = catalog.tenant(tenant).and_then(|t| t.quota);
            let permit = self
                .quotas
                .try_acquire(tenant, quota, routers)
                .map_err(|over| {
                    metrics::counter!("router_shed_total", "by" => shed::QUOTA).increment(1);
                    tandem_proto::shed::status(shed::QUOTA, over.message())
                })?;
            Some(permit)
        };
        let Some(limit) = self.limit.try_acquire() else {
            metrics::counter!("router_shed_total", "by" => shed::ROUTER).increment(1);
            return Err(tandem_proto::shed::status(
                shed::ROUTER,
                "the router is at its limit of searches in flight; retry, or use another region's router",
            ));
        };
        Ok(Admitted {
            key,
            limit: Some(limit),
            _quota: quota,
        })
    }
}

/// Whether the call says it was forwarded by the paired region's router
/// and comes from an authenticated tandem process.
fn forwarded_by_a_router(
    state: &RouterState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> bool {
    if !headers.contains_key(FORWARDED_HEADER) {
        return false;
    }
    let metadata = MetadataMap::from_headers(headers.clone());
    state.internal.admits(extensions, &metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_deadlines_and_node_sheds_teach_the_limit() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, http::HeaderValue::from_static(v));
            }
            map
        };
        assert_eq!(ending(&headers(&[])), Finished::Served);
        assert_eq!(ending(&headers(&[("grpc-status", "0")])), Finished::Served);
        assert_eq!(ending(&headers(&[("grpc-status", "4")])), Finished::Served);
        assert_eq!(ending(&headers(&[("grpc-status", "14")])), Finished::Failed);
        assert_eq!(ending(&headers(&[("grpc-status", "3")])), Finished::Failed);
        let shed = [("grpc-status", "8"), (tandem_proto::SHED_KEY, "node")];
        assert_eq!(ending(&headers(&shed)), Finished::Shed);
    }
}
