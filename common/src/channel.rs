//! Connections to other tandem processes: one tonic [`Channel`] per peer.
//!
//! A channel is one HTTP/2 connection, multiplexed, made on first use and
//! made again after it breaks (tonic's own reconnecting channel). On top of
//! tonic's defaults tandem wants three things of every channel:
//!
//! - **A dark peer costs one connect timeout, shared.** Calls queued while a
//!   connection attempt hangs all learn its outcome when it fails, instead
//!   of each starting an attempt of its own in turn (tonic's channel alone
//!   would make the tenth queued call wait ten timeouts). See
//!   [`SharedFailureConnector`].
//! - **Keepalive.** HTTP/2 pings find a silently dead peer (a frozen
//!   process, a dropped route) on an idle or a busy connection.
//! - **A call the server never took up is sent again, once**
//!   ([`resend_if_refused`]): a server going away (graceful restart) answers
//!   the streams it will not serve with GOAWAY or REFUSED_STREAM, which
//!   means the call was not processed and is safe to repeat; and a call
//!   that failed to connect may have been handed an earlier attempt's
//!   error (tonic keeps it for the next call), so it connects once more.
//!
//! A status made by the client from a transport error (connection refused,
//! reset, GOAWAY) keeps that error as its `source`; a status the peer sent
//! has none. The router tells the two apart that way to decide whom to
//! blame (see `tandem_router::retry`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// How a channel connects and watches its connection.
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a ping unanswered for as long
    /// again closes the connection.
    pub keepalive: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(250),
            keepalive: Duration::from_secs(10),
        }
    }
}

/// An address that is not an `http://host:port` URI.
#[derive(Debug, thiserror::Error)]
#[error("invalid peer address {0:?}: expected http://host:port")]
pub struct InvalidAddress(pub String);

/// A lazily connecting channel to `addr` (`http://host:port`).
pub fn channel(addr: &str, settings: ChannelSettings) -> Result<Channel, InvalidAddress> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|_| InvalidAddress(addr.to_string()))?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(settings.keepalive)
        .keep_alive_timeout(settings.keepalive)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector_lazy(SharedFailureConnector::new(settings.connect_timeout)))
}

/// A TCP connector whose timed-out attempt is shared: after an attempt
/// timed out (a dark peer), new attempts fail at once with its error for
/// as long again as it took, which covers the calls queued behind it
/// (they reach the connector within microseconds of its failure). A quick
/// failure (connection refused) is not shared: it costs nothing to repeat,
/// and a peer that comes back is reached at once. See the module
/// documentation.
#[derive(Clone)]
pub struct SharedFailureConnector {
    http: HttpConnector,
    last_failure: Arc<Mutex<Option<LastFailure>>>,
}

/// Until when the last failed attempt's error is shared, and the error.
type LastFailure = (Instant, Arc<std::io::Error>);

impl SharedFailureConnector {
    /// A connector whose attempts time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        Self {
            http,
            last_failure: Arc::default(),
        }
    }

    fn recent_failure(&self) -> Option<Arc<std::io::Error>> {
        let last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, error)| error.clone())
    }
}

/// The error of a connection attempt, or of the attempt whose failure it
/// shares.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect: {0}")]
pub struct ConnectFailed(Arc<std::io::Error>);

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>, ConnectFailed>>
            + Send,
    >,
>;

impl tower::Service<Uri> for SharedFailureConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = ConnectFailed;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http
            .poll_ready(cx)
            .map_err(|e| ConnectFailed(Arc::new(std::io::Error::other(e))))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(error) = self.recent_failure() {
            return Box::pin(async move { Err(ConnectFailed(error)) });
        }
        let connecting = self.http.call(uri);
        let last_failure = self.last_failure.clone();
        let started = Instant::now();
        Box::pin(async move {
            connecting.await.map_err(|e| {
                let timed_out = timed_out(&e);
                let error = Arc::new(std::io::Error::other(e));
                if timed_out {
                    let until = Instant::now() + started.elapsed();
                    let mut last = last_failure.lock().unwrap_or_else(|p| p.into_inner());
                    *last = Some((until, error.clone()));
                }
                ConnectFailed(error)
            })
        })
    }
}

/// Whether a connection attempt failed by timing out.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Runs `call`, and once more if the server never took the first call up
/// (see [`never_taken_up`]). `call` must make a fresh request each time.
pub async fn resend_if_refused<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    match call().await {
        Err(status) if never_taken_up(&status) => call().await,
        result => result,
    }
}

/// Whether a failed call never reached the server's handler: no
/// connection could be made (tonic's channel hands a failed connection
/// attempt's error to the next call, which may come after the peer is back:
/// sent again, it connects afresh), its stream was refused
/// (REFUSED_STREAM), it fell past the last stream id of the server's
/// GOAWAY, or it was never sent because the connection closed first. Such
/// a call is safe to send again.
pub fn never_taken_up(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<ConnectFailed>() {
            return true;
        }
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        source = error.source();
    }
    false
}
