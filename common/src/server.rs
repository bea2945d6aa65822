//! Serving a process's gRPC services the same way in every tandem binary.
//!
//! [`serve`] adds what every server must have — `grpc.health.v1`, server
//! reflection (so `grpcurl` works), the [`GrpcMetricsLayer`], the
//! [`GrpcDeadlineLayer`], TCP_NODELAY, answers that leave in one write
//! ([`OneWriteBody`]) —
//! binds the gRPC and metrics listeners, prints one JSON readiness line on
//! stdout for supervisors (the `tandem dev` cluster and the end-to-end tests
//! start processes on port 0 and read their addresses from it), and on
//! shutdown reports NOT_SERVING first, waits a grace period so that routers'
//! health probes can steer traffic away, then stops accepting and drains the
//! calls in flight.
//!
//! The services (tonic's `Routes`) run on hyper's HTTP/2 server directly,
//! not inside `tonic::transport::Server`: that wraps every call in half a
//! dozen layers of its own (about 10K instructions per call in the router,
//! measured with callgrind), and the two it contributes that we need, the
//! server-side deadline and graceful shutdown, are a small layer here and
//! hyper-util's `GracefulShutdown`.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower::Service;

use crate::grpc_deadline::GrpcDeadlineLayer;
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::one_write::{NoVectoredWrites, OneWriteBody};
use crate::telemetry;

/// Where and how a process serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address (port 0 picks a free port).
    pub metrics_listen: SocketAddr,
    /// Time between reporting NOT_SERVING and closing the listener.
    pub drain_grace: Duration,
    /// Upper bound on waiting for in-flight calls after the listener closed.
    pub drain_timeout: Duration,
    /// Process kind and id, echoed in the readiness line.
    pub kind: &'static str,
    /// Node id, echoed in the readiness line.
    pub id: String,
}

/// The readiness line printed on stdout once both listeners are bound.
#[derive(Serialize)]
struct Ready<'a> {
    ready: bool,
    kind: &'a str,
    id: &'a str,
    grpc: SocketAddr,
    metrics: SocketAddr,
    pid: u32,
}

/// Resolves on SIGTERM or Ctrl-C.
///
/// The signal handlers are registered when this is *called*, not when the
/// future is first polled, so a process that calls it before announcing
/// readiness never dies of a SIGTERM sent right after the announcement.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves `routes` (plus health and reflection) until `shutdown` resolves,
/// then drains. `health` must be the reporter whose server is in `routes`
/// (see [`tonic_health::server::health_reporter`]).
pub async fn serve(
    opts: ServeOptions,
    routes: RoutesBuilder,
    health: HealthReporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let routes = with_reflection(routes)?;
    run(opts, routes, health, shutdown).await
}

/// Like [`serve`], with `front` answering every call to its service
/// directly and `routes` the rest. Routing a call through tonic's `Routes`
/// (axum underneath) costs a few thousand instructions, which a process
/// with one hot service (the router's public API) need not pay on it.
pub async fn serve_with_front<F>(
    opts: ServeOptions,
    front: F,
    routes: RoutesBuilder,
    health: HealthReporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    F: NamedService
        + Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    F::Future: Send + 'static,
{
    let routes = with_reflection(routes)?;
    let service = Front { front, routes };
    run(opts, service, health, shutdown).await
}

/// Adds server reflection (so `grpcurl` works) and builds the routes.
fn with_reflection(mut routes: RoutesBuilder) -> anyhow::Result<Routes> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    routes.add_service(reflection);
    Ok(routes.routes())
}

/// Calls to `F`'s paths (`/<service name>/<method>`) go to `front`, the
/// rest to `routes`.
#[derive(Clone)]
struct Front<F> {
    front: F,
    routes: Routes,
}

impl<F> Service<Request<Incoming>> for Front<F>
where
    F: NamedService + Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<F::Future, <Routes as Service<Request<Incoming>>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready (tonic's services and `Routes` say so).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let is_front = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(F::NAME))
            .is_some_and(|method| method.starts_with('/'));
        if is_front {
            Either::Left(self.front.call(request))
        } else {
            Either::Right(self.routes.call(request))
        }
    }
}

/// Serves `service` until `shutdown` resolves, then drains.
async fn run<S>(
    opts: ServeOptions,
    service: S,
    health: HealthReporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let metrics_addr = telemetry::serve_metrics(opts.metrics_listen).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot bind gRPC listener on {}", opts.listen))?;
    let grpc_addr = listener.local_addr()?;

    health.set_service_status("", ServingStatus::Serving).await;
    announce_ready(&opts, grpc_addr, metrics_addr)?;
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, kind = opts.kind, id = %opts.id, "serving");

    let service = TowerToHyperService::new(
        tower::ServiceBuilder::new()
            .map_response(|response: Response<Body>| response.map(OneWriteBody::new))
            .layer(GrpcMetricsLayer)
            .layer(GrpcDeadlineLayer)
            .service(service),
    );
    let http2 = http2_builder();
    let connections = GracefulShutdown::new();
    // Shutdown reports NOT_SERVING first, then keeps accepting for the grace
    // period, so that clients still connecting are answered while routers'
    // health probes see NOT_SERVING and steer traffic away.
    let stop_accepting = async {
        shutdown.await;
        tracing::info!("shutting down: reporting NOT_SERVING, then draining");
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tokio::time::sleep(opts.drain_grace).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop_accepting => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let connection = connections.watch(http2.serve_connection(
                    TokioIo::new(NoVectoredWrites::new(stream)),
                    service.clone(),
                ));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "gRPC connection ended with an error");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors, typically: keep serving the
                // connections we have and try again shortly.
                tracing::warn!(%error, "cannot accept a gRPC connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    // Every connection is told to go away (HTTP/2 GOAWAY) and closes once
    // its calls are answered. Done when every call in flight has been
    // answered: waiting for idle client connections to close as well could
    // take as long as the clients like (see hyperium/hyper#4170).
    let all_closed = connections.shutdown();
    tokio::pin!(all_closed);
    let calls_done = async {
        while crate::grpc_metrics::in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = &mut all_closed => {}
        _ = calls_done => {
            // A call stops counting once its answer's headers are ready;
            // give the connections a moment to send the last bodies and
            // close before the process exits.
            let _ = tokio::time::timeout(Duration::from_millis(100), &mut all_closed).await;
        }
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!(in_flight = crate::grpc_metrics::in_flight(), "drain timeout reached; exiting with calls in flight");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// HTTP/2 (prior knowledge, as gRPC clients speak it) with the settings
/// tonic's server uses by default (no limit on concurrent streams per
/// connection, hyper's windows, frame size and keepalive), except that
/// hyper's limit of 1,024 locally caused stream resets per connection is
/// kept where tonic lifts it: it guards against a peer that provokes
/// errors on purpose.
fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None);
    builder
}

fn announce_ready(
    opts: &ServeOptions,
    grpc: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<()> {
    let line = serde_json::to_string(&Ready {
        ready: true,
        kind: opts.kind,
        id: &opts.id,
        grpc,
        metrics,
        pid: std::process::id(),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
