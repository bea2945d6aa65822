//! Serving a process's gRPC services the same way in every tandem binary.
//!
//! [`serve`] runs tonic's server with what every tandem server must have:
//! `grpc.health.v1` (also alone on a plaintext health-only port when asked,
//! for kubelet probes), server reflection in both versions (so `grpcurl`
//! and GUI clients work), the [`GrpcMetricsLayer`], the
//! [`GrpcDeadlineLayer`] and TCP_NODELAY. It binds the gRPC and metrics
//! listeners, prints one JSON readiness line on stdout for supervisors (the
//! `tandem dev` cluster and the end-to-end tests start processes on port 0
//! and read their addresses from it), and on shutdown reports NOT_SERVING
//! first, waits a grace period so that routers' health probes can steer
//! traffic away, then stops accepting and drains the calls in flight.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::grpc_deadline::GrpcDeadlineLayer;
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::telemetry;
use crate::tls::{accept, Tls};

/// Where and how a process serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address (port 0 picks a free port).
    pub metrics_listen: SocketAddr,
    /// A plaintext listener serving `grpc.health.v1` alone (for kubelet
    /// probes, which cannot present credentials); none: health is served
    /// on `listen` only.
    pub health_listen: Option<SocketAddr>,
    /// Services served on a listener of their own instead of `listen`
    /// (the router's admin API), and its address.
    pub admin: Option<(SocketAddr, RoutesBuilder)>,
    /// The fully qualified names of the services on `listen` (and, second,
    /// on the admin listener), which reflection lists (with health): a
    /// client sees what it can call there, not every service of tandem.
    pub services: (&'static [&'static str], &'static [&'static str]),
    /// Serve gRPC-Web (and HTTP/1.1) on `listen` too, with CORS for the
    /// origins this policy allows (none: gRPC over HTTP/2 only).
    pub web: Option<crate::web::OriginPolicy>,
    /// Time between reporting NOT_SERVING and closing the listener.
    pub drain_grace: Duration,
    /// Upper bound on waiting for in-flight calls after the listener closed.
    pub drain_timeout: Duration,
    /// TLS for the gRPC and admin listeners (none: plaintext).
    pub tls: Option<Tls>,
    /// Process kind and id, echoed in the readiness line.
    pub kind: &'static str,
    /// Node id, echoed in the readiness line.
    pub id: String,
}

/// Most calls one HTTP/2 connection may have open at once (advertised as
/// SETTINGS_MAX_CONCURRENT_STREAMS; tonic sets no limit): one client
/// cannot hold unbounded work on a process, and a router's single
/// connection to a node still carries plenty.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Largest header block a call may send (metadata is small; a client
/// sending megabytes of headers is refused before anything else).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// A server with the limits every listener has: streams per connection,
/// header size, and hyper's guard against a peer that provokes stream
/// errors on purpose (which tonic lifts by default).
fn limited_server() -> Server {
    Server::builder()
        .http2_max_local_error_reset_streams(Some(1024))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
}

/// The readiness line printed on stdout once both listeners are bound.
#[derive(Serialize)]
struct Ready<'a> {
    ready: bool,
    kind: &'a str,
    id: &'a str,
    grpc: SocketAddr,
    metrics: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<SocketAddr>,
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

