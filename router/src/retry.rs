//! Which failed attempts may move on to another replica, and whom they blame.
//!
//! [`classify`] maps one failed attempt (a gRPC status, a transport error, the
//! router's own per-try timer) plus the caller's state to a [`Verdict`]:
//! whether to try the next replica, a metrics label, and a [`HealthSignal`]
//! saying which outlier detector (node or node x tenant-shard) to tell.
//!
//! Two rules come first: if the caller's deadline has passed or the caller
//! went away, nothing is retried and nobody is blamed (the caller's impatience
//! says nothing about the replica). Then, the key distinction for blame is
//! *who produced the status*: a status built by our own gRPC client from a
//! transport error (it carries an error `source`: connection refused, reset,
//! h2 protocol error, tonic's `TimeoutExpired`) means the node could not be
//! talked to, so the node is blamed; a status sent by the node (no source)
//! means the process is up and answering, so only the (node, tenant-shard)
//! pair is blamed. That is what keeps one tenant's broken index from ejecting
//! a node that serves thousands of other tenants.
//!
//! Per code (server-sent unless noted):
//!
//! | code | retry | blame | why |
//! | --- | --- | --- | --- |
//! | transport error (any code, client-made) | yes | node | the node is unreachable |
//! | UNAVAILABLE | yes | shard | the node answers but this shard is not serving (e.g. index failed to open, shutting down); another replica may |
//! | RESOURCE_EXHAUSTED | yes | none | overload or quota: go elsewhere, but ejecting an overloaded node under load only moves the overload (cascade); EWMA / in-flight steer load away |
//! | DEADLINE_EXCEEDED with caller time left | yes | shard | the node enforced the per-try deadline we sent: slow for this call, not dead |
//! | router's per-try timer | yes | timeout | said nothing at all within the per-try timeout: the pair is blamed, and the node too when several of its pairs time out together (`outlier::escalation`: a frozen process is silent for every shard) |
//! | lost a hedge race | (already answered) | timeout | silent past its hedging delay (about its p95) *and* past another replica's whole answer: a timeout in all but name. A frozen node is ejected within a few queries; one tenant's slow shard only moves that tenant |
//! | FAILED_PRECONDITION marked `tandem-replica-behind` | yes, free of budget | none | the replica has not applied the caller's consistency token yet: not a failure; the next replica (ending at the leader) has |
//! | FAILED_PRECONDITION | yes | shard | the shard is not in a servable state on this node (NOT_SERVING) |
//! | NOT_FOUND | yes | shard | this node lacks the shard the catalog says it has (still bootstrapping, wiped disk); another replica has it. The router's own "unknown tenant" NOT_FOUND never reaches here |
//! | INTERNAL, UNKNOWN, DATA_LOSS | yes | shard | a bug or corruption hit this shard on this node; reads are idempotent so trying another copy is safe |
//! | ABORTED | yes | none | transient conflict |
//! | CANCELLED (caller still there) | yes | none | the node cancelled (e.g. draining); not a health signal |
//! | INVALID_ARGUMENT, OUT_OF_RANGE | no | healthy | a bad query fails the same everywhere; the node answered correctly |
//! | UNAUTHENTICATED, PERMISSION_DENIED | no | none | the same credentials fail everywhere |
//! | UNIMPLEMENTED, ALREADY_EXISTS | no | none | a deployment or contract problem that another replica will not fix |
//! | caller's deadline passed / caller cancelled | no | none | the answer is no longer wanted |

use std::error::Error as _;

use tonic::{Code, Status};

/// How the caller of the whole query stands when an attempt fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerState {
    /// The caller's deadline has passed (no time left for another attempt).
    pub deadline_expired: bool,
    /// The caller cancelled (went away).
    pub cancelled: bool,
}

/// One failed attempt.
#[derive(Debug, Clone, Copy)]
pub enum AttemptFailure<'a> {
    /// The call returned this status.
    Status(&'a Status),
    /// The router's own per-try timer fired before any answer.
    PerTryTimeout,
    /// No channel could be used at all (e.g. the endpoint could not be built
    /// or connected) before any status existed.
    Transport,
    /// A hedge sent after this attempt answered first while this one was
    /// still silent.
    LostRace,
}

