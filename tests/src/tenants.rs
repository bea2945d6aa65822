//! `tandem tenant create|delete` against a running `tandem dev` cluster,
//! through the command as its users run it: a new tenant is placed,
//! keyed, written and searched in both regions; deleting it asks for
//! `--yes`, then removes it from the catalog, its shards from every node,
//! its snapshots and its models, and says so; a second delete finds
//! nothing left.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_client::Topology;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::{DeleteTenantRequest, ShardRef};

use crate::cli::{fails, ok, run, stdout};

/// The tenant the check creates and deletes.
const TENANT: &str = "shop";
/// The model-nodes of `tandem dev`.
const MODEL_NODES: [&str; 2] = ["use1-model-1", "use2-model-1"];

/// Runs the whole lifecycle on the cluster of `topology` (a file), whose
/// data directory is `data`.
pub async fn assert_tenant_lifecycle(cwd: &Path, topology: &str, data: &Path) {
    let t = topology;
    let create = |extra: &[&'static str]| {
        let args: Vec<&str> = [
            "tenant",
            "create",
            "--tenant",
            TENANT,
            "--home",
            "us-east-1",
            "--topology",
            t,
        ]
        .into();
        [&args[..], extra].concat()
    };
    let out = ok(cwd, &create(&["--shards", "2"]));
    assert!(out.contains("search key (shown once): shop-"), "{out}");
    assert!(out.contains("every replica of shop serves"), "{out}");
    let catalog = std::fs::read_to_string(data.join("catalog.toml")).expect("catalog");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("search key (shown once): "))
        .expect("a key")
        .trim();
    assert!(!catalog.contains(key), "only the key's hash is stored");
    let again = fails(cwd, &create(&[]));
    assert!(again.contains("already exists"), "{again}");

    // Writes (the topology now holds its write key) and searches in both
    // regions (and its search key).
    let docs = cwd.join("shop.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id": "item-{i}", "title": "Lamp {i}", "body": "a brass desk lamp, model {i}"}}"#))
        .collect();
    std::fs::write(&docs, lines.join("\n")).expect("docs");
    let docs = docs.to_str().expect("utf-8 path");
    ok(
        cwd,
        &[
            "ingest",
            "--tenant",
            TENANT,
            "--quiet",
            "--topology",
            t,
            docs,
        ],
    );
    for region in ["us-east-1", "us-east-2"] {
        let args = [
            "search",
            "--tenant",
            TENANT,
            "--region",
            region,
            "--topology",
            t,
            "brass lamp",
        ];
        let found = eventually(|| {
            let o = run(cwd, &args);
            o.status.success() && stdout(&o).starts_with("20 hits")
        });
        assert!(found, "{region}: {}", stdout(&run(cwd, &args)));
    }

    let topo = Topology::load(t).expect("topology");
    let token = InternalToken::new(&topo.internal_token).expect("token");
    let node = |id: &str| {
        let addr = topo.node(id).expect("node").addr.clone();
        let token = token.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("address")
                .connect()
                .await
                .expect("index node");
            IndexNodeClient::with_interceptor(channel, token)
        }
    };
    // A snapshot in the store, and a model artifact, for the delete to find.
    for shard in 0..2 {
        for id in ["use1-index-1", "use1-index-2"] {
            let _ = node(id)
                .await
                .create_snapshot(ShardRef {
                    tenant: TENANT.into(),
                    shard,
                    ..Default::default()
                })
                .await;
        }
    }
    assert!(
        data.join("snapshots").join(TENANT).exists(),
        "snapshots taken"
    );
    // A model version in the store, which both model-nodes pull.
    copy_dir(
        &data.join("snapshots/tldr-en/models"),
        &data.join("snapshots").join(TENANT).join("models"),
    );
    let pulled = |node: &str| data.join("models").join(node).join(TENANT);
    assert!(
        eventually(|| MODEL_NODES.iter().all(|n| pulled(n).exists())),
        "model-nodes pull the new tenant's model"
    );

    // A node refuses to drop a tenant its catalog still lists.
    let refused = node("use1-index-1")
        .await
        .delete_tenant(DeleteTenantRequest {
            tenant: TENANT.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let delete = |extra: &[&'static str]| {
        let args: Vec<&str> = ["tenant", "delete", "--tenant", TENANT, "--topology", t].into();
        [&args[..], extra].concat()
    };
    let err = fails(cwd, &delete(&[]));
    assert!(err.contains("pass --yes"), "{err}");
    let out = ok(cwd, &delete(&["--yes"]));
    for node in [
        "use1-index-1",
        "use1-index-2",
        "use2-index-1",
        "use2-index-2",
    ] {
        assert!(out.contains(&format!("  {node}: shard(s) ")), "{out}");
        assert!(
            !data.join(node).join("shards").join(TENANT).exists(),
            "{node}"
        );
    }
    assert!(out.contains("snapshot store file://"), "{out}");
    assert!(out.contains("model artifact(s) removed"), "{out}");
    assert!(!data.join("snapshots").join(TENANT).exists());
    assert!(
        eventually(|| MODEL_NODES.iter().all(|n| !pulled(n).exists())),
        "model-nodes serve the deleted tenant's model no more"
    );
    let catalog = std::fs::read_to_string(data.join("catalog.toml")).expect("catalog");
    assert!(!catalog.contains("\"shop\""), "{catalog}");
    let gone = fails(
        cwd,
        &[
            "search",
            "--tenant",
            TENANT,
            "--key",
            key,
            "--topology",
            t,
            "lamp",
        ],
    );
    assert!(gone.contains("Unauthenticated"), "{gone}");
    let out = ok(cwd, &delete(&["--yes"]));
    assert!(out.contains("is not in the catalog"), "{out}");
    assert!(out.contains("nothing was left on any node"), "{out}");
}

/// Whether `check` holds within ten seconds.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("model dir");
    for entry in std::fs::read_dir(from).expect("artifacts") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
