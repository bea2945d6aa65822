//! Offline evaluation of the index-node's ranking, shared by the `ranking`
//! benchmark (the full table) and the floor test (`tests/ranking.rs`).
//!
//! Two sets:
//! - **tldr known items** (`data/eval/tldr-known-items.jsonl`, made by
//!   `make-known-items` from the English pages' descriptions, perturbed):
//!   one page per query, scored by that page's rank;
//! - **Cranfield** (its development split, read from
//!   `../shared/data/cranfield` or `TANDEM_CRANFIELD`; never copied into the
//!   repository): graded judgements, many relevant documents per query.
//!
//! Each query runs through the index-node's own shard code, in process, with
//! a [`Ranking`] recipe and optionally the model's boosts, exactly as the
//! index-node applies them (`score * (1 + weight)`).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use tandem_index_node::ranking::Ranking;
use tandem_index_node::shard::{SearchParams, Shard, ShardKey};
use tandem_model_node::TenantModel;
use tandem_proto::v1::Document;

use crate::repo_root;

/// Hits looked at per query (MRR counts ranks up to here).
pub const DEPTH: usize = 100;

/// Boosts asked of the model per query (what the router asks).
pub const MODEL_BOOSTS: u32 = 100;

/// One judged query: document id -> gain (> 0 is relevant).
#[derive(Clone, Debug)]
pub struct Judged {
    /// What is typed.
    pub query: String,
    /// Relevant documents and their gains.
    pub gains: HashMap<String, f64>,
}

/// Mean scores over a set of queries.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Queries scored.
    pub queries: usize,
    /// Share of the relevant documents found in the top 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first relevant document (0 beyond
    /// [`DEPTH`]).
    pub mrr: f64,
    /// Normalised discounted cumulative gain of the top 10 (gain `2^g - 1`).
    pub ndcg_at_10: f64,
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recall@10 {:.3}  MRR {:.3}  nDCG@10 {:.3}  ({} queries)",
            self.recall_at_10, self.mrr, self.ndcg_at_10, self.queries
        )
    }
}

/// Scores `ranking` (with the model's boosts if `model` is given) on `set`.
pub fn evaluate(
    shard: &Shard,
    set: &[Judged],
    ranking: Ranking,
    model: Option<&TenantModel>,
) -> Scores {
    let mut sum = Scores::default();
    for judged in set {
        let boosts = model
            .map(|m| {
                m.boosts(&judged.query, MODEL_BOOSTS as usize)
                    .boosts
                    .into_iter()
                    .map(|b| (b.doc, b.weight))
                    .collect()
            })
            .unwrap_or_default();
        let params = SearchParams {
            query: judged.query.clone(),
            top_k: DEPTH,
            boosts,
            ranking,
            ..SearchParams::default()
        };
        let ids: Vec<String> = match shard.search(&params) {
            Ok(found) => found.hits.into_iter().map(|h| h.id).collect(),
            Err(_) => Vec::new(),
        };
        let one = score_one(&ids, &judged.gains);
        sum.recall_at_10 += one.recall_at_10;
        sum.mrr += one.mrr;
        sum.ndcg_at_10 += one.ndcg_at_10;
        sum.queries += 1;
    }
    let n = sum.queries.max(1) as f64;
    Scores {
        queries: sum.queries,
        recall_at_10: sum.recall_at_10 / n,
        mrr: sum.mrr / n,
        ndcg_at_10: sum.ndcg_at_10 / n,
    }
}

