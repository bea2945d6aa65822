//! One HTTP/2 connection to one server, made on first use and remade after
//! it breaks: what unary calls on the router's hot path travel over.
//!
//! Built on the `h2` crate directly rather than on hyper's pooled client.
//! The pooled client hands every request to two more tasks (its connection
//! dispatcher, then a task per request waiting for the answer) and queues a
//! request's body only once its headers are on the wire, so the server reads
//! every call in two pieces and wakes twice. Here the calling task queues
//! headers and body together and the connection's task writes them in one
//! go; the answer wakes the caller directly. What hyper's client did for us
//! is kept: one multiplexed connection per server, TCP_NODELAY, a connect
//! timeout, keepalive pings (a silently dead peer closes the connection),
//! and a fresh connection after a failure.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Uri};
use http_body::Frame;
use tokio::net::TcpStream;

/// Per-stream receive window: hyper's client default, so that an answer of
/// a few megabytes is not held up by window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Per-connection receive window (hyper's client default).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// How a channel connects and watches its connection.
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    /// Longest time a connection (TCP and the HTTP/2 preface) may take.
    pub connect_timeout: Duration,
    /// How often a connection is pinged; a ping unanswered for as long
    /// again closes it, and the next call connects afresh.
    pub keepalive: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(10),
        }
    }
}

/// Why a channel could not be made, or could not carry a call.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The origin is not `http://host:port`.
    #[error("not an http://host:port origin: {0}")]
    InvalidOrigin(String),
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    /// The connection was not made within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// HTTP/2 failed: the handshake, or the connection under a call.
    #[error("{0}")]
    Http2(#[from] h2::Error),
    /// The connection attempt this call waited for failed (with this
    /// error); the call does not queue another one behind it.
    #[error("{0}")]
    AttemptFailed(Arc<str>),
}

/// See the module documentation. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct H2Channel {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Uri,
    /// `host:port`, as `TcpStream::connect` takes it.
    address: String,
    settings: ChannelSettings,
    /// The connection calls go over, once made.
    current: ArcSwapOption<Connection>,
    /// Held while connecting, so that callers arriving meanwhile wait for
    /// that one attempt instead of each making their own.
    connecting: tokio::sync::Mutex<()>,
    /// Connection attempts made so far.
    attempts: AtomicU64,
    /// Why the last attempt failed, for the callers that waited on it.
    last_failure: Mutex<Option<Arc<str>>>,
    /// The answer of the last finished call, dropped by the next call.
    finished: Mutex<Option<RecvBody>>,
}

struct Connection {
    sender: SendRequest<Bytes>,
    /// Set by the connection's task when the connection has ended.
    closed: Arc<AtomicBool>,
}

