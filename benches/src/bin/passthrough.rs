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
//!
//! With `--h2` it forwards the same way but sends each call on upstream
//! with the `h2` crate directly (the router's HTTP/2 client library)
//! instead of hyper's pooled client: the floor for a router on that client.
//!
//! With `--decode` it is instead the floor of any *message-level* router: a
//! tonic server for `IndexNode/SearchShard` that decodes each request,
//! re-sends it through a hyper HTTP/2 client (as the router does) and
//! re-encodes the answer, deciding nothing. The router benchmark measures
//! it too, to split the router's overhead into "a gRPC stack that reads the
//! messages" and "the router's own work".
//!
//! With `--lean` it is the same message-level hop on bare hyper and the
//! router's own HTTP/2 client (`tandem_common::h2_channel`), reading and
//! writing messages with the router's own wire code
//! (`tandem_common::unary`): the floor of a router that reads messages the
//! way tandem's does (answers cut by `OneWriteBody`, as tandem's servers do).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_common::one_write::NoVectoredWrites;
use tokio::net::TcpListener;

/// The router's allocator (see `tandem-router`'s `main.rs`), so that every
/// hop is measured on the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Decode and re-encode `IndexNode/SearchShard` calls instead of
    /// forwarding bytes.
    #[arg(long)]
    decode: bool,
    /// Like `--decode`, but on bare hyper (no tonic server or codec).
    #[arg(long)]
    lean: bool,
    /// Forward bytes, but send upstream with `h2` directly instead of
    /// hyper's pooled client.
    #[arg(long)]
    h2: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.listen).await.context("bind")?;
    let addr = listener.local_addr()?;
    println!("{{\"ready\":true,\"kind\":\"passthrough\",\"grpc\":\"{addr}\",\"metrics\":\"{addr}\",\"pid\":{}}}", std::process::id());
    if cli.lean {
        return lean::serve(listener, &cli.upstream).await;
    }
    if cli.decode {
        return decode::serve(listener, &cli.upstream).await;
    }
    if cli.h2 {
        return bare_h2::serve(listener, &cli.upstream).await;
    }
    let client: Client<HttpConnector, Incoming> = http2_client();
    let upstream: &'static str = Box::leak(cli.upstream.into_boxed_str());
    let service = service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        async move {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let uri: Uri = format!("http://{upstream}{path}").parse()?;
            *req.uri_mut() = uri;
            client.request(req).await.map_err(anyhow::Error::from)
        }
    });
    serve_http2(listener, service).await
}

/// An HTTP/2-only pooled client with TCP_NODELAY, like the router's.
fn http2_client<B>() -> Client<HttpConnector, B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// Serves every connection accepted on `listener` over HTTP/2 with
/// `service`, until the process is killed; connections are set up as
/// tandem's servers set theirs up (`NoVectoredWrites`), so that every hop
/// writes what it forwards the way tandem's processes write.
async fn serve_http2<S, B>(listener: TcpListener, service: S) -> anyhow::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(NoVectoredWrites::new(stream)), service)
                .await;
        });
    }
}

/// The bare hop on `h2`'s client (`--h2`): frames forwarded as they
/// arrive, both ways, without reading them.
mod bare_h2 {
    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tandem_common::h2_channel::{ChannelSettings, H2Channel, RecvBody};
    use tokio::net::TcpListener;

    /// Serves the hop on `listener` until the process is killed.
    pub async fn serve(listener: TcpListener, upstream: &str) -> anyhow::Result<()> {
        let channel = H2Channel::new(
            format!("http://{upstream}").parse()?,
            ChannelSettings::default(),
        )?;
        let service = service_fn(move |request: http::Request<Incoming>| {
            let channel = channel.clone();
            async move { forward(&channel, request).await }
        });
        super::serve_http2(listener, service).await
    }

