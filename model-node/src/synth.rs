//! A deterministic generator of **synthetic** usage logs for the sample corpus.
//!
//! The sample corpus (tldr-pages) has no usage log, so this module invents one.
//! Nothing in it was produced by real users; what is real are the phrasings:
//! the pages' example descriptions ("Extract a tar archive") are how people
//! describe command-line tasks, so they serve as queries and the page they
//! come from as the document the user wants. The same seed and corpus always
//! give the same log (with the `rand` version pinned in `Cargo.lock`).
//!
//! # Simulation
//!
//! Each session is one user with one intent:
//!
//! 1. **Intent.** A target page is drawn from a Zipf distribution (exponent
//!    [`SynthConfig::popularity_exponent`]) over a seeded shuffle of the pages,
//!    so some commands are far more popular than others; then one of its
//!    examples, earlier examples being likelier (weight `1/(j+1)`).
//! 2. **Phrasing.** The description is lower-cased, tldr's markup (backticks,
//!    quotes, `[x]` mnemonics), parenthetical asides and trailing punctuation
//!    removed. Half the users type it as is; others truncate it after a few
//!    words, drop a word, or make a typo (two adjacent letters swapped).
//!    30 % leave out accents.
//! 3. **Refinement.** With probability [`SynthConfig::refine`] (for queries of
//!    three or more words) the user first searches only the first one or two
//!    words, looks at those results, and types the full query unless already
//!    satisfied.
//! 4. **Result list.** There is no search engine here, so a stand-in one
//!    produces the `shown` list ([`SynthConfig::list_len`] slots). It is a
//!    deterministic function of (seed, query, the page the phrasing came from),
//!    so a repeated query shows the same list, as a real engine would. The
//!    target page is placed at rank `r` in 1..=list_len with probability
//!    proportional to `1/r^target_rank_exponent` (usually near the top, often
//!    not first), or missing altogether with probability
//!    [`SynthConfig::engine_miss`]. The other slots hold pages that share a
//!    word (of three or more letters) with the query (70 %) or random pages.
//!    A refinement's short query has no known origin page: its list holds only
//!    such word-sharing and random pages.
//! 5. **Clicks** ([`ClickModel`]). With probability `abandon` the user leaves
//!    without looking. Otherwise each rank `r` is examined independently with
//!    probability `1/r^examination_exponent` (position bias); an examined
//!    target is clicked with probability `target_click`, after which the user
//!    is satisfied and stops; an examined non-target is clicked with
//!    probability `noise_click` (noise).
//! 6. **Time.** Sessions start at exponentially distributed gaps (mean
//!    [`SynthConfig::mean_session_gap_secs`]) from
//!    [`SynthConfig::start_ts`]; a click comes 2-30 s after the previous
//!    action, a refined search 4-20 s after. Sessions overlap; the log is
//!    sorted by time, so it can be split by time.

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::corpus::{load_pages, CorpusError, Page};
use crate::events::{write_events_file, ClickEvent, Event, EventLogError, SearchEvent};
use crate::normalize::{normalize, terms};

/// 2026-01-01T00:00:00Z, the default start of a synthetic log.
pub const DEFAULT_START_TS: u64 = 1_767_225_600;

/// How simulated users examine and click a result list.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickModel {
    /// Rank `r` is examined with probability `1/r^examination_exponent`.
    pub examination_exponent: f64,
    /// Probability of clicking the wanted page once it is examined.
    pub target_click: f64,
    /// Probability of clicking an examined page that is not the wanted one.
    pub noise_click: f64,
    /// Probability of leaving a result list without examining it.
    pub abandon: f64,
}

impl Default for ClickModel {
    fn default() -> Self {
        ClickModel {
            examination_exponent: 0.7,
            target_click: 0.9,
            noise_click: 0.04,
            abandon: 0.1,
        }
    }
}

