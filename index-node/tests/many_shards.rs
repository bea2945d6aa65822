//! One node, 1,200 tenant shards, at most 64 open at once: memory and file
//! handles are bounded by the open-shard cache, not by the number of tenants.

use std::sync::Arc;

use tandem_index_node::registry::ShardRegistry;
use tandem_index_node::shard::{SearchParams, ShardKey};
use tandem_index_node::writer::WriterConfig;
use tandem_proto::v1::Document;

const TENANTS: u32 = 1_200;
const MAX_OPEN: u64 = 64;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hosts_1200_shards_with_bounded_open_files() {
    // On tmpfs when there is one: this test is about open files and memory,
    // and 2,400 fsyncs on a slow disk would dominate its run time.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let (health, _service) = tonic_health::server::health_reporter();
    let registry = Arc::new(ShardRegistry::new(
        dir.path(),
        MAX_OPEN,
        health,
        WriterConfig::default(),
    ));
    let fds_before = open_fds();

    let reg = registry.clone();
    tokio::task::spawn_blocking(move || {
        for t in 0..TENANTS {
            let key = ShardKey {
                tenant: format!("tenant-{t}"),
                shard: 0,
            };
            let shard = reg.create(&key, "en").unwrap();
            // Writing is the expensive part of this test; every tenth
            // tenant gets a document, the rest stay empty but hosted.
            if t % 10 != 0 {
                continue;
            }
            let doc = Document {
                id: format!("doc-{t}"),
                title: format!("page of tenant {t}"),
                body: format!("unique{t} common words"),
                ..Default::default()
            };
            // Straight into the index: this test is about the cache of
            // open shards, not the write pipeline (whose shards stay open).
            shard.load_batch(1, &[doc], &[]).unwrap();
        }
        // Every tenant answers with its own document, in two passes so the
        // cache has to evict and reopen.
        for _pass in 0..2 {
            for t in (0..TENANTS).rev() {
                let key = ShardKey {
                    tenant: format!("tenant-{t}"),
                    shard: 0,
                };
                let params = SearchParams {
                    query: format!("unique{t}"),
                    top_k: 10,
                    ..Default::default()
                };
                let hits = reg.get(&key).unwrap().search(&params).unwrap();
                if t % 10 == 0 {
                    assert_eq!(hits.hits.len(), 1, "tenant {t}");
                    assert_eq!(hits.hits[0].id, format!("doc-{t}"));
                } else {
                    assert!(hits.hits.is_empty(), "tenant {t} sees only its own shard");
                }
            }
        }
    })
    .await
    .unwrap();

    assert_eq!(registry.known().len(), TENANTS as usize);
    let open = registry.open_count();
    assert!(open <= MAX_OPEN, "{open} shards open, cap {MAX_OPEN}");
    // Each open shard holds a few files (mmapped segments close their fds);
    // 1,200 open shards would need thousands.
    let fds = open_fds().saturating_sub(fds_before);
    assert!(
        fds < 20 * MAX_OPEN as usize,
        "{fds} extra fds for {open} open shards"
    );
}
