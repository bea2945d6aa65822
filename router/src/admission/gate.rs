//! [`Gate`]: the tower service that puts [`Admission`](super::Admission)
//! in front of a public gRPC service, so that a refused call is answered
//! from its headers alone and its body is never read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::Checks;
use crate::state::RouterState;

/// A public service behind the router's admission checks.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    state: Arc<RouterState>,
    checks: Checks,
}

impl<S> Gate<S> {
    /// `inner` behind `checks`, with the router's state.
    pub fn new(inner: S, (state, checks): (Arc<RouterState>, Checks)) -> Self {
        Self {
            inner,
            state,
            checks,
        }
    }
}

/// The future of a gated call.
pub type Guarded =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Guarded;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Only calls are gated (a browser's CORS preflight is not one).
        if request.method() != http::Method::POST {
            return Box::pin(self.inner.call(request));
        }
        let admitted = self.state.admission.admit(
            &self.state,
            (request.headers(), request.extensions()),
            self.checks,
        );
        match admitted {
            // A shed caller is a known tenant's: its (small) body is read
            // and dropped first, so that the answer does not reset the
            // stream under the client's feet. (HTTP/2 servers close a
            // connection after 1024 streams they reset themselves, a
            // guard against peers that provoke resets; a busy tenant's
            // sheds must not close its connection.) A stranger's body is
            // never read.
            Err(status) if tandem_proto::shed::who(&status).is_some() => Box::pin(async move {
                drain(request.into_body()).await;
                Ok(status.into_http())
            }),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
            Ok(admitted) => {
                request.extensions_mut().insert(admitted.key);
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let answer = answer.await?;
                    admitted.finish(answer.headers());
                    Ok(answer)
                })
            }
        }
    }
}

/// Most bytes of a shed call's body read before answering (a search is a
/// few hundred bytes; past this the stream is reset after all).
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads and drops `body` up to [`DRAIN_LIMIT`] bytes.
async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let mut read = 0;
    while read < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}
