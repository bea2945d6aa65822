//! Ranking quality: recall@10, MRR and nDCG@10 of the index-node's ranking
//! recipes on the tldr known-item set and on Cranfield's development split
//! (when `../shared/data/cranfield` or `TANDEM_CRANFIELD` is there), and
//! what each costs: wall time per query, in process, one thread, top 100
//! without snippets (with the model: including its in-process lookup).
//!
//! ```sh
//! cargo bench -p tandem-benches --bench ranking
//! BENCH_RANKING_GRID=1 cargo bench -p tandem-benches --bench ranking   # the tuning grid (dev split)
//! ```

use tandem_benches::ranking::{
    build_shard, cranfield, evaluate, known_items, tldr_en_docs, tldr_en_model, Judged,
};
use tandem_index_node::ranking::{Ranking, TextFields};
use tandem_index_node::shard::Shard;
use tandem_model_node::TenantModel;

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let tldr = build_shard(&tmp.path().join("tldr"), "en", &tldr_en_docs()?)?;
    let model = tldr_en_model()?;
    let cranfield_set = match cranfield()? {
        Some((docs, set)) => Some((
            build_shard(&tmp.path().join("cranfield"), "en", &docs)?,
            set,
        )),
        None => None,
    };
    if std::env::var_os("BENCH_RANKING_GRID").is_some() {
        let mut sets = vec![("tldr-dev", &tldr, known_items(Some("dev"))?)];
        if let Some((shard, set)) = &cranfield_set {
            sets.push(("cranfield-dev", shard, set.clone()));
        }
        return grid(&sets);
    }
    let recipes = [
        (
            "plain BM25 (one combined field)",
            Ranking::PLAIN_BM25,
            false,
        ),
        (
            "previous: title and body apart",
            Ranking::TITLE_AND_BODY,
            false,
        ),
        ("previous + model boosts", Ranking::TITLE_AND_BODY, true),
        ("tandem ranking", Ranking::DEFAULT, false),
        ("tandem ranking + model boosts", Ranking::DEFAULT, true),
    ];
    for (name, set) in [
        (
            "tldr known items, dev split (tuned on)",
            known_items(Some("dev"))?,
        ),
        ("tldr known items, test split", known_items(Some("test"))?),
    ] {
        table(name, &tldr, &set, &recipes, Some(&model));
    }
    match &cranfield_set {
        Some((shard, set)) => {
            let recipes: Vec<_> = recipes.iter().filter(|r| !r.2).copied().collect();
            table("Cranfield, development split", shard, set, &recipes, None);
        }
        None => println!("\nCranfield not found: set TANDEM_CRANFIELD to its directory"),
    }
    Ok(())
}

fn table(
    name: &str,
    shard: &Shard,
    set: &[Judged],
    recipes: &[(&str, Ranking, bool)],
    model: Option<&TenantModel>,
) {
    println!("\n### {name} ({} queries)\n", set.len());
    println!("| ranking | recall@10 | MRR | nDCG@10 | µs per query |\n|---|---|---|---|---|");
    for (label, ranking, boosted) in recipes {
        let started = std::time::Instant::now();
        let s = evaluate(shard, set, *ranking, if *boosted { model } else { None });
        let micros = started.elapsed().as_secs_f64() * 1e6 / set.len().max(1) as f64;
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {micros:.0} |",
            s.recall_at_10, s.mrr, s.ndcg_at_10
        );
    }
}

/// Every combination of the features' weights on the tuning sets (the
/// tldr dev split and, when present, Cranfield's development split).
fn grid(sets: &[(&str, &Shard, Vec<Judged>)]) -> anyhow::Result<()> {
    println!("pair_weight slop  set  scores");
    for pair_weight in [0.0, 0.25, 0.5, 0.75, 1.0, 1.5] {
        for pair_slop in [1, 2, 3] {
            let ranking = Ranking {
                fields: TextFields::Combined,
                pair_weight,
                pair_slop,
            };
            for (name, shard, set) in sets {
                let s = evaluate(shard, set, ranking, None);
                println!("{pair_weight:>11} {pair_slop:>4}  {name}  {s}");
            }
        }
    }
    Ok(())
}
