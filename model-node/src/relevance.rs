//! The relevance-tuning model: per-query document boosts learned from clicks.
//!
//! # Position bias and COEC
//!
//! A click at rank 1 says little (people click the top result whatever it
//! is); a click at rank 8 says a lot. The model uses **clicks over expected
//! clicks** (COEC):
//!
//! 1. A click-through curve `ctr[r]` (clicks at rank r / impressions at rank
//!    r) is estimated from the log itself over ranks
//!    1..=[`RelevanceConfig::max_rank`], fitted to be non-increasing and
//!    floored above zero (details in the private `position_bias` module).
//! 2. For a normalised query `q` and document `d`: `C` = clicks on `d` in
//!    searches for `q`, `E` = the sum of `ctr[rank of d]` over the searches for
//!    `q` that showed `d` (how many clicks an average document would have got
//!    in the same slots).
//! 3. The boost weight is the smoothed COEC minus one,
//!    `w = min(max_weight, (C + prior) / (E + prior) - 1)`: `prior` (0.5 by
//!    default) pseudo clicks at the expected rate pull weak evidence towards
//!    "as expected" (w = 0). Only documents with at least one click and `w >= min_weight`
//!    are kept (positive evidence only; weights are never negative).
//!
//! The index-node applies a boost as `score * (1 + w)`, so `w` reads as "this
//! document deserves (1 + w) times its score", between 1x and
//! `1 + max_weight` = 4x by default.
//!
//! # Back-off to terms
//!
//! For a query never seen in training, the same C and E are summed per
//! (term, document) over all training queries containing the term, giving
//! per-term boost tables. A query's back-off weight for `d` is
//! `backoff_factor * (mean of its terms' weights for d)`, down-weighted
//! (default 0.5) because it is weaker evidence than an exact match. Terms
//! shorter than two characters and terms in more than
//! [`RelevanceConfig::max_term_query_share`] of distinct queries ("the",
//! "a", "de") are not back-off keys: they say nothing about the document.
//!
//! **The gate.** A back-off boost is given only to a document that *every*
//! distinct term of the query points to. Boosts that one word of a longer
//! query earned elsewhere ("file" in "compress a file") lift pages that
//! the query is not about; measured on the known-item set
//! (`docs/benchmarks.md#ranking`), ungated back-off lowered MRR even when
//! capped at a 10 % lift, while the gate keeps the click-log gain of the
//! offline evaluation (`tandem-model-node eval`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::normalize::terms;
use crate::observe::ObservedSearch;
use crate::position_bias::{coec_weight, ctr_curve};

/// The most boosts one call returns; larger requests are clamped.
pub const MAX_BOOSTS: usize = 100;

/// Parameters of the COEC estimate (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct RelevanceConfig {
    /// Pseudo clicks at the expected rate added to every (query, doc).
    pub prior: f64,
    /// Largest weight; a boost never multiplies a score by more than
    /// `1 + max_weight`.
    pub max_weight: f32,
    /// Smaller weights are dropped as noise.
    pub min_weight: f32,
    /// Boosts kept per query or term (the strongest).
    pub max_boosts_per_key: usize,
    /// Ranks beyond this are ignored (no curve estimate down there).
    pub max_rank: usize,
    /// Down-weighting of back-off boosts relative to exact-query boosts.
    pub backoff_factor: f32,
    /// Terms in more than this share of distinct queries are not back-off
    /// keys (only applied once there are 100 distinct queries).
    pub max_term_query_share: f64,
}

impl Default for RelevanceConfig {
    fn default() -> Self {
        RelevanceConfig {
            prior: 0.5,
            max_weight: 3.0,
            min_weight: 0.05,
            max_boosts_per_key: 32,
            max_rank: 50,
            backoff_factor: 0.5,
            max_term_query_share: 0.05,
        }
    }
}

/// A boost for one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Boost {
    /// Document id.
    pub doc: String,
    /// Weight >= 0; apply as `score * (1 + weight)`.
    pub weight: f32,
}

/// Where a set of boosts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoostSource {
    /// The query itself was seen in training with positive evidence.
    Query,
    /// Backed off to the query's terms.
    Terms,
    /// Nothing known about the query.
    None,
}

