//! The query-suggestion model: top-k completions of a typed prefix.
//!
//! # Training
//!
//! Every search with a non-empty normalised query (of at most
//! [`MAX_KEY_BYTES`]) adds to its query's score
//!
//! ```text
//! 0.5 ^ ((newest_ts - ts) / half_life)  *  (1 + click_bonus if the search got a click)
//! ```
//!
//! so the score combines frequency (a sum over searches), recency
//! (exponential decay, halved every [`SuggestConfig::half_life_secs`],
//! measured from the newest search in the log, never from the wall clock, so
//! training is reproducible) and success (searches that led to a click count
//! `1 + click_bonus` times).
//!
//! # Serving
//!
//! Queries are keys of an [`fst::Map`] (value = the query's index in key
//! order, which indexes a side table of scores). A prefix is looked up with a
//! `StartsWith` automaton, so the work is proportional to the matches, not to
//! the model. Short prefixes match huge ranges ("a" may match a third of all
//! queries), and so do some longer ones ("list all " in a big model), so the
//! top [`MAX_K`] completions of every prefix of up to
//! [`PRECOMPUTED_PREFIX_CHARS`] characters, and of every longer prefix shared
//! by more than [`HEAVY_PREFIX_MATCHES`] queries, are computed once when the
//! model is built or loaded. Any other prefix matches at most
//! `HEAVY_PREFIX_MATCHES` queries (its parent prefixes would be heavy
//! otherwise), so a call never reads more than that many fst entries, and
//! every answer is the exact top-k. [`MAX_SCAN`] stays as a backstop. Ties
//! are broken by the text, so answers are deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use fst::automaton::{Automaton, Str};
use fst::{IntoStreamer, Map, MapBuilder, Streamer};

use crate::normalize::char_prefix;
use crate::observe::ObservedSearch;

/// The most completions one call returns; larger requests are clamped.
pub const MAX_K: usize = 50;

/// Prefixes of up to this many characters are answered from precomputed
/// top-[`MAX_K`] lists.
pub const PRECOMPUTED_PREFIX_CHARS: usize = 3;

/// Prefixes longer than [`PRECOMPUTED_PREFIX_CHARS`] matching more queries
/// than this get precomputed lists; others are answered by reading their
/// (at most this many) matches: a bound on a scan's work that keeps the
/// precomputed lists of a large model small.
pub const HEAVY_PREFIX_MATCHES: usize = 256;

/// The most matching keys examined for a prefix without a precomputed list
/// (a backstop: [`HEAVY_PREFIX_MATCHES`] already bounds it).
pub const MAX_SCAN: usize = 20_000;

/// Longer normalised queries are not offered as suggestions (they are pasted
/// text, not something to complete to).
pub const MAX_KEY_BYTES: usize = 256;

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The normalised query to suggest.
    pub text: String,
    /// Its score (see the module docs); higher is better.
    pub score: f32,
}

/// How search events turn into suggestion scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SuggestConfig {
    /// A search's weight halves every this many seconds of age, measured back
    /// from the newest search in the log. Default: 7 days.
    pub half_life_secs: f64,
    /// A search that led to a click counts `1 + click_bonus` times. Default 1.
    pub click_bonus: f64,
}

impl Default for SuggestConfig {
    fn default() -> Self {
        SuggestConfig {
            half_life_secs: 7.0 * 24.0 * 3600.0,
            click_bonus: 1.0,
        }
    }
}

/// Why a suggestion model could not be built or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The fst library refused the keys or bytes.
    #[error("suggestion fst: {0}")]
    Fst(fst::Error),
    /// The parts do not fit together.
    #[error("suggestion model: {0}")]
    Inconsistent(String),
}

// Not `#[from]`: that would also make the fst error the `source()`, and
// error chains would print its message twice.
impl From<fst::Error> for SuggestError {
    fn from(e: fst::Error) -> Self {
        SuggestError::Fst(e)
    }
}

