//! The connections a listener hands to tonic's server: plaintext, or TLS
//! after a handshake.
//!
//! Handshakes run concurrently, each in a task of its own bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client cannot hold up the
//! connections behind it; a failed handshake is counted and logged at
//! debug level (scanners and clients without the CA make them), never
//! handed to the server. The accept loop ends, closing the listener, when
//! the server stops taking connections.
//!
//! Every listener holds at most [`MAX_CONNECTIONS`] connections: past that
//! a new one is closed at once (and counted), so that no client can take
//! every file handle of the process. A connection that sends nothing
//! within [`FIRST_BYTES_TIMEOUT`] of being accepted (or of its handshake)
//! is closed: a silent peer does not keep its place. Nor does one that
//! sends a request's headers too slowly: a header block must arrive whole
//! within [`HEADERS_TIMEOUT`] of its first byte (see [`HeaderWatch`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::header_watch::HeaderWatch;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections one listener holds at most.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Longest a connection may stay silent after it is accepted.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a request's header block may take to arrive, from its first
/// byte to its last.
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// The connections `listener` accepts, with TCP_NODELAY, as they come.
pub fn plain(listener: TcpListener) -> impl Stream<Item = std::io::Result<Held<TcpStream>>> {
    plain_with(listener, MAX_CONNECTIONS)
}

/// [`plain`] with at most `max` connections.
fn plain_with(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Held<TcpStream>>> {
    let places = Arc::new(Semaphore::new(max));
    futures::stream::unfold((listener, places), |(listener, places)| async move {
        let (stream, place) = accept_held(&listener, &places).await;
        Some((Ok(Held::new(stream, place)), (listener, places)))
    })
}

/// The connections `listener` accepts, each after a successful TLS
/// handshake with `acceptor`.
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = std::io::Result<Held<TlsStream<TcpStream>>>> {
    let (ready, taken) = mpsc::channel(READY_QUEUE);
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, place) = tokio::select! {
                _ = ready.closed() => return,
                held = accept_held(&listener, &places) => held,
            };
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(conn)) => {
                        let _ = ready.send(Held::new(conn, place)).await;
                    }
                    Ok(Err(error)) => handshake_failed("error", &error),
                    Err(_) => handshake_failed("timeout", &"no handshake in time"),
                }
            });
        }
    });
    futures::stream::unfold(taken, |mut taken| async move {
        taken.recv().await.map(|conn| (Ok(conn), taken))
    })
}

fn handshake_failed(reason: &'static str, error: &dyn std::fmt::Display) {
    tracing::debug!(%error, "TLS handshake failed");
    metrics::counter!("tandem_tls_handshake_failures_total", "reason" => reason).increment(1);
}

/// The next connection of `listener` that finds a place; those that find
/// none are closed at once.
async fn accept_held(
    listener: &TcpListener,
    places: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    loop {
        let stream = accept_one(listener).await;
        match places.clone().try_acquire_owned() {
            Ok(place) => return (stream, place),
            Err(_) => {
                metrics::counter!("tandem_connections_refused_total").increment(1);
                drop(stream);
            }
        }
    }
}

/// A connection holding its place on the listener, closed if it sends
/// nothing within [`FIRST_BYTES_TIMEOUT`], or a header block slower than
/// [`HEADERS_TIMEOUT`].
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    _place: OwnedSemaphorePermit,
    watch: HeaderWatch,
    /// The deadline in force (none between calls), and what it is for.
    deadline: Option<(tokio::time::Instant, Late)>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// What a connection is late with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Its first bytes.
    FirstBytes,
    /// The rest of a header block.
    Headers,
}