/// Boosts for a query, strongest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Boosts {
    /// The boosts, by weight descending then doc id.
    pub boosts: Vec<Boost>,
    /// How they were found.
    pub source: BoostSource,
}

/// Why a relevance model's stored parts were refused.
#[derive(Debug, thiserror::Error)]
#[error("relevance model: {0}")]
pub struct RelevanceError(String);

/// Per-key boost lists: (document index, weight), strongest first.
type Table = HashMap<Box<str>, Box<[(u32, f32)]>>;

/// A trained relevance model (see the module docs).
#[derive(Debug)]
pub struct RelevanceModel {
    docs: Vec<Box<str>>,
    queries: Table,
    terms: Table,
    backoff_factor: f32,
    max_weight: f32,
}

/// Clicks and expected clicks of one (key, document).
#[derive(Debug, Clone, Copy, Default)]
struct Evidence {
    clicks: f64,
    expected: f64,
}

impl RelevanceModel {
    /// Learns a model from joined searches (see the module docs).
    pub fn learn(searches: &[ObservedSearch], cfg: &RelevanceConfig) -> RelevanceModel {
        let ctr = ctr_curve(searches, cfg.max_rank);
        let mut by_query: HashMap<&str, HashMap<&str, Evidence>> = HashMap::new();
        for s in searches.iter().filter(|s| !s.query.is_empty()) {
            let docs = by_query.entry(s.query.as_str()).or_default();
            for (pos, doc) in s.shown.iter().enumerate().take(ctr.len()) {
                docs.entry(doc.as_str()).or_default().expected += ctr[pos];
            }
            for &pos in s.clicked.iter().filter(|&&p| p < ctr.len()) {
                if let Some(doc) = s.shown.get(pos) {
                    docs.entry(doc.as_str()).or_default().clicks += 1.0;
                }
            }
        }

        let allowed = backoff_terms(by_query.keys().copied(), cfg);
        let mut by_term: HashMap<&str, HashMap<&str, Evidence>> = HashMap::new();
        for (query, docs) in &by_query {
            let distinct: BTreeSet<&str> = terms(query).filter(|t| allowed.contains(t)).collect();
            for term in distinct {
                let table = by_term.entry(term).or_default();
                for (doc, ev) in docs.iter().filter(|(_, ev)| ev.clicks > 0.0) {
                    let acc = table.entry(doc).or_default();
                    acc.clicks += ev.clicks;
                    acc.expected += ev.expected;
                }
            }
        }

        let mut interner = Interner::default();
        let queries = weigh_all(&by_query, cfg, &mut interner);
        let terms = weigh_all(&by_term, cfg, &mut interner);
        let (docs, remap) = interner.finish();
        RelevanceModel {
            docs,
            queries: remap_table(queries, &remap),
            terms: remap_table(terms, &remap),
            backoff_factor: sanitize(cfg.backoff_factor, 0.0, 1.0),
            max_weight: sanitize(cfg.max_weight, 0.0, f32::MAX),
        }
    }

    /// Rebuilds a model from stored parts, checking that every document
    /// index exists and every weight is finite and in `0..=max_weight`.
    pub fn from_parts(
        docs: Vec<String>,
        queries: Vec<(String, Vec<(u32, f32)>)>,
        terms: Vec<(String, Vec<(u32, f32)>)>,
        backoff_factor: f32,
        max_weight: f32,
    ) -> Result<RelevanceModel, RelevanceError> {
        if !(0.0..=1.0).contains(&backoff_factor) || !max_weight.is_finite() || max_weight < 0.0 {
            return Err(RelevanceError(format!(
                "bad parameters: backoff {backoff_factor}, max weight {max_weight}"
            )));
        }
        let n = docs.len();
        let check =
            |rows: Vec<(String, Vec<(u32, f32)>)>, what: &str| -> Result<Table, RelevanceError> {
                let mut table = Table::with_capacity(rows.len());
                for (key, list) in rows {
                    for &(doc, w) in &list {
                        if doc as usize >= n || !w.is_finite() || w < 0.0 || w > max_weight {
                            return Err(RelevanceError(format!(
                                "{what} {key:?}: bad boost (doc #{doc} of {n}, weight {w})"
                            )));
                        }
                    }
                    if table.insert(key.clone().into(), list.into()).is_some() {
                        return Err(RelevanceError(format!("{what} {key:?} appears twice")));
                    }
                }
                Ok(table)
            };
        Ok(RelevanceModel {
            queries: check(queries, "query")?,
            terms: check(terms, "term")?,
            docs: docs.into_iter().map(Box::from).collect(),
            backoff_factor,
            max_weight,
        })
    }

