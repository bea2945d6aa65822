//! `OneWriteBody` against hyper's real HTTP/2 server on loopback, on a
//! connection wrapped in `NoVectoredWrites` as tandem's servers wrap theirs:
//! a unary answer of a few KiB leaves in one write with its trailers, where
//! h2 on its own takes three. The server's socket counts the writes it is
//! given.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_common::h2_channel::{ChannelSettings, H2Channel};
use tandem_common::one_write::{NoVectoredWrites, OneWriteBody};
use tandem_common::unary;
use tandem_proto::v1::{ShardSearchRequest, ShardSearchResponse};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A server socket that counts the writes made to it.
struct CountedWrites {
    tcp: NoVectoredWrites<TcpStream>,
    writes: Arc<AtomicUsize>,
}

impl CountedWrites {
    fn count<T>(&self, written: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }
}

impl AsyncRead for CountedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.count(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves one connection that answers every call with a `size`-byte
/// message, cut by `OneWriteBody` or not; returns the address and the
/// server's write count.
async fn server(size: usize, one_write: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let counter = writes.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let service = service_fn(move |request: http::Request<Incoming>| async move {
            let result = unary::read_request::<ShardSearchRequest, _>(request)
                .await
                .map(|_| ShardSearchResponse {
                    node: "x".repeat(size),
                    ..Default::default()
                });
            let answer = unary::answer(result).map(|body| {
                if one_write {
                    Either::Left(OneWriteBody::new(body))
                } else {
                    Either::Right(body)
                }
            });
            Ok::<_, Infallible>(answer)
        });
        let io = CountedWrites {
            tcp: NoVectoredWrites::new(tcp),
            writes: counter,
        };
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    });
    (addr, writes)
}

async fn writes_for_one_answer(size: usize, one_write: bool) -> usize {
    let (addr, writes) = server(size, one_write).await;
    let channel = H2Channel::new(
        format!("http://{addr}").parse().unwrap(),
        ChannelSettings::default(),
    )
    .unwrap();
    let call = || async {
        let frame = unary::encode_frame(&ShardSearchRequest::default());
        let answer: ShardSearchResponse = unary::call(
            &channel,
            "/tandem.v1.IndexNode/SearchShard",
            frame,
            Duration::from_secs(5),
            &[],
        )
        .await
        .expect("answered");
        assert_eq!(answer.node.len(), size);
    };
    // The first call also settles the connection (SETTINGS and their acks).
    call().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = writes.load(Ordering::SeqCst);
    call().await;
    writes.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn a_search_sized_answer_leaves_in_one_write() {
    assert_eq!(writes_for_one_answer(3000, true).await, 1);
}

#[tokio::test]
async fn without_the_cut_h2_writes_the_trailers_apart() {
    // The reason for `OneWriteBody`: if h2 ever stops splitting, this fails
    // and the cut can go. Without vectored writes the answer itself takes
    // two (its first KiB with the frame's head, then the rest), then the
    // trailers.
    assert_eq!(writes_for_one_answer(3000, false).await, 3);
}
