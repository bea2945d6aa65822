//! `H2Channel` and `unary::call` against real HTTP/2 servers on loopback:
//! one connection reused, large answers, a dead server, a server going
//! away, a silent server caught by keepalive, cancellation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_common::h2_channel::{ChannelSettings, H2Channel};
use tandem_common::unary;
use tandem_proto::v1::{ShardSearchRequest, ShardSearchResponse};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::Code;

const PATH: &str = "/tandem.v1.IndexNode/SearchShard";

/// What happened to the test server's calls.
#[derive(Default)]
struct Events {
    /// A "hang" call arrived.
    hanging: Notify,
    /// A call was dropped (its stream reset) before it was answered.
    dropped: Notify,
}

/// What the test server does with a call's query.
async fn answer(query: String, events: Arc<Events>) -> ShardSearchResponse {
    struct OnDrop(Arc<Events>, bool);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if !self.1 {
                self.0.dropped.notify_one();
            }
        }
    }
    let mut guard = OnDrop(events.clone(), false);
    let node = match query.as_str() {
        "hang" => {
            events.hanging.notify_one();
            std::future::pending().await
        }
        "large" => "x".repeat(3 * 1024 * 1024),
        "huge" => "x".repeat(5 * 1024 * 1024),
        _ => format!("echo {query}"),
    };
    guard.1 = true;
    ShardSearchResponse {
        node,
        ..Default::default()
    }
}

/// A test server: answers every connection over HTTP/2 until `stop`;
/// counts connections; `go_away` makes every open connection send GOAWAY.
struct TestServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    events: Arc<Events>,
    go_away: Arc<Notify>,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_refusing(0).await
    }

    /// A server whose first `refused` connections say GOAWAY before
    /// taking up any stream, as a server shutting down abruptly does.
    async fn start_refusing(refused: usize) -> Self {
        Self::start_with(refused, None).await
    }

    /// [`TestServer::start_refusing`], taking up at most `max_streams`
    /// streams at a time per connection (h2's default: no limit).
    async fn start_with(refused: usize, max_streams: Option<u32>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let events = Arc::new(Events::default());
        let go_away = Arc::new(Notify::new());
        let (count, on_drop, goaway) = (connections.clone(), events.clone(), go_away.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                if count.fetch_add(1, Ordering::SeqCst) < refused {
                    tokio::spawn(async move {
                        let mut connection = h2::server::handshake(tcp).await.unwrap();
                        connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                        while connection.accept().await.is_some() {}
                    });
                    continue;
                }
                let on_drop = on_drop.clone();
                let goaway = goaway.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let on_drop = on_drop.clone();
                        async move {
                            let result =
                                match unary::read_request::<ShardSearchRequest, _>(request).await {
                                    Ok((_, req)) => Ok(answer(req.query, on_drop).await),
                                    Err(status) => Err(status),
                                };
                            Ok::<_, Infallible>(unary::answer(result))
                        }
                    });
                    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = goaway.notified() => connection.as_mut().graceful_shutdown(),
                    }
                    let _ = connection.await;
                });
            }
        });
        Self {
            addr,
            connections,
            events,
            go_away,
        }
    }

    fn channel(&self, settings: ChannelSettings) -> H2Channel {
        H2Channel::new(format!("http://{}", self.addr).parse().unwrap(), settings).unwrap()
    }
}

/// Fails the test instead of hanging it if `f` never finishes (a stalled
/// flow-control window, a stream never reset).
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("hung")
}

async fn search(channel: &H2Channel, query: &str) -> Result<ShardSearchResponse, tonic::Status> {
    let frame = unary::encode_frame(&ShardSearchRequest {
        query: query.to_string(),
        ..Default::default()
    });
    unary::call(channel, PATH, frame, Duration::from_secs(5), &[]).await
}

#[tokio::test]
async fn calls_share_one_connection() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    assert_eq!(search(&channel, "tar").await.unwrap().node, "echo tar");
    let calls = (0..20).map(|i| {
        let channel = channel.clone();
        async move { search(&channel, &format!("q{i}")).await }
    });
    for (i, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap().node, format!("echo q{i}"));
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

