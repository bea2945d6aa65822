//! The load generator through the real client library against two
//! stand-in routers on loopback (the search and health services, nothing
//! else), with the home one dying mid-run like a killed process: the
//! miniature of the "front door down" drill. The real router and drill
//! are covered by the end-to-end tests in `tests/`.

use std::net::SocketAddr;
use std::time::Duration;

use tandem_client::{ClientConfig, RegionEndpoint, TandemClient};
use tandem_loadgen::{run_load, EventLog, LoadConfig, LoadMode};
use tandem_proto::v1::search_server::{Search, SearchServer};
use tandem_proto::v1::{Route, SearchRequest, SearchResponse, SuggestRequest, SuggestResponse};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tonic::{Request, Response, Status};

struct StandIn(String);

#[tonic::async_trait]
impl Search for StandIn {
    async fn search(&self, _: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(Response::new(SearchResponse {
            route: Some(Route {
                entry_region: self.0.clone(),
                served_region: self.0.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn suggest(
        &self,
        _: Request<SuggestRequest>,
    ) -> Result<Response<SuggestResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

async fn stand_in(region: &str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_health, health_service) = tonic_health::server::health_reporter();
    let router = SearchServer::new(StandIn(region.to_string()));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(router)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

/// A TCP proxy whose abort drops its listener and every connection at
/// once, as a killed router process would.
async fn proxy(backend: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_run_fails_no_query() {
    let (home, _home_task) = stand_in("us-east-1").await;
    let (away, _away_task) = stand_in("us-east-2").await;
    let (front_door, front_door_task) = proxy(home).await;
    let config = ClientConfig::new(vec![
        RegionEndpoint::new("us-east-1", front_door.to_string()),
        RegionEndpoint::new("us-east-2", away.to_string()),
    ]);
    let client = TandemClient::connect(config).await.unwrap();

    let events = EventLog::new();
    let drill = {
        let events = events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            front_door_task.abort();
            events.mark("router us-east-1 killed");
        })
    };
    let mode = LoadMode::OpenLoop {
        rate: 200.0,
        max_outstanding: 1000,
    };
    let config = LoadConfig::new(mode, Duration::from_millis(1500), "en", vec!["tar".into()]);
    let report = run_load(&client, &config, &events).await.unwrap();
    drill.await.unwrap();

    let s = &report.summary;
    assert_eq!((s.sent, s.failed), (300, 0), "errors: {:?}", s.errors);
    assert!(s.served_region["us-east-1"].count > 50);
    assert!(s.served_region["us-east-2"].count > 50);
    assert_eq!(s.client_failover, s.served_region["us-east-2"].count);
    let fault = report
        .timeline
        .event_time("router us-east-1 killed")
        .unwrap();
    assert!(fault >= Duration::from_millis(650));
    // After the kill every answer comes from the other region.
    let last = report.timeline.buckets.last().unwrap();
    assert_eq!(last.share("us-east-2"), 1.0);
    assert_eq!(&*client.current_region(), "us-east-2");
}