/// Parameters of the synthetic log (see the module docs for their roles).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of user sessions.
    pub sessions: usize,
    /// RNG seed; the same seed gives the same log.
    pub seed: u64,
    /// Unix time of the first session.
    pub start_ts: u64,
    /// Mean gap between session starts, in seconds.
    pub mean_session_gap_secs: f64,
    /// Zipf exponent of page popularity.
    pub popularity_exponent: f64,
    /// The target lands at rank `r` with weight `1/r^target_rank_exponent`.
    pub target_rank_exponent: f64,
    /// Probability that the stand-in engine does not show the target at all.
    pub engine_miss: f64,
    /// Probability that a user first searches a shorter prefix of the query.
    pub refine: f64,
    /// Length of a shown result list.
    pub list_len: usize,
    /// How users examine and click.
    pub click_model: ClickModel,
}

impl SynthConfig {
    /// The defaults used for the sample logs, with the given size and seed.
    pub fn new(sessions: usize, seed: u64) -> Self {
        SynthConfig {
            sessions,
            seed,
            start_ts: DEFAULT_START_TS,
            mean_session_gap_secs: 45.0,
            popularity_exponent: 0.8,
            target_rank_exponent: 1.1,
            engine_miss: 0.08,
            refine: 0.25,
            list_len: 10,
            click_model: ClickModel::default(),
        }
    }
}

/// Why a synthetic log could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// The corpus has no usable page in the language.
    #[error("the corpus has no non-alias page with examples in language {0:?}")]
    NoPages(String),
    /// The log could not be written.
    #[error(transparent)]
    Write(#[from] EventLogError),
}

/// Generates a synthetic log for the pages of `lang` in the gzipped corpus.
pub fn generate_from_corpus(
    corpus: &Path,
    lang: &str,
    cfg: &SynthConfig,
) -> Result<Vec<Event>, SynthError> {
    let pages = load_pages(corpus, lang)?;
    if pages.is_empty() {
        return Err(SynthError::NoPages(lang.to_string()));
    }
    Ok(generate(&pages, cfg))
}

/// Generates a synthetic log for `lang` and writes it to `out` (gzipped if it
/// ends in `.gz`). Returns the number of events written.
pub fn generate_file(
    corpus: &Path,
    lang: &str,
    cfg: &SynthConfig,
    out: &Path,
) -> Result<usize, SynthError> {
    let events = generate_from_corpus(corpus, lang, cfg)?;
    write_events_file(out, &events)?;
    Ok(events.len())
}

/// Generates a synthetic log over `pages`, sorted by time. An empty page list
/// gives an empty log.
pub fn generate(pages: &[Page], cfg: &SynthConfig) -> Vec<Event> {
    if pages.iter().any(|p| p.examples.is_empty()) {
        // Nobody can phrase a query after a page without examples.
        let usable: Vec<Page> = pages
            .iter()
            .filter(|p| !p.examples.is_empty())
            .cloned()
            .collect();
        return generate(&usable, cfg);
    }
    if pages.is_empty() {
        return Vec::new();
    }
    let engine = Engine::new(pages, cfg);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<u32> = (0..index_u32(pages.len())).collect();
    order.shuffle(&mut rng);
    let popularity =
        Cumulative::new((1..=order.len()).map(|i| (i as f64).powf(-cfg.popularity_exponent)));

    let mut events = Vec::new();
    let mut session_start = cfg.start_ts as f64;
    for n in 0..cfg.sessions {
        let gap = -cfg.mean_session_gap_secs * (1.0 - rng.random::<f64>()).ln();
        session_start += gap.max(1.0);
        let target = order[popularity.sample(&mut rng)];
        let page = &pages[target as usize];
        let examples = Cumulative::new((1..=page.examples.len()).map(|j| 1.0 / j as f64));
        let description = &page.examples[examples.sample(&mut rng)];
        let full = phrase(description, &mut rng);
        if full.is_empty() {
            continue;
        }
        let mut session = SessionSim {
            id: format!("s{}-{n}", cfg.seed),
            ts: session_start as u64,
            pages,
            events: &mut events,
        };
        let words: Vec<&str> = full.split(' ').collect();
        if words.len() >= 3 && chance(&mut rng, cfg.refine) {
            let short = words[..rng.random_range(1..=2)].join(" ");
            let shown = engine.results(&short, None);
            let satisfied = session.search(&short, &shown, target, &cfg.click_model, &mut rng);
            if satisfied {
                continue;
            }
            session.ts += rng.random_range(4..=20);
        }
        let shown = engine.results(&full, Some(target));
        session.search(&full, &shown, target, &cfg.click_model, &mut rng);
    }
    events.sort_by_key(Event::ts);
    events
}

