//! The behaviours tandem adds to tonic's channel and server
//! (`tandem_common::channel`, `tandem_common::grpc_deadline`), against real
//! servers on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tandem_common::channel::{channel, resend_if_refused, ChannelSettings};
use tandem_common::grpc_deadline::GrpcDeadlineLayer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One health check over `channel`, sent again if the server never took it
/// up, as tandem's router sends every call.
async fn check(channel: &Channel) -> Result<(), tonic::Status> {
    resend_if_refused(|| {
        let mut client = HealthClient::new(channel.clone());
        async move { client.check(HealthCheckRequest::default()).await }
    })
    .await
    .map(|_| ())
}

fn settings(connect_timeout: Duration, keepalive: Duration) -> ChannelSettings {
    ChannelSettings {
        connect_timeout,
        keepalive,
        tls: None,
    }
}

/// A gRPC health server on hyper whose connections say GOAWAY (gracefully,
/// as a server shutting down does) whenever `go_away` is notified, and the
/// first `refused` of which say it before taking up any stream.
struct GoingAwayServer {
    addr: SocketAddr,
    go_away: Arc<Notify>,
    connections: Arc<AtomicUsize>,
}

impl GoingAwayServer {
    async fn start(refused: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let go_away = Arc::new(Notify::new());
        let connections = Arc::new(AtomicUsize::new(0));
        let (_, health) = tonic_health::server::health_reporter();
        let routes = tonic::service::Routes::new(health);
        let (notify, count) = (go_away.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < refused {
                    tokio::spawn(refuse_every_stream(tcp));
                    continue;
                }
                let service = TowerToHyperService::new(routes.clone());
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.timer(TokioTimer::new());
                    let connection = builder.serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = notify.notified() => connection.as_mut().graceful_shutdown(),
                    }
                    let _ = connection.await;
                });
            }
        });
        Self {
            addr,
            go_away,
            connections,
        }
    }

    fn channel(&self) -> Channel {
        channel(&format!("http://{}", self.addr), ChannelSettings::default()).unwrap()
    }
}

/// Says GOAWAY (last stream 0) before taking up any stream, as a server
/// shutting down abruptly does, then closes.
async fn refuse_every_stream(tcp: tokio::net::TcpStream) {
    let Ok(mut connection) = h2::server::handshake(tcp).await else {
        return;
    };
    connection.abrupt_shutdown(h2::Reason::NO_ERROR);
    while let Some(Ok(_)) = connection.accept().await {}
    // Closing at once would break the client's stream with a broken pipe
    // before it reads the GOAWAY; a server is not obliged to hurry.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A loopback address nothing listens on (a port bound, then freed).
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_dead_server_is_unavailable_at_once_with_the_cause_as_source() {
    let addr = dead_address().await;
    let channel = channel(&format!("http://{addr}"), ChannelSettings::default()).unwrap();
    let status = check(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Made by the client, not sent by a server: callers tell them apart.
    assert!(std::error::Error::source(&status).is_some());
}

#[tokio::test]
async fn a_server_that_comes_back_is_reached_at_once() {
    let addr = dead_address().await;
    let channel = channel(&format!("http://{addr}"), ChannelSettings::default()).unwrap();
    for _ in 0..3 {
        assert_eq!(check(&channel).await.unwrap_err().code(), Code::Unavailable);
    }
    // A call made without `resend_if_refused` leaves the channel holding
    // its failed connection attempt's error for the next call.
    let mut bare = HealthClient::new(channel.clone());
    assert!(bare.check(HealthCheckRequest::default()).await.is_err());
    let listener = TcpListener::bind(addr).await.unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    // The next call is handed that stale error, connects once more, and
    // is answered: a refused connect takes microseconds, and so does the
    // time its failure is shared.
    check(&channel).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn callers_queued_behind_a_failed_connect_share_its_outcome() {
    // A listener whose accept queue is full: the kernel drops further
    // connection attempts, so a connect hangs until its timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(tcp) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        queued.push(tcp);
        assert!(queued.len() < 16, "the accept queue never filled");
    }
    let settings = settings(Duration::from_secs(1), Duration::from_secs(10));
    let channel = channel(&format!("http://{addr}"), settings).unwrap();
    let started = tokio::time::Instant::now();
    let calls = (0..5).map(|_| check(&channel));
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
    // One timeout for all: not one timeout per caller in the queue.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn a_server_going_away_fails_no_call() {
    let server = GoingAwayServer::start(0).await;
    let channel = server.channel();
    check(&channel).await.unwrap();
    for round in 0..3 {
        server.go_away.notify_waiters();
        for i in 0..5 {
            let answer = check(&channel).await;
            assert!(answer.is_ok(), "round {round}, call {i}: {answer:?}");
        }
    }
    assert!(server.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_call_the_server_never_took_up_is_sent_again() {
    let server = GoingAwayServer::start(1).await;
    check(&server.channel()).await.unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn keepalive_closes_a_silent_connection() {
    // Accepts and then says nothing, not even its HTTP/2 settings.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            held.push(tcp);
        }
    });
    let settings = settings(Duration::from_secs(1), Duration::from_secs(2));
    let channel = channel(&format!("http://{addr}"), settings).unwrap();
    let started = tokio::time::Instant::now();
    let status = check(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // One interval to the ping, one more waiting for its answer.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    silent.abort();
}

/// A gRPC service (`test.Hang`) whose every call hangs.
#[derive(Clone)]
struct Hang;

impl tonic::server::NamedService for Hang {
    const NAME: &'static str = "test.Hang";
}

impl tower::Service<http::Request<tonic::body::Body>> for Hang {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(std::future::pending())
    }
}

/// tonic's client enforces a call's `grpc-timeout` itself too, and so
/// races the server; a bare HTTP/2 client shows what the server answers.
#[tokio::test]
async fn an_expired_deadline_is_deadline_exceeded_not_cancelled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(GrpcDeadlineLayer)
            .add_service(Hang)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}/test.Hang/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m")
        .body(())
        .unwrap();
    let (answer, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"\0\0\0\0\0"), true)
        .unwrap();
    let answer = answer.await.unwrap();
    let status = answer.headers().get("grpc-status").cloned();
    let status = match status {
        Some(status) => status,
        None => {
            let mut body = answer.into_body();
            while body.data().await.is_some() {}
            let trailers = body.trailers().await.unwrap().unwrap_or_default();
            trailers.get("grpc-status").cloned().expect("a grpc-status")
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
}
