//! A tower layer that ends a call when its caller's `grpc-timeout` has run
//! out, answering DEADLINE_EXCEEDED, as the gRPC spec asks of a server.
//!
//! Handlers still bound their own work (the router gives every downstream
//! call only what remains of the deadline), so this is the backstop: a call
//! stuck anywhere (a hung fault, a slow search) is dropped when its caller
//! stops waiting, and the caller learns why. A caller that gives up earlier
//! resets its stream, which drops the call too. Calls without the header
//! run until they finish or their caller goes away.
//!
//! tonic's server checks `grpc-timeout` too, outside every layer, and
//! answers CANCELLED when it runs out. It builds this layer's future (and
//! so its timer) before its own, with the same timeout, and polls it
//! first: when both are due this layer's answer goes out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use std::time::Duration;

/// Reads a `grpc-timeout` value (e.g. `250m`, `2S`, `100000u`): at most
/// eight digits, then a unit (H, M, S, m, u, n). `None` when malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() || value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Layer adding [`GrpcDeadline`] around a gRPC server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcDeadlineLayer;

impl<S> Layer<S> for GrpcDeadlineLayer {
    type Service = GrpcDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcDeadline { inner }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct GrpcDeadline<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcDeadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // A malformed value is ignored rather than refused: the handler
        // still bounds its work, and tonic's server did the same.
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        DeadlineFuture {
            inner: self.inner.call(request),
            expiry: timeout.map(tokio::time::sleep),
        }
    }
}

pin_project! {
    /// Response future of [`GrpcDeadline`]: the call's own answer, or
    /// DEADLINE_EXCEEDED once the caller's timeout has passed.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        expiry: Option<Sleep>,
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answer);
        }
        match this.expiry.as_pin_mut().map(|expiry| expiry.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(tonic::Status::deadline_exceeded(
                "the caller's grpc-timeout ran out before the call was answered",
            )
            .into_http())),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use tower::ServiceExt;

    use super::*;

    type Answer = http::Response<String>;

    /// A handler that answers after `delay`.
    fn slow_handler(
        delay: Duration,
    ) -> impl Service<http::Request<()>, Response = Answer, Error = Infallible> + Clone {
        tower::service_fn(move |_: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new("answered".to_string()))
        })
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(t) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", t.parse().unwrap());
        }
        request
    }

    fn grpc_status(answer: &Answer) -> Option<&str> {
        answer.headers().get("grpc-status")?.to_str().ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_its_timeout_gets_deadline_exceeded_at_the_timeout() {
        let service = GrpcDeadlineLayer.layer(slow_handler(Duration::from_secs(5)));
        let started = tokio::time::Instant::now();
        let answer = service.oneshot(request(Some("250m"))).await.unwrap();
        assert_eq!(grpc_status(&answer), Some("4"), "DEADLINE_EXCEEDED");
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_timeout_or_without_one_is_answered() {
        let service = GrpcDeadlineLayer.layer(slow_handler(Duration::from_millis(100)));
        let answer = service.clone().oneshot(request(Some("1S"))).await.unwrap();
        assert_eq!(answer.body(), "answered");
        let answer = service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(answer.body(), "answered");
        let answer = service.oneshot(request(Some("soon"))).await.unwrap();
        assert_eq!(answer.body(), "answered", "a malformed timeout is ignored");
    }
}
