//! End-to-end tests of `tandem-router` with real index-nodes in two regions.

use std::time::Duration;

use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::{with_bearer, ADMIN_TOKEN};
use tandem_proto::v1::fault_injection_client::FaultInjectionClient;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::router_admin_client::RouterAdminClient;
use tandem_proto::v1::{Fault, FaultAction, SearchRequest, SetDialRequest, ShardSearchRequest};
use tonic::Code;

const QUERY: &str = "file";

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
            id: "multi",
            home: "r1",
            active_active: true,
            shards: vec![vec!["r1-a", "r2-a"], vec!["r1-b", "r2-b"]],
            models: vec![],
        },
        TenantSpec {
            id: "solo",
            home: "r1",
            active_active: false,
            shards: vec![vec!["r1-a", "r1-b"]],
            models: vec![],
        },
    ]
}

async fn cluster() -> Cluster {
    Cluster::start(
        &[
            ("r1-a", "r1"),
            ("r1-b", "r1"),
            ("r2-a", "r2"),
            ("r2-b", "r2"),
        ],
        tenants(),
        150,
    )
    .await
}

fn region_of(resp: &tandem_proto::v1::SearchResponse) -> String {
    resp.route.as_ref().unwrap().served_region.clone()
}

async fn set_fault(cluster: &Cluster, node: &str, fault: Fault) {
    FaultInjectionClient::with_interceptor(
        cluster.node(node).proc.channel().await,
        tandem_e2e::internal(),
    )
    .set_fault(with_bearer(fault, ADMIN_TOKEN))
    .await
    .expect("set fault");
}