impl fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Channel")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl H2Channel {
    /// A channel to `origin` (`http://host:port`; port 80 if left out).
    /// Nothing is connected until the first call.
    pub fn new(origin: Uri, settings: ChannelSettings) -> Result<Self, ChannelError> {
        let invalid = || ChannelError::InvalidOrigin(origin.to_string());
        if origin.scheme() != Some(&Scheme::HTTP) {
            return Err(invalid());
        }
        let authority = origin.authority().ok_or_else(invalid)?;
        let address = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.host()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                origin,
                address,
                settings,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                last_failure: Mutex::new(None),
                finished: Mutex::new(None),
            }),
        })
    }

    /// Keeps the (fully read) answer of a finished call, and with it its
    /// stream, until the next call is queued ([`H2Channel::release_finished`]).
    ///
    /// Why: h2 wakes the connection's task when the last handle of a closed
    /// stream is dropped (to free its slot). Dropped as the caller finishes,
    /// that wake lands while the caller's own answer is being sent: a second
    /// runnable task, for which tokio wakes an idle worker (a futex, and on a
    /// small machine often a preemption) on the answer's way out. Dropped
    /// right after the next call is queued, it finds the connection's task
    /// already woken and costs nothing.
    pub fn keep_finished(&self, answer: RecvBody) {
        let previous = self
            .inner
            .finished
            .lock()
            .map(|mut slot| slot.replace(answer));
        drop(previous);
    }

    /// Drops the stream kept by [`H2Channel::keep_finished`], if any: call it
    /// just after queueing a call, while the connection's task is awake.
    pub fn release_finished(&self) {
        let previous = self.inner.finished.lock().map(|mut slot| slot.take());
        drop(previous);
    }

    /// The origin calls go to.
    pub fn origin(&self) -> &Uri {
        &self.inner.origin
    }

    /// The URI of `path` (like `/tandem.v1.Search/Search`) at the origin.
    pub fn uri(&self, path: PathAndQuery) -> Uri {
        let mut parts = self.inner.origin.clone().into_parts();
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).expect("an http origin with a path is a URI")
    }

    /// A sender on a live connection, ready to open a stream; connects
    /// first if there is no live connection. A connection that refuses new
    /// streams (its server said GOAWAY: it is shutting down) is given up for
    /// a fresh one, so that a server's graceful restart fails no call.
    pub async fn ready(&self) -> Result<SendRequest<Bytes>, ChannelError> {
        if let Some(connection) = self.live() {
            match connection.sender.clone().ready().await {
                Ok(sender) => return Ok(sender),
                Err(_) => connection.closed.store(true, Ordering::Release),
            }
        }
        Ok(self.reconnect().await?.ready().await?)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        self.inner
            .current
            .load_full()
            .filter(|c| !c.closed.load(Ordering::Acquire))
    }

    /// Connection attempts made so far (successful or not).
    pub fn connect_attempts(&self) -> u64 {
        self.inner.attempts.load(Ordering::Acquire)
    }

    async fn reconnect(&self) -> Result<SendRequest<Bytes>, ChannelError> {
        let seen = self.inner.attempts.load(Ordering::Acquire);
        let _gate = self.inner.connecting.lock().await;
        // Made by another caller while this one waited?
        if let Some(connection) = self.live() {
            return Ok(connection.sender.clone());
        }
        // Or tried and failed: callers queued behind an attempt share its
        // outcome. Each making its own would keep the last of them waiting
        // one connect timeout per caller ahead of it when a node is dark.
        if self.inner.attempts.load(Ordering::Acquire) != seen {
            let failure = self
                .last_failure()
                .unwrap_or_else(|| "connect failed".into());
            return Err(ChannelError::AttemptFailed(failure));
        }
        let timeout = self.inner.settings.connect_timeout;
        let result = tokio::time::timeout(timeout, self.connect())
            .await
            .unwrap_or(Err(ChannelError::ConnectTimeout(timeout)));
        let failure = result.as_ref().err().map(|e| Arc::from(e.to_string()));
        *self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
        self.inner.attempts.fetch_add(1, Ordering::AcqRel);
        let connection = result?;
        let sender = connection.sender.clone();
        self.inner.current.store(Some(Arc::new(connection)));
        Ok(sender)
    }

    fn last_failure(&self) -> Option<Arc<str>> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn connect(&self) -> Result<Connection, ChannelError> {
        let tcp = TcpStream::connect(self.inner.address.as_str()).await?;
        tcp.set_nodelay(true)?;
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let pings = connection.ping_pong();
        let keepalive = self.inner.settings.keepalive;
        let origin = self.inner.origin.clone();
        let flag = closed.clone();
        // The connection's own task: reads and writes frames until the
        // connection ends, and pings the peer meanwhile. It ends by itself
        // when every sender and stream is gone (the channel was dropped).
        tokio::spawn(async move {
            let ended = match pings {
                Some(pings) => tokio::select! {
                    result = &mut connection => result.err().map(|e| e.to_string()),
                    reason = keep_alive(pings, keepalive) => Some(reason.to_string()),
                },
                None => connection.await.err().map(|e| e.to_string()),
            };
            flag.store(true, Ordering::Release);
            tracing::debug!(%origin, error = ?ended, "HTTP/2 connection ended");
        });
        Ok(Connection { sender, closed })
    }
}

/// An answer's body as it arrives on an h2 stream, frame by frame, as an
/// [`http_body::Body`] (so it can be collected, limited or relayed). Each
/// DATA frame's bytes are given back to the flow-control windows as soon
/// as they are handed on; dropping the body resets an unfinished stream.
pub struct RecvBody {
    stream: RecvStream,
    data_done: bool,
}

impl RecvBody {
    /// The body of the answer whose stream is `stream`.
    pub fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers: Option<HeaderMap> = match ready!(self.stream.poll_trailers(cx)) {
            Ok(trailers) => trailers,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

/// Pings the peer every `interval` and returns, ending the connection, when
/// a ping goes unanswered for `interval` or cannot be sent.
async fn keep_alive(mut pings: PingPong, interval: Duration) -> &'static str {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(interval, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return "keepalive ping failed",
            Err(_) => return "keepalive ping unanswered",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_plain_http_with_a_host() {
        let settings = ChannelSettings::default();
        for bad in ["https://a:1", "/path", "a:1"] {
            let uri: Uri = bad.parse().unwrap();
            assert!(H2Channel::new(uri, settings).is_err(), "{bad}");
        }
        let channel = H2Channel::new("http://[::1]".parse().unwrap(), settings).unwrap();
        assert_eq!(channel.inner.address, "[::1]:80");
        let channel = H2Channel::new("http://127.0.0.1:7101".parse().unwrap(), settings).unwrap();
        assert_eq!(channel.inner.address, "127.0.0.1:7101");
        assert_eq!(
            channel
                .uri(PathAndQuery::from_static("/tandem.v1.Search/Search"))
                .to_string(),
            "http://127.0.0.1:7101/tandem.v1.Search/Search"
        );
    }
}