/// Serves `routes` plus health (the pair from
/// [`tonic_health::server::health_reporter`]) and reflection until
/// `shutdown` resolves, then drains.
pub async fn serve<H: Health>(
    opts: ServeOptions,
    mut routes: RoutesBuilder,
    (health, health_service): (HealthReporter, HealthServer<H>),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    add_reflection(&mut routes, opts.services.0)?;
    routes.add_service(health_service.clone());
    let metrics_addr = telemetry::serve_metrics(opts.metrics_listen).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot bind gRPC listener on {}", opts.listen))?;
    let grpc_addr = listener.local_addr()?;
    let health_addr = match opts.health_listen {
        Some(addr) => {
            let mut only_health = RoutesBuilder::default();
            only_health.add_service(health_service);
            // Plaintext: the kubelet's gRPC probe cannot speak TLS.
            Some(serve_beside(addr, only_health, (None, false), "health").await?)
        }
        None => None,
    };
    let admin_addr = match &opts.admin {
        Some((addr, routes)) => {
            let mut routes = routes.clone();
            add_reflection(&mut routes, opts.services.1)?;
            // HTTP/1.1 too: browsers load the router's console from here.
            let admin = (opts.tls.clone(), true);
            Some(serve_beside(*addr, routes, admin, "admin").await?)
        }
        None => None,
    };

    health.set_service_status("", ServingStatus::Serving).await;
    let addrs = Listening {
        grpc: grpc_addr,
        metrics: metrics_addr,
        health: health_addr,
        admin: admin_addr,
    };
    announce_ready(&opts, &addrs)?;
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, kind = opts.kind, id = %opts.id, "serving");

    // Shutdown reports NOT_SERVING first, then keeps accepting for the grace
    // period, so that clients still connecting are answered while routers'
    // health probes see NOT_SERVING and steer traffic away.
    let (stopped_accepting, stop_signal) = tokio::sync::oneshot::channel::<()>();
    let grace = opts.drain_grace;
    let stop_accepting = async move {
        shutdown.await;
        tracing::info!("shutting down: reporting NOT_SERVING, then draining");
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tokio::time::sleep(grace).await;
        let _ = stopped_accepting.send(());
    };
    let web = opts.web.clone();
    let router = limited_server()
        .accept_http1(web.is_some())
        .layer(tower::util::option_layer(web.clone().map(crate::web::cors)))
        .layer(tower::util::option_layer(
            web.map(|_| tonic_web::GrpcWebLayer::new()),
        ))
        .layer(GrpcMetricsLayer)
        .layer(GrpcDeadlineLayer)
        .add_routes(routes.routes());
    let mut server: Serving =
        match &opts.tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                accept::tls(listener, tls.acceptor()),
                stop_accepting,
            )),
            None => Box::pin(
                router.serve_with_incoming_shutdown(accept::plain(listener), stop_accepting),
            ),
        };
    tokio::select! {
        result = &mut server => return result.context("gRPC server failed"),
        _ = stop_signal => {}
    }
    // The listener is closed and every connection told to go away (HTTP/2
    // GOAWAY). Done when every call in flight has been answered: waiting
    // for idle client connections to close as well could take as long as
    // the clients like.
    let calls_done = async {
        while crate::grpc_metrics::in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A call stops counting once its answer's headers are ready; give
        // the connections a moment to send the last bodies.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::select! {
        _ = &mut server => {}
        _ = calls_done => {}
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!(in_flight = crate::grpc_metrics::in_flight(), "drain timeout reached; exiting with calls in flight");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// A server running until it stops or fails.
type Serving = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Where a process listens, as its readiness line says.
struct Listening {
    grpc: SocketAddr,
    metrics: SocketAddr,
    health: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// Serves `routes` on a listener of their own at `addr` (`what` names it in
/// errors), with TLS if given and HTTP/1.1 when `http1`, in the
/// background, for as long as the process lives: the
/// health-only port (which reports what the main listener's health service
/// reports, NOT_SERVING while draining included) and the admin API.
/// Returns the bound address.
async fn serve_beside(
    addr: SocketAddr,
    routes: RoutesBuilder,
    (tls, http1): (Option<Tls>, bool),
    what: &'static str,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} listener on {addr}"))?;
    let bound = listener.local_addr()?;
    let router = limited_server()
        .accept_http1(http1)
        .layer(GrpcMetricsLayer)
        .layer(GrpcDeadlineLayer)
        .add_routes(routes.routes());
    let server: Serving = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming(accept::tls(listener, tls.acceptor()))),
        None => Box::pin(router.serve_with_incoming(accept::plain(listener))),
    };
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, listener = what, "a listener failed");
        }
    });
    Ok(bound)
}

/// Adds server reflection, `grpc.reflection.v1` and the older `v1alpha`
/// that grpcurl 1.8 and many GUI clients still speak, listing `services`
/// and the health service (their descriptors: tandem's and health's).
fn add_reflection(routes: &mut RoutesBuilder, services: &[&'static str]) -> anyhow::Result<()> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in services {
            b = b.with_service_name(*name);
        }
        b
    };
    routes.add_service(
        builder()
            .build_v1()
            .context("cannot build the reflection service")?,
    );
    routes.add_service(
        builder()
            .build_v1alpha()
            .context("cannot build the reflection service")?,
    );
    Ok(())
}

fn announce_ready(opts: &ServeOptions, at: &Listening) -> anyhow::Result<()> {
    let line = serde_json::to_string(&Ready {
        ready: true,
        kind: opts.kind,
        id: &opts.id,
        grpc: at.grpc,
        metrics: at.metrics,
        health: at.health,
        admin: at.admin,
        pid: std::process::id(),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