    /// Boosts for an already normalised query, at most `max` (clamped to
    /// [`MAX_BOOSTS`]). Exact-query boosts if the query was learned, else the
    /// term back-off, else none.
    pub fn boosts(&self, query: &str, max: usize) -> Boosts {
        let max = max.min(MAX_BOOSTS);
        if let Some(list) = self.queries.get(query) {
            return Boosts {
                boosts: list
                    .iter()
                    .take(max)
                    .map(|&(d, w)| self.boost(d, w))
                    .collect(),
                source: BoostSource::Query,
            };
        }
        let distinct: BTreeSet<&str> = terms(query).collect();
        // (sum of weights, supporting terms) per document.
        let mut acc: HashMap<u32, (f32, usize)> = HashMap::new();
        for term in &distinct {
            for &(d, w) in self.terms.get(*term).into_iter().flatten() {
                let entry = acc.entry(d).or_default();
                entry.0 += w;
                entry.1 += 1;
            }
        }
        // The gate: every word of the query must point to the document.
        acc.retain(|_, (_, support)| *support == distinct.len());
        if acc.is_empty() {
            return Boosts {
                boosts: Vec::new(),
                source: BoostSource::None,
            };
        }
        let scale = self.backoff_factor / distinct.len() as f32;
        let mut list: Vec<(u32, f32)> = acc
            .into_iter()
            .map(|(d, (w, _))| (d, (w * scale).min(self.max_weight)))
            .filter(|&(_, w)| w > 0.0)
            .collect();
        list.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docs[a.0 as usize].cmp(&self.docs[b.0 as usize]))
        });
        Boosts {
            boosts: list
                .into_iter()
                .take(max)
                .map(|(d, w)| self.boost(d, w))
                .collect(),
            source: BoostSource::Terms,
        }
    }

    fn boost(&self, doc: u32, weight: f32) -> Boost {
        Boost {
            doc: self
                .docs
                .get(doc as usize)
                .map_or_else(String::new, |d| d.to_string()),
            weight,
        }
    }

    /// Number of queries with learned boosts.
    pub fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// Number of back-off terms with learned boosts.
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// The interned document ids, for storing the model.
    pub fn docs(&self) -> &[Box<str>] {
        &self.docs
    }

    /// Query boost lists sorted by query, for storing the model.
    pub fn query_rows(&self) -> Vec<(&str, &[(u32, f32)])> {
        sorted_rows(&self.queries)
    }

    /// Term boost lists sorted by term, for storing the model.
    pub fn term_rows(&self) -> Vec<(&str, &[(u32, f32)])> {
        sorted_rows(&self.terms)
    }

    /// The back-off down-weighting factor.
    pub fn backoff_factor(&self) -> f32 {
        self.backoff_factor
    }

    /// The largest weight the model may produce.
    pub fn max_weight(&self) -> f32 {
        self.max_weight
    }

    /// Approximate heap memory held by the model, in bytes.
    pub fn heap_bytes(&self) -> usize {
        let table =
            |t: &Table| -> usize { t.iter().map(|(k, v)| k.len() + v.len() * 8 + 48).sum() };
        self.docs.iter().map(|d| d.len() + 16).sum::<usize>()
            + table(&self.queries)
            + table(&self.terms)
    }
}

/// The terms usable as back-off keys (see the module docs).
fn backoff_terms<'a>(
    queries: impl Iterator<Item = &'a str>,
    cfg: &RelevanceConfig,
) -> BTreeSet<&'a str> {
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    let mut n = 0usize;
    for q in queries {
        n += 1;
        let distinct: BTreeSet<&str> = terms(q).filter(|t| t.chars().count() >= 2).collect();
        for t in distinct {
            *df.entry(t).or_default() += 1;
        }
    }
    let limit = if n >= 100 {
        (cfg.max_term_query_share * n as f64).max(1.0)
    } else {
        f64::INFINITY
    };
    df.into_iter()
        .filter(|&(_, count)| (count as f64) <= limit)
        .map(|(t, _)| t)
        .collect()
}