#[tokio::test]
async fn healthy_queries_are_served_locally_with_a_route() {
    let c = cluster().await;
    for r in 0..2 {
        let resp = c.search(r, "aa", QUERY).await.unwrap();
        assert!(!resp.hits.is_empty());
        let route = resp.route.as_ref().unwrap();
        let local = ["r1", "r2"][r];
        assert_eq!(
            (route.entry_region.as_str(), route.served_region.as_str()),
            (local, local)
        );
        assert!(!route.forwarded && !route.fallback);
        assert_eq!(route.shards.len(), 1);
        assert_eq!(route.shards[0].node, format!("{local}-a"));
        assert!(resp.took_micros > 0);
    }
    // The caller's request id comes back; without one, the router mints one.
    let request = |id: Option<&str>| {
        let mut r = with_bearer(
            SearchRequest {
                tenant: "aa".into(),
                query: QUERY.into(),
                ..Default::default()
            },
            &c.tenant("aa").key(),
        );
        if let Some(id) = id {
            r.metadata_mut().insert("x-request-id", id.parse().unwrap());
        }
        r
    };
    let mut client = c.search_client(0).await;
    let echoed = client.search(request(Some("req-abc-123"))).await.unwrap();
    assert_eq!(
        echoed
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-abc-123")
    );
    let minted = client.search(request(None)).await.unwrap();
    let id = minted
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    assert!(
        id.is_some_and(|id| !id.is_empty() && id != "req-abc-123"),
        "{id:?}"
    );
    // A two-shard tenant: hits from both shards, merged by score.
    let resp = c.search(0, "multi", QUERY).await.unwrap();
    assert_eq!(resp.route.as_ref().unwrap().shards.len(), 2);
    assert!(resp.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(resp.total_hits >= resp.hits.len() as u64);
}

#[tokio::test]
async fn a_killed_local_replica_costs_no_query() {
    let mut c = cluster().await;
    c.node_mut("r1-a").proc.signal("KILL");
    let mut from_r2 = 0;
    for i in 0..40 {
        let resp = c
            .search(0, "aa", QUERY)
            .await
            .unwrap_or_else(|e| panic!("query {i} failed: {e:?}"));
        assert!(!resp.hits.is_empty());
        if region_of(&resp) == "r2" {
            from_r2 += 1;
        }
    }
    assert_eq!(
        from_r2, 40,
        "the only local replica is dead: the paired region answers"
    );
    // The non-active-active tenant falls back to its other home replica.
    let resp = c.search(0, "solo", QUERY).await.unwrap();
    assert_eq!(resp.route.as_ref().unwrap().shards[0].node, "r1-b");
}

#[tokio::test]
async fn a_hung_local_replica_is_hedged_within_the_deadline() {
    let c = cluster().await;
    let hang = Fault {
        action: FaultAction::Hang as i32,
        ..Default::default()
    };
    set_fault(&c, "r1-a", hang).await;
    for i in 0..20 {
        let resp = c
            .search(0, "aa", QUERY)
            .await
            .unwrap_or_else(|e| panic!("query {i} failed: {e:?}"));
        let route = resp.route.as_ref().unwrap();
        assert_eq!(route.served_region, "r2");
        if i < 3 {
            // Sent to the hung replica first, answered by the hedge.
            assert!(
                route.shards[0].hedged && route.fallback,
                "query {i}: {route:?}"
            );
        }
    }
    // Three lost hedge races in a row eject the silent replica of the
    // tenant (a node silent for several tenants at once is ejected whole:
    // `router/src/fallback/tests.rs`).
    let status = c.status(0).await;
    let node = status.endpoints.iter().find(|e| e.node == "r1-a").unwrap();
    assert!(
        node.ejected_shards.contains(&"aa/0".to_string()),
        "{node:?}"
    );
}

#[tokio::test]
async fn one_failing_tenant_shard_only_moves_that_tenant() {
    let c = cluster().await;
    let fault = Fault {
        tenant: "aa".into(),
        has_shard: true,
        shard: 0,
        action: FaultAction::Unavailable as i32,
        delay_ms: 0,
        cross_region: false,
    };
    set_fault(&c, "r1-a", fault).await;
    for _ in 0..10 {
        assert_eq!(region_of(&c.search(0, "aa", QUERY).await.unwrap()), "r2");
        let multi = c.search(0, "multi", QUERY).await.unwrap();
        assert_eq!(
            region_of(&multi),
            "r1",
            "another tenant on the same node stays local"
        );
        assert_eq!(multi.route.as_ref().unwrap().shards[0].node, "r1-a");
    }
    // Only the pair is ejected, never the node.
    let status = c.status(0).await;
    let node = status.endpoints.iter().find(|e| e.node == "r1-a").unwrap();
    assert_eq!(node.state, "healthy");
    assert_eq!(node.ejected_shards, vec!["aa/0".to_string()]);
}

#[tokio::test]
async fn a_shard_with_no_replica_left_is_unavailable_unless_partial_is_allowed() {
    let mut c = cluster().await;
    c.node_mut("r1-b").proc.signal("KILL");
    c.node_mut("r2-b").proc.signal("KILL");
    let err = c.search(0, "multi", QUERY).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shard 1"), "{}", err.message());
    let req = SearchRequest {
        tenant: "multi".into(),
        query: QUERY.into(),
        allow_partial: true,
        ..Default::default()
    };
    let resp = c
        .search_with(0, req, &c.tenant("multi").key())
        .await
        .unwrap();
    assert_eq!(resp.degraded, vec!["partial".to_string()]);
    assert!(!resp.hits.is_empty());
    assert!(resp.hits.iter().all(|h| h.shard == 0));
}

#[tokio::test]
async fn the_dial_forwards_about_its_share_to_the_paired_region() {
    let c = cluster().await;
    // The admin API is on its own listener only.
    let public = RouterAdminClient::new(c.routers[0].channel().await)
        .status(with_bearer(tandem_proto::v1::StatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(public.code(), Code::Unimplemented, "{public:?}");
    let mut admin = RouterAdminClient::new(c.routers[0].admin_channel().await);
    admin
        .set_dial(with_bearer(
            SetDialRequest {
                region: "r1".into(),
                percent: 50,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let mut forwarded = 0;
    for _ in 0..200 {
        let resp = c.search(0, "aa", QUERY).await.unwrap();
        let route = resp.route.as_ref().unwrap();
        assert_eq!(route.entry_region, "r1");
        if route.forwarded {
            forwarded += 1;
            assert_eq!(route.served_region, "r2");
        } else {
            assert!(
                route.served_region == "r1" || route.shards[0].hedged,
                "{route:?}"
            );
        }
    }
    assert!(
        (60..=140).contains(&forwarded),
        "{forwarded} of 200 forwarded at dial 50"
    );
    // Dial 0: everything goes to r2; a forwarded call is never sent back.
    admin
        .set_dial(with_bearer(
            SetDialRequest {
                region: "r1".into(),
                percent: 0,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(region_of(&c.search(0, "aa", QUERY).await.unwrap()), "r2");
    }
    let bad = admin
        .set_dial(with_bearer(
            SetDialRequest {
                region: "r1".into(),
                percent: 101,
            },
            ADMIN_TOKEN,
        ))
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let no_token = admin
        .set_dial(SetDialRequest {
            region: "r1".into(),
            percent: 10,
        })
        .await;
    assert_eq!(no_token.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_single_region_tenant_is_served_from_its_home() {
    let c = cluster().await;
    let resp = c.search(1, "solo", QUERY).await.unwrap();
    let route = resp.route.as_ref().unwrap();
    assert_eq!(
        (route.entry_region.as_str(), route.served_region.as_str()),
        ("r2", "r1")
    );
    assert!(!route.forwarded);
}

/// A one-shard tenant (whose node returns exactly the page) and a
/// two-shard tenant (whose windows the router merges, then fetches the
/// page's snippets) page alike: a page at an offset is that slice of the
/// page from 0 to the same end, every hit has its snippet, and a lone
/// shard's hits are exactly its node's. (How a node orders equal scores is
/// tested on the node, `index-node/tests/ranking.rs`: the sample pages here
/// are written in id order, so index order and id order agree.)
#[tokio::test]
async fn offsets_page_alike_whether_one_shard_or_merged() {
    let c = cluster().await;
    let page = |tenant: &'static str, offset: u32, top_k: u32| {
        let c = &c;
        async move {
            let req = SearchRequest {
                tenant: tenant.into(),
                query: QUERY.into(),
                top_k,
                offset,
                ..Default::default()
            };
            let resp = c
                .search_with(0, req, &c.tenant(tenant).key())
                .await
                .unwrap();
            assert!(resp.hits.windows(2).all(|w| w[0].score >= w[1].score));
            assert!(resp.degraded.is_empty(), "{tenant}: {:?}", resp.degraded);
            assert!(
                resp.hits.iter().all(|h| !h.snippet.is_empty()),
                "{tenant}: every hit has a snippet"
            );
            resp.hits
        }
    };
    for tenant in ["aa", "multi"] {
        let whole = page(tenant, 0, 12).await;
        assert_eq!(whole.len(), 12, "{tenant}: enough matches");
        assert_eq!(page(tenant, 4, 8).await, whole[4..], "{tenant}");
        assert_eq!(page(tenant, 11, 1).await, whole[11..], "{tenant}");
    }

    let mut node = IndexNodeClient::with_interceptor(
        c.node("r1-a").proc.channel().await,
        tandem_e2e::internal(),
    );
    let from_node = node
        .search_shard(ShardSearchRequest {
            tenant: "aa".into(),
            shard: 0,
            query: QUERY.into(),
            top_k: 12,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(page("aa", 0, 12).await, from_node);
    assert!(from_node
        .windows(2)
        .all(|w| w[0].score > w[1].score || (w[0].score == w[1].score && w[0].id < w[1].id)));

    // The merged page is the shards' own hits in the merge's order.
    let mut merged = Vec::new();
    for (node, shard) in [("r1-a", 0), ("r1-b", 1)] {
        let mut node = IndexNodeClient::with_interceptor(
            c.node(node).proc.channel().await,
            tandem_e2e::internal(),
        );
        let request = ShardSearchRequest {
            tenant: "multi".into(),
            shard,
            query: QUERY.into(),
            top_k: 12,
            ..Default::default()
        };
        merged.extend(node.search_shard(request).await.unwrap().into_inner().hits);
    }
    merged.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.shard.cmp(&b.shard))
            .then_with(|| a.id.cmp(&b.id))
    });
    let ids = |hits: &[tandem_proto::v1::Hit]| -> Vec<String> {
        hits.iter().map(|h| h.id.clone()).collect()
    };
    assert_eq!(ids(&page("multi", 0, 12).await), ids(&merged[..12]));
}

/// Sends `frame` as the whole body of a gRPC call to `path`, over a bare
/// HTTP/2 connection, and returns the call's `grpc-status`.
async fn raw_call(addr: &str, path: &str, key: &str, frame: &'static [u8]) -> Code {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap();
    let (answer, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(frame), true)
        .unwrap();
    let answer = answer.await.unwrap();
    let status = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
    };
    if let Some(code) = status(answer.headers()) {
        return Code::from_i32(code);
    }
    let mut body = answer.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    Code::from_i32(status(&trailers).expect("a grpc-status"))
}

/// A connection may not open unbounded streams: the router advertises its
/// cap in its HTTP/2 SETTINGS.
#[tokio::test]
async fn a_connection_is_told_its_stream_limit() {
    let c = cluster().await;
    let addr = c.routers[0].grpc.to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Driving the connection a moment reads the server's SETTINGS.
    let _ = tokio::time::timeout(Duration::from_millis(300), &mut connection).await;
    assert_eq!(
        connection.max_concurrent_send_streams(),
        tandem_common::server::MAX_STREAMS_PER_CONNECTION as usize
    );
}

/// Bytes that are not one well-formed message get the status the gRPC
/// spec names for them, and break nothing.
#[tokio::test]
async fn malformed_messages_get_clear_statuses() {
    let c = cluster().await;
    let addr = c.routers[0].url().trim_start_matches("http://").to_string();
    let key = c.tenant("aa").key();
    const SEARCH: &str = "/tandem.v1.Search/Search";
    for (frame, code, why) in [
        (
            &b"\0\0\0\0\x03\xff\xff\xff"[..],
            Code::Internal,
            "not protobuf",
        ),
        (b"\0\0\0\0\x09\x0a\x02", Code::Internal, "truncated"),
        (
            b"\x01\0\0\0\x00",
            Code::Internal,
            "compressed, no encoding named",
        ),
        (
            b"\0\xff\xff\xff\xff",
            Code::OutOfRange,
            "over the size limit",
        ),
    ] {
        assert_eq!(raw_call(&addr, SEARCH, &key, frame).await, code, "{why}");
    }
    let nope = raw_call(&addr, "/tandem.v1.Search/Nope", &key, b"\0\0\0\0\0").await;
    assert_eq!(nope, Code::Unimplemented);
    // An empty message is a valid (empty) request: the tenant id is checked.
    let empty = raw_call(&addr, SEARCH, &key, b"\0\0\0\0\0").await;
    assert_eq!(empty, Code::InvalidArgument);
    // The router still serves.
    assert!(!c.search(0, "aa", QUERY).await.unwrap().hits.is_empty());
}

#[tokio::test]
async fn auth_and_bad_input_get_clear_statuses() {
    let c = cluster().await;
    let req = |tenant: &str| SearchRequest {
        tenant: tenant.into(),
        query: QUERY.into(),
        ..Default::default()
    };
    let mut client = c.search_client(0).await;
    assert_eq!(
        client.search(req("aa")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let code = |r: Result<_, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(c.search_with(0, req("aa"), "wrong-key").await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.search_with(0, req("aa"), &c.tenant("solo").key()).await),
        Code::PermissionDenied
    );
    // An unknown tenant gets the same answer as another tenant's: no
    // probing of tenant ids with a valid key either.
    assert_eq!(
        code(c.search_with(0, req("nobody"), &c.tenant("aa").key()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.search_with(0, req("nobody"), "wrong-key").await),
        Code::Unauthenticated,
        "no enumeration"
    );
    assert_eq!(
        code(c.search_with(0, req("../x"), &c.tenant("aa").key()).await),
        Code::InvalidArgument
    );
    let key = c.tenant("aa").key();
    let big = SearchRequest {
        top_k: 1001,
        ..req("aa")
    };
    assert_eq!(
        code(c.search_with(0, big, &key).await),
        Code::InvalidArgument
    );
    let strict = SearchRequest {
        query: "title:(tar".into(),
        strict: true,
        ..req("aa")
    };
    let err = c.search_with(0, strict, &key).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("invalid query syntax"),
        "{}",
        err.message()
    );
    let lenient = SearchRequest {
        query: "title:(tar".into(),
        ..req("aa")
    };
    assert!(c.search_with(0, lenient, &key).await.is_ok());
    // Bad input did not eject anyone.
    let status = c.status(0).await;
    assert!(
        status
            .endpoints
            .iter()
            .all(|e| e.state == "healthy" && e.ejected_shards.is_empty()),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_broken_catalog_is_refused_and_the_last_good_one_serves() {
    let c = cluster().await;
    let before = c.status(0).await.catalog_version;
    std::fs::write(&c.catalog_path, "this is [not a catalog").unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let status = c.status(0).await;
        if !status.catalog_error.is_empty() {
            assert_eq!(status.catalog_version, before);
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the broken catalog was not reported");
    assert!(
        c.search(0, "aa", QUERY).await.is_ok(),
        "the last good catalog keeps serving"
    );
}

/// A router without a catalog refuses to start and says how to make one
/// (it never serves the example catalog's public demo keys by accident).
#[test]
fn a_router_without_a_catalog_refuses_to_start() {
    let out = std::process::Command::new(tandem_e2e::bin_path("tandem-router"))
        .args(["--region", "us-east", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env(
            tandem_common::internal::INTERNAL_TOKEN_ENV,
            tandem_e2e::INTERNAL_TOKEN,
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no catalog: start the router with --catalog FILE"),
        "{stderr}"
    );
}