/// Whom a failure should be reported to (which outlier detector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSignal {
    /// The endpoint answered sanely: count a success for node and pair.
    Healthy,
    /// Blame the node (node-level detector).
    NodeFailure,
    /// Blame only the (node, tenant, shard) pair.
    ShardFailure,
    /// A silence: blame the pair, and the node as well when several of
    /// its pairs fall silent together (see `outlier::escalation`).
    Timeout,
    /// Tell nobody.
    Neutral,
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Try the next replica (if the budget allows).
    pub retryable: bool,
    /// The next replica is tried without paying from the retry budget: the
    /// attempt did not fail, the replica is merely behind a consistency
    /// token's sequence number.
    pub free: bool,
    /// Whom to blame.
    pub signal: HealthSignal,
    /// A short label for metrics and logs (`fallbacks_total{reason=...}`).
    pub reason: &'static str,
}

impl Verdict {
    fn retry(signal: HealthSignal, reason: &'static str) -> Verdict {
        Verdict {
            retryable: true,
            free: false,
            signal,
            reason,
        }
    }

    fn stop(signal: HealthSignal, reason: &'static str) -> Verdict {
        Verdict {
            retryable: false,
            free: false,
            signal,
            reason,
        }
    }
}

/// Whether `status` was made by our own client from a transport-level error
/// rather than sent by the server (see module docs).
pub fn is_client_side(status: &Status) -> bool {
    status.source().is_some()
}

