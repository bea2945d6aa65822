//! End-to-end tests of `tandem-index-node`: the real binary on an ephemeral
//! loopback port, driven over gRPC.

use std::collections::HashMap;
use std::time::Duration;

use tandem_common::internal::InternalToken;
use tandem_e2e::{sample_docs, start_index_node, with_bearer, Proc, ADMIN_TOKEN};
use tandem_proto::v1::fault_injection_client::FaultInjectionClient;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{
    ClearFaultRequest, CreateShardRequest, DeleteTenantRequest, Document, Fault, FaultAction,
    IngestRequest, ListShardsRequest, ShardHealth, ShardRef, ShardSearchRequest,
    ShardSearchResponse,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// An `IndexNode` client carrying the cluster's internal token.
type NodeClient = IndexNodeClient<InterceptedService<Channel, InternalToken>>;

async fn client(node: &Proc) -> NodeClient {
    IndexNodeClient::with_interceptor(node.channel().await, tandem_e2e::internal())
        .max_encoding_message_size(64 << 20)
}

async fn create(c: &mut NodeClient, tenant: &str, shard: u32, lang: &str) {
    c.create_shard(CreateShardRequest {
        tenant: tenant.into(),
        shard,
        language: lang.into(),
    })
    .await
    .expect("create shard");
}

async fn ingest(
    c: &mut NodeClient,
    tenant: &str,
    shard: u32,
    seq: u64,
    upserts: Vec<Document>,
) -> Result<tandem_proto::v1::IngestResponse, tonic::Status> {
    c.ingest(IngestRequest {
        tenant: tenant.into(),
        shard,
        seq,
        upserts,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

fn search_req(tenant: &str, query: &str) -> ShardSearchRequest {
    ShardSearchRequest {
        tenant: tenant.into(),
        shard: 0,
        query: query.into(),
        top_k: 10,
        ..Default::default()
    }
}

async fn search(
    c: &mut NodeClient,
    req: ShardSearchRequest,
) -> Result<ShardSearchResponse, tonic::Status> {
    c.search_shard(req).await.map(|r| r.into_inner())
}

fn doc(id: &str, title: &str, body: &str) -> Document {
    Document {
        id: id.into(),
        title: title.into(),
        body: body.into(),
        url: format!("https://example.org/{id}"),
        attrs_json: r#"{"platform":"linux"}"#.into(),
    }
}

async fn shard_health(node: &Proc, service: &str) -> Result<i32, tonic::Status> {
    let mut health = HealthClient::new(node.channel().await);
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn ingest_then_search_the_sample_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "en", 0, "en").await;
    let docs = sample_docs("en", 1500);
    let ack = ingest(&mut c, "en", 0, 1, docs.clone()).await.unwrap();
    assert_eq!(
        (ack.applied_seq, ack.upserted, ack.duplicate),
        (1, 1500, false)
    );

    let res = search(&mut c, search_req("en", "extract archive"))
        .await
        .unwrap();
    assert!(res.total_hits > 0);
    assert_eq!(res.applied_seq, 1);
    assert_eq!(res.node, "n1");
    assert!(res.hits.len() <= 10);
    assert!(res.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(
        res.hits.iter().any(|h| h.snippet.contains("<b>")),
        "snippets highlight terms"
    );

    // Stemming: "archives" finds documents that say "archive".
    let stemmed = search(&mut c, search_req("en", "archives")).await.unwrap();
    assert!(stemmed.total_hits > 0);

    // Filters restrict; attrs are searchable too.
    let mut filtered = search_req("en", "list files");
    filtered.filters = vec!["attrs.platform:android".into()];
    let res = search(&mut c, filtered).await.unwrap();
    assert!(res.total_hits > 0);
    assert!(
        res.hits.iter().all(|h| h.id.starts_with("en/android/")),
        "{:?}",
        res.hits
    );
    let by_attr = search(&mut c, search_req("en", "attrs.platform:android"))
        .await
        .unwrap();
    assert_eq!(by_attr.total_hits, res.total_hits.max(by_attr.total_hits));
    assert!(by_attr.hits.iter().all(|h| h.id.starts_with("en/android/")));

    // Offset pages through the same ranking.
    let mut page2 = search_req("en", "file");
    page2.offset = 5;
    page2.top_k = 5;
    let first = search(&mut c, search_req("en", "file")).await.unwrap();
    let second = search(&mut c, page2).await.unwrap();
    let ids = |r: &ShardSearchResponse| r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first)[5..], ids(&second)[..]);
}

/// `tandem load-shard`: a JSON-lines file into one shard of a running
/// node, only the records `--where` keeps; a second run changes nothing.
#[tokio::test]
async fn tandem_load_shard_fills_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", &dir.path().join("node"), &[]).unwrap();
    let file = dir.path().join("docs.jsonl");
    std::fs::write(
        &file,
        "{\"id\":\"a\",\"title\":\"tar\",\"body\":\"extract a tar archive\",\"lang\":\"en\"}\n\
         {\"id\":\"b\",\"title\":\"gzip\",\"body\":\"compress a file\",\"lang\":\"en\"}\n\
         {\"id\":\"c\",\"title\":\"tar\",\"body\":\"extraer un archivo\",\"lang\":\"es\"}\n",
    )
    .unwrap();
    let load = || {
        std::process::Command::new(tandem_e2e::bin_path("tandem"))
            .env(
                tandem_common::internal::INTERNAL_TOKEN_ENV,
                tandem_e2e::INTERNAL_TOKEN,
            )
            .args([
                "load-shard",
                "--node",
                &node.grpc.to_string(),
                "--tenant",
                "t",
            ])
            .args(["--create", "en", "--where", "lang=en"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let first = load();
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("loaded 2 documents"));
    assert!(load().status.success());
    let mut c = client(&node).await;
    let hits = search(&mut c, search_req("t", "tar")).await.unwrap().hits;
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let info = c
        .get_shard_info(tandem_proto::v1::ShardRef {
            tenant: "t".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.num_docs, 2);
}

#[tokio::test]
async fn title_weighs_more_and_upsert_replaces_and_boosts_reorder() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    ingest(
        &mut c,
        "t",
        0,
        1,
        vec![
            doc(
                "in-body",
                "something else",
                "kettle kettle and more words here",
            ),
            doc(
                "in-title",
                "kettle",
                "another text about nothing much at all",
            ),
        ],
    )
    .await
    .unwrap();
    let res = search(&mut c, search_req("t", "kettle")).await.unwrap();
    assert_eq!(res.hits[0].id, "in-title", "title matches weigh more");

    // Boosting the other document lifts it above.
    let mut boosted = search_req("t", "kettle");
    boosted.boosts = HashMap::from([("in-body".to_string(), 3.0)]);
    let res = search(&mut c, boosted.clone()).await.unwrap();
    assert_eq!(res.hits[0].id, "in-body");
    // A boost never adds a document that does not match.
    boosted.boosts.insert("missing".into(), 5.0);
    boosted.query = "nothing".into();
    let res = search(&mut c, boosted).await.unwrap();
    assert_eq!(res.hits.len(), 1);

    // Writing an existing id replaces the document.
    ingest(
        &mut c,
        "t",
        0,
        2,
        vec![doc("in-title", "teapot", "no match")],
    )
    .await
    .unwrap();
    let res = search(&mut c, search_req("t", "kettle")).await.unwrap();
    assert_eq!(res.total_hits, 1);
    let info = c
        .get_shard_info(ShardRef {
            tenant: "t".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.num_docs, info.applied_seq), (2, 2));
}

#[tokio::test]
async fn redelivered_batch_is_acknowledged_without_effect() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    ingest(&mut c, "t", 0, 5, vec![doc("a", "alpha", "x")])
        .await
        .unwrap();
    let again = ingest(&mut c, "t", 0, 5, vec![doc("b", "beta", "x")])
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.applied_seq, 5);
    let older = ingest(&mut c, "t", 0, 3, vec![doc("c", "gamma", "x")])
        .await
        .unwrap();
    assert!(older.duplicate);
    let res = search(&mut c, search_req("t", "beta gamma")).await.unwrap();
    assert_eq!(res.total_hits, 0, "duplicates must not be applied");
}

#[tokio::test]
async fn kill_9_after_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    let docs = sample_docs("en", 600);
    for (i, chunk) in docs.chunks(100).enumerate() {
        ingest(&mut c, "t", 0, i as u64 + 1, chunk.to_vec())
            .await
            .unwrap();
    }
    node.signal("KILL");
    node.wait();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    let info = c
        .get_shard_info(ShardRef {
            tenant: "t".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.num_docs, info.applied_seq), (600, 6));
    let res = search(&mut c, search_req("t", "file")).await.unwrap();
    assert!(res.total_hits > 0);
}