/// One simulated session appending its events.
struct SessionSim<'a> {
    id: String,
    /// Time of the session's latest action.
    ts: u64,
    pages: &'a [Page],
    events: &'a mut Vec<Event>,
}

impl SessionSim<'_> {
    /// Logs a search and the clicks the click model produces for it; returns
    /// whether the user found (clicked) the target.
    fn search(
        &mut self,
        query: &str,
        shown: &[u32],
        target: u32,
        model: &ClickModel,
        rng: &mut StdRng,
    ) -> bool {
        self.events.push(Event::Search(SearchEvent {
            ts: self.ts,
            session: self.id.clone(),
            query: query.to_string(),
            shown: shown
                .iter()
                .map(|&p| self.pages[p as usize].id.clone())
                .collect(),
        }));
        if chance(rng, model.abandon) {
            return false;
        }
        for (i, &page) in shown.iter().enumerate() {
            let rank = i + 1;
            if !chance(rng, (rank as f64).powf(-model.examination_exponent)) {
                continue;
            }
            let is_target = page == target;
            let p_click = if is_target {
                model.target_click
            } else {
                model.noise_click
            };
            if chance(rng, p_click) {
                self.ts += rng.random_range(2..=30);
                self.events.push(Event::Click(ClickEvent {
                    ts: self.ts,
                    session: self.id.clone(),
                    query: query.to_string(),
                    doc: self.pages[page as usize].id.clone(),
                    rank: index_u32(rank),
                }));
                if is_target {
                    return true;
                }
            }
        }
        false
    }
}

/// The stand-in search engine that makes `shown` lists (see the module docs).
struct Engine<'a> {
    pages: &'a [Page],
    /// Pages containing each normalised word of 3+ characters (title and
    /// example descriptions), in page order.
    by_term: HashMap<String, Vec<u32>>,
    seed: u64,
    list_len: usize,
    engine_miss: f64,
    target_rank: Cumulative,
}

