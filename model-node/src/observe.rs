//! Joining click events to the searches they belong to.
//!
//! The log records searches and clicks as separate lines. Both models need
//! them together ("this query showed these documents and these were
//! clicked"), and so does the offline evaluation, so the join lives here once.

use std::collections::HashMap;

use crate::events::Event;
use crate::normalize::normalize;

/// A search with the clicks that followed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSearch {
    /// Unix time of the search, in seconds.
    pub ts: u64,
    /// The session it belongs to.
    pub session: String,
    /// The normalised query (may be empty if the user typed only
    /// punctuation; models skip those).
    pub query: String,
    /// The documents shown, best first.
    pub shown: Vec<String>,
    /// 0-based positions in `shown` that were clicked, in click order, each
    /// at most once.
    pub clicked: Vec<usize>,
}

/// What the join saw, so that nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Search events.
    pub searches: usize,
    /// Click events.
    pub clicks: usize,
    /// Searches whose query normalises to nothing.
    pub empty_queries: usize,
    /// Clicks with no earlier search of the same session and query (ignored).
    pub orphan_clicks: usize,
    /// Clicks on a document the search did not show (ignored: without a
    /// position there is no expectation to compare against).
    pub clicks_not_shown: usize,
    /// Clicks whose `rank` did not point at `doc` but whose `doc` was shown
    /// elsewhere in the list (counted at the document's actual position).
    pub rank_mismatches: usize,
    /// Repeated clicks on the same result of the same search (counted once).
    pub duplicate_clicks: usize,
}

/// Joins clicks to searches.
///
/// Events are taken in time order (a stable sort by `ts`, so equal times keep
/// log order). A click belongs to the latest search at or before it in the
/// same session whose query normalises to the same text.
pub fn join(events: &[Event]) -> (Vec<ObservedSearch>, JoinStats) {
    let mut order: Vec<&Event> = events.iter().collect();
    order.sort_by_key(|e| e.ts());
    let mut stats = JoinStats::default();
    let mut searches: Vec<ObservedSearch> = Vec::new();
    let mut latest: HashMap<(String, String), usize> = HashMap::new();
    for event in order {
        match event {
            Event::Search(s) => {
                stats.searches += 1;
                let query = normalize(&s.query);
                if query.is_empty() {
                    stats.empty_queries += 1;
                }
                latest.insert((s.session.clone(), query.clone()), searches.len());
                searches.push(ObservedSearch {
                    ts: s.ts,
                    session: s.session.clone(),
                    query,
                    shown: s.shown.clone(),
                    clicked: Vec::new(),
                });
            }
            Event::Click(c) => {
                stats.clicks += 1;
                let key = (c.session.clone(), normalize(&c.query));
                let Some(&i) = latest.get(&key) else {
                    stats.orphan_clicks += 1;
                    continue;
                };
                let search = &mut searches[i];
                let at_rank = (c.rank as usize)
                    .checked_sub(1)
                    .filter(|&p| search.shown.get(p) == Some(&c.doc));
                let position = match at_rank {
                    Some(p) => p,
                    None => match search.shown.iter().position(|d| *d == c.doc) {
                        Some(p) => {
                            stats.rank_mismatches += 1;
                            p
                        }
                        None => {
                            stats.clicks_not_shown += 1;
                            continue;
                        }
                    },
                };
                if search.clicked.contains(&position) {
                    stats.duplicate_clicks += 1;
                } else {
                    search.clicked.push(position);
                }
            }
        }
    }
    (searches, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClickEvent, SearchEvent};

    fn search(ts: u64, session: &str, query: &str, shown: &[&str]) -> Event {
        Event::Search(SearchEvent {
            ts,
            session: session.into(),
            query: query.into(),
            shown: shown.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn click(ts: u64, session: &str, query: &str, doc: &str, rank: u32) -> Event {
        Event::Click(ClickEvent {
            ts,
            session: session.into(),
            query: query.into(),
            doc: doc.into(),
            rank,
        })
    }

    #[test]
    fn clicks_join_the_latest_matching_search() {
        let events = vec![
            search(1, "s1", "Tar", &["a", "b"]),
            search(2, "s2", "tar", &["x", "y"]),
            search(5, "s1", "tar", &["b", "a"]),
            // Out of log order on purpose: joined by time, not by line.
            click(6, "s1", "TAR ", "a", 2),
            click(4, "s1", "tar", "b", 2),
        ];
        let (searches, stats) = join(&events);
        assert_eq!(searches[0].clicked, vec![1]);
        assert!(searches[1].clicked.is_empty());
        assert_eq!(searches[2].clicked, vec![1]);
        assert_eq!(searches[2].query, "tar");
        assert_eq!(stats.orphan_clicks, 0);
    }

    #[test]
    fn odd_clicks_are_counted_not_hidden() {
        let events = vec![
            search(1, "s1", "tar", &["a", "b"]),
            click(2, "s1", "zip", "a", 1),
            click(3, "s1", "tar", "c", 1),
            click(4, "s1", "tar", "b", 1),
            click(5, "s1", "tar", "b", 2),
            search(6, "s1", "?!", &[]),
        ];
        let (searches, stats) = join(&events);
        assert_eq!(searches[0].clicked, vec![1]);
        assert_eq!(
            stats,
            JoinStats {
                searches: 2,
                clicks: 4,
                empty_queries: 1,
                orphan_clicks: 1,
                clicks_not_shown: 1,
                rank_mismatches: 1,
                duplicate_clicks: 1,
            }
        );
    }
}
