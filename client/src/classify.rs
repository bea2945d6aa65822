//! Which failures move a call to another region's router.
//!
//! Failover is for a front door that is gone or full, not for a query
//! that is wrong: UNAVAILABLE, transport failures and a router's own shed
//! (RESOURCE_EXHAUSTED with `tandem-shed: router`) move, every other code
//! (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, ...) is the same answer
//! any router would give and is returned as is. So is an UNAVAILABLE a
//! router marks as "this tenant's replicas are exhausted"
//! ([`tandem_proto::REPLICAS_EXHAUSTED_KEY`]): the router is up and has
//! already tried every region's replicas, so another router cannot help
//! (e.g. a single-region tenant whose home region lost its indexes). Search and Suggest are
//! reads, so repeating a call the dead router may have seen is safe.

use std::error::Error;

use tonic::{Code, Status};

/// True for UNAVAILABLE (which tonic also uses for refused connections)
/// and for failures that never reached a server: a status tonic made
/// locally from a transport error (connection reset mid-call) carries the
/// error as its source, whereas a status a server sent has none. The
/// client's own deadline is not a router failure.
pub fn is_failover_status(status: &Status) -> bool {
    // A router that shed the call for its own load: another region's
    // router may have room. A quota or the tenant's overloaded replicas
    // are the same everywhere (and a quota must not be had twice).
    if let Some(who) = tandem_proto::shed::who(status) {
        return who == tandem_proto::shed::ROUTER;
    }
    if status.code() == Code::Unavailable {
        // A router that answers "this tenant's replicas are all gone" is
        // working; every other router would answer the same.
        return status
            .metadata()
            .get(tandem_proto::REPLICAS_EXHAUSTED_KEY)
            .is_none();
    }
    status.source().is_some() && !is_local_timeout(status)
}

/// True if tonic gave up because the request's `grpc-timeout` expired.
pub(crate) fn is_local_timeout(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

/// True if the server gave up at the deadline the client sent. tandem's
/// servers answer DEADLINE_EXCEEDED (the router also does when its own
/// deadline, derived from the client's, runs out); tonic's server answers
/// CANCELLED "Timeout expired". When client and server deadlines expire
/// together either answer can arrive first, and both mean the attempt's
/// time ran out.
pub(crate) fn is_server_timeout(status: &Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded => true,
        Code::Cancelled => status.message() == tonic::TimeoutExpired(()).to_string(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_side_deadline_is_a_timeout_other_cancels_are_not() {
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(expired.code(), Code::Cancelled);
        // What the client receives: the same code and message, no source.
        let received = Status::new(expired.code(), expired.message());
        assert!(is_server_timeout(&received));
        assert!(!is_server_timeout(&Status::cancelled("client went away")));
        // tandem's servers (`tandem_common::grpc_deadline`, the router's own
        // deadline) answer DEADLINE_EXCEEDED.
        assert!(is_server_timeout(&Status::deadline_exceeded(
            "the caller's grpc-timeout ran out before the call was answered"
        )));
        assert!(!is_server_timeout(&Status::unavailable("Timeout expired")));
    }

    #[test]
    fn unavailable_and_transport_errors_fail_over() {
        assert!(is_failover_status(&Status::unavailable("down")));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(reset));
        assert!(is_failover_status(&status));
    }

    #[test]
    fn a_router_shed_fails_over_a_quota_or_node_shed_does_not() {
        use tandem_proto::shed;
        let status = |who| tandem_proto::shed::status(who, "busy");
        assert!(is_failover_status(&status(shed::ROUTER)));
        assert!(!is_failover_status(&status(shed::QUOTA)));
        assert!(!is_failover_status(&status(shed::NODE)));
        assert!(!is_failover_status(&Status::resource_exhausted("too big")));
    }

    #[test]
    fn exhausted_replicas_do_not_fail_over() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            tandem_proto::REPLICAS_EXHAUSTED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let status =
            Status::with_metadata(Code::Unavailable, "shard 0 has no live replica", metadata);
        assert!(!is_failover_status(&status));
    }

    #[test]
    fn server_answers_do_not_fail_over() {
        for status in [
            Status::invalid_argument("bad query"),
            Status::unauthenticated("key"),
            Status::permission_denied("key"),
            Status::not_found("tenant"),
            Status::deadline_exceeded("slow"),
            Status::internal("bug"),
            Status::resource_exhausted("busy"),
        ] {
            assert!(!is_failover_status(&status), "{status:?}");
        }
    }
}