    async fn forward(
        channel: &H2Channel,
        request: http::Request<Incoming>,
    ) -> anyhow::Result<http::Response<RecvBody>> {
        let (mut head, mut body) = request.into_parts();
        let path = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        head.uri = channel.uri(path);
        let mut sender = channel.ready().await?;
        let (answer, mut send) =
            sender.send_request(http::Request::from_parts(head, ()), body.is_end_stream())?;
        let mut ended = body.is_end_stream();
        while let Some(frame) = body.frame().await {
            match frame?.into_data() {
                Ok(data) => {
                    ended = body.is_end_stream();
                    send.send_data(data, ended)?;
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers)?;
                        ended = true;
                    }
                }
            }
        }
        if !ended {
            send.send_data(Bytes::new(), true)?;
        }
        let (head, stream) = answer.await?.into_parts();
        Ok(http::Response::from_parts(head, RecvBody::new(stream)))
    }
}

/// The message-level hop (`--decode`).
mod decode {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use tandem_proto::v1::index_node_client::IndexNodeClient;
    use tandem_proto::v1::index_node_server::{IndexNode, IndexNodeServer};
    use tandem_proto::v1::*;
    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status};

    type Transport = Client<HttpConnector, tonic::body::Body>;

    struct Hop {
        transport: Transport,
        origin: http::Uri,
    }

    fn not_forwarded<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented(
            "the decode hop forwards SearchShard only",
        ))
    }

    #[tonic::async_trait]
    impl IndexNode for Hop {
        async fn search_shard(
            &self,
            request: Request<ShardSearchRequest>,
        ) -> Result<Response<ShardSearchResponse>, Status> {
            let mut client =
                IndexNodeClient::with_origin(self.transport.clone(), self.origin.clone());
            let answer = client.search_shard(request.into_inner()).await?;
            Ok(Response::new(answer.into_inner()))
        }
        async fn ingest(
            &self,
            _: Request<IngestRequest>,
        ) -> Result<Response<IngestResponse>, Status> {
            not_forwarded()
        }
        async fn create_shard(
            &self,
            _: Request<CreateShardRequest>,
        ) -> Result<Response<ShardInfo>, Status> {
            not_forwarded()
        }
        async fn get_shard_info(
            &self,
            _: Request<ShardRef>,
        ) -> Result<Response<ShardInfo>, Status> {
            not_forwarded()
        }
        async fn list_shards(
            &self,
            _: Request<ListShardsRequest>,
        ) -> Result<Response<ListShardsResponse>, Status> {
            not_forwarded()
        }
    }

    /// Serves the decoding hop on `listener` until the process is killed.
    pub async fn serve(listener: TcpListener, upstream: &str) -> anyhow::Result<()> {
        let hop = Hop {
            transport: super::http2_client(),
            origin: format!("http://{upstream}").parse()?,
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(IndexNodeServer::new(hop))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    }
}

/// The lean message-level hop (`--lean`): bare hyper server, the router's
/// HTTP/2 client (`tandem_common::h2_channel`),
/// messages read and written with the router's own wire code
/// (`tandem_common::unary`).
mod lean {
    use std::convert::Infallible;

    use http::HeaderValue;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tandem_common::h2_channel::{ChannelSettings, H2Channel};
    use tandem_common::one_write::OneWriteBody;
    use tandem_common::unary;
    use tandem_proto::paths;
    use tandem_proto::v1::{ShardSearchRequest, ShardSearchResponse};
    use tokio::net::TcpListener;
    use tonic::Status;

    async fn relay(
        channel: &H2Channel,
        request: http::Request<Incoming>,
    ) -> Result<ShardSearchResponse, Status> {
        let (_, message) = unary::read_request::<ShardSearchRequest, _>(request).await?;
        let no_metadata: &[(http::HeaderName, HeaderValue)] = &[];
        unary::call(
            channel,
            paths::SEARCH_SHARD,
            unary::encode_frame(&message),
            std::time::Duration::from_secs(2),
            no_metadata,
        )
        .await
    }

    /// Serves the lean hop on `listener` until the process is killed.
    pub async fn serve(listener: TcpListener, upstream: &str) -> anyhow::Result<()> {
        let channel = H2Channel::new(
            format!("http://{upstream}").parse()?,
            ChannelSettings::default(),
        )?;
        let service = service_fn(move |request: http::Request<Incoming>| {
            let channel = channel.clone();
            async move {
                let answer = relay(&channel, request).await;
                // Cut as every tandem server cuts its answers
                // (`tandem_common::server`), so that it leaves in one write.
                Ok::<_, Infallible>(unary::answer(answer).map(OneWriteBody::new))
            }
        });
        super::serve_http2(listener, service).await
    }
}
