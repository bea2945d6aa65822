//! Unary gRPC at the message level: one frame each way, without tonic's
//! streaming codec.
//!
//! A unary gRPC call is one length-prefixed protobuf frame in each
//! direction over an HTTP/2 stream; the status travels in the trailers, or,
//! for an error, in the headers of a "trailers-only" answer
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).
//!
//! The router's hot path (its public `Search` API and every call it makes
//! to nodes) speaks it with these few functions instead of tonic's
//! generated code. Tonic's codec is built for streams: per-call encoder and
//! decoder state, bodies polled frame by frame through several layers. On a
//! hop whose whole budget is a fraction of a millisecond that shows: in the
//! router benchmark the "lean hop" (these functions) spends 5-10 % less CPU
//! per call than the "decoding hop" (tonic), and moving the router onto them
//! cut its CPU per call from 464 to 391 µs at concurrency 1. Everything that is not on the per-query path (admin,
//! health, the nodes' own servers) stays on tonic, and the messages are the
//! same prost types either way.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderName, CONTENT_TYPE, TE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Collected, LengthLimitError, Limited};
use prost::Message;
use tonic::{Code, Status};

use crate::h2_channel::{ChannelError, H2Channel, RecvBody};

/// The largest message accepted either way (tonic's default limit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Length prefix: compression flag (1 byte) + big-endian length (4 bytes).
const PREFIX: usize = 5;
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// Encodes `message` as one gRPC frame (uncompressed).
pub fn encode_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message
        .encode(&mut buf)
        .expect("the buffer was sized to the message");
    buf.freeze()
}

/// Why a body is not one well-formed frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the prefix announces.
    #[error("truncated gRPC frame: {got} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the prefix announced.
        expected: usize,
    },
    /// The compressed flag is set; tandem never negotiates compression.
    #[error("compressed gRPC messages are not supported")]
    Compressed,
    /// More than one message in a unary call.
    #[error("a unary call carries exactly one message")]
    Trailing,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// Not a valid protobuf encoding of the expected message.
    #[error("failed to decode the message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Decodes the one frame of a unary body.
pub fn decode_frame<M: Message + Default>(mut body: Bytes) -> Result<M, FrameError> {
    if body.len() < PREFIX {
        return Err(FrameError::Truncated {
            got: body.len(),
            expected: PREFIX,
        });
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(FrameError::Compressed);
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    if body.len() < len {
        return Err(FrameError::Truncated {
            got: body.len() + PREFIX,
            expected: len + PREFIX,
        });
    }
    if body.len() > len {
        return Err(FrameError::Trailing);
    }
    Ok(M::decode(body)?)
}

/// `grpc-timeout` for `timeout`: the finest unit that fits the protocol's
/// eight digits (as tonic writes it).
pub fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let micros = timeout.as_micros();
    let mut value = Vec::with_capacity(9);
    if micros <= 99_999_999 {
        push_digits(&mut value, micros as u64, 10);
        value.push(b'u');
    } else {
        push_digits(&mut value, timeout.as_millis().min(99_999_999) as u64, 10);
        value.push(b'm');
    }
    let mut value = HeaderValue::try_from(value).expect("digits and a unit letter");
    once_only(&mut value);
    value
}

