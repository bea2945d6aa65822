//! The public `tandem.v1.Search` service on the wire.
//!
//! Registered in place of tonic's generated `SearchServer`: the same
//! service name, methods and messages, but each call is read and answered
//! with [`tandem_common::unary`] (one frame each way) instead of tonic's
//! streaming codec, which is measurably cheaper on the router's hot path
//! (see the router benchmark). What a call means is decided by
//! [`SearchService::handle`]; this file only moves it on and off the wire.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tandem_common::unary;
use tandem_proto::paths;
use tandem_proto::v1::{SearchRequest, SuggestRequest};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;

use crate::service::{PublicMethod, SearchService};

/// See the module documentation.
#[derive(Clone)]
pub struct SearchApi {
    service: SearchService,
}

impl SearchApi {
    /// The wire side of `service`.
    pub fn new(service: SearchService) -> Self {
        Self { service }
    }
}

impl NamedService for SearchApi {
    const NAME: &'static str = "tandem.v1.Search";
}

impl tower::Service<http::Request<Body>> for SearchApi {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            let response = match request.uri().path() {
                paths::SEARCH => serve::<SearchRequest>(&service, request).await,
                paths::SUGGEST => serve::<SuggestRequest>(&service, request).await,
                path => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(response.map(Body::new))
        })
    }
}

/// Reads one call of method `M`, serves it, and encodes the answer.
async fn serve<M: PublicMethod>(
    service: &SearchService,
    request: http::Request<Body>,
) -> http::Response<unary::AnswerBody> {
    let result = match unary::read_request::<M, _>(request).await {
        Ok((head, message)) => {
            let metadata = MetadataMap::from_headers(head.headers);
            service.handle(&metadata, &message).await
        }
        Err(status) => Err(status),
    };
    unary::answer(result)
}
