//! Writes and replication end to end: the public `Documents.Write` of
//! either region's router, leaders that order and log writes, followers in
//! both regions that pull and apply them, consistency tokens, request ids,
//! refusals of bad writes, and durability across SIGKILL.

use std::time::Duration;

use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::with_bearer;
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{Document, SearchRequest, ShardInfo, ShardRef, WriteRequest, WriteResponse};
use tonic::Code;

fn tenant() -> TenantSpec {
    TenantSpec {
        id: "t",
        home: "r1",
        active_active: true,
        shards: vec![vec!["a1", "b1"], vec!["a2", "b1"]],
        models: vec![],
    }
}

fn doc(id: &str, body: &str) -> Document {
    Document {
        id: id.into(),
        title: id.into(),
        body: body.into(),
        ..Default::default()
    }
}

async fn write(
    cluster: &Cluster,
    region: usize,
    key: &str,
    req: WriteRequest,
) -> Result<WriteResponse, tonic::Status> {
    let mut c = DocumentsClient::new(cluster.routers[region].channel().await);
    c.write(with_bearer(req, key)).await.map(|r| r.into_inner())
}

async fn hits(cluster: &Cluster, region: usize, query: &str, token: &str) -> u64 {
    let t = &cluster.tenants[0];
    let req = SearchRequest {
        tenant: t.id.into(),
        query: query.into(),
        top_k: 100,
        consistency_token: token.into(),
        ..Default::default()
    };
    cluster
        .search_with(region, req, &t.key())
        .await
        .expect("search")
        .total_hits
}

async fn info(cluster: &Cluster, node: &str, shard: u32, digest: bool) -> ShardInfo {
    let mut c = IndexNodeClient::with_interceptor(
        cluster.node(node).proc.channel().await,
        tandem_e2e::internal(),
    );
    c.get_shard_info(ShardRef {
        tenant: "t".into(),
        shard,
        digest,
        digest_at_seq: 0,
    })
    .await
    .expect("shard info")
    .into_inner()
}