/// Scores every normalised query in `searches` (see the module docs).
/// Returns `(query, score)` sorted by query, ready for [`SuggestModel::build`].
pub fn score_queries(searches: &[ObservedSearch], cfg: &SuggestConfig) -> Vec<(String, f32)> {
    let newest = searches.iter().map(|s| s.ts).max().unwrap_or(0);
    // A zero, negative or NaN half-life would divide by zero or flip the
    // decay; treat it as "no decay" instead.
    let half_life = if cfg.half_life_secs > 0.0 {
        cfg.half_life_secs
    } else {
        f64::INFINITY
    };
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for s in searches {
        if s.query.is_empty() || s.query.len() > MAX_KEY_BYTES {
            continue;
        }
        let age = newest.saturating_sub(s.ts) as f64;
        let clicked = if s.clicked.is_empty() {
            0.0
        } else {
            cfg.click_bonus.max(0.0)
        };
        *scores.entry(s.query.as_str()).or_default() +=
            0.5f64.powf(age / half_life) * (1.0 + clicked);
    }
    let mut out: Vec<(String, f32)> = scores
        .into_iter()
        .map(|(q, s)| (q.to_string(), s as f32))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Top completions of every prefix of up to PRECOMPUTED_PREFIX_CHARS
/// characters and of every heavy longer prefix, best first. Texts are shared
/// between the lists they appear in.
type ShortTable = HashMap<Box<str>, Box<[(Arc<str>, f32)]>>;

/// A trained suggestion model (see the module docs).
#[derive(Debug)]
pub struct SuggestModel {
    map: Map<Vec<u8>>,
    scores: Vec<f32>,
    short: ShortTable,
    /// Heap bytes of `short`, computed once when it is built.
    short_heap_bytes: usize,
}

impl SuggestModel {
    /// Builds a model from `(normalised query, score)` pairs sorted by query
    /// with no duplicates (as [`score_queries`] returns them).
    pub fn build(entries: &[(String, f32)]) -> Result<SuggestModel, SuggestError> {
        let mut builder = MapBuilder::memory();
        for (i, (key, _)) in entries.iter().enumerate() {
            builder.insert(key, i as u64)?;
        }
        let bytes = builder.into_inner()?;
        SuggestModel::from_parts(bytes, entries.iter().map(|e| e.1).collect())
    }

    /// Rebuilds a model from its stored parts, checking that they fit: the
    /// fst must be valid, its keys non-empty UTF-8, its values exactly
    /// 0..n in key order, and every score finite and non-negative.
    pub fn from_parts(fst_bytes: Vec<u8>, scores: Vec<f32>) -> Result<SuggestModel, SuggestError> {
        let map = Map::new(fst_bytes)?;
        map.as_fst().verify()?;
        if map.len() != scores.len() {
            return Err(SuggestError::Inconsistent(format!(
                "{} queries but {} scores",
                map.len(),
                scores.len()
            )));
        }
        if let Some(bad) = scores.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(SuggestError::Inconsistent(format!("invalid score {bad}")));
        }
        let mut keys: Vec<Arc<str>> = Vec::with_capacity(scores.len());
        let mut stream = map.stream();
        while let Some((key, value)) = stream.next() {
            if value != keys.len() as u64 {
                return Err(SuggestError::Inconsistent(format!(
                    "query #{} has index {value}",
                    keys.len()
                )));
            }
            let text = std::str::from_utf8(key)
                .map_err(|_| SuggestError::Inconsistent(format!("query #{value} is not UTF-8")))?;
            if text.is_empty() {
                return Err(SuggestError::Inconsistent("empty query".to_string()));
            }
            keys.push(Arc::from(text));
        }
        drop(stream);
        let (short, short_heap_bytes) = precompute_short(&keys, &scores);
        Ok(SuggestModel {
            map,
            scores,
            short,
            short_heap_bytes,
        })
    }

    /// Up to `k` (at most [`MAX_K`]) completions of an already normalised
    /// prefix, best first. An empty prefix has no completions.
    pub fn complete(&self, prefix: &str, k: usize) -> Vec<Suggestion> {
        let k = k.min(MAX_K);
        if prefix.is_empty() || k == 0 {
            return Vec::new();
        }
        if let Some(top) = self.short.get(prefix) {
            return top
                .iter()
                .take(k)
                .map(|(text, score)| Suggestion {
                    text: text.to_string(),
                    score: *score,
                })
                .collect();
        }
        if prefix.chars().count() <= PRECOMPUTED_PREFIX_CHARS {
            return Vec::new(); // every short prefix with a match has a list
        }
        let mut best: Vec<(f32, Vec<u8>)> = Vec::with_capacity(k + 1);
        let mut stream = self
            .map
            .search(Str::new(prefix).starts_with())
            .into_stream();
        let mut scanned = 0;
        while let Some((key, value)) = stream.next() {
            scanned += 1;
            if scanned > MAX_SCAN {
                break;
            }
            let score = usize::try_from(value)
                .ok()
                .and_then(|i| self.scores.get(i))
                .copied()
                .unwrap_or(0.0);
            if best.len() == k && !better(score, key, best[k - 1].0, &best[k - 1].1) {
                continue;
            }
            let at = best.partition_point(|(s, t)| better(*s, t, score, key));
            best.insert(at, (score, key.to_vec()));
            best.truncate(k);
        }
        best.into_iter()
            .map(|(score, key)| Suggestion {
                text: String::from_utf8_lossy(&key).into_owned(),
                score,
            })
            .collect()
    }

    /// Number of distinct queries in the model.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether the model has no queries.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The fst bytes, for storing the model.
    pub fn fst_bytes(&self) -> &[u8] {
        self.map.as_fst().as_bytes()
    }

    /// Scores indexed by the fst's values, for storing the model.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Approximate heap memory held by the model, in bytes: the fst, the
    /// score table and the precomputed short-prefix lists.
    pub fn heap_bytes(&self) -> usize {
        self.fst_bytes().len() + self.scores.len() * 4 + self.short_heap_bytes
    }
}

