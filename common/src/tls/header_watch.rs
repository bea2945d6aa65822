//! Whether a connection is in the middle of sending request headers, and
//! since when: so that a peer trickling a header block a byte at a time
//! (slowloris) can be cut off, while a quiet connection between calls is
//! left alone.
//!
//! [`HeaderWatch`] reads the bytes a server receives, as they come:
//!
//! - **HTTP/2** (the connection starts with the client preface): frame by
//!   frame. A header block is open from the first byte of a HEADERS frame
//!   until the end of the frame that carries END_HEADERS (the HEADERS frame
//!   itself, or its last CONTINUATION). A frame header received in part
//!   counts as open too: a peer must not stall after eight of its nine
//!   bytes.
//! - **HTTP/1.1** (gRPC-Web from browsers): the first request's head, from
//!   its first byte to the blank line that ends it. Later requests on the
//!   same connection are not followed (that would need their bodies'
//!   framing); hyper reads them.
//!
//! Time is passed in, so the watch is a plain state machine.

use tokio::time::Instant;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame types and flags this watch reads.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct HeaderWatch {
    state: State,
    /// HTTP/2: a HEADERS frame came and its END_HEADERS has not.
    block_open: bool,
    /// When the open header block (or frame header) began.
    open_since: Option<Instant>,
}

#[derive(Debug, Default)]
enum State {
    /// Reading the first bytes: the preface, or an HTTP/1 request.
    #[default]
    Start,
    /// Matched this much of the preface so far.
    Preface(usize),
    /// HTTP/2: this much of a 9-byte frame header read.
    FrameHeader([u8; 9], usize),
    /// HTTP/2: skipping a payload; whether the block ends with it.
    Payload { left: usize, ends_block: bool },
    /// HTTP/1: in the first request's head; how much of "\r\n\r\n" was
    /// just seen.
    Http1Head(usize),
    /// Nothing more to watch.
    Done,
}

impl HeaderWatch {
    /// Since when a header block has been open, if one is.
    pub fn open_since(&self) -> Option<Instant> {
        self.open_since
    }

    /// Reads `bytes`, received at `now`.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            let used = self.step(bytes, now);
            bytes = &bytes[used..];
        }
    }

    /// Reads what it can of `bytes` in the current state; how much it used
    /// (at least one byte, or all of them once done).
    fn step(&mut self, bytes: &[u8], now: Instant) -> usize {
        match &mut self.state {
            State::Done => bytes.len(),
            State::Start => {
                self.open_since = Some(now);
                self.state = if bytes[0] == PREFACE[0] {
                    State::Preface(0)
                } else {
                    State::Http1Head(0)
                };
                0
            }
            State::Preface(matched) => {
                if bytes[0] != PREFACE[*matched] {
                    // "P..." but not the preface: an HTTP/1 request (POST).
                    self.state = State::Http1Head(0);
                    return 1;
                }
                *matched += 1;
                if *matched == PREFACE.len() {
                    self.open_since = None;
                    self.state = State::FrameHeader([0; 9], 0);
                }
                1
            }
            State::FrameHeader(header, read) => {
                if *read == 0 {
                    self.open_since.get_or_insert(now);
                }
                let take = (9 - *read).min(bytes.len());
                header[*read..*read + take].copy_from_slice(&bytes[..take]);
                *read += take;
                if *read == 9 {
                    let header = *header;
                    self.frame_read(&header);
                }
                take
            }
            State::Payload { left, ends_block } => {
                let take = (*left).min(bytes.len());
                *left -= take;
                if *left == 0 {
                    let ends_block = *ends_block;
                    self.payload_read(ends_block);
                }
                take
            }
            State::Http1Head(seen) => {
                let end = b"\r\n\r\n";
                for (i, byte) in bytes.iter().enumerate() {
                    *seen = match (*byte, *seen) {
                        (b, n) if b == end[n] => n + 1,
                        (b'\r', _) => 1,
                        _ => 0,
                    };
                    if *seen == end.len() {
                        self.open_since = None;
                        self.state = State::Done;
                        return i + 1;
                    }
                }
                bytes.len()
            }
        }
    }

    /// A whole frame header: what its frame means for the header block.
    fn frame_read(&mut self, header: &[u8; 9]) {
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let in_block = matches!(kind, HEADERS | CONTINUATION);
        let ends_block = in_block && flags & END_HEADERS != 0;
        if in_block {
            self.block_open = true;
        } else if !self.block_open {
            // Another frame, whole in its header: nothing is open. (Inside
            // a header block only CONTINUATION may come; hyper ends a
            // connection that breaks the rule.)
            self.open_since = None;
        }
        self.state = State::Payload {
            left: length,
            ends_block,
        };
        if length == 0 {
            self.payload_read(ends_block);
        }
    }

    /// A frame's payload is all here.
    fn payload_read(&mut self, ends_block: bool) {
        if ends_block {
            self.block_open = false;
            self.open_since = None;
        }
        self.state = State::FrameHeader([0; 9], 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_header_block_is_open_until_end_headers() {
        let mut w = HeaderWatch::default();
        let t0 = Instant::now();
        w.feed(PREFACE, t0);
        assert_eq!(w.open_since(), None);
        w.feed(&frame(0x4, 0, &[0; 6]), t0); // SETTINGS
        assert_eq!(w.open_since(), None);
        let later = t0 + Duration::from_secs(1);
        let headers = frame(HEADERS, 0, b"abc");
        w.feed(&headers[..5], later);
        assert_eq!(w.open_since(), Some(later), "a frame header in part");
        w.feed(&headers[5..], later + Duration::from_secs(1));
        assert_eq!(w.open_since(), Some(later), "no END_HEADERS yet");
        let cont = frame(CONTINUATION, END_HEADERS, b"defg");
        w.feed(&cont[..11], later + Duration::from_secs(2));
        assert_eq!(w.open_since(), Some(later), "its payload is not all here");
        w.feed(&cont[11..], later + Duration::from_secs(3));
        assert_eq!(w.open_since(), None);
        // One HEADERS frame with END_HEADERS, then data: closed at its end.
        w.feed(&frame(HEADERS, END_HEADERS, b"xy"), later);
        w.feed(&frame(0x0, 0, b"body"), later);
        assert_eq!(w.open_since(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_head_is_open_until_its_blank_line() {
        let mut w = HeaderWatch::default();
        let t0 = Instant::now();
        w.feed(b"POST /tandem.v1.Search/Search HTTP/1.1\r\nHost: x\r\n", t0);
        assert_eq!(w.open_since(), Some(t0));
        w.feed(b"content-type: application/grpc-web\r\n\r", t0);
        assert_eq!(w.open_since(), Some(t0));
        w.feed(b"\nbody", t0);
        assert_eq!(w.open_since(), None);
        w.feed(b"GET / HTTP/1.1\r\n", t0);
        assert_eq!(w.open_since(), None, "later requests are hyper's");
    }
}