/// Log positions of both shards' leaders: a refused write must not move them.
async fn leader_logs(cluster: &Cluster) -> (u64, u64) {
    (
        info(cluster, "a1", 0, false).await.log_seq,
        info(cluster, "a2", 1, false).await.log_seq,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_either_region_replicate_and_read_back() {
    let nodes = [("a1", "r1"), ("a2", "r1"), ("b1", "r2")];
    let cluster = Cluster::start(&nodes, vec![tenant()], 20).await;
    let t = cluster.tenants[0].clone();
    let wkey = t.write_key();

    // A write through the paired region's router, to leaders in r1.
    let docs: Vec<Document> = (0..10)
        .map(|i| doc(&format!("z{i}"), "zorblax quux"))
        .collect();
    let first = WriteRequest {
        tenant: "t".into(),
        upserts: docs.clone(),
        request_id: "req-1".into(),
        ..Default::default()
    };
    let token = write(&cluster, 1, &wkey, first.clone())
        .await
        .expect("write")
        .consistency_token;
    assert!(!token.is_empty());
    // Readable at once with the token, in both regions.
    assert_eq!(hits(&cluster, 0, "zorblax", &token).await, 10);
    assert_eq!(hits(&cluster, 1, "zorblax", &token).await, 10);
    // And without it once the followers have caught up.
    let mut seen = 0;
    for _ in 0..100 {
        seen = hits(&cluster, 1, "zorblax", "").await;
        if seen == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 10, "followers never caught up");

    // A retried request_id is applied once and answers the first result.
    let before = leader_logs(&cluster).await;
    let again = write(&cluster, 0, &wkey, first.clone())
        .await
        .expect("retry");
    assert_eq!(again.consistency_token, token);
    assert_eq!(leader_logs(&cluster).await, before);
    let mut reused = first.clone();
    reused.upserts.truncate(3);
    assert_eq!(
        write(&cluster, 0, &wkey, reused).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Every bad write is refused with a clear status and changes nothing.
    let search_key = t.key();
    let ok_batch = WriteRequest {
        tenant: "t".into(),
        upserts: vec![doc("fine", "x")],
        ..Default::default()
    };
    let bad = |f: &dyn Fn(&mut WriteRequest)| {
        let mut r = ok_batch.clone();
        f(&mut r);
        r
    };
    let refusals: Vec<(WriteRequest, &str, Code)> = vec![
        (
            ok_batch.clone(),
            search_key.as_str(),
            Code::PermissionDenied,
        ),
        (
            bad(&|r| r.tenant = "nobody".into()),
            wkey.as_str(),
            Code::PermissionDenied,
        ),
        (ok_batch.clone(), "not-a-key", Code::Unauthenticated),
        (
            bad(&|r| r.upserts.clear()),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.upserts[0].id = String::new()),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.upserts[0].id = "x".repeat(600)),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.upserts[0].attrs_json = "{nope".into()),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.deletes.push("fine".into())),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.upserts[0].title = "t".repeat(20_000)),
            wkey.as_str(),
            Code::InvalidArgument,
        ),
        (
            bad(&|r| r.upserts[0].body = "b".repeat(5 << 20)),
            wkey.as_str(),
            Code::OutOfRange,
        ),
    ];
    for (request, key, code) in refusals {
        let status = write(&cluster, 0, key, request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            !status.message().contains("127.0.0.1"),
            "{}",
            status.message()
        );
    }
    let mut c = DocumentsClient::new(cluster.routers[0].channel().await);
    let anonymous = c.write(ok_batch.clone()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(
        leader_logs(&cluster).await,
        before,
        "a refused write changed a shard"
    );

    // Deletes, read back with their own token.
    let delete = WriteRequest {
        tenant: "t".into(),
        deletes: (0..5).map(|i| format!("z{i}")).collect(),
        ..Default::default()
    };
    let token = write(&cluster, 0, &wkey, delete)
        .await
        .expect("delete")
        .consistency_token;
    assert_eq!(hits(&cluster, 1, "zorblax", &token).await, 5);

    // `tandem ingest` of a JSON-lines file, through the paired region.
    let file = cluster.dir.path().join("pages.jsonl");
    let lines: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"id":"file-{i}","title":"t{i}","body":"quince jam","lang":"en"}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let plan = tandem_cli::ingest::IngestPlan {
        tenant: "t".into(),
        write_key: wkey.clone(),
        batch_size: 10,
        progress: false,
        first_line: 1,
    };
    let report =
        tandem_cli::ingest::ingest_file(&cluster.routers[1].grpc.to_string(), &plan, &file)
            .await
            .expect("ingest");
    assert_eq!((report.documents, report.batches), (25, 3));
    // Each batch's token covers the shards it touched; search until all show.
    let mut found = 0;
    for _ in 0..100 {
        found = hits(&cluster, 0, "quince", "").await;
        if found == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, 25);
    let resumed = tandem_cli::ingest::IngestPlan {
        first_line: 21,
        ..plan
    };
    let report =
        tandem_cli::ingest::ingest_file(&cluster.routers[0].grpc.to_string(), &resumed, &file)
            .await
            .expect("resume");
    assert_eq!(
        report.documents, 5,
        "--start-line 21 skips the first 20 lines"
    );

    // Leader and follower hold the same documents at the same sequence.
    for (shard, leader) in [(0, "a1"), (1, "a2")] {
        let tip = info(&cluster, leader, shard, false).await.log_seq;
        cluster.wait_applied(leader, "t", shard, tip).await;
        cluster.wait_applied("b1", "t", shard, tip).await;
        let (l, f) = (
            info(&cluster, leader, shard, true).await,
            info(&cluster, "b1", shard, true).await,
        );
        assert_eq!(
            (l.applied_seq, &l.digest),
            (f.applied_seq, &f.digest),
            "shard {shard}"
        );
        assert_eq!(f.lag_ops, 0);
        assert_eq!(f.leader, leader);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_write_and_a_killed_follower_catches_up() {
    let mut cluster = Cluster::leader_and_follower().await;
    let wkey = cluster.tenants[0].write_key();

    // Writes stream in; the leader is SIGKILLed in the middle.
    let mut acked = Vec::new();
    let mut failed_fast = false;
    for i in 0..60 {
        if i == 30 {
            cluster.node("a1").proc.signal("KILL");
        }
        let req = WriteRequest {
            tenant: "t".into(),
            upserts: vec![doc(&format!("k{i}"), "kumquat")],
            request_id: format!("k{i}"),
            ..Default::default()
        };
        match write(&cluster, 0, &wkey, req).await {
            Ok(_) => acked.push(i),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
                failed_fast = true;
            }
        }
    }
    assert!(failed_fast && acked.len() >= 30, "{acked:?}");
    // Searches go on from the follower while the leader is down.
    assert!(hits(&cluster, 1, "kumquat", "").await <= acked.len() as u64);

    cluster.restart_index_node("a1");
    let tip = info(&cluster, "a1", 0, false).await.log_seq;
    cluster.wait_applied("a1", "t", 0, tip).await;
    // Every acknowledged write survived the SIGKILL.
    assert_eq!(hits(&cluster, 0, "kumquat", "").await as usize, acked.len());

    // A follower killed and restarted catches up with what it missed.
    cluster.node("b1").proc.signal("KILL");
    let req = WriteRequest {
        tenant: "t".into(),
        upserts: (0..5)
            .map(|i| doc(&format!("late{i}"), "kumquat"))
            .collect(),
        ..Default::default()
    };
    let token = write(&cluster, 0, &wkey, req)
        .await
        .expect("write")
        .consistency_token;
    cluster.restart_index_node("b1");
    assert_eq!(
        hits(&cluster, 1, "kumquat", &token).await as usize,
        acked.len() + 5
    );
    let tip = info(&cluster, "a1", 0, false).await.log_seq;
    cluster.wait_applied("a1", "t", 0, tip).await;
    cluster.wait_applied("b1", "t", 0, tip).await;
    let (l, f) = (
        info(&cluster, "a1", 0, true).await,
        info(&cluster, "b1", 0, true).await,
    );
    assert_eq!(l.digest, f.digest, "{l:?} {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_follower_takes_writes_and_the_old_leader_is_fenced() {
    let mut cluster = Cluster::leader_and_follower().await;
    let wkey = cluster.tenants[0].write_key();
    let batch = |id: &str| WriteRequest {
        tenant: "t".into(),
        upserts: vec![doc(id, "plum")],
        request_id: id.into(),
        ..Default::default()
    };
    write(&cluster, 0, &wkey, batch("before"))
        .await
        .expect("write");
    let tip = info(&cluster, "a1", 0, false).await.log_seq;
    cluster.wait_applied("b1", "t", 0, tip).await;
    let stale = cluster.dir.path().join("stale-catalog.toml");
    std::fs::copy(&cluster.catalog_path, &stale).expect("copy catalog");

    // The leader dies: writes fail fast, searches go on.
    cluster.node("a1").proc.signal("KILL");
    let status = write(&cluster, 0, &wkey, batch("lost")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("leader of shard 0"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("127.0.0.1"));
    assert_eq!(hits(&cluster, 1, "plum", "").await, 1);

    // The operator's commands carry the cluster's internal token.
    tandem_cli::operator::use_internal_token(tandem_e2e::internal());
    let promoted = tandem_cli::promote::promote(&cluster.catalog_path, "t", 0, "b1", false)
        .await
        .expect("promote");
    assert_eq!((promoted.to.as_str(), promoted.epoch), ("b1", 2));
    cluster.wait_for_catalog().await;
    let mut token = None;
    for _ in 0..100 {
        if let Ok(w) = write(&cluster, 0, &wkey, batch("after")).await {
            token = Some(w.consistency_token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = token.expect("the new leader never took a write");
    assert_eq!(hits(&cluster, 0, "plum", &token).await, 2);

    // The old leader comes back with the catalog it had: it learns the new
    // epoch from its peer and refuses a write of the old one.
    cluster.restart_index_node_with("a1", &stale);
    let mut c = IndexNodeClient::with_interceptor(
        cluster.node("a1").proc.channel().await,
        tandem_e2e::internal(),
    );
    let stale_write = tandem_proto::v1::IngestRequest {
        tenant: "t".into(),
        shard: 0,
        upserts: vec![doc("split-brain", "plum")],
        epoch: 1,
        ..Default::default()
    };
    let refused = c.ingest(stale_write).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("has seen epoch 2"),
        "{}",
        refused.message()
    );

    // With the current catalog it follows the new leader and matches it.
    cluster.restart_index_node("a1");
    let verdicts = tandem_cli::verify::verify(
        &tandem_catalog::Catalog::load_file(&cluster.catalog_path).unwrap(),
        "t",
        Duration::from_secs(20),
    )
    .await
    .expect("verify");
    assert!(verdicts.iter().all(|v| v.equal), "{verdicts:?}");
}