/// Appends `n` in `radix` (2..=16, lowercase digits) to `out`. Every call
/// writes a number or two into headers (`grpc-timeout`, request ids);
/// `format!` costs several times as much and pulls the formatting
/// machinery's code into the hot path.
pub(crate) fn push_digits(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    debug_assert!((2..=16).contains(&radix), "radix {radix}");
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut reversed = [0u8; 64];
    let mut len = 0;
    loop {
        reversed[len] = DIGITS[(n % radix) as usize];
        len += 1;
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend(reversed[..len].iter().rev());
}

/// Reads a `grpc-timeout` value (e.g. `250m`, `2S`, `100000u`): at most
/// eight digits, then a unit (H, M, S, m, u, n). `None` when malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() || value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Marks a header value that differs on (almost) every call, like a
/// `grpc-timeout` or a request id, as not worth remembering: HTTP/2's
/// header compression (HPACK) then sends it as a literal instead of adding
/// it to both ends' tables, where it would only push out useful entries
/// (h2 sends values marked sensitive as "never indexed").
pub fn once_only(value: &mut HeaderValue) {
    value.set_sensitive(true);
}

/// Sends one unary call: `frame` (from [`encode_frame`]) to `path` (like
/// `/tandem.v1.IndexNode/SearchShard`) over `channel`, telling the server
/// it has `timeout`, with `metadata` as extra headers.
///
/// A failure to reach the server, or a broken answer stream, is
/// UNAVAILABLE (a stream the server reset gets the code its reason maps to,
/// as in tonic), with the underlying error as the status's `source`, which
/// is how callers tell such statuses from the server's own; the server's
/// own status is returned as it sent it. The caller bounds the wait (the
/// `grpc-timeout` only informs the server); dropping the call resets its
/// stream, which cancels it at the server.
pub async fn call<Resp: Message + Default>(
    channel: &H2Channel,
    path: &'static str,
    frame: Bytes,
    timeout: Duration,
    metadata: &[(HeaderName, HeaderValue)],
) -> Result<Resp, Status> {
    let origin = channel.origin();
    let send = || async {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = channel.uri(PathAndQuery::from_static(path));
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_GRPC);
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(GRPC_TIMEOUT, grpc_timeout(timeout));
        for (name, value) in metadata {
            headers.insert(name.clone(), value.clone());
        }
        let mut sender = channel.ready().await.map_err(Unsent::Failed)?;
        // Nothing is on the wire if this fails.
        let (response, mut request_body) = sender
            .send_request(request, false)
            .map_err(Unsent::Refused)?;
        // Queued with the headers: the connection writes both at once. If
        // the stream is already gone, the answer says why.
        let _ = request_body.send_data(frame.clone(), true);
        // The connection's task is awake now: the last call's stream can go.
        channel.release_finished();
        response.await.map_err(Unsent::from)
    };
    // A call the server never took up (it was going away, or refused the
    // stream) is sent once more, over a fresh connection if need be: as
    // gRPC's own clients do, so that a server's graceful restart fails
    // no call.
    let response = match send().await {
        Err(Unsent::Refused(_)) => send().await,
        other => other,
    };
    let (head, body) = match response {
        Ok(response) => response.into_parts(),
        Err(Unsent::Refused(e)) => return Err(client_status(origin, "", e.into())),
        Err(Unsent::Failed(e)) => return Err(client_status(origin, "", e)),
    };
    // An error in the headers is a trailers-only answer: nothing follows.
    let in_headers = match status_in(&head.headers) {
        Some(Err(status)) => return Err(status),
        other => other,
    };
    let mut body = RecvBody::new(body);
    let answer = read_whole(&mut body).await.map_err(|e| match e {
        // Dropping the stream resets it and gives its window back.
        Unread::TooLarge => Status::resource_exhausted(format!(
            "{origin}: answer over the limit of {MAX_MESSAGE_BYTES} bytes"
        )),
        Unread::Broken(e) => match e.downcast::<h2::Error>() {
            Ok(e) => client_status(origin, "answer broken off: ", (*e).into()),
            Err(e) => Status::unavailable(format!("{origin}: answer broken off: {e}")),
        },
    })?;
    // Not dropped here: see `H2Channel::keep_finished`.
    channel.keep_finished(body);
    match answer.trailers().and_then(status_in).or(in_headers) {
        Some(Ok(())) => decode_frame(answer.to_bytes())
            .map_err(|e| Status::internal(format!("{origin}: bad answer: {e}"))),
        Some(Err(status)) => Err(status),
        None => Err(status_without_trailers(head.status)),
    }
}

