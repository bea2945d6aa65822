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
//! - **TLS to `https://` peers** with the process's [`Tls`]: its CAs
//!   verify the peer, its certificate is presented (mutual TLS), and both
//!   follow the files on reload. The handshake is the connector's (tonic
//!   is handed the `http://` form of the address and a ready connection).
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
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::resolve::Resolver;
use crate::tls::Tls;

/// How a channel connects and watches its connection.
#[derive(Clone, Debug)]
pub struct ChannelSettings {
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a ping unanswered for as long
    /// again closes the connection.
    pub keepalive: Duration,
    /// The process's TLS, for `https://` peers (none: only `http://`
    /// peers can be reached).
    pub tls: Option<Tls>,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(250),
            keepalive: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A peer address a channel cannot be made for.
#[derive(Debug, thiserror::Error)]
pub enum InvalidAddress {
    /// Not an `http://host:port` or `https://host:port` URI.
    #[error("invalid peer address {0:?}: expected http://host:port or https://host:port")]
    NotAUri(String),
    /// An `https://` peer, but this process has no TLS configured.
    #[error("peer address {0:?} is https:// but this process has no TLS (--tls-cert, --tls-key, --tls-ca)")]
    NoTls(String),
}

/// A lazily connecting channel to `addr` (`http://host:port`, or
/// `https://host:port` with `settings.tls`).
pub fn channel(addr: &str, settings: ChannelSettings) -> Result<Channel, InvalidAddress> {
    let not_a_uri = || InvalidAddress::NotAUri(addr.to_string());
    let uri: Uri = addr.parse().map_err(|_| not_a_uri())?;
    let host = uri.host().ok_or_else(not_a_uri)?;
    let mut connector = SharedFailureConnector::new(settings.connect_timeout);
    let plain = match uri.scheme_str() {
        Some("http") => addr.to_string(),
        Some("https") => {
            let tls = settings
                .tls
                .as_ref()
                .ok_or_else(|| InvalidAddress::NoTls(addr.to_string()))?;
            // An IPv6 host comes bracketed in a URI.
            let name = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(name.to_string()).map_err(|_| not_a_uri())?;
            connector.tls = Some((tls.connector(), name));
            let authority = uri.authority().ok_or_else(not_a_uri)?;
            format!("http://{authority}")
        }
        _ => return Err(not_a_uri()),
    };
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|_| not_a_uri())?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(settings.keepalive)
        .keep_alive_timeout(settings.keepalive)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector_lazy(connector))
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
    /// Resolves names through the process's resolver
    /// ([`crate::resolve::Resolver::current`]).
    http: HttpConnector<Resolver>,
    /// How long the TLS handshake may take (as long as connecting).
    connect_timeout: Duration,
    /// The TLS connector and the name the peer's certificate must carry,
    /// for an `https://` peer.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    last_failure: Arc<Mutex<Option<LastFailure>>>,
}

/// Until when the last failed attempt's error is shared, and the error.
type LastFailure = (Instant, Arc<std::io::Error>);

impl SharedFailureConnector {
    /// A connector whose attempts time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new_with_resolver(Resolver::current());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        Self {
            http,
            connect_timeout,
            tls: None,
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

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<Box<dyn Io>>, ConnectFailed>> + Send>>;

/// A connection, plaintext or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl tower::Service<Uri> for SharedFailureConnector {
    type Response = TokioIo<Box<dyn Io>>;
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
        let (tls, handshake_timeout) = (self.tls.clone(), self.connect_timeout);
        Box::pin(async move {
            let tcp = connecting.await.map_err(|e| {
                let timed_out = timed_out(&e);
                let error = Arc::new(std::io::Error::other(e));
                if timed_out {
                    let until = Instant::now() + started.elapsed();
                    let mut last = last_failure.lock().unwrap_or_else(|p| p.into_inner());
                    *last = Some((until, error.clone()));
                }
                ConnectFailed(error)
            })?;
            let Some((connector, name)) = tls else {
                return Ok(TokioIo::new(Box::new(tcp.into_inner()) as Box<dyn Io>));
            };
            let handshake = connector.connect(name, tcp.into_inner());
            match tokio::time::timeout(handshake_timeout, handshake).await {
                Ok(Ok(conn)) => Ok(TokioIo::new(Box::new(conn) as Box<dyn Io>)),
                Ok(Err(error)) => Err(ConnectFailed(Arc::new(error))),
                Err(_) => Err(ConnectFailed(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )))),
            }
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
