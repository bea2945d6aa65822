//! What a browser does, over plain HTTP/1.x on a socket: a CORS preflight
//! and a gRPC-Web call, with the gRPC-Web framing by hand (one data frame
//! out; data and trailer frames back), so the test depends on no client
//! library's idea of the protocol.

use std::io::{Read, Write};
use std::net::TcpStream;

use prost::Message;

/// An HTTP answer: status code, headers (lower-case names), body.
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body` as HTTP/1.0 (so the answer is not chunked) to `addr`.
fn exchange(addr: &str, head: &str, body: &[u8]) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let request = format!("{head}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A CORS preflight for a gRPC-Web `path` from `origin`.
pub fn preflight(addr: &str, path: &str, origin: &str) -> HttpAnswer {
    let head = format!(
        "OPTIONS {path} HTTP/1.0\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type,x-grpc-web"
    );
    exchange(addr, &head, &[])
}

/// A gRPC-Web unary call of `path` with `message`, from `origin`, with
/// `key` as bearer: the HTTP answer, the answer message (if any) and the
/// grpc-status from the trailer frame (or the headers).
pub fn call<Req: Message, Resp: Message + Default>(
    addr: &str,
    path: &str,
    origin: &str,
    key: &str,
    message: &Req,
) -> (HttpAnswer, Option<Resp>, Option<String>) {
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         Authorization: Bearer {key}"
    );
    let answer = exchange(addr, &head, &body);
    let (mut response, mut status) = (None, answer.header("grpc-status").map(String::from));
    let mut rest = answer.body.as_slice();
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = &rest[5..5 + len.min(rest.len() - 5)];
        if flag & 0x80 == 0 {
            response = Resp::decode(frame).ok();
        } else {
            let trailers = String::from_utf8_lossy(frame);
            status = trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .map(|s| s.trim().to_string());
        }
        rest = &rest[(5 + len).min(rest.len())..];
    }
    (answer, response, status)
}

/// Browsers: a CORS preflight from an allowed origin is answered, and a
/// gRPC-Web search from it returns hits with the CORS headers; another
/// origin gets no CORS grant and its call is refused.
pub fn assert_grpc_web(topology: &tandem_client::Topology) {
    let router = &topology.regions[0].router;
    let path = "/tandem.v1.Search/Search";
    let allowed = "http://localhost:8080";
    let answer = preflight(router, path, allowed);
    assert!(answer.status < 300, "preflight status {}", answer.status);
    assert_eq!(answer.header("access-control-allow-origin"), Some(allowed));
    let evil = preflight(router, path, "https://evil.example");
    assert_eq!(evil.header("access-control-allow-origin"), None);

    let info = topology.tenant("tldr-en").expect("tenant");
    let request = tandem_proto::v1::SearchRequest {
        tenant: "tldr-en".into(),
        query: info.sample_queries[0].clone(),
        ..Default::default()
    };
    let (answer, response, status) =
        call::<_, tandem_proto::v1::SearchResponse>(router, path, allowed, &info.api_key, &request);
    assert_eq!(answer.status, 200);
    assert_eq!(status.as_deref(), Some("0"));
    assert_eq!(answer.header("access-control-allow-origin"), Some(allowed));
    assert!(answer
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("grpc-status")));
    assert!(response.is_some_and(|r| !r.hits.is_empty()));
    let (_, _, status) = call::<_, tandem_proto::v1::SearchResponse>(
        router,
        path,
        "https://evil.example",
        &info.api_key,
        &request,
    );
    assert_eq!(
        status.as_deref(),
        Some("7"),
        "PERMISSION_DENIED for another origin"
    );
}
