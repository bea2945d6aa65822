//! The ranking's floor on the tldr known-item set (`data/eval`): every
//! third query of the test split, through the index-node's own shard code.
//! The full table, and how the weights were chosen, is in
//! `docs/benchmarks.md#ranking` (`cargo bench -p tandem-benches --bench ranking`).

use tandem_benches::ranking::{build_shard, evaluate, known_items, tldr_en_docs, tldr_en_model};
use tandem_index_node::ranking::Ranking;

#[test]
fn default_ranking_finds_the_page_and_the_model_never_hurts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shard =
        build_shard(tmp.path(), "en", &tldr_en_docs().expect("sample pages")).expect("shard");
    let set: Vec<_> = known_items(Some("test"))
        .expect("known items")
        .into_iter()
        .step_by(3)
        .collect();
    assert!(set.len() > 1000, "{} queries", set.len());

    let plain = evaluate(&shard, &set, Ranking::PLAIN_BM25, None);
    let previous = evaluate(&shard, &set, Ranking::TITLE_AND_BODY, None);
    let tandem = evaluate(&shard, &set, Ranking::DEFAULT, None);
    let model = tldr_en_model().expect("model");
    let boosted = evaluate(&shard, &set, Ranking::DEFAULT, Some(&model));
    eprintln!("plain    {plain}\nprevious {previous}\ntandem   {tandem}\nboosted  {boosted}");

    // A floor no ranking reaches by luck (a random page of 6,753 has an
    // MRR near 0.001), and one the title-and-body ranking of schema
    // version 1 does not reach.
    assert!(tandem.recall_at_10 >= 0.95, "{tandem}");
    assert!(tandem.mrr >= 0.88, "{tandem}");
    assert!(previous.mrr < 0.8, "{previous}");
    // At least as good as plain BM25 over the same combined field.
    assert!(tandem.mrr >= plain.mrr, "{tandem} vs {plain}");
    assert!(
        tandem.recall_at_10 >= plain.recall_at_10,
        "{tandem} vs {plain}"
    );
    // The model's boosts never make it worse (beyond a query or two).
    assert!(boosted.mrr >= tandem.mrr - 0.003, "{boosted} vs {tandem}");
    assert!(
        boosted.recall_at_10 >= tandem.recall_at_10 - 0.003,
        "{boosted} vs {tandem}"
    );
}
