//! The public `tandem.v1.Search` service on the wire.
//!
//! Served in place of tonic's generated `SearchServer`, in front of the
//! routing table (`tandem_common::server::serve_with_front`): the same
//! service name, methods and messages, but each call is read and answered
//! with [`tandem_common::unary`] (one frame each way) instead of tonic's
//! streaming codec, which is measurably cheaper on the router's hot path
//! (see the router benchmark). What a call means is decided by
//! [`SearchService::handle`]; this file only moves it on and off the wire.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
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

/// Generic over the request body: the server hands it hyper's own body
/// (see `tandem_common::server::serve_with_front`), tonic's `Routes` its
/// boxed one.
impl<B> tower::Service<http::Request<B>> for SearchApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            let response = match request.uri().path() {
                paths::SEARCH => serve::<SearchRequest, _>(&service, request).await,
                paths::SUGGEST => serve::<SuggestRequest, _>(&service, request).await,
                path => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(response.map(Body::new))
        })
    }
}

/// Reads one call of method `M`, serves it, and encodes the answer.
async fn serve<M: PublicMethod, B>(
    service: &SearchService,
    request: http::Request<B>,
) -> http::Response<unary::AnswerBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut head, body) = request.into_parts();
    let metadata = MetadataMap::from_headers(std::mem::take(&mut head.headers));
    // Before the body: see `Admission`.
    let admission = service.admit(&metadata);
    head.headers = metadata.into_headers();
    let result = match unary::read_request::<M, _>(http::Request::from_parts(head, body)).await {
        Ok((head, message)) => {
            let metadata = MetadataMap::from_headers(head.headers);
            service.handle(admission, &metadata, &message).await
        }
        Err(status) => Err(status),
    };
    unary::answer(result)
}
