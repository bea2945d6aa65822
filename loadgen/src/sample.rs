//! What the load generator records about one request: when it was due,
//! how long its answer took, and what came back. Summaries and timelines
//! are both folds over these.

use std::time::Duration;

use tandem_client::CallInfo;
use tandem_proto::v1::SearchResponse;
use tonic::{Code, Status};

/// Error label of a request the generator could not send because too many
/// were outstanding (open loop only).
pub const OVERLOAD: &str = "overload";
/// Error label of a request still unanswered when the run's drain period
/// ended.
pub const ABANDONED: &str = "abandoned";

/// One request's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the request was due, from the start of the run. Timelines
    /// bucket by this, so a slow answer shows where the trouble began.
    pub due: Duration,
    /// From the due time (or the actual send, if that was earlier) to the
    /// answer: includes any wait caused by the generator or the system.
    pub latency: Duration,
    /// How late the generator sent it after it was due (open loop; zero when
    /// sent early or in closed loop).
    pub send_lag: Duration,
    /// What came back.
    pub outcome: Outcome,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An answer.
    Ok(Answered),
    /// No answer: a gRPC code name (`UNAVAILABLE`, ...), [`OVERLOAD`] or
    /// [`ABANDONED`].
    Failed(String),
}

/// Where an answer came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answered {
    /// `route.served_region` (empty if the answer had no route).
    pub served_region: String,
    /// `route.forwarded`: the entry router passed the call to its pair.
    pub forwarded: bool,
    /// The client's call went to a router other than its home region's.
    pub client_failover: bool,
    /// The client retried the call on another router.
    pub client_retried: bool,
    /// Some part of the answer was degraded (e.g. no model).
    pub degraded: bool,
}

impl Outcome {
    /// A successful answer served by `region` (handy for tests and for
    /// targets other than the router).
    pub fn served_by(region: &str) -> Self {
        Outcome::Ok(Answered {
            served_region: region.to_string(),
            ..Default::default()
        })
    }

    /// The outcome of a client search call.
    pub fn from_search(result: &Result<(SearchResponse, CallInfo), Status>) -> Self {
        match result {
            Ok((response, info)) => {
                let route = response.route.as_ref();
                Outcome::Ok(Answered {
                    served_region: route.map(|r| r.served_region.clone()).unwrap_or_default(),
                    forwarded: route.is_some_and(|r| r.forwarded),
                    client_failover: info.failed_over,
                    client_retried: info.retried,
                    degraded: !response.degraded.is_empty(),
                })
            }
            Err(status) => Outcome::Failed(code_name(status.code()).to_string()),
        }
    }

    /// True for an answer.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// The canonical gRPC name of a status code, as operators know them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tandem_proto::v1::Route;

    use super::*;

    #[test]
    fn search_results_become_outcomes() {
        let response = SearchResponse {
            route: Some(Route {
                served_region: "us-east-2".into(),
                forwarded: true,
                ..Default::default()
            }),
            degraded: vec!["model".into()],
            ..Default::default()
        };
        let info = CallInfo {
            region: Arc::from("us-east-2"),
            failed_over: true,
            retried: false,
        };
        let outcome = Outcome::from_search(&Ok((response, info)));
        assert_eq!(
            outcome,
            Outcome::Ok(Answered {
                served_region: "us-east-2".into(),
                forwarded: true,
                client_failover: true,
                client_retried: false,
                degraded: true,
            })
        );
        let failed = Outcome::from_search(&Err(Status::unavailable("x")));
        assert_eq!(failed, Outcome::Failed("UNAVAILABLE".into()));
        assert!(!failed.is_ok());
    }
}
