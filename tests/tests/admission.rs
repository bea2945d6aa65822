//! End-to-end tests of what a router refuses before doing the work: a call
//! without a valid key (answered before its body is read), a tenant past
//! its quota (`tandem-shed: quota`, never retried in the other region by
//! the client library) and a router at its admission limit
//! (`tandem-shed: router`, which the client library takes to the other
//! region's router); and a client library spreading a region's calls over
//! its routers.

use std::time::Duration;

use tandem_client::{ClientConfig, RegionEndpoint, TandemClient};
use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::{with_bearer, Proc, ADMIN_TOKEN};
use tandem_proto::shed;
use tandem_proto::v1::fault_injection_client::FaultInjectionClient;
use tandem_proto::v1::{ClearFaultRequest, Fault, FaultAction, SearchRequest};
use tonic::Code;

fn tenants() -> Vec<TenantSpec> {
    vec![
        TenantSpec {
            id: "aa",
            home: "r1",
            active_active: true,
            shards: vec![vec!["r1-a", "r2-a"]],
            models: vec![],
        },
        TenantSpec {
            id: "solo",
            home: "r1",
            active_active: false,
            shards: vec![vec!["r1-a"]],
            models: vec![],
        },
    ]
}

async fn cluster() -> Cluster {
    Cluster::start(&[("r1-a", "r1"), ("r2-a", "r2")], tenants(), 20).await
}

/// Makes `node` answer `tenant`'s searches only after `ms`.
async fn delay(c: &Cluster, node: &str, tenant: &str, ms: u32) {
    let fault = Fault {
        tenant: tenant.into(),
        action: FaultAction::Delay as i32,
        delay_ms: ms,
        ..Default::default()
    };
    FaultInjectionClient::with_interceptor(
        c.node(node).proc.channel().await,
        tandem_e2e::internal(),
    )
    .set_fault(with_bearer(fault, ADMIN_TOKEN))
    .await
    .expect("set fault");
}

fn request(tenant: &str) -> SearchRequest {
    SearchRequest {
        tenant: tenant.into(),
        query: "file".into(),
        top_k: 5,
        ..Default::default()
    }
}

/// A client library over `home` (region r1) and the cluster's r2 router.
async fn client(c: &Cluster, home: &Proc, tenant: &str) -> TandemClient {
    let config = ClientConfig::new(vec![
        RegionEndpoint::new("r1", home.url()),
        RegionEndpoint::new("r2", c.routers[1].url()),
    ])
    .with_home_region("r1")
    .with_api_key(c.tenant(tenant).key());
    TandemClient::connect(config).await.expect("client")
}