impl<S> Held<S> {
    fn new(inner: S, place: OwnedSemaphorePermit) -> Self {
        let at = tokio::time::Instant::now() + FIRST_BYTES_TIMEOUT;
        Self {
            inner,
            _place: place,
            watch: HeaderWatch::default(),
            deadline: Some((at, Late::FirstBytes)),
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Bytes arrived: the deadline is now the open header block's, if any.
    fn heard(&mut self, bytes: &[u8]) {
        self.watch.feed(bytes, tokio::time::Instant::now());
        let deadline = self
            .watch
            .open_since()
            .map(|since| (since + HEADERS_TIMEOUT, Late::Headers));
        if deadline != self.deadline {
            if let Some((at, _)) = deadline {
                self.timer.as_mut().reset(at);
            }
            self.deadline = deadline;
        }
    }

    /// An error once the deadline in force has passed.
    fn poll_late(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some((_, late)) = self.deadline else {
            return Poll::Pending;
        };
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let (counter, message) = match late {
            Late::FirstBytes => (
                "tandem_connections_silent_total",
                "the connection sent nothing in time",
            ),
            Late::Headers => (
                "tandem_connections_slow_headers_total",
                "the connection sent its headers too slowly",
            ),
        };
        metrics::counter!(counter).increment(1);
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            message,
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.heard(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_late(cx),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Held<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The next connection of `listener`, with TCP_NODELAY. An accept error
/// (out of file descriptors, typically) is logged and retried after a
/// pause, keeping the connections already open, instead of spinning.
async fn accept_one(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_and_a_talking_one_is_not() {
        let places = Arc::new(Semaphore::new(1));
        let (_client, server) = tokio::io::duplex(64);
        let mut held = Held::new(server, places.clone().try_acquire_owned().unwrap());
        let mut buf = [0u8; 32];
        let err = held.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(held);
        assert_eq!(places.available_permits(), 1, "its place is free again");

        let (mut client, server) = tokio::io::duplex(64);
        let mut held = Held::new(server, places.clone().try_acquire_owned().unwrap());
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut got = 0;
        while got < 24 {
            got += held.read(&mut buf).await.unwrap();
        }
        // Quiet later is fine: only the first bytes are awaited.
        let later = tokio::time::timeout(Duration::from_secs(60), held.read(&mut buf)).await;
        assert!(later.is_err(), "still open after a minute of quiet");
    }

    /// The HTTP/2 preface, then a HEADERS frame announcing 16 bytes of
    /// header block without END_HEADERS.
    fn preface_and_open_headers() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0, 0, 16, 0x1, 0, 0, 0, 0, 1]);
        bytes
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_block_trickled_too_slowly_is_cut_off() {
        let places = Arc::new(Semaphore::new(1));
        let (mut client, server) = tokio::io::duplex(1024);
        let mut held = Held::new(server, places.clone().try_acquire_owned().unwrap());
        client.write_all(&preface_and_open_headers()).await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = held.read(&mut buf).await.unwrap();
        // A byte of the block every 4 s: each arrives, the block never
        // completes in time.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(4)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(held.read(&mut buf).await.unwrap(), 1);
        }
        let err = held.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("headers"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_header_block_leaves_the_connection_open() {
        let places = Arc::new(Semaphore::new(1));
        let (mut client, server) = tokio::io::duplex(1024);
        let mut held = Held::new(server, places.clone().try_acquire_owned().unwrap());
        client.write_all(&preface_and_open_headers()).await.unwrap();
        client.write_all(&[7; 16]).await.unwrap();
        // CONTINUATION, END_HEADERS, empty.
        client
            .write_all(&[0, 0, 0, 0x9, 0x4, 0, 0, 0, 1])
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let mut got = 0;
        while got < 24 + 9 + 16 + 9 {
            got += held.read(&mut buf).await.unwrap();
        }
        let later = tokio::time::timeout(Duration::from_secs(60), held.read(&mut buf)).await;
        assert!(
            later.is_err(),
            "a quiet connection between calls stays open"
        );
    }

    #[tokio::test]
    async fn past_its_most_connections_a_listener_closes_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(plain_with(listener, 1));
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = accepted.next().await.unwrap().unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        // The listener takes the second connection and closes it at once.
        let pull = tokio::spawn(async move { accepted.next().await.map(|c| c.is_ok()) });
        let mut buf = [0u8; 1];
        assert_eq!(second.read(&mut buf).await.unwrap_or(0), 0, "closed");
        drop(held);
        pull.abort();
    }
}
