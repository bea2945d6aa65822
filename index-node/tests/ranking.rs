//! Hits come best first, and equal scores in id order: the order
//! `ShardSearchResponse` promises, which lets a router relay a lone shard's
//! hits without reading them. Tantivy alone would break ties by where a
//! document sits in the index, which differs between replicas.

use tandem_index_node::shard::{SearchParams, Shard, ShardKey};
use tandem_proto::v1::Document;

fn doc(id: &str, body: &str) -> Document {
    Document {
        id: id.into(),
        title: "page".into(),
        body: body.into(),
        ..Default::default()
    }
}

#[test]
fn equal_scores_come_in_id_order_after_better_scores() {
    let dir = tempfile::tempdir().unwrap();
    let key = ShardKey {
        tenant: "t".into(),
        shard: 0,
    };
    let shard = Shard::create(dir.path(), key, "en").unwrap();
    // Written in reverse id order, so that index order and id order differ;
    // "doc-best" mentions the term twice and outranks the three equal ones.
    let docs = [
        doc("doc-c", "tar archive"),
        doc("doc-b", "tar archive"),
        doc("doc-best", "tar tar archive"),
        doc("doc-a", "tar archive"),
    ];
    shard.load_batch(1, &docs, &[]).unwrap();

    let params = SearchParams {
        query: "tar".into(),
        top_k: 10,
        ..Default::default()
    };
    let hits = shard.search(&params).unwrap().hits;
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["doc-best", "doc-a", "doc-b", "doc-c"]);
    assert!(hits[0].score > hits[1].score);
    assert!(hits[1..].iter().all(|h| h.score == hits[1].score));
}
