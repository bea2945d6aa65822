//! `tandem-passthrough`: a bare gRPC hop for benchmarks.
//!
//! It accepts HTTP/2 (gRPC) calls and forwards each one, headers, body and
//! trailers, to one upstream address without decoding anything or deciding
//! anything. Its added latency is the physical floor of any router on the
//! same machine: the router benchmark reports the router's overhead as a
//! ratio to this hop's.
//!
//! Usage: `tandem-passthrough --listen 127.0.0.1:0 --upstream 127.0.0.1:7101`
//! (prints a readiness line like the tandem processes).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "tandem-passthrough",
    about = "A bare gRPC pass-through hop for benchmarks"
)]
struct Cli {
    /// Listen address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream gRPC address, host:port.
    #[arg(long)]
    upstream: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let listener = TcpListener::bind(cli.listen).await.context("bind")?;
    let addr = listener.local_addr()?;
    println!("{{\"ready\":true,\"kind\":\"passthrough\",\"grpc\":\"{addr}\",\"metrics\":\"{addr}\",\"pid\":{}}}", std::process::id());
    let upstream: &'static str = Box::leak(cli.upstream.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri: Uri = format!("http://{upstream}{path}").parse()?;
                    *req.uri_mut() = uri;
                    client.request(req).await.map_err(anyhow::Error::from)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