#[tokio::test]
async fn delete_tenant_removes_its_shards_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    for (tenant, shard) in [("gone", 0), ("gone", 1), ("kept", 0)] {
        create(&mut c, tenant, shard, "en").await;
        ingest(&mut c, tenant, shard, 1, vec![doc("a", "alpha", "x")])
            .await
            .unwrap();
    }
    let delete = |tenant: &str| DeleteTenantRequest {
        tenant: tenant.into(),
    };
    let name = "tandem.index/gone/0";
    assert_eq!(
        shard_health(&node, name).await.unwrap(),
        ServingStatus::Serving as i32
    );
    let out = c.delete_tenant(delete("gone")).await.unwrap().into_inner();
    assert_eq!(out.shards, [0, 1]);
    assert!(out.bytes > 0);
    assert!(!dir.path().join("shards/gone").exists());
    let err = search(&mut c, search_req("gone", "alpha"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let health = shard_health(&node, name).await.unwrap_err();
    assert_eq!(health.code(), Code::NotFound, "its health name is gone");
    let kept = search(&mut c, search_req("kept", "alpha")).await.unwrap();
    assert_eq!(kept.total_hits, 1);
    let again = c.delete_tenant(delete("gone")).await.unwrap().into_inner();
    assert!(again.shards.is_empty(), "idempotent");
    let bad = c.delete_tenant(delete("../etc")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A restart does not bring it back.
    node.signal("KILL");
    node.wait();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let listed = client(&node)
        .await
        .list_shards(ListShardsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let tenants: Vec<&str> = listed.shards.iter().map(|s| s.tenant.as_str()).collect();
    assert_eq!(tenants, ["kept"]);
}

/// A corrupt shard goes NOT_SERVING alone and is quarantined; a creation a
/// crash interrupted is removed at start.
#[tokio::test]
async fn a_broken_shard_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    for tenant in ["good", "bad"] {
        create(&mut c, tenant, 0, "en").await;
        ingest(&mut c, tenant, 0, 1, vec![doc("a", "alpha", "x")])
            .await
            .unwrap();
    }
    node.signal("TERM");
    assert!(node.wait(), "SIGTERM exits cleanly");
    // Destroy the bad shard's index metadata, and leave a creation a
    // crash interrupted (no tandem-shard.json).
    std::fs::write(
        dir.path().join("shards/bad/0/index/meta.json"),
        b"{ not json",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("shards/half/0/index")).unwrap();

    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    let err = search(&mut c, search_req("bad", "alpha"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("bad/0"), "{}", err.message());
    assert_eq!(
        search(&mut c, search_req("good", "alpha"))
            .await
            .unwrap()
            .total_hits,
        1
    );
    assert_eq!(
        shard_health(&node, "tandem.index/bad/0").await.unwrap(),
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        shard_health(&node, "tandem.index/good/0").await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        shard_health(&node, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let info = c
        .get_shard_info(ShardRef {
            tenant: "bad".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.health, ShardHealth::Failed as i32);
    // The unfinished creation is gone; the broken files were moved aside
    // whole, and the shard can be made anew without a restart.
    assert!(!dir.path().join("shards/half/0").exists());
    assert!(!dir.path().join("shards/bad/0").exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read(aside[0].join("index/meta.json")).unwrap();
    assert_eq!(kept, b"{ not json");
    create(&mut c, "bad", 0, "en").await;
    ingest(&mut c, "bad", 0, 1, vec![doc("a", "alpha", "x")])
        .await
        .unwrap();
    let hits = search(&mut c, search_req("bad", "alpha")).await.unwrap();
    assert_eq!(hits.total_hits, 1);
}

#[tokio::test]
async fn fault_injection_fails_delays_hangs_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    for tenant in ["a", "b"] {
        create(&mut c, tenant, 0, "en").await;
        ingest(&mut c, tenant, 0, 1, vec![doc("d", "alpha", "x")])
            .await
            .unwrap();
    }
    let mut faults =
        FaultInjectionClient::with_interceptor(node.channel().await, tandem_e2e::internal());
    let fault = |tenant: &str, action: FaultAction, delay_ms: u32| Fault {
        tenant: tenant.into(),
        has_shard: true,
        shard: 0,
        action: action as i32,
        delay_ms,
        cross_region: false,
    };
    // The admin API needs the token.
    let denied = faults
        .set_fault(fault("a", FaultAction::Unavailable, 0))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);

    faults
        .set_fault(with_bearer(
            fault("a", FaultAction::Unavailable, 0),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(
        search(&mut c, search_req("a", "alpha"))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    assert!(
        search(&mut c, search_req("b", "alpha")).await.is_ok(),
        "other tenants unaffected"
    );

    faults
        .set_fault(with_bearer(
            fault("a", FaultAction::Internal, 0),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(
        search(&mut c, search_req("a", "alpha"))
            .await
            .unwrap_err()
            .code(),
        Code::Internal
    );

    // A hang never answers: the caller's deadline ends it.
    faults
        .set_fault(with_bearer(fault("", FaultAction::Hang, 0), ADMIN_TOKEN))
        .await
        .unwrap_err(); // a node-wide fault has no shard
    let node_hang = Fault {
        tenant: String::new(),
        has_shard: false,
        shard: 0,
        action: FaultAction::Hang as i32,
        delay_ms: 0,
        cross_region: false,
    };
    faults
        .set_fault(with_bearer(node_hang, ADMIN_TOKEN))
        .await
        .unwrap();
    let mut req = tonic::Request::new(search_req("b", "alpha"));
    req.set_timeout(Duration::from_millis(300));
    let err = c.search_shard(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    faults
        .clear_fault(with_bearer(
            ClearFaultRequest {
                all: true,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    assert!(search(&mut c, search_req("a", "alpha")).await.is_ok());
    assert!(search(&mut c, search_req("b", "alpha")).await.is_ok());
}

#[tokio::test]
async fn faults_are_off_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.path().display().to_string()])
    .collect();
    let node = Proc::spawn("tandem-index-node", &args).unwrap();
    let mut faults =
        FaultInjectionClient::with_interceptor(node.channel().await, tandem_e2e::internal());
    let err = faults
        .list_faults(with_bearer(Default::default(), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn bad_input_gets_clear_statuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    ingest(&mut c, "t", 0, 1, sample_docs("en", 200))
        .await
        .unwrap();

    // Strict syntax errors quote the parser; the same text is fine leniently.
    for text in ["title:(tar", "\"unclosed phrase", "nosuchfield:tar"] {
        let mut strict = search_req("t", text);
        strict.strict = true;
        let err = search(&mut c, strict).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{text}");
        assert!(
            err.message().contains("invalid query syntax"),
            "{}",
            err.message()
        );
        assert!(
            search(&mut c, search_req("t", text)).await.is_ok(),
            "lenient {text}"
        );
    }
    let lenient = search(&mut c, search_req("t", "files: (list \"directory"))
        .await
        .unwrap();
    assert!(lenient.total_hits > 0, "a search box query finds something");

    let mut unknown = search_req("t", "x");
    unknown.shard = 7;
    assert_eq!(
        search(&mut c, unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        search(&mut c, search_req("nobody", "x"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let mut big = search_req("t", "x");
    big.top_k = 1001;
    assert_eq!(
        search(&mut c, big).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let mut bad_filter = search_req("t", "x");
    bad_filter.filters = vec!["nofield".into()];
    assert_eq!(
        search(&mut c, bad_filter).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let mut bad_boost = search_req("t", "x");
    bad_boost.boosts = HashMap::from([("a".to_string(), f32::NAN)]);
    assert_eq!(
        search(&mut c, bad_boost).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Unsafe tenant ids: refused, nothing created on disk.
    let long = "a".repeat(300);
    for tenant in ["../x", "", long.as_str(), "a/b"] {
        let err = c
            .create_shard(CreateShardRequest {
                tenant: tenant.into(),
                shard: 0,
                language: "en".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{tenant:?}");
        let err = ingest(&mut c, tenant, 0, 1, vec![doc("a", "b", "c")])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{tenant:?}");
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir.path().join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, vec!["t"]);
    assert!(!dir.path().join("x").exists());

    // Malformed and oversized batches: refused whole.
    let mut malformed = vec![doc("ok", "fine", "fine")];
    malformed.push(Document {
        attrs_json: "[1,2]".into(),
        ..doc("bad", "b", "b")
    });
    let err = ingest(&mut c, "t", 0, 2, malformed).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let too_many: Vec<Document> = (0..10_001)
        .map(|i| doc(&format!("d{i}"), "x", "y"))
        .collect();
    assert_eq!(
        ingest(&mut c, "t", 0, 2, too_many)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let huge = vec![doc("huge", "x", &"word ".repeat(7 * 1024 * 1024))];
    assert_eq!(
        ingest(&mut c, "t", 0, 2, huge).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        ingest(
            &mut c,
            "t",
            0,
            2,
            vec![doc("z", "x", "y"), doc("z", "x", "y")]
        )
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument,
        "one id twice in a batch"
    );
    assert_eq!(
        ingest(&mut c, "t", 0, 2, vec![doc("", "x", "y")])
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let info = c
        .get_shard_info(ShardRef {
            tenant: "t".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.num_docs, info.applied_seq),
        (200, 1),
        "nothing applied"
    );

    // Creating an existing shard with another language is a conflict.
    let err = c
        .create_shard(CreateShardRequest {
            tenant: "t".into(),
            shard: 0,
            language: "es".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn sigterm_reports_not_serving_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_index_node("n1", dir.path(), &["--drain-grace-ms", "2000"]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    let mut health = HealthClient::new(node.channel().await);
    node.signal("TERM");
    // During the grace period the node still answers, but says NOT_SERVING.
    let mut saw_not_serving = false;
    for _ in 0..100 {
        let status = health
            .check(HealthCheckRequest {
                service: "tandem.index/t/0".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok();
        if status == Some(ServingStatus::NotServing as i32) {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_not_serving);
    assert!(
        search(&mut c, search_req("t", "x")).await.is_ok(),
        "in-flight work still served"
    );
    assert!(node.wait(), "clean exit");
}

#[tokio::test]
async fn metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;
    ingest(&mut c, "t", 0, 1, vec![doc("a", "alpha", "x")])
        .await
        .unwrap();
    search(&mut c, search_req("t", "alpha")).await.unwrap();
    let _ = search(&mut c, search_req("t", "x")).await;
    let mut missing = search_req("t", "x");
    missing.shard = 9;
    let _ = search(&mut c, missing).await;
    let text = node.scrape();
    for needle in [
        "grpc_server_handled_total{grpc_service=\"tandem.v1.IndexNode\",grpc_method=\"SearchShard\",grpc_code=\"OK\"}",
        "grpc_code=\"NotFound\"",
        "grpc_server_handling_seconds_bucket",
        "index_search_seconds",
        "index_docs_ingested_total 1",
        "index_searcher_cache_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// Server reflection in both versions (grpcurl 1.8 speaks v1alpha) lists
/// the services this node serves, and no other tandem service.
#[tokio::test]
async fn reflection_lists_the_services_served_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(node.channel().await);
    let answer = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner()
        .message()
        .await
        .expect("an answer")
        .expect("a message");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for served in [
        "tandem.v1.IndexNode",
        "tandem.v1.FaultInjection",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == served), "{served} in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "tandem.v1.Search"), "{names:?}");
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let answer = v1::server_reflection_client::ServerReflectionClient::new(node.channel().await)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1")
        .into_inner()
        .message()
        .await
        .expect("an answer")
        .expect("a message");
    assert!(
        matches!(
            answer.message_response,
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(ref l))
                if l.service.iter().any(|s| s.name == "tandem.v1.IndexNode")
        ),
        "{answer:?}"
    );
}

/// The node API answers only tandem's own processes: a call without the
/// internal token, or with another one, is UNAUTHENTICATED and changes
/// nothing (an anonymous ingest at a huge sequence number once made the
/// shard drop every later write as a duplicate); health stays open.
#[tokio::test]
async fn node_api_calls_without_the_internal_token_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &[]).unwrap();
    let mut c = client(&node).await;
    create(&mut c, "t", 0, "en").await;

    let mut anonymous = IndexNodeClient::new(node.channel().await);
    let listed = anonymous
        .list_shards(ListShardsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::Unauthenticated, "{listed:?}");
    assert!(!listed.message().contains(tandem_e2e::INTERNAL_TOKEN));
    let forged = InternalToken::new("not-the-cluster-internal-token").unwrap();
    let mut impostor = IndexNodeClient::with_interceptor(node.channel().await, forged);
    let evil = || IngestRequest {
        tenant: "t".into(),
        shard: 0,
        seq: 1_000_000_000_000,
        upserts: vec![doc("evil", "evil", "evil")],
        ..Default::default()
    };
    for result in [
        anonymous.ingest(evil()).await,
        impostor.ingest(evil()).await,
    ] {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }

    // Nothing was applied: the next real write is sequence number 1.
    let ack = ingest(&mut c, "t", 0, 1, vec![doc("a", "kettle", "kettle")])
        .await
        .unwrap();
    assert_eq!((ack.applied_seq, ack.upserted), (1, 1));
    assert_eq!(
        shard_health(&node, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
}

/// A node without an internal token refuses to start rather than serve an
/// open API.
#[test]
fn a_node_without_an_internal_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(tandem_e2e::bin_path("tandem-index-node"))
        .args(["serve", "--node-id", "n1", "--listen", "127.0.0.1:0"])
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove(tandem_common::internal::INTERNAL_TOKEN_ENV)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no internal token"), "{stderr}");
}

/// `--health-listen` serves `grpc.health.v1` alone, without credentials
/// (kubelet probes): the node's status is there, its API is not.
#[tokio::test]
async fn the_health_only_listener_answers_health_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_index_node("n1", dir.path(), &["--health-listen", "127.0.0.1:0"]).unwrap();
    let addr = node
        .health
        .expect("the readiness line names the health address");
    assert_ne!(addr, node.grpc);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let api = IndexNodeClient::with_interceptor(channel, tandem_e2e::internal())
        .list_shards(ListShardsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(api.code(), Code::Unimplemented, "{api:?}");
}