/// Whether (score a, text a) ranks before (score b, text b): higher score
/// first, then smaller text.
fn better(score_a: f32, text_a: &[u8], score_b: f32, text_b: &[u8]) -> bool {
    score_a > score_b || (score_a == score_b && text_a < text_b)
}

/// The top-MAX_K lists of all prefixes of up to PRECOMPUTED_PREFIX_CHARS
/// characters and of all heavy longer ones, and their approximate heap size.
fn precompute_short(keys: &[Arc<str>], scores: &[f32]) -> (ShortTable, usize) {
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let mut previous_len = 0;
        for n in 1..=PRECOMPUTED_PREFIX_CHARS {
            let prefix = char_prefix(key, n);
            if prefix.len() == previous_len {
                break; // the key is shorter than n characters
            }
            previous_len = prefix.len();
            members.entry(prefix).or_default().push(i);
        }
    }
    let heavy_roots: Vec<(&str, Vec<usize>)> = members
        .iter()
        .filter(|(p, idx)| {
            idx.len() > HEAVY_PREFIX_MATCHES && p.chars().count() == PRECOMPUTED_PREFIX_CHARS
        })
        .map(|(p, idx)| (*p, idx.clone()))
        .collect();
    members.extend(heavy_descendants(keys, heavy_roots));
    let mut used = vec![false; keys.len()];
    let mut heap = 0;
    let table: ShortTable = members
        .into_iter()
        .map(|(prefix, mut idx)| {
            idx.sort_by(|&a, &b| {
                scores[b]
                    .total_cmp(&scores[a])
                    .then_with(|| keys[a].cmp(&keys[b]))
            });
            idx.truncate(MAX_K);
            // Prefix + list, plus the map's per-entry overhead.
            heap += prefix.len() + idx.len() * std::mem::size_of::<(Arc<str>, f32)>() + 48;
            for &i in &idx {
                if !std::mem::replace(&mut used[i], true) {
                    heap += keys[i].len() + 16; // text + Arc counters
                }
            }
            let top: Box<[(Arc<str>, f32)]> = idx
                .into_iter()
                .map(|i| (Arc::clone(&keys[i]), scores[i]))
                .collect();
            (Box::from(prefix), top)
        })
        .collect();
    (table, heap)
}