/// The scores of one ranked list of ids against its judgements.
pub fn score_one(ranked: &[String], gains: &HashMap<String, f64>) -> Scores {
    let relevant = gains.values().filter(|g| **g > 0.0).count();
    let found = ranked
        .iter()
        .take(10)
        .filter(|id| gains.get(*id).is_some_and(|g| *g > 0.0))
        .count();
    let first = ranked
        .iter()
        .position(|id| gains.get(id).is_some_and(|g| *g > 0.0));
    let dcg = |gs: &mut dyn Iterator<Item = f64>| -> f64 {
        gs.take(10)
            .enumerate()
            .map(|(i, g)| (2f64.powf(g) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let actual = dcg(&mut ranked
        .iter()
        .map(|id| gains.get(id).copied().unwrap_or(0.0)));
    let mut ideal: Vec<f64> = gains.values().copied().filter(|g| *g > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let ideal = dcg(&mut ideal.into_iter());
    Scores {
        queries: 1,
        recall_at_10: if relevant == 0 {
            0.0
        } else {
            found as f64 / relevant as f64
        },
        mrr: first.map_or(0.0, |r| 1.0 / (r + 1) as f64),
        ndcg_at_10: if ideal > 0.0 { actual / ideal } else { 0.0 },
    }
}

/// The known-item queries of `split` ("dev", "test"; `None`: both).
pub fn known_items(split: Option<&str>) -> anyhow::Result<Vec<Judged>> {
    #[derive(Deserialize)]
    struct Line {
        query: String,
        page: String,
        split: String,
    }
    let path = repo_root().join("data/eval/tldr-known-items.jsonl");
    let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let mut set = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line: Line = serde_json::from_str(&line?)?;
        if split.is_none_or(|s| s == line.split) {
            set.push(Judged {
                query: line.query,
                gains: HashMap::from([(line.page, 1.0)]),
            });
        }
    }
    Ok(set)
}

/// Builds one shard of `docs` in `dir` (committed at sequence 1).
pub fn build_shard(dir: &Path, language: &str, docs: &[Document]) -> anyhow::Result<Shard> {
    let key = ShardKey {
        tenant: "eval".into(),
        shard: 0,
    };
    let shard = Shard::create(dir, key, language)?;
    shard.load_batch(1, docs, &[])?;
    Ok(shard)
}

/// The English tldr pages, as `tandem dev` loads them.
pub fn tldr_en_docs() -> anyhow::Result<Vec<Document>> {
    let lang = tandem_client::corpus::Where {
        key: "lang".into(),
        value: "en".into(),
    };
    tandem_client::corpus::read_documents(&crate::sample_corpus(), &[lang])
}

/// The model `tandem dev` serves for the English pages: trained on the
/// sample event log (synthetic searches made from the pages' example
/// lines).
pub fn tldr_en_model() -> anyhow::Result<TenantModel> {
    let path = repo_root().join("data/events/en.jsonl.gz");
    let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let events = tandem_model_node::events::read_events(flate2::read::GzDecoder::new(file))?;
    let (set, _) = tandem_model_node::train::train(&events, "eval", &Default::default())?;
    Ok(TenantModel::new(set, "eval", 0))
}

/// The Cranfield development split, if present: its documents and judged
/// queries (gain 1-4; gain 0 rows dropped).
pub fn cranfield() -> anyhow::Result<Option<(Vec<Document>, Vec<Judged>)>> {
    let dir = std::env::var_os("TANDEM_CRANFIELD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/cranfield"));
    if !dir.join("docs.jsonl").is_file() {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Doc {
        id: String,
        title: String,
        body: String,
    }
    #[derive(Deserialize)]
    struct Query {
        id: String,
        text: String,
    }
    let lines = |name: &str| -> anyhow::Result<Vec<String>> {
        let text = std::fs::read_to_string(dir.join(name))?;
        Ok(text.lines().map(String::from).collect())
    };
    let mut docs = Vec::new();
    for line in lines("docs.jsonl")? {
        let d: Doc = serde_json::from_str(&line)?;
        // The body starts by repeating the title: keep it once, in the title.
        let body = d.body.strip_prefix(&d.title).unwrap_or(&d.body).trim();
        docs.push(Document {
            id: d.id,
            title: d.title.clone(),
            body: body.to_string(),
            ..Document::default()
        });
    }
    let mut gains: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for line in lines("qrels.tsv")? {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [q, _, d, g] = cols[..] {
            let g: f64 = g.parse()?;
            if g > 0.0 {
                gains.entry(q.into()).or_default().insert(d.into(), g);
            }
        }
    }
    let mut set = Vec::new();
    for line in lines("queries.jsonl")? {
        let q: Query = serde_json::from_str(&line)?;
        if let Some(g) = gains.remove(&q.id) {
            set.push(Judged {
                query: q.text,
                gains: g,
            });
        }
    }
    Ok(Some((docs, set)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_is_scored_by_rank_and_gain() {
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let one = score_one(&ids, &HashMap::from([("b".into(), 1.0)]));
        assert_eq!(one.mrr, 0.5);
        assert_eq!(one.recall_at_10, 1.0);
        assert!((one.ndcg_at_10 - 1.0 / 3f64.log2()).abs() < 1e-9);
        let none = score_one(&ids, &HashMap::from([("z".into(), 3.0)]));
        assert_eq!(
            (none.mrr, none.recall_at_10, none.ndcg_at_10),
            (0.0, 0.0, 0.0)
        );
    }
}
