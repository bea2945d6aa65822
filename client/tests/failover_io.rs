//! The client's I/O against real gRPC servers on loopback: two in-process
//! stand-in routers (the `tandem.v1.Search` service and `grpc.health.v1`,
//! nothing else) that can refuse connections, answer UNAVAILABLE, hang or
//! be shut down. The real router is exercised by the end-to-end tests in
//! `tests/`; these pin down the client's side of the failover contract.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_client::{ClientConfig, ClientError, RegionEndpoint, TandemClient};
use tandem_proto::v1::search_server::{Search, SearchServer};
use tandem_proto::v1::{Route, SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

const NORMAL: u8 = 0;
const UNAVAILABLE: u8 = 1;
const HANG: u8 = 2;
const SLOW: u8 = 3;

/// A stand-in router: answers with its region in the route.
struct FakeRouter {
    region: String,
    mode: Arc<AtomicU8>,
    auth: Arc<Mutex<Vec<String>>>,
}

impl FakeRouter {
    async fn gate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.auth.lock().unwrap().push(auth);
        match self.mode.load(Ordering::SeqCst) {
            UNAVAILABLE => Err(Status::unavailable("stand-in says no")),
            HANG => std::future::pending().await,
            SLOW => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn route(&self) -> Option<Route> {
        Some(Route {
            entry_region: self.region.clone(),
            served_region: self.region.clone(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl Search for FakeRouter {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        self.gate(&request).await?;
        if request.get_ref().query == "bad" {
            return Err(Status::invalid_argument("bad query"));
        }
        Ok(Response::new(SearchResponse {
            route: self.route(),
            ..Default::default()
        }))
    }

    async fn suggest(
        &self,
        request: Request<SuggestRequest>,
    ) -> Result<Response<SuggestResponse>, Status> {
        self.gate(&request).await?;
        Ok(Response::new(SuggestResponse {
            route: self.route(),
            ..Default::default()
        }))
    }
}

struct Running {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    auth: Arc<Mutex<Vec<String>>>,
    health: HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops like a killed process would look to the client: the
    /// listener closes and the open connection goes away.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

async fn start(region: &str, addr: &str) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mode = Arc::new(AtomicU8::new(NORMAL));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let router = FakeRouter {
        region: region.to_string(),
        mode: mode.clone(),
        auth: auth.clone(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(SearchServer::new(router))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
    });
    Running {
        addr,
        mode,
        auth,
        health,
        stop: Some(stop),
        task,
    }
}

/// A TCP proxy to `backend` that can die like a killed process: its
/// listener and every open connection vanish at once, mid-call or not.
struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(backend: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) drops every
            // connection's sockets.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, task }
    }

    fn kill(self) {
        self.task.abort();
    }
}

/// A loopback address nothing listens on (for now).
async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn config(home: SocketAddr, away: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(vec![
        RegionEndpoint::new("home", home.to_string()),
        RegionEndpoint::new("away", away.to_string()),
    ])
    .with_api_key("secret");
    config.timeout = Duration::from_secs(3);
    config.probe_interval = Duration::from_millis(50);
    config
}

fn query(q: &str) -> SearchRequest {
    SearchRequest {
        tenant: "t".into(),
        query: q.into(),
        ..Default::default()
    }
}

async fn wait_for_region(client: &TandemClient, region: &str) {
    let start = Instant::now();
    while &*client.current_region() != region {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "client never moved to {region}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_home_with_the_bearer_key() {
    let (home, away) = (
        start("home", "127.0.0.1:0").await,
        start("away", "127.0.0.1:0").await,
    );
    let client = TandemClient::connect(config(home.addr, away.addr))
        .await
        .unwrap();
    let (response, info) = client.search(query("tar")).await.unwrap();
    assert_eq!(response.route.unwrap().entry_region, "home");
    assert_eq!(
        (&*info.region, info.failed_over, info.retried),
        ("home", false, false)
    );
    let (_, info) = client.suggest(SuggestRequest::default()).await.unwrap();
    assert_eq!(&*info.region, "home");
    assert_eq!(*home.auth.lock().unwrap(), vec!["Bearer secret"; 2]);
    assert!(away.auth.lock().unwrap().is_empty());
    assert!(!client.is_failed_over());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_home_is_retried_away_and_probes_bring_calls_back() {
    let home_addr = free_addr().await;
    let away = start("away", "127.0.0.1:0").await;
    let client = TandemClient::connect(config(home_addr, away.addr))
        .await
        .unwrap();

    let (_, info) = client.search(query("tar")).await.unwrap();
    assert_eq!(
        (&*info.region, info.failed_over, info.retried),
        ("away", true, true)
    );
    assert_eq!(&*client.current_region(), "away");
    // Later calls go straight to the other region.
    let (_, info) = client.search(query("tar")).await.unwrap();
    assert_eq!((&*info.region, info.retried), ("away", false));

    let home = start("home", &home_addr.to_string()).await;
    wait_for_region(&client, "home").await;
    let (_, info) = client.search(query("tar")).await.unwrap();
    assert_eq!((&*info.region, info.failed_over), ("home", false));
    assert_eq!(home.auth.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_going_away_costs_the_caller_nothing() {
    let (home, away) = (
        start("home", "127.0.0.1:0").await,
        start("away", "127.0.0.1:0").await,
    );
    let client = TandemClient::connect(config(home.addr, away.addr))
        .await
        .unwrap();
    client.search(query("tar")).await.unwrap();
    home.stop().await;
    for _ in 0..20 {
        let (_, info) = client.search(query("tar")).await.unwrap();
        assert_eq!(&*info.region, "away");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_when_the_router_dies_are_retried() {
    let (home, away) = (
        start("home", "127.0.0.1:0").await,
        start("away", "127.0.0.1:0").await,
    );
    let proxy = Proxy::start(home.addr).await;
    let client = TandemClient::connect(config(proxy.addr, away.addr))
        .await
        .unwrap();
    client.search(query("tar")).await.unwrap();
    home.mode.store(SLOW, Ordering::SeqCst);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.search(query("tar")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.kill();
    for call in calls {
        let (_, info) = call.await.unwrap().unwrap();
        assert_eq!((&*info.region, info.retried), ("away", true));
    }
    assert_eq!(&*client.current_region(), "away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_fails_over_other_codes_do_not() {
    let (home, away) = (
        start("home", "127.0.0.1:0").await,
        start("away", "127.0.0.1:0").await,
    );
    let client = TandemClient::connect(config(home.addr, away.addr))
        .await
        .unwrap();

    let status = client.search(query("bad")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(&*client.current_region(), "home");
    assert!(away.auth.lock().unwrap().is_empty());

    home.health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    home.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let (_, info) = client.search(query("tar")).await.unwrap();
    assert_eq!((&*info.region, info.retried), ("away", true));
    // NOT_SERVING probes keep the client away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(&*client.current_region(), "away");

    home.mode.store(NORMAL, Ordering::SeqCst);
    home.health
        .set_service_status("", ServingStatus::Serving)
        .await;
    wait_for_region(&client, "home").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_router_is_left_only_with_an_attempt_timeout() {
    let (home, away) = (
        start("home", "127.0.0.1:0").await,
        start("away", "127.0.0.1:0").await,
    );
    home.mode.store(HANG, Ordering::SeqCst);
    let mut cfg = config(home.addr, away.addr);
    cfg.timeout = Duration::from_millis(600);
    let client = TandemClient::connect(cfg.clone()).await.unwrap();
    let status = client.search(query("tar")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(&*client.current_region(), "home");

    cfg.attempt_timeout = Some(Duration::from_millis(150));
    let client = TandemClient::connect(cfg).await.unwrap();
    let (_, info) = client.search(query("tar")).await.unwrap();
    assert_eq!((&*info.region, info.retried), ("away", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_routers_down_is_unavailable_within_the_deadline() {
    let (a, b) = (free_addr().await, free_addr().await);
    let client = TandemClient::connect(config(a, b)).await.unwrap();
    let status = client.search(query("tar")).await.unwrap_err();
    // UNAVAILABLE, not DEADLINE_EXCEEDED: both refusals came back before the
    // call's deadline, so the caller learns at once that nobody is there.
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn bad_configurations_are_errors() {
    let a = RegionEndpoint::new("a", "127.0.0.1:1");
    let check = |config: ClientConfig| async move { TandemClient::connect(config).await.err() };
    assert!(matches!(
        check(ClientConfig::new(vec![])).await,
        Some(ClientError::NoRegions)
    ));
    assert!(matches!(
        check(ClientConfig::new(vec![a.clone(), a.clone()])).await,
        Some(ClientError::DuplicateRegion(_))
    ));
    assert!(matches!(
        check(ClientConfig::new(vec![a.clone()]).with_home_region("b")).await,
        Some(ClientError::UnknownHomeRegion(_))
    ));
    assert!(matches!(
        check(ClientConfig::new(vec![a.clone()]).with_api_key("new\nline")).await,
        Some(ClientError::BadApiKey)
    ));
    assert!(matches!(
        check(ClientConfig::new(vec![RegionEndpoint::new(
            "a",
            "bad uri with spaces"
        )]))
        .await,
        Some(ClientError::BadAddress { .. })
    ));
}
