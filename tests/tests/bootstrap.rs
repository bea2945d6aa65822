//! Building replicas from snapshots: a new replica added while writes keep
//! coming (`tandem replica add`), and a wiped replica restored from an S3
//! snapshot store (a real moto server) while its leader is down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_catalog::Catalog;
use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::s3::Moto;
use tandem_e2e::with_bearer;
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{BootstrapRequest, Document, ShardInfo, ShardRef, ShardRole, WriteRequest};

fn spec() -> TenantSpec {
    TenantSpec {
        id: "t",
        home: "r1",
        active_active: true,
        shards: vec![vec!["a1", "b1"]],
        models: vec![],
    }
}

fn doc(id: String) -> Document {
    Document {
        title: id.clone(),
        body: "persimmon".into(),
        id,
        ..Default::default()
    }
}

async fn info(cluster: &Cluster, node: &str, digest: bool) -> ShardInfo {
    let mut c = IndexNodeClient::with_interceptor(
        cluster.node(node).proc.channel().await,
        tandem_e2e::internal(),
    );
    c.get_shard_info(ShardRef {
        tenant: "t".into(),
        shard: 0,
        digest,
        digest_at_seq: 0,
    })
    .await
    .expect("shard info")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_live_from_a_snapshot_and_removed() {
    let nodes = [("a1", "r1"), ("b1", "r2"), ("b2", "r2")];
    let mut cluster = Cluster::start(&nodes, vec![spec()], 200).await;
    // A node asked to build the replica remembers it across a restart.
    let mut b2 = IndexNodeClient::with_interceptor(
        cluster.node("b2").proc.channel().await,
        tandem_e2e::internal(),
    );
    b2.bootstrap(BootstrapRequest {
        tenant: "t".into(),
        shard: 0,
        language: "en".into(),
        leader: "a1".into(),
        epoch: 1,
    })
    .await
    .expect("bootstrap");
    cluster.restart_index_node("b2");
    assert_eq!(
        info(&cluster, "b2", false).await.role,
        ShardRole::Follower as i32
    );
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    // Writes keep coming while the replica is built.
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let channel = cluster.routers[0].channel().await;
        let key = cluster.tenants[0].write_key();
        tokio::spawn(async move {
            let mut c = DocumentsClient::new(channel);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let req = WriteRequest {
                    tenant: "t".into(),
                    upserts: (0..5).map(|j| doc(format!("live-{i}-{j}"))).collect(),
                    ..Default::default()
                };
                c.write(with_bearer(req, &key))
                    .await
                    .expect("write during bootstrap");
                written.fetch_add(5, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The operator's commands carry the cluster's internal token.
    tandem_cli::operator::use_internal_token(tandem_e2e::internal());
    let added = tandem_cli::replica::add(
        &cluster.catalog_path,
        "t",
        0,
        "b2",
        Duration::from_secs(60),
        false,
    )
    .await
    .expect("replica add");
    assert!(added.snapshot_bytes > 0);
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(written.load(Ordering::Relaxed) > 0);
    let catalog = Catalog::load_file(&cluster.catalog_path).unwrap();
    let replicas = &catalog.tenant("t").unwrap().shards[0].replicas;
    assert!(
        replicas.iter().any(|n| &*n.id == "b2"),
        "b2 is in the catalog"
    );
    let verdicts = tandem_cli::verify::verify(&catalog, "t", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        verdicts.iter().all(|v| v.equal && v.replicas.len() == 3),
        "{verdicts:?}"
    );

    tandem_cli::replica::remove(&cluster.catalog_path, "t", 0, "b2").expect("remove");
    assert!(
        tandem_cli::replica::remove(&cluster.catalog_path, "t", 0, "a1").is_err(),
        "not the leader"
    );
    let catalog = Catalog::load_file(&cluster.catalog_path).unwrap();
    assert_eq!(catalog.tenant("t").unwrap().shards[0].replicas.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_restored_from_an_s3_store_alone() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("tandem-snapshots");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("index.toml");
    std::fs::write(
        &config,
        format!(
            "snapshot_store = \"s3://tandem-snapshots/test\"\n\
             [snapshot_store_options]\n\
             aws_endpoint = \"{}\"\naws_allow_http = \"true\"\naws_region = \"us-east-1\"\n\
             aws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let flags = ["--config".to_string(), config.display().to_string()];
    let mut cluster = Cluster::start_full(
        &[("a1", "r1"), ("b1", "r2")],
        &[],
        vec![spec()],
        100,
        &flags,
    )
    .await;
    // The leader snapshots its shard into S3, then goes down.
    let mut leader = IndexNodeClient::with_interceptor(
        cluster.node("a1").proc.channel().await,
        tandem_e2e::internal(),
    );
    let snapshot = leader
        .create_snapshot(ShardRef {
            tenant: "t".into(),
            shard: 0,
            digest: false,
            digest_at_seq: 0,
        })
        .await
        .expect("snapshot")
        .into_inner();
    assert!(
        snapshot.location.contains("test/t/0/"),
        "{}",
        snapshot.location
    );
    let want = info(&cluster, "a1", true).await;
    assert_eq!(want.applied_seq, snapshot.seq);
    cluster.node("a1").proc.signal("KILL");

    // The follower loses its disk and comes back: it restores from the
    // store alone and matches what the leader had.
    cluster.node("b1").proc.signal("KILL");
    std::fs::remove_dir_all(&cluster.node("b1").data_dir).unwrap();
    cluster.restart_index_node("b1");
    let mut restored = info(&cluster, "b1", true).await;
    for _ in 0..200 {
        if restored.applied_seq == snapshot.seq {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        restored = info(&cluster, "b1", true).await;
    }
    assert_eq!(
        (restored.applied_seq, restored.num_docs),
        (want.applied_seq, want.num_docs)
    );
    assert_eq!(restored.digest, want.digest);
}