/// The channel keeps a finished call's stream until the next call is
/// queued (`H2Channel::keep_finished`); a kept stream is closed, so it must
/// not hold one of the server's stream slots: on a server that takes one
/// stream at a time, calls one after another and calls queued from several
/// tasks all go through.
#[tokio::test]
async fn kept_finished_streams_hold_no_stream_slot() {
    let server = TestServer::start_with(0, Some(1)).await;
    let channel = server.channel(ChannelSettings::default());
    for i in 0..10 {
        let answer = within(search(&channel, &format!("q{i}"))).await;
        assert_eq!(answer.unwrap().node, format!("echo q{i}"));
    }
    let calls = (0..5).map(|i| {
        let channel = channel.clone();
        async move { search(&channel, &format!("p{i}")).await }
    });
    for (i, answer) in within(futures::future::join_all(calls))
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap().node, format!("echo p{i}"));
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn answers_larger_than_the_windows_arrive_whole() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    // 3 MiB: over the 2 MiB stream window, so window updates must flow;
    // twice, so that the connection window is replenished too.
    for _ in 0..2 {
        let answer = within(search(&channel, "large")).await.unwrap();
        assert_eq!(answer.node.len(), 3 * 1024 * 1024);
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused_and_the_connection_lives_on() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    let status = within(search(&channel, "huge")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The abandoned answer's window was given back: more answers flow.
    for _ in 0..3 {
        let answer = within(search(&channel, "large")).await.unwrap();
        assert_eq!(answer.node.len(), 3 * 1024 * 1024);
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_come_back_as_sent() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    let garbage = bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]);
    let status =
        unary::call::<ShardSearchResponse>(&channel, PATH, garbage, Duration::from_secs(5), &[])
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // The connection is still good.
    assert_eq!(search(&channel, "tar").await.unwrap().node, "echo tar");
}

#[tokio::test]
async fn a_dead_server_is_unavailable_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let channel = H2Channel::new(
        format!("http://{addr}").parse().unwrap(),
        ChannelSettings::default(),
    )
    .unwrap();
    let status = search(&channel, "tar").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Made by the client, not sent by a server: callers tell them apart.
    assert!(std::error::Error::source(&status).is_some());
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
    let settings = ChannelSettings {
        connect_timeout: Duration::from_secs(1),
        keepalive: Duration::from_secs(10),
    };
    let channel = H2Channel::new(format!("http://{addr}").parse().unwrap(), settings).unwrap();
    let started = tokio::time::Instant::now();
    let calls = (0..5).map(|_| search(&channel, "tar"));
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
    // One attempt, one timeout: not one timeout per caller in the queue.
    assert_eq!(channel.connect_attempts(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn a_server_going_away_fails_no_call() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    assert!(search(&channel, "before").await.is_ok());
    for round in 0..3 {
        server.go_away.notify_waiters();
        for i in 0..5 {
            let answer = search(&channel, "after").await;
            assert!(answer.is_ok(), "round {round}, call {i}: {answer:?}");
        }
    }
    assert!(server.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_call_the_server_never_took_up_is_sent_again() {
    let server = TestServer::start_refusing(1).await;
    let channel = server.channel(ChannelSettings::default());
    assert_eq!(search(&channel, "tar").await.unwrap().node, "echo tar");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_at_the_server() {
    let server = TestServer::start().await;
    let channel = server.channel(ChannelSettings::default());
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { search(&channel, "hang").await }
    });
    within(server.events.hanging.notified()).await;
    call.abort();
    within(server.events.dropped.notified()).await;
    assert_eq!(search(&channel, "tar").await.unwrap().node, "echo tar");
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
    let settings = ChannelSettings {
        connect_timeout: Duration::from_secs(1),
        keepalive: Duration::from_secs(2),
    };
    let channel = H2Channel::new(format!("http://{addr}").parse().unwrap(), settings).unwrap();
    let started = tokio::time::Instant::now();
    let status = search(&channel, "tar").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // One interval to the ping, one more waiting for its answer.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    silent.abort();
}