/// Why a body could not be read whole.
enum Unread {
    /// Over [`MAX_MESSAGE_BYTES`] (and its prefix).
    TooLarge,
    /// The stream broke off.
    Broken(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a unary call's body (one message, then any trailers), refusing it
/// past the message size limit.
async fn read_whole<B>(body: B) -> Result<Collected<Bytes>, Unread>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, MAX_MESSAGE_BYTES + PREFIX)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                Unread::TooLarge
            } else {
                Unread::Broken(e)
            }
        })
}

/// Why a call got no answer headers.
enum Unsent {
    /// The server did not take the call up: safe to send again.
    Refused(h2::Error),
    /// Anything else: the server may have seen the call.
    Failed(ChannelError),
}

impl From<h2::Error> for Unsent {
    fn from(e: h2::Error) -> Self {
        // A remote GOAWAY fails only the streams past its last stream id,
        // which the server never saw (those it took get other errors).
        let refused =
            e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
        if refused {
            Unsent::Refused(e)
        } else {
            Unsent::Failed(e.into())
        }
    }
}

/// The status of a call that failed below gRPC: UNAVAILABLE, or for a
/// stream the server reset, the code its reason maps to (tonic's table),
/// with `error` as its source.
fn client_status(origin: &http::Uri, context: &str, error: ChannelError) -> Status {
    let code = match &error {
        ChannelError::Http2(e) if e.is_reset() && e.is_remote() => match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(h2::Reason::CANCEL) => Code::Cancelled,
            Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            _ => Code::Internal,
        },
        _ => Code::Unavailable,
    };
    let mut status = Status::new(code, format!("{origin}: {context}{error}"));
    status.set_source(std::sync::Arc::new(error));
    status
}

/// The status in `headers` (trailers, or the headers of a trailers-only
/// answer), if they carry one.
fn status_in(headers: &HeaderMap) -> Option<Result<(), Status>> {
    if headers.get(&Status::GRPC_STATUS)? == "0" {
        return Some(Ok(()));
    }
    // tonic panics on details that are not base64; tandem sends none, and a
    // broken peer must not take the router down.
    if headers.contains_key(&Status::GRPC_STATUS_DETAILS) {
        let mut headers = headers.clone();
        headers.remove(&Status::GRPC_STATUS_DETAILS);
        return Status::from_header_map(&headers).map(Err);
    }
    Status::from_header_map(headers).map(Err)
}

/// The status of an answer with no `grpc-status`, from its HTTP status (the
/// gRPC spec's HTTP-to-gRPC mapping, as tonic applies it).
fn status_without_trailers(http: StatusCode) -> Status {
    let code = match http {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("answer without grpc-status (HTTP {http})"))
}

/// Reads the one message of a unary call a server received. Errors are the
/// status to answer with: INVALID_ARGUMENT for a malformed message,
/// UNIMPLEMENTED for compression, RESOURCE_EXHAUSTED over the size limit.
pub async fn read_request<M, B>(request: Request<B>) -> Result<(http::request::Parts, M), Status>
where
    M: Message + Default,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    if let Some(encoding) = parts.headers.get(GRPC_ENCODING) {
        if encoding != "identity" {
            return Err(Status::unimplemented(format!(
                "message encoding {encoding:?} is not supported (send uncompressed)"
            )));
        }
    }
    let body = match read_whole(body).await {
        Ok(body) => body.to_bytes(),
        Err(Unread::TooLarge) => {
            return Err(Status::resource_exhausted(format!(
                "message is over the limit of {MAX_MESSAGE_BYTES} bytes"
            )))
        }
        Err(Unread::Broken(e)) => {
            return Err(Status::cancelled(format!("request broken off: {e}")))
        }
    };
    match decode_frame(body) {
        Ok(message) => Ok((parts, message)),
        Err(e @ FrameError::Compressed) => Err(Status::unimplemented(e.to_string())),
        Err(e @ FrameError::TooLarge(_)) => Err(Status::resource_exhausted(e.to_string())),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    }
}