/// Sends a search of `tenant` (whose replicas were made slow) through
/// `router`, and gives it time to be admitted before returning.
async fn hold(
    router: &Proc,
    tenant: &str,
    key: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<tandem_proto::v1::SearchResponse>, tonic::Status>>
{
    let mut search = tandem_proto::v1::search_client::SearchClient::new(router.channel().await);
    let request = with_bearer(request(tenant), key);
    let held = tokio::spawn(async move { search.search(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    held
}

/// Searches `router` answered, from its metrics.
fn searches_served(router: &Proc) -> f64 {
    router
        .scrape()
        .lines()
        .filter(|l| l.starts_with("router_requests_total{") && l.contains("method=\"Search\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens a call to `path` on a bare HTTP/2 connection with `key`, sends
/// its headers but never its body, and returns the `grpc-status` the
/// router answers with; a router that waited for the body would never
/// answer (the wait is bounded by 10 s).
async fn status_before_body(addr: &str, path: &str, key: Option<&str>) -> Code {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let (answer, _body_never_sent) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("answered without the body")
        .unwrap();
    let code = answer.headers()["grpc-status"].to_str().unwrap();
    Code::from_i32(code.parse().unwrap())
}

#[tokio::test]
async fn strangers_are_refused_before_the_body_and_quotas_are_not_had_twice() {
    let c = cluster().await;
    let addr = c.routers[0].grpc.to_string();
    for path in [
        "/tandem.v1.Search/Search",
        "/tandem.v1.Documents/Write",
        "/tandem.v1.Events/Click",
    ] {
        assert_eq!(
            status_before_body(&addr, path, None).await,
            Code::Unauthenticated
        );
        assert_eq!(
            status_before_body(&addr, path, Some("not-a-key")).await,
            Code::Unauthenticated
        );
    }

    // Tenant `aa` may have one search in flight per region.
    let catalog = std::fs::read_to_string(&c.catalog_path).unwrap();
    let catalog = catalog.replacen("format = 2", "format = 4", 1).replacen(
        "id = \"aa\"\n",
        "id = \"aa\"\nquota = { concurrent_searches = 1 }\n",
        1,
    );
    std::fs::write(&c.catalog_path, catalog).unwrap();
    c.wait_for_catalog().await;
    for node in ["r1-a", "r2-a"] {
        delay(&c, node, "aa", 1500).await;
    }
    // One search holds the tenant's one place in r1 (its replicas answer
    // after 1.5 s); one sent while it waits is refused.
    let slow = hold(&c.routers[0], "aa", &c.tenant("aa").key()).await;
    let over = c.search(0, "aa", "file").await.unwrap_err();
    assert_eq!(shed::who(&over), Some(shed::QUOTA), "{over:?}");
    assert!(over.message().contains("concurrent_searches"), "{over:?}");
    // The client library returns a quota refusal as it is: the other
    // region would have given the tenant its quota a second time.
    let library = client(&c, &c.routers[0], "aa").await;
    let refused = library.search(request("aa")).await.unwrap_err();
    assert_eq!(shed::who(&refused), Some(shed::QUOTA));
    assert!(!library.is_failed_over());
    // (The held search itself was admitted: its replicas are slower than
    // the cluster's per-try timeout, so it fails, but not as a shed.)
    let held = slow.await.unwrap();
    assert!(
        held.as_ref().err().and_then(shed::who).is_none(),
        "{held:?}"
    );
    // With the place free again (and the replicas quick), the tenant is
    // served.
    for node in ["r1-a", "r2-a"] {
        FaultInjectionClient::with_interceptor(
            c.node(node).proc.channel().await,
            tandem_e2e::internal(),
        )
        .clear_fault(with_bearer(
            ClearFaultRequest {
                all: true,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("clear faults");
    }
    assert!(c.search(0, "aa", "file").await.is_ok());
}

#[tokio::test]
async fn a_router_at_its_limit_sheds_and_the_client_moves_to_the_other_region() {
    let c = cluster().await;
    // A router of r1 that serves one search at a time.
    let args: Vec<String> = [
        "--router-id",
        "r1-router-small",
        "--region",
        "r1",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--catalog",
        &c.catalog_path.display().to_string(),
        "--min-concurrent-searches",
        "1",
        "--max-concurrent-searches",
        "1",
        "--per-try-timeout-ms",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let small = Proc::spawn("tandem-router", &args).expect("router");
    // The client library spreads a region's calls over its routers.
    let spread = TandemClient::connect(
        ClientConfig::new(vec![
            RegionEndpoint::with_routers("r1", vec![c.routers[0].url(), small.url()]),
            RegionEndpoint::new("r2", c.routers[1].url()),
        ])
        .with_home_region("r1")
        .with_api_key(c.tenant("aa").key()),
    )
    .await
    .expect("client");
    for _ in 0..40 {
        spread.search(request("aa")).await.expect("served");
    }
    for router in [&c.routers[0], &small] {
        assert!(searches_served(router) > 0.0, "every r1 router served some");
    }
    // A search of the single-region tenant holds its one place.
    delay(&c, "r1-a", "solo", 1000).await;
    let slow = hold(&small, "solo", &c.tenant("solo").key()).await;
    let mut search = tandem_proto::v1::search_client::SearchClient::new(small.channel().await);
    let shed_status = search
        .search(with_bearer(request("aa"), &c.tenant("aa").key()))
        .await
        .unwrap_err();
    assert_eq!(shed_status.code(), Code::ResourceExhausted);
    assert_eq!(shed::who(&shed_status), Some(shed::ROUTER));
    assert!(
        !shed_status.message().contains("127.0.0.1"),
        "{shed_status:?}"
    );
    // The client library takes the call to r2's router, which has room.
    let library = client(&c, &small, "aa").await;
    let (answer, info) = library.search(request("aa")).await.expect("served in r2");
    assert!(info.failed_over, "{info:?}");
    assert_eq!(answer.route.unwrap().entry_region, "r2");
    assert!(slow.await.unwrap().is_ok(), "the admitted search is served");
}
