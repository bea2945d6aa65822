//! The publication gate of `tandem train`: a new model is published only if
//! it is not worse than the one served, judged on recent events it was not
//! trained on.
//!
//! The events are split by time (`eval::split_by_time`, sessions whole):
//! the newest `holdout` share is held out, and both sides are judged on it
//! by the model-node's offline evaluation (MRR of the clicked documents
//! after re-ranking with each model's boosts):
//!
//! - the **candidate**: trained on the rest;
//! - the **current version's twin**: the same training on the part of the
//!   rest the current version was trained on (events up to its
//!   `trained_through`). The current version itself has usually seen the
//!   held-out events, which would flatter it (a model judged on its own
//!   training data); its twin has not, so the two compare fairly, and
//!   what differs is exactly the events that came since.
//!
//! The candidate passes when its MRR is at least the twin's minus
//! `tolerance`. What is published is then trained on every event. The
//! current version's own (flattered) MRR is reported too.
//!
//! `shuffle_clicks` is the gate's negative control: every training click is
//! moved to a random result of its search (the held-out clicks stay real),
//! so the candidate learns noise and must be refused.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use tandem_model_node::eval::{evaluate_model, split_by_time, Mrr};
use tandem_model_node::events::Event;
use tandem_model_node::train::{train, TrainConfig, TrainError, TrainStats};
use tandem_model_node::ModelSet;

/// The gate's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Share of the events (newest first, by time) held out for judging.
    pub holdout: f64,
    /// How much lower than the current MRR a candidate may score.
    pub tolerance: f64,
    /// Held-out searches with a click needed to judge at all.
    pub min_searches: usize,
    /// Train on clicks moved to random results (a negative control).
    pub shuffle_clicks: bool,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            holdout: 0.2,
            tolerance: 0.01,
            min_searches: 20,
            shuffle_clicks: false,
        }
    }
}

/// What the gate decided, with the figures.
#[derive(Debug)]
pub struct Verdict {
    /// The model to publish (trained on every event).
    pub model: ModelSet,
    /// Its training statistics.
    pub stats: TrainStats,
    /// The candidate's MRR on the held-out events.
    pub candidate: Mrr,
    /// Its twin's (see the module docs), if a version serves.
    pub current: Option<Mrr>,
    /// The current version's own MRR on the held-out events (flattered
    /// when it was trained on them), if one serves.
    pub current_own: Option<Mrr>,
    /// Publish or not.
    pub publish: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// Trains and judges (see the module docs).
pub fn judge(
    events: &[Event],
    tenant: &str,
    current: Option<&ModelSet>,
    cfg: &GateConfig,
) -> Result<Verdict, TrainError> {
    let (train_part, test_part) = split_by_time(events, 1.0 - cfg.holdout);
    let train_config = TrainConfig::default();
    let current_own = current.map(|m| evaluate_model(m, &test_part).mrr);
    let current = match current {
        Some(m) => {
            let seen: Vec<Event> = train_part
                .iter()
                .filter(|e| e.ts() <= m.meta.trained_through)
                .cloned()
                .collect();
            let (twin, _) = train(&seen, tenant, &train_config)?;
            Some(evaluate_model(&twin, &test_part).mrr)
        }
        None => None,
    };
    let (mut candidate_part, mut all) = (train_part, events.to_vec());
    if cfg.shuffle_clicks {
        shuffle_clicks(&mut candidate_part, 7);
        shuffle_clicks(&mut all, 7);
    }
    let (candidate_model, _) = train(&candidate_part, tenant, &train_config)?;
    let candidate = evaluate_model(&candidate_model, &test_part).mrr;
    let (publish, reason) = match current {
        None => (true, "no version is served yet".to_string()),
        Some(_) if candidate.searches < cfg.min_searches => (
            true,
            format!(
                "too few held-out searches with a click to judge ({} < {})",
                candidate.searches, cfg.min_searches
            ),
        ),
        Some(cur) if candidate.boosted + cfg.tolerance >= cur.boosted => (
            true,
            format!(
                "held-out MRR {:.4} against {:.4} of the served version's twin (tolerance {})",
                candidate.boosted, cur.boosted, cfg.tolerance
            ),
        ),
        Some(cur) => (
            false,
            format!(
                "held-out MRR {:.4} is worse than the {:.4} of the served version's twin by more \
                 than {} (over {} searches)",
                candidate.boosted, cur.boosted, cfg.tolerance, candidate.searches
            ),
        ),
    };
    let (model, stats) = train(&all, tenant, &train_config)?;
    Ok(Verdict {
        model,
        stats,
        candidate,
        current,
        current_own,
        publish,
        reason,
    })
}

/// Moves every click to a random result of its session's latest search
/// (deterministic for a `seed`).
pub fn shuffle_clicks(events: &mut [Event], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut shown: HashMap<String, Vec<String>> = HashMap::new();
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].ts());
    for i in order {
        match &mut events[i] {
            Event::Search(s) => {
                shown.insert(s.session.clone(), s.shown.clone());
            }
            Event::Click(c) => {
                if let Some(list) = shown.get(&c.session).filter(|l| !l.is_empty()) {
                    let pick = rng.random_range(0..list.len());
                    c.doc = list[pick].clone();
                    c.rank = pick as u32 + 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model_node::corpus::load_pages;
    use tandem_model_node::synth::{generate, SynthConfig};

    fn sample() -> Vec<Event> {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/tldr_pages/docs.jsonl.gz");
        let pages = load_pages(&corpus, "es").expect("sample corpus");
        generate(&pages, &SynthConfig::new(6000, 42))
    }

    #[test]
    fn real_clicks_pass_and_shuffled_clicks_are_refused() {
        let events = sample();
        let (current, _) = train(&events, "t1", &TrainConfig::default()).expect("train");
        let real = judge(&events, "t1", Some(&current), &GateConfig::default()).expect("judge");
        assert!(real.publish, "{}", real.reason);
        let shuffled = GateConfig {
            shuffle_clicks: true,
            ..GateConfig::default()
        };
        let noise = judge(&events, "t1", Some(&current), &shuffled).expect("judge");
        assert!(!noise.publish, "{}", noise.reason);
        let cur = noise.current.expect("current");
        assert!(noise.candidate.boosted < cur.boosted);
        let first = judge(&events, "t1", None, &shuffled).expect("judge");
        assert!(first.publish, "the first version has nothing to beat");
    }
}