/// The answer a server sends for a unary call: `Ok` is one frame then
/// `grpc-status: 0`; an error is trailers-only.
pub fn answer<M: Message>(result: Result<M, Status>) -> Response<AnswerBody> {
    match result {
        Ok(message) => {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
            let mut response = Response::new(AnswerBody {
                frame: Some(encode_frame(&message)),
                trailers: Some(trailers),
            });
            response
                .headers_mut()
                .insert(CONTENT_TYPE, APPLICATION_GRPC);
            response
        }
        Err(status) => status.into_http(),
    }
}

/// Body of [`answer`]: at most one data frame, then the trailers.
#[derive(Debug, Default)]
pub struct AnswerBody {
    frame: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(frame) = self.frame.take() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.frame.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.frame.as_ref().map_or(0, |f| f.len() as u64);
        http_body::SizeHint::with_exact(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::v1::{Hit, SearchRequest};

    #[test]
    fn grpc_timeouts_parse_and_garbage_does_not() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "+5m", "1é", "é1", "12345678901S", "5x"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let message = SearchRequest {
            tenant: "t".into(),
            query: "tar".into(),
            top_k: 3,
            ..Default::default()
        };
        let frame = encode_frame(&message);
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            frame.len() - 5
        );
        assert_eq!(decode_frame::<SearchRequest>(frame).unwrap(), message);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let frame = encode_frame(&Hit {
            id: "doc".into(),
            ..Default::default()
        });
        let short = frame.slice(..frame.len() - 1);
        assert!(matches!(
            decode_frame::<Hit>(short),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            decode_frame::<Hit>(Bytes::from_static(b"\0\0")),
            Err(FrameError::Truncated { .. })
        ));
        let mut long = frame.to_vec();
        long.push(0);
        assert!(matches!(
            decode_frame::<Hit>(long.into()),
            Err(FrameError::Trailing)
        ));
        let mut compressed = frame.to_vec();
        compressed[0] = 1;
        assert!(matches!(
            decode_frame::<Hit>(compressed.into()),
            Err(FrameError::Compressed)
        ));
        let huge = Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_frame::<Hit>(huge),
            Err(FrameError::TooLarge(_))
        ));
        let garbage = Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(
            decode_frame::<Hit>(garbage),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn digits_are_written_in_any_radix() {
        let digits = |n: u64, radix: u64| {
            let mut out = Vec::new();
            push_digits(&mut out, n, radix);
            String::from_utf8(out).expect("ascii")
        };
        for n in [0, 7, 10, 255, 4096, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(digits(n, 10), n.to_string());
            assert_eq!(digits(n, 16), format!("{n:x}"));
            assert_eq!(digits(n, 2), format!("{n:b}"));
        }
    }

    #[test]
    fn timeouts_use_the_finest_unit_that_fits() {
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(grpc_timeout(Duration::ZERO), "0u");
        assert_eq!(grpc_timeout(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(grpc_timeout(Duration::from_secs(1000)), "1000000m");
    }

    #[test]
    fn statuses_are_read_from_headers_without_trusting_them() {
        let mut headers = HeaderMap::new();
        assert!(status_in(&headers).is_none());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(matches!(status_in(&headers), Some(Ok(()))));
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert("grpc-message", HeaderValue::from_static("node%20gone"));
        headers.insert(
            "grpc-status-details-bin",
            HeaderValue::from_static("not base64!"),
        );
        let status = status_in(&headers).unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "node gone");
    }

    #[test]
    fn errors_are_trailers_only_answers() {
        let response = answer::<Hit>(Err(Status::not_found("no such tenant")));
        assert_eq!(response.headers()["grpc-status"], "5");
        assert!(http_body::Body::is_end_stream(response.body()));
        let response = answer(Ok(Hit::default()));
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert!(!http_body::Body::is_end_stream(response.body()));
    }
}
