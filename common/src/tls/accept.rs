//! The connections a listener hands to tonic's server: plaintext, or TLS
//! after a handshake.
//!
//! Handshakes run concurrently, each in a task of its own bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client cannot hold up the
//! connections behind it; a failed handshake is counted and logged at
//! debug level (scanners and clients without the CA make them), never
//! handed to the server. The accept loop ends, closing the listener, when
//! the server stops taking connections.

use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// The connections `listener` accepts, with TCP_NODELAY, as they come.
pub fn plain(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        Some((Ok(accept_one(&listener).await), listener))
    })
}

/// The connections `listener` accepts, each after a successful TLS
/// handshake with `acceptor`.
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (ready, taken) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = ready.closed() => return,
                stream = accept_one(&listener) => stream,
            };
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(conn)) => {
                        let _ = ready.send(conn).await;
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