/// Turns evidence into kept, capped, sorted boost lists keyed by string doc
/// index from `interner`.
fn weigh_all(
    evidence: &HashMap<&str, HashMap<&str, Evidence>>,
    cfg: &RelevanceConfig,
    interner: &mut Interner,
) -> Vec<(String, Vec<(u32, f32)>)> {
    let prior = if cfg.prior.is_finite() && cfg.prior > 0.0 {
        cfg.prior
    } else {
        1.0
    };
    let max_weight = f64::from(sanitize(cfg.max_weight, 0.0, f32::MAX));
    let mut rows = Vec::new();
    for (key, docs) in evidence {
        let mut list: Vec<(&str, f32)> = docs
            .iter()
            .filter(|(_, ev)| ev.clicks > 0.0)
            .map(|(doc, ev)| {
                let w = coec_weight(ev.clicks, ev.expected, prior, max_weight);
                (*doc, w as f32)
            })
            .filter(|&(_, w)| w >= cfg.min_weight && w > 0.0)
            .collect();
        if list.is_empty() {
            continue;
        }
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        list.truncate(cfg.max_boosts_per_key);
        let row = list
            .into_iter()
            .map(|(d, w)| (interner.intern(d), w))
            .collect();
        rows.push((key.to_string(), row));
    }
    rows
}

/// Assigns provisional indices to doc ids, then sorted final ones, so the
/// stored model is the same bytes whatever the hash-map order was.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, doc: &str) -> u32 {
        let next = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        *self.ids.entry(doc.to_string()).or_insert(next)
    }

    /// The doc table in sorted order and provisional -> final indices.
    fn finish(self) -> (Vec<Box<str>>, Vec<u32>) {
        let mut sorted: Vec<(String, u32)> = self.ids.into_iter().collect();
        sorted.sort();
        let mut remap = vec![0u32; sorted.len()];
        for (final_idx, (_, provisional)) in sorted.iter().enumerate() {
            if let Some(slot) = remap.get_mut(*provisional as usize) {
                *slot = u32::try_from(final_idx).unwrap_or(u32::MAX);
            }
        }
        (sorted.into_iter().map(|(d, _)| d.into()).collect(), remap)
    }
}

fn remap_table(rows: Vec<(String, Vec<(u32, f32)>)>, remap: &[u32]) -> Table {
    rows.into_iter()
        .map(|(k, list)| {
            let list: Box<[(u32, f32)]> = list
                .into_iter()
                .map(|(d, w)| (remap.get(d as usize).copied().unwrap_or(d), w))
                .collect();
            (k.into(), list)
        })
        .collect()
}

fn sorted_rows(table: &Table) -> Vec<(&str, &[(u32, f32)])> {
    let mut rows: Vec<(&str, &[(u32, f32)])> = table.iter().map(|(k, v)| (&**k, &**v)).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    rows
}