/// Whether `status` came from tonic's own client timeout (`Endpoint::timeout`
/// or a tower timeout layer), which tonic reports as CANCELLED.
fn is_client_timeout(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Classifies a failed attempt; see the table in the module docs.
pub fn classify(failure: AttemptFailure<'_>, caller: CallerState) -> Verdict {
    use HealthSignal::*;
    if caller.cancelled {
        return Verdict::stop(Neutral, "caller_cancelled");
    }
    if caller.deadline_expired {
        return Verdict::stop(Neutral, "caller_deadline");
    }
    let status = match failure {
        AttemptFailure::PerTryTimeout => return Verdict::retry(Timeout, "per_try_timeout"),
        AttemptFailure::Transport => return Verdict::retry(NodeFailure, "transport"),
        AttemptFailure::LostRace => return Verdict::retry(Timeout, "hedge_lost"),
        AttemptFailure::Status(status) => status,
    };
    if is_client_side(status) {
        if is_client_timeout(status) {
            return Verdict::retry(Timeout, "per_try_timeout");
        }
        return match status.code() {
            // The client also makes these from h2 stream errors the server
            // chose (RST_STREAM with these reasons), so judge them on the code.
            Code::InvalidArgument | Code::OutOfRange => Verdict::stop(Healthy, "invalid_argument"),
            Code::Unauthenticated | Code::PermissionDenied => Verdict::stop(Neutral, "auth"),
            Code::ResourceExhausted => Verdict::retry(Neutral, "resource_exhausted"),
            _ => Verdict::retry(NodeFailure, "transport"),
        };
    }
    if status.code() == Code::FailedPrecondition
        && status
            .metadata()
            .contains_key(tandem_proto::REPLICA_BEHIND_KEY)
    {
        return Verdict {
            free: true,
            ..Verdict::retry(Neutral, "replica_behind")
        };
    }
    match status.code() {
        // `Ok` is not a failure; if it is passed anyway, call it healthy and
        // do not retry rather than panic.
        Code::Ok => Verdict::stop(Healthy, "ok"),
        Code::InvalidArgument | Code::OutOfRange => Verdict::stop(Healthy, "invalid_argument"),
        Code::Unauthenticated | Code::PermissionDenied => Verdict::stop(Neutral, "auth"),
        Code::Unimplemented | Code::AlreadyExists => Verdict::stop(Neutral, "not_retryable"),
        Code::Unavailable => Verdict::retry(ShardFailure, "unavailable"),
        Code::ResourceExhausted => Verdict::retry(Neutral, "resource_exhausted"),
        Code::DeadlineExceeded => Verdict::retry(ShardFailure, "per_try_timeout"),
        Code::FailedPrecondition => Verdict::retry(ShardFailure, "shard_not_serving"),
        Code::NotFound => Verdict::retry(ShardFailure, "shard_not_found"),
        Code::Internal | Code::Unknown | Code::DataLoss => Verdict::retry(ShardFailure, "internal"),
        Code::Aborted => Verdict::retry(Neutral, "aborted"),
        Code::Cancelled => Verdict::retry(Neutral, "cancelled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: CallerState = CallerState {
        deadline_expired: false,
        cancelled: false,
    };

    fn server(code: Code) -> Verdict {
        classify(AttemptFailure::Status(&Status::new(code, "x")), LIVE)
    }

    fn client(err: Box<dyn std::error::Error + Send + Sync>) -> Verdict {
        let status = Status::from_error(err);
        assert!(is_client_side(&status));
        classify(AttemptFailure::Status(&status), LIVE)
    }

    #[test]
    fn a_replica_behind_the_token_is_tried_past_for_free() {
        let mut status = Status::failed_precondition("behind");
        status
            .metadata_mut()
            .insert(tandem_proto::REPLICA_BEHIND_KEY, "1".parse().unwrap());
        let v = classify(AttemptFailure::Status(&status), LIVE);
        assert!(v.retryable && v.free);
        assert_eq!(
            (v.signal, v.reason),
            (HealthSignal::Neutral, "replica_behind")
        );
        assert!(!server(Code::FailedPrecondition).free);
    }

    #[test]
    fn retryable_server_codes_blame_the_shard_only() {
        for code in [
            Code::Unavailable,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::Internal,
            Code::Unknown,
            Code::DataLoss,
            Code::DeadlineExceeded,
        ] {
            let v = server(code);
            assert!(v.retryable, "{code:?}");
            assert_eq!(v.signal, HealthSignal::ShardFailure, "{code:?}");
        }
        assert_eq!(server(Code::FailedPrecondition).reason, "shard_not_serving");
    }

    #[test]
    fn overload_is_retried_elsewhere_without_ejecting() {
        let v = server(Code::ResourceExhausted);
        assert!(v.retryable);
        assert_eq!(v.signal, HealthSignal::Neutral);
        assert!(server(Code::Aborted).retryable);
        assert!(server(Code::Cancelled).retryable);
    }

    #[test]
    fn caller_errors_are_final() {
        let v = server(Code::InvalidArgument);
        assert_eq!((v.retryable, v.signal), (false, HealthSignal::Healthy));
        assert!(!server(Code::OutOfRange).retryable);
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::AlreadyExists,
        ] {
            let v = server(code);
            assert_eq!(
                (v.retryable, v.signal),
                (false, HealthSignal::Neutral),
                "{code:?}"
            );
        }
        assert!(!server(Code::Ok).retryable);
    }

    #[test]
    fn the_callers_own_deadline_or_cancellation_stops_everything() {
        let status = Status::unavailable("down");
        let expired = CallerState {
            deadline_expired: true,
            ..LIVE
        };
        let v = classify(AttemptFailure::Status(&status), expired);
        assert_eq!(
            (v.retryable, v.signal, v.reason),
            (false, HealthSignal::Neutral, "caller_deadline")
        );
        let gone = CallerState {
            cancelled: true,
            ..LIVE
        };
        let v = classify(AttemptFailure::PerTryTimeout, gone);
        assert_eq!((v.retryable, v.reason), (false, "caller_cancelled"));
    }

    #[test]
    fn timeouts_blame_the_pair_first_and_transport_errors_the_node() {
        let v = classify(AttemptFailure::PerTryTimeout, LIVE);
        assert_eq!((v.retryable, v.signal), (true, HealthSignal::Timeout));
        let v = classify(AttemptFailure::Transport, LIVE);
        assert_eq!((v.retryable, v.signal), (true, HealthSignal::NodeFailure));
        let v = classify(AttemptFailure::LostRace, LIVE);
        assert_eq!((v.signal, v.reason), (HealthSignal::Timeout, "hedge_lost"));

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let v = client(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(
            (v.retryable, v.signal, v.reason),
            (true, HealthSignal::NodeFailure, "transport")
        );

        let v = client(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(
            (v.signal, v.reason),
            (HealthSignal::Timeout, "per_try_timeout")
        );

        let v = client(Box::new(std::io::Error::other("reset")));
        assert_eq!((v.retryable, v.signal), (true, HealthSignal::NodeFailure));
    }
}
