//! Position bias: how many clicks a result "should" get at its rank.
//!
//! Used by [`crate::relevance`] to turn raw clicks into clicks over expected
//! clicks (COEC). The click-through curve `ctr[r]` is clicks at rank r over
//! impressions at rank r, estimated from the training log itself (searches
//! with a normalised query, abandoned ones included: abandonment lowers every
//! rank alike). The raw rates are fitted by the closest non-increasing curve
//! (weighted isotonic regression, pool-adjacent-violators), ranks with no
//! impressions take the value of the rank above, and the curve is floored at
//! 1e-4 so no rank expects zero clicks.

use crate::observe::ObservedSearch;

/// The position click-through curve, index = 0-based rank (see the module docs).
pub(crate) fn ctr_curve(searches: &[ObservedSearch], max_rank: usize) -> Vec<f64> {
    let mut impressions = vec![0f64; max_rank];
    let mut clicks = vec![0f64; max_rank];
    for s in searches.iter().filter(|s| !s.query.is_empty()) {
        for slot in impressions.iter_mut().take(s.shown.len()) {
            *slot += 1.0;
        }
        for &p in &s.clicked {
            if let Some(c) = clicks.get_mut(p) {
                *c += 1.0;
            }
        }
    }
    // Weighted pool-adjacent-violators: the non-increasing curve closest to
    // the raw rates, so a rank with few impressions and a lucky click cannot
    // expect more clicks than the ranks above it.
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new(); // (rate, impressions, ranks)
    for (imp, clk) in impressions
        .iter()
        .zip(&clicks)
        .filter(|(imp, _)| **imp > 0.0)
    {
        blocks.push((clk / imp, *imp, 1));
        while blocks.len() >= 2 && blocks[blocks.len() - 2].0 < blocks[blocks.len() - 1].0 {
            let (r2, w2, n2) = blocks.pop().unwrap_or_default();
            let (r1, w1, n1) = blocks.pop().unwrap_or_default();
            blocks.push(((r1 * w1 + r2 * w2) / (w1 + w2), w1 + w2, n1 + n2));
        }
    }
    let mut fitted = blocks
        .iter()
        .flat_map(|&(rate, _, n)| std::iter::repeat_n(rate, n));
    let mut curve = Vec::with_capacity(max_rank);
    let mut previous = None;
    for imp in &impressions {
        // Ranks nobody saw take the rate of the rank above (only their
        // shape matters: no training document was shown there).
        let rate = if *imp > 0.0 { fitted.next() } else { None };
        let rate = rate.or(previous).unwrap_or(1.0).max(1e-4);
        curve.push(rate);
        previous = Some(rate);
    }
    curve
}

/// The smoothed COEC boost weight of a document with `clicks` clicks where
/// `expected` were expected: `min(max_weight, (clicks + prior) / (expected +
/// prior) - 1)`. `prior` pseudo clicks at the expected rate pull weak
/// evidence towards "as expected" (0). Negative means fewer clicks than
/// expected; callers keep only positive weights.
pub(crate) fn coec_weight(clicks: f64, expected: f64, prior: f64, max_weight: f64) -> f64 {
    ((clicks + prior) / (expected + prior) - 1.0).min(max_weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(shown: usize, clicked: &[usize]) -> ObservedSearch {
        ObservedSearch {
            ts: 0,
            session: "s".into(),
            query: "q".into(),
            shown: (0..shown).map(|i| format!("d{i}")).collect(),
            clicked: clicked.to_vec(),
        }
    }

    #[test]
    fn curve_follows_the_rates_when_they_decrease() {
        let mut log = Vec::new();
        for i in 0..100 {
            let clicked = match i % 10 {
                0..=4 => vec![0],
                5 | 6 => vec![1],
                7 => vec![2],
                _ => vec![],
            };
            log.push(search(3, &clicked));
        }
        let c = ctr_curve(&log, 4);
        let expect = [0.5, 0.2, 0.1, 0.1];
        assert!(
            c.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-9),
            "{c:?}"
        );
    }

    #[test]
    fn violations_are_pooled_and_the_curve_stays_positive() {
        // Rank 2 is never clicked, rank 3 sometimes: pooled to their mean.
        let mut log = Vec::new();
        for i in 0..100 {
            log.push(search(
                3,
                if i % 2 == 0 {
                    &[0]
                } else if i % 5 == 1 {
                    &[2]
                } else {
                    &[]
                },
            ));
        }
        let c = ctr_curve(&log, 5);
        assert!((c[0] - 0.5).abs() < 1e-9);
        assert!(
            (c[1] - 0.05).abs() < 1e-9 && (c[2] - 0.05).abs() < 1e-9,
            "{c:?}"
        );
        assert!(c.windows(2).all(|w| w[0] >= w[1]) && c.iter().all(|&x| x > 0.0));
        // Nothing clicked at all: floored, never zero.
        assert!(ctr_curve(&[search(3, &[])], 3).iter().all(|&x| x >= 1e-4));
        assert_eq!(ctr_curve(&[], 2), vec![1.0, 1.0]);
    }

    #[test]
    fn weight_is_smoothed_and_capped() {
        assert!((coec_weight(0.0, 0.0, 1.0, 3.0)).abs() < 1e-12);
        assert!((coec_weight(3.0, 1.0, 1.0, 3.0) - 1.0).abs() < 1e-12);
        assert_eq!(coec_weight(100.0, 1.0, 1.0, 3.0), 3.0);
        assert!(coec_weight(1.0, 5.0, 1.0, 3.0) < 0.0);
    }
}