/// Every prefix longer than the `roots` (heavy prefixes with their member
/// keys) that is itself heavy, found one character at a time below heavy
/// parents only, so the work is bounded by the heavy prefixes' sizes.
fn heavy_descendants<'k>(
    keys: &'k [Arc<str>],
    roots: Vec<(&'k str, Vec<usize>)>,
) -> Vec<(&'k str, Vec<usize>)> {
    let mut found = Vec::new();
    let mut frontier = roots;
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (parent, idx) in frontier {
            let n = parent.chars().count() + 1;
            let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
            for i in idx {
                let child = char_prefix(&keys[i], n);
                // A key equal to the parent belongs to no longer prefix.
                if child.len() > parent.len() {
                    children.entry(child).or_default().push(i);
                }
            }
            next.extend(
                children
                    .into_iter()
                    .filter(|(_, idx)| idx.len() > HEAVY_PREFIX_MATCHES),
            );
        }
        found.extend(next.iter().cloned());
        frontier = next;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn searched(ts: u64, query: &str, clicked: bool) -> ObservedSearch {
        ObservedSearch {
            ts,
            session: "s".into(),
            query: query.into(),
            shown: vec!["d".into()],
            clicked: if clicked { vec![0] } else { vec![] },
        }
    }

    fn model(entries: &[(&str, f32)]) -> SuggestModel {
        let mut e: Vec<(String, f32)> = entries.iter().map(|(q, s)| (q.to_string(), *s)).collect();
        e.sort_by(|a, b| a.0.cmp(&b.0));
        SuggestModel::build(&e).expect("build")
    }

    fn texts(s: &[Suggestion]) -> Vec<&str> {
        s.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn scores_combine_frequency_recency_and_clicks() {
        let day = 24 * 3600;
        let cfg = SuggestConfig::default();
        let searches = vec![
            searched(100 * day, "old", false),
            searched(100 * day, "old", false),
            searched(107 * day, "fresh", false),
            searched(107 * day, "clicked", true),
            searched(107 * day, "", true),
        ];
        let scores: HashMap<String, f32> = score_queries(&searches, &cfg).into_iter().collect();
        assert_eq!(scores.len(), 3);
        // Two searches a half-life ago weigh as much as one today.
        assert!((scores["old"] - 1.0).abs() < 1e-6, "{scores:?}");
        assert!((scores["fresh"] - 1.0).abs() < 1e-6);
        assert!((scores["clicked"] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn completes_best_first_from_both_paths() {
        let m = model(&[
            ("tar extract", 5.0),
            ("tar create", 9.0),
            ("tarball", 7.0),
            ("tail follow", 8.0),
            ("zip", 1.0),
        ]);
        assert_eq!(
            texts(&m.complete("ta", 10)),
            vec!["tar create", "tail follow", "tarball", "tar extract"]
        );
        assert_eq!(texts(&m.complete("tar", 2)), vec!["tar create", "tarball"]);
        assert_eq!(
            texts(&m.complete("tar ", 10)),
            vec!["tar create", "tar extract"]
        );
        assert_eq!(texts(&m.complete("tar c", 10)), vec!["tar create"]);
        assert!(m.complete("tarx", 10).is_empty());
        assert!(m.complete("q", 10).is_empty());
        assert!(m.complete("", 10).is_empty());
        assert!(m.complete("ta", 0).is_empty());
        assert_eq!(m.complete("zip", 1)[0].score, 1.0);
    }

    #[test]
    fn ties_break_by_text_and_k_is_clamped() {
        let entries: Vec<(String, f32)> =
            (0..200).map(|i| (format!("query {i:03}"), 1.0)).collect();
        let m = SuggestModel::build(&entries).expect("build");
        let short = m.complete("q", 1000);
        let long = m.complete("query", 1000);
        assert_eq!(short.len(), MAX_K);
        assert_eq!(short, long, "both paths agree");
        assert_eq!(short[0].text, "query 000");
    }

    #[test]
    fn matches_a_brute_force_scan() {
        let words = [
            "ab",
            "abc",
            "abd",
            "b",
            "ba",
            "añadir",
            "añejo",
            "검색",
            "검사 도구",
            "abc def",
        ];
        let mut entries: Vec<(String, f32)> = Vec::new();
        for (i, a) in words.iter().enumerate() {
            for (j, b) in words.iter().enumerate() {
                entries.push((format!("{a} {b}"), ((i * 7 + j * 3) % 11) as f32));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        let m = SuggestModel::build(&entries).expect("build");
        let prefixes = [
            "a", "ab", "abc", "abc ", "abc d", "añ", "aña", "añad", "검", "검사", "검사 ", "b b",
            "z",
        ];
        for p in prefixes {
            let mut expect: Vec<&(String, f32)> =
                entries.iter().filter(|(q, _)| q.starts_with(p)).collect();
            expect.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let expect: Vec<&str> = expect.iter().take(5).map(|(q, _)| q.as_str()).collect();
            assert_eq!(texts(&m.complete(p, 5)), expect, "prefix {p:?}");
        }
    }

    #[test]
    fn long_shared_prefixes_are_precomputed_and_exact() {
        let mut entries: Vec<(String, f32)> = (0..1500)
            .map(|i| (format!("list files {i:04}"), ((i * 37) % 101) as f32))
            .collect();
        entries.extend((0..300).map(|i| (format!("list fish {i:03}"), (i % 13) as f32)));
        entries.push(("list".to_string(), 50.0));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let m = SuggestModel::build(&entries).expect("build");
        assert!(m.short.contains_key("list files 0"), "1000 matches: heavy");
        assert!(m.short.contains_key("list fish "), "300 matches: heavy");
        assert!(
            !m.short.contains_key("list files 01"),
            "100 matches: scanned"
        );
        for p in [
            "list",
            "list ",
            "list f",
            "list fi",
            "list files 0",
            "list files 01",
            "lisx",
        ] {
            let mut expect: Vec<&(String, f32)> =
                entries.iter().filter(|(q, _)| q.starts_with(p)).collect();
            expect.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let expect: Vec<&str> = expect.iter().take(7).map(|(q, _)| q.as_str()).collect();
            assert_eq!(texts(&m.complete(p, 7)), expect, "prefix {p:?}");
        }
    }

    #[test]
    fn round_trips_through_parts_and_rejects_mismatches() {
        let m = model(&[("a", 1.0), ("b", 2.0)]);
        let again =
            SuggestModel::from_parts(m.fst_bytes().to_vec(), m.scores().to_vec()).expect("parts");
        assert_eq!(again.complete("b", 1), m.complete("b", 1));
        assert!(SuggestModel::from_parts(m.fst_bytes().to_vec(), vec![1.0]).is_err());
        assert!(SuggestModel::from_parts(m.fst_bytes().to_vec(), vec![1.0, f32::NAN]).is_err());
        assert!(SuggestModel::from_parts(vec![1, 2, 3], vec![]).is_err());
        let mut flipped = m.fst_bytes().to_vec();
        flipped[0] ^= 0x55;
        assert!(SuggestModel::from_parts(flipped, m.scores().to_vec()).is_err());
    }

    #[test]
    fn empty_model_completes_nothing() {
        let m = SuggestModel::build(&[]).expect("build");
        assert!(m.is_empty());
        assert!(m.complete("a", 5).is_empty());
        assert!(m.complete("abcd", 5).is_empty());
    }
}