/// Clamps a configuration value into range, NaN becoming the lower bound.
fn sanitize(v: f32, lo: f32, hi: f32) -> f32 {
    if v.is_nan() {
        lo
    } else {
        v.clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(query: &str, shown: &[&str], clicked: &[usize]) -> ObservedSearch {
        ObservedSearch {
            ts: 0,
            session: "s".into(),
            query: query.into(),
            shown: shown.iter().map(|s| s.to_string()).collect(),
            clicked: clicked.to_vec(),
        }
    }

    /// 100 searches for "extract tar": users click rank 1 ("zip") 30 times
    /// and rank 5 ("tar") 40 times. Plus background traffic that sets the
    /// position curve: top results are clicked far more than rank 5.
    fn log() -> Vec<ObservedSearch> {
        let shown = ["zip", "gzip", "7z", "unrar", "tar"];
        let mut log = Vec::new();
        for i in 0..100 {
            let clicked = match i % 10 {
                0..=2 => vec![0],
                3..=6 => vec![4],
                _ => vec![],
            };
            log.push(search("extract tar", &shown, &clicked));
        }
        for i in 0..400 {
            let q = format!("other query {i}");
            log.push(search(
                &q,
                &["a", "b", "c", "d", "e"],
                if i % 2 == 0 { &[0] } else { &[] },
            ));
        }
        log
    }

    #[test]
    fn a_low_ranked_favourite_is_boosted_a_top_result_is_not() {
        let m = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        let b = m.boosts("extract tar", 10);
        assert_eq!(b.source, BoostSource::Query);
        assert_eq!(b.boosts[0].doc, "tar");
        assert!(b.boosts[0].weight > 1.0, "{b:?}");
        assert!(b.boosts.iter().all(|x| x.weight > 0.0 && x.weight <= 3.0));
        // "zip" got fewer clicks than rank 1 predicts: no boost.
        assert!(b.boosts.iter().all(|x| x.doc != "zip"), "{b:?}");
    }

    #[test]
    fn weights_are_capped_and_weak_evidence_shrinks() {
        let mut log = log();
        // One click at rank 5 for a new query: some boost, far below the cap.
        log.push(search(
            "list tar contents",
            &["a", "b", "c", "d", "tar"],
            &[4],
        ));
        let cfg = RelevanceConfig::default();
        let m = RelevanceModel::learn(&log, &cfg);
        let weak = m.boosts("list tar contents", 10).boosts;
        assert_eq!(weak.len(), 1);
        assert!(weak[0].weight < m.boosts("extract tar", 1).boosts[0].weight);
        let capped = RelevanceModel::learn(
            &log,
            &RelevanceConfig {
                max_weight: 0.5,
                ..cfg
            },
        );
        assert!(capped
            .boosts("extract tar", 10)
            .boosts
            .iter()
            .all(|b| b.weight <= 0.5));
    }

    #[test]
    fn unseen_query_backs_off_to_terms() {
        let m = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        let exact = m.boosts("extract tar", 1).boosts[0].weight;
        let b = m.boosts("tar extract", 10);
        assert_eq!(b.source, BoostSource::Terms);
        assert_eq!(b.boosts[0].doc, "tar");
        // Both terms point to "tar" as strongly as the exact query; back-off
        // factor 0.5: half the exact weight.
        assert!(
            (b.boosts[0].weight - exact / 2.0).abs() < 1e-4,
            "{b:?} vs {exact}"
        );
        // "file" points nowhere: the gate gives "tar file" no boost at all.
        assert!(m.boosts("tar file", 10).boosts.is_empty());
        assert_eq!(m.boosts("nothing known", 10).source, BoostSource::None);
        assert!(m.boosts("", 10).boosts.is_empty());
    }

    #[test]
    fn common_terms_are_not_backoff_keys() {
        let m = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        // "other" and "query" are in 400 of 401 distinct queries.
        assert_eq!(m.boosts("query", 10).source, BoostSource::None);
    }

    #[test]
    fn max_is_respected_and_clamped() {
        let m = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        assert!(m.boosts("extract tar", 0).boosts.is_empty());
        assert!(m.boosts("extract tar", usize::MAX).boosts.len() <= MAX_BOOSTS);
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_refused() {
        let m = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        let rows = |r: Vec<(&str, &[(u32, f32)])>| -> Vec<(String, Vec<(u32, f32)>)> {
            r.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        let docs: Vec<String> = m.docs().iter().map(|d| d.to_string()).collect();
        let again = RelevanceModel::from_parts(
            docs.clone(),
            rows(m.query_rows()),
            rows(m.term_rows()),
            0.5,
            3.0,
        )
        .expect("parts");
        assert_eq!(again.boosts("extract tar", 10), m.boosts("extract tar", 10));
        let bad_doc = vec![("q".to_string(), vec![(docs.len() as u32, 1.0)])];
        assert!(RelevanceModel::from_parts(docs.clone(), bad_doc, vec![], 0.5, 3.0).is_err());
        let bad_weight = vec![("q".to_string(), vec![(0, 7.0)])];
        assert!(RelevanceModel::from_parts(docs.clone(), bad_weight, vec![], 0.5, 3.0).is_err());
        assert!(RelevanceModel::from_parts(docs, vec![], vec![], f32::NAN, 3.0).is_err());
    }

    #[test]
    fn learning_is_deterministic() {
        let a = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        let b = RelevanceModel::learn(&log(), &RelevanceConfig::default());
        assert_eq!(a.docs(), b.docs());
        assert_eq!(a.query_rows(), b.query_rows());
        assert_eq!(a.term_rows(), b.term_rows());
    }
}
