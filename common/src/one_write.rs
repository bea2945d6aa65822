//! Answers that leave in one write, trailers included.
//!
//! A unary gRPC answer is a HEADERS frame, one DATA frame and the trailers.
//! `h2` writes a DATA frame at or over its "chain threshold" straight from
//! the caller's buffer, in a write of its own, and encodes whatever follows
//! it only once that write is done (`FramedWrite`, h2 0.4). So a search
//! answer of a few KiB left in two writes ~14 µs apart, and the caller,
//! which needs the trailers to finish the call, waited for the second
//! (measured with `benches/trace-legs.sh`: `node_resp_split`,
//! `mid_resp_split`). On a router that cost is paid twice per query: once
//! on the index-node's answer, once on its own.
//!
//! Frames under the threshold are copied into h2's write buffer next to
//! the frames that follow. [`OneWriteBody`] hands h2 an answer of up to
//! [`MAX_CUT`] bytes as such pieces (slices of the same `Bytes`, no copy
//! here), so the answer and its trailers leave in one write.
//!
//! The threshold is 256 bytes on a connection with vectored writes and
//! 1 KiB without, and h2's work per frame (flow control, its queues,
//! encoding, then decoding at the peer) is the same for a small frame as
//! for a large one: cut at 256 bytes, a 3 KiB answer was 12 frames and cost
//! the router ~55K more instructions per search (callgrind) and ~15 µs more
//! per answer than at 1 KiB (per-thread system call traces of the router).
//! So servers wrap
//! their connections in [`NoVectoredWrites`] and cut at 1 KiB. The price is
//! paid by answers over [`MAX_CUT`], which pass as they came: h2 writes each
//! of their 16 KiB frames in two `write`s instead of one `writev` (the first
//! KiB with the frame's head, then the rest), one more system call per
//! 16 KiB.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A connection that tells h2 it has no vectored writes, so that h2
    /// copies DATA frames under 1 KiB into its write buffer (see the module
    /// documentation). Everything else passes through.
    #[derive(Debug)]
    pub struct NoVectoredWrites<T> {
        #[pin]
        inner: T,
    }
}

impl<T> NoVectoredWrites<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        NoVectoredWrites { inner }
    }
}

impl<T: AsyncRead> AsyncRead for NoVectoredWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for NoVectoredWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Largest DATA frame that h2 copies into its write buffer on a
/// connection without vectored writes ([`NoVectoredWrites`]; it writes
/// frames of 1 KiB or more on their own).
pub const PIECE: usize = 1023;

/// Largest data frame cut into pieces: a search answer (about 3 KiB for 10
/// hits in the benchmark) with room to spare, at most 9 pieces; with the
/// headers and trailers it stays well inside h2's 16 KiB write buffer,
/// which is what lets it leave in one write.
pub const MAX_CUT: usize = 8 * 1024;

pin_project! {
    /// A response body whose data frames of up to [`MAX_CUT`] bytes are
    /// passed on in [`PIECE`]-byte pieces; see the module documentation.
    /// Only for connections wrapped in [`NoVectoredWrites`]: on any other,
    /// h2 writes each piece on its own, which is worse than not cutting.
    #[derive(Debug)]
    pub struct OneWriteBody<B> {
        #[pin]
        inner: B,
        // What is left of the data frame being cut.
        rest: Bytes,
    }
}

impl<B> OneWriteBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        OneWriteBody {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl<B> Body for OneWriteBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if this.rest.is_empty() {
            match ready!(this.inner.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() && data.len() <= MAX_CUT => *this.rest = data,
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                end_or_error => return Poll::Ready(end_or_error),
            }
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(
        frames: Vec<Frame<Bytes>>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok)))
    }

    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers
    }

    async fn frames_of(
        body: impl Body<Data = Bytes, Error = std::convert::Infallible>,
    ) -> Vec<Frame<Bytes>> {
        let mut body = std::pin::pin!(body);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn a_small_answer_is_cut_into_pieces_under_h2s_threshold() {
        let message: Bytes = (0..3000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let frames = frames_of(OneWriteBody::new(body_of(vec![
            Frame::data(message.clone()),
            Frame::trailers(trailers()),
        ])))
        .await;
        let (data, rest): (Vec<_>, Vec<_>) = frames.into_iter().partition(Frame::is_data);
        let data: Vec<Bytes> = data.into_iter().map(|f| f.into_data().unwrap()).collect();
        assert_eq!(data.len(), 3000usize.div_ceil(PIECE));
        assert!(data
            .iter()
            .all(|piece| !piece.is_empty() && piece.len() <= PIECE));
        assert_eq!(
            data.concat(),
            message.to_vec(),
            "pieces are the message, in order"
        );
        assert_eq!(rest.len(), 1);
        assert_eq!(
            rest[0].trailers_ref(),
            Some(&trailers()),
            "trailers follow the pieces"
        );
    }

    #[tokio::test]
    async fn a_large_answer_and_empty_frames_pass_as_they_came() {
        let large = Bytes::from(vec![7u8; MAX_CUT + 1]);
        let frames = frames_of(OneWriteBody::new(body_of(vec![
            Frame::data(Bytes::new()),
            Frame::data(large.clone()),
            Frame::trailers(trailers()),
        ])))
        .await;
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].data_ref(), Some(&Bytes::new()));
        assert_eq!(frames[1].data_ref(), Some(&large));
        assert!(frames[2].is_trailers());
    }

    #[test]
    fn end_of_stream_and_size_count_the_piece_left() {
        let mut body = OneWriteBody::new(http_body_util::Full::new(Bytes::from(vec![1u8; 1100])));
        assert_eq!(body.size_hint().exact(), Some(1100));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(
            matches!(first, Poll::Ready(Some(Ok(ref f))) if f.data_ref().unwrap().len() == PIECE)
        );
        assert!(!body.is_end_stream(), "77 bytes are still to come");
        assert_eq!(body.size_hint().exact(), Some(77));
        let _ = Pin::new(&mut body).poll_frame(&mut cx);
        let _ = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(body.is_end_stream());
    }
}