impl<'a> Engine<'a> {
    fn new(pages: &'a [Page], cfg: &SynthConfig) -> Self {
        let mut by_term: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, page) in pages.iter().enumerate() {
            let i = index_u32(i);
            let text = normalize(&format!("{} {}", page.title, page.examples.join(" ")));
            for term in terms(&text).filter(|t| t.chars().count() >= 3) {
                let postings = by_term.entry(term.to_string()).or_default();
                if postings.last() != Some(&i) {
                    postings.push(i);
                }
            }
        }
        let list_len = cfg.list_len.clamp(1, pages.len());
        Engine {
            pages,
            by_term,
            seed: cfg.seed,
            list_len,
            engine_miss: cfg.engine_miss,
            target_rank: Cumulative::new(
                (1..=list_len).map(|r| (r as f64).powf(-cfg.target_rank_exponent)),
            ),
        }
    }

    /// The result list for `query`, phrased after page `origin` if known.
    /// Deterministic in (seed, query, origin), independent of session order.
    fn results(&self, query: &str, origin: Option<u32>) -> Vec<u32> {
        let origin_mix = origin.map_or(0, |o| {
            (u64::from(o) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        let mut rng = StdRng::seed_from_u64(self.seed ^ fnv1a(query.as_bytes()) ^ origin_mix);
        let target_slot = match origin {
            Some(_) if !chance(&mut rng, self.engine_miss) => {
                Some(self.target_rank.sample(&mut rng))
            }
            _ => None,
        };
        let normalized = normalize(query);
        let postings: Vec<&Vec<u32>> = terms(&normalized)
            .filter_map(|t| self.by_term.get(t))
            .collect();
        let others = if target_slot.is_some() {
            self.list_len - 1
        } else {
            self.list_len
        };
        let mut list: Vec<u32> = Vec::with_capacity(self.list_len);
        // Bounded attempts: a tiny corpus may not have enough distinct pages.
        let mut attempts = 0;
        while list.len() < others && attempts < 20 * self.list_len {
            attempts += 1;
            let candidate = if !postings.is_empty() && chance(&mut rng, 0.7) {
                let p = postings[rng.random_range(0..postings.len())];
                p[rng.random_range(0..p.len())]
            } else {
                rng.random_range(0..index_u32(self.pages.len()))
            };
            if Some(candidate) != origin && !list.contains(&candidate) {
                list.push(candidate);
            }
        }
        if let (Some(slot), Some(target)) = (target_slot, origin) {
            list.insert(slot.min(list.len()), target);
        }
        list
    }
}

/// Turns an example description into a query a user might type.
fn phrase(description: &str, rng: &mut StdRng) -> String {
    // Nobody types tldr's markup or its parenthetical asides
    // ("(default location is ~/.config/...)").
    let mut depth = 0usize;
    let cleaned: String = description
        .chars()
        .filter(|&c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    return false;
                }
                _ => {}
            }
            depth == 0 && !matches!(c, '`' | '"' | '[' | ']' | '(')
        })
        .collect::<String>()
        .to_lowercase();
    let cleaned = cleaned.trim_end_matches(['.', ':', ' ']);
    let mut words: Vec<String> = cleaned.split_whitespace().map(str::to_string).collect();
    let n = words.len();
    let variant: f64 = rng.random();
    if variant < 0.5 || n < 3 {
        // Typed as written.
    } else if variant < 0.7 {
        words.truncate(rng.random_range(2..n));
    } else if variant < 0.9 {
        words.remove(rng.random_range(1..n));
    } else {
        let long: Vec<usize> = (0..n).filter(|&i| words[i].chars().count() >= 4).collect();
        if !long.is_empty() {
            let w = long[rng.random_range(0..long.len())];
            let mut chars: Vec<char> = words[w].chars().collect();
            let at = rng.random_range(0..chars.len() - 1);
            chars.swap(at, at + 1);
            words[w] = chars.into_iter().collect();
        }
    }
    let query = words.join(" ");
    if chance(rng, 0.3) {
        query.nfd().filter(|c| !is_combining_mark(*c)).collect()
    } else {
        query
    }
}

/// True with probability `p`, clamped to 0..=1 (NaN counts as 0), so an odd
/// configuration value cannot make `random_bool` panic.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    rng.random_bool(p)
}

/// A discrete distribution given by (unnormalised) weights.
struct Cumulative {
    totals: Vec<f64>,
}

impl Cumulative {
    fn new(weights: impl Iterator<Item = f64>) -> Self {
        let mut sum = 0.0;
        let totals = weights
            .map(|w| {
                sum += w.max(0.0);
                sum
            })
            .collect();
        Cumulative { totals }
    }

    /// An index drawn with probability proportional to its weight. Callers
    /// never pass an empty weight list (pages and examples are non-empty).
    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.totals.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        self.totals
            .partition_point(|&t| t <= x)
            .min(self.totals.len().saturating_sub(1))
    }
}

