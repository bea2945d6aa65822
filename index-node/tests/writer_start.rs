//! A writer never starts on a stale instance of its shard: an instance the
//! open-shard cache opened before the shard's directory was swapped (as a
//! bootstrap swaps it) would carry its old reader and applied sequence
//! into the writer, which would then answer with the wrong applied
//! sequence and write on top of the wrong files.

use std::sync::Arc;

use tandem_index_node::registry::ShardRegistry;
use tandem_index_node::shard::ShardKey;
use tandem_index_node::writer::WriterConfig;
use tandem_proto::v1::Document;

fn doc(i: u64) -> Document {
    Document {
        id: format!("doc-{i}"),
        title: format!("page {i}"),
        body: "words".into(),
        ..Default::default()
    }
}

fn registry(dir: &std::path::Path) -> Arc<ShardRegistry> {
    let (health, _service) = tonic_health::server::health_reporter();
    Arc::new(ShardRegistry::new(dir, 4, health, WriterConfig::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_started_after_a_swap_sees_the_new_directory() {
    let (data, staged) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = ShardKey {
        tenant: "t".into(),
        shard: 0,
    };
    let (serving, other) = (registry(data.path()), registry(staged.path()));
    let key2 = key.clone();
    let (before, writer_seq, total) = tokio::task::spawn_blocking(move || {
        serving
            .create(&key2, "en")
            .unwrap()
            .load_batch(1, &[doc(1)], &[])
            .unwrap();
        // The newer copy, at sequence 3, built elsewhere.
        let newer = other.create(&key2, "en").unwrap();
        newer.load_batch(2, &[doc(2)], &[]).unwrap();
        newer.load_batch(3, &[doc(3)], &[]).unwrap();
        drop(newer);
        // A search has the old instance in the cache ...
        let before = serving.get(&key2).unwrap().applied_seq();
        // ... when the directory is swapped under it.
        let dir = key2.dir(data.path());
        std::fs::rename(&dir, dir.with_extension("replaced")).unwrap();
        std::fs::rename(key2.dir(staged.path()), &dir).unwrap();
        let writer = serving.writer(&key2).unwrap();
        let total = serving.get(&key2).unwrap().stats().0;
        (before, writer.shard.applied_seq(), total)
    })
    .await
    .unwrap();
    assert_eq!(before, 1);
    assert_eq!(writer_seq, 3, "the writer sees the directory as it is now");
    assert_eq!(total, 2, "and so do searches");
}
