//! A shard written by a build of schema version 1 (title and body only, no
//! combined `text` field, no version in its metadata) is rebuilt when a
//! current node opens it: every document, its applied sequence number and
//! its epoch survive, and it ranks and snippets like a new shard.

use tandem_index_node::schema::{build_schema, register_tokenizers, SCHEMA_VERSION};
use tandem_index_node::shard::{SearchParams, Shard, ShardKey, ShardMeta};
use tantivy::schema::{Schema, TantivyDocument};
use tantivy::Index;

/// Schema version 1: today's schema without the derived `text` field.
fn schema_v1() -> Schema {
    let mut builder = Schema::builder();
    for (_, entry) in build_schema("en").fields() {
        if entry.name() != "text" {
            builder.add_field(entry.clone());
        }
    }
    builder.build()
}

fn write_v1_shard(dir: &std::path::Path) {
    let index_dir = dir.join("index");
    std::fs::create_dir_all(&index_dir).unwrap();
    let index = Index::create_in_dir(&index_dir, schema_v1()).unwrap();
    register_tokenizers(&index, "en");
    let schema = index.schema();
    let f = |n: &str| schema.get_field(n).unwrap();
    let mut writer = index.writer::<TantivyDocument>(15_000_000).unwrap();
    for (id, title, body) in [
        (
            "tar",
            "tar",
            "Archiving utility. Extract a tar archive verbosely.",
        ),
        (
            "zip",
            "zip",
            "Package and compress files into a zip archive.",
        ),
        ("gone", "gone", "Deleted before the upgrade."),
    ] {
        let mut doc = TantivyDocument::default();
        doc.add_text(f("id"), id);
        doc.add_text(f("title"), title);
        doc.add_text(f("body"), body);
        doc.add_text(f("url"), format!("https://example.org/{id}"));
        let attrs = serde_json::json!({"platform": "common"});
        doc.add_object(
            f("attrs"),
            serde_json::from_value::<std::collections::BTreeMap<String, tantivy::schema::OwnedValue>>(attrs).unwrap(),
        );
        writer.add_document(doc).unwrap();
    }
    writer.commit().unwrap();
    writer.delete_term(tantivy::Term::from_field_text(f("id"), "gone"));
    let mut prepared = writer.prepare_commit().unwrap();
    prepared.set_payload("7");
    prepared.commit().unwrap();
    // Version 1 metadata had no `schema` key.
    std::fs::write(dir.join(ShardMeta::FILE), r#"{"language":"en","epoch":3}"#).unwrap();
}

#[test]
fn a_version_1_shard_is_rebuilt_on_open_and_keeps_everything() {
    let data = tempfile::tempdir().unwrap();
    let key = ShardKey {
        tenant: "t".into(),
        shard: 0,
    };
    let dir = key.dir(data.path());
    write_v1_shard(&dir);

    let shard = Shard::open(data.path(), key.clone()).unwrap();
    assert_eq!(shard.applied_seq(), 7);
    let meta: ShardMeta =
        serde_json::from_slice(&std::fs::read(dir.join(ShardMeta::FILE)).unwrap()).unwrap();
    assert_eq!((meta.schema, meta.epoch), (SCHEMA_VERSION, 3));
    assert!(!dir.join("index.old").exists() && !dir.join("index.upgrade").exists());

    let search = |query: &str, filters: Vec<String>| {
        let params = SearchParams {
            query: query.into(),
            top_k: 10,
            filters,
            snippets: true,
            ..Default::default()
        };
        shard.search(&params).unwrap()
    };
    let found = search("extract tar archive", Vec::new());
    let ids: Vec<&str> = found.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["tar", "zip"], "deleted documents stay deleted");
    assert!(found.hits[0].snippet.contains("<b>"), "{:?}", found.hits[0]);
    assert_eq!(found.hits[0].url, "https://example.org/tar");
    let filtered = search("archive", vec!["attrs.platform:common".into()]);
    assert_eq!(filtered.total_hits, 2, "attributes survive");

    // Opening again does nothing more.
    drop(shard);
    let again = Shard::open(data.path(), key).unwrap();
    assert_eq!(again.applied_seq(), 7);
}