/// FNV-1a: a hash that, unlike std's `DefaultHasher`, is stable across Rust
/// releases, so the synthetic engine's lists never change under us.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Page and rank indices fit in u32 for any corpus this generator is meant
/// for; saturate rather than wrap if one ever does not.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::toy_pages;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_log_other_seed_other_log() {
        let pages = toy_pages();
        let a = generate(&pages, &SynthConfig::new(300, 7));
        let b = generate(&pages, &SynthConfig::new(300, 7));
        let c = generate(&pages, &SynthConfig::new(300, 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn log_is_time_ordered_and_consistent() {
        let pages = toy_pages();
        let ids: HashSet<&str> = pages.iter().map(|p| p.id.as_str()).collect();
        let events = generate(&pages, &SynthConfig::new(500, 1));
        assert!(events.windows(2).all(|w| w[0].ts() <= w[1].ts()));
        let mut last_shown: HashMap<(String, String), Vec<String>> = HashMap::new();
        let (mut searches, mut clicks) = (0, 0);
        for e in &events {
            match e {
                Event::Search(s) => {
                    searches += 1;
                    assert!(!s.shown.is_empty() && s.shown.len() <= 10);
                    assert!(s.shown.iter().all(|d| ids.contains(d.as_str())));
                    let distinct: HashSet<&String> = s.shown.iter().collect();
                    assert_eq!(distinct.len(), s.shown.len(), "no duplicates in a list");
                    last_shown.insert((s.session.clone(), s.query.clone()), s.shown.clone());
                }
                Event::Click(c) => {
                    clicks += 1;
                    let shown = &last_shown[&(c.session.clone(), c.query.clone())];
                    assert_eq!(shown[c.rank as usize - 1], c.doc, "rank points at the doc");
                }
            }
        }
        assert!(searches >= 500, "every session searches at least once");
        assert!(
            clicks > searches / 3 && clicks < searches,
            "{clicks} clicks / {searches}"
        );
    }

    #[test]
    fn clicks_show_position_bias() {
        let events = generate(&toy_pages(), &SynthConfig::new(3000, 3));
        let mut by_rank = [0usize; 11];
        for e in &events {
            if let Event::Click(c) = e {
                by_rank[c.rank as usize] += 1;
            }
        }
        assert!(
            by_rank[1] > by_rank[3] && by_rank[3] > by_rank[8],
            "{by_rank:?}"
        );
    }

    #[test]
    fn repeated_query_shows_the_same_list() {
        let pages = toy_pages();
        let cfg = SynthConfig::new(1, 5);
        let engine = Engine::new(&pages, &cfg);
        assert_eq!(
            engine.results("extract a archive", Some(0)),
            engine.results("extract a archive", Some(0))
        );
        assert_eq!(
            engine.results("extract", None),
            engine.results("extract", None)
        );
    }

    #[test]
    fn phrasing_removes_markup() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let q = phrase("Extract a `tar` [a]rchive (if any) \"now\".", &mut rng);
            assert!(
                !q.contains(['`', '[', ']', '"', '(', ')']) && !q.ends_with('.'),
                "{q}"
            );
            assert!(!q.contains("if any"), "{q}");
            assert_eq!(q, q.to_lowercase());
        }
    }

    #[test]
    fn empty_corpus_gives_empty_log() {
        assert!(generate(&[], &SynthConfig::new(10, 1)).is_empty());
        let no_examples = Page {
            id: "en/common/x".into(),
            title: "x".into(),
            examples: vec![],
        };
        assert!(generate(std::slice::from_ref(&no_examples), &SynthConfig::new(10, 1)).is_empty());
        let mut pages = toy_pages();
        pages.push(no_examples);
        let events = generate(&pages, &SynthConfig::new(50, 1));
        assert!(events.iter().all(|e| match e {
            Event::Search(s) => !s.shown.contains(&"en/common/x".to_string()),
            Event::Click(c) => c.doc != "en/common/x",
        }));
    }

    #[test]
    fn odd_probabilities_do_not_panic() {
        let mut cfg = SynthConfig::new(50, 1);
        cfg.refine = 7.0;
        cfg.engine_miss = f64::NAN;
        cfg.click_model.abandon = -1.0;
        cfg.mean_session_gap_secs = f64::NAN;
        cfg.list_len = 0;
        assert!(!generate(&toy_pages(), &cfg).is_empty());
    }
}
