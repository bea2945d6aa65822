//! When a replica's silence is the node's fault, not one shard's.
//!
//! A per-try timeout (or a lost hedge race, a timeout in all but name)
//! blames the node x tenant-shard pair first: one tenant's expensive query
//! or a shard stuck merging must not eject a node that serves every other
//! tenant well. But a frozen or overloaded process goes silent for all of
//! its shards at once, and must still be ejected at once. So the node is
//! blamed too when several of its pairs time out together: `distinct`
//! different pairs within `window` (default 2 within 1 s).
//!
//! State per node: the pairs that timed out lately, each with its latest
//! timeout (at most [`KEPT`] pairs); pairs quiet for longer than the window
//! are dropped as new timeouts come.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ShardKey;
use crate::IdMap;

/// Pairs remembered per node (more than any sane `distinct`).
const KEPT: usize = 16;

/// A pair that timed out, and when it last did.
type Timeout = ((Arc<str>, u32), Instant);

/// See the module documentation.
#[derive(Debug)]
pub struct Escalation {
    window: Duration,
    distinct: usize,
    recent: IdMap<Arc<str>, Vec<Timeout>>,
}

impl Default for Escalation {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), 2)
    }
}

impl Escalation {
    /// Blames the node when `distinct` pairs (at least 2) time out within
    /// `window`.
    pub fn new(window: Duration, distinct: usize) -> Self {
        Self {
            window,
            distinct: distinct.max(2),
            recent: IdMap::default(),
        }
    }

    /// Records a timeout of `key`; true when the node's recent timeouts
    /// now span `distinct` pairs (so the node is to blame as well).
    pub fn timed_out(&self, key: &ShardKey) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.entry(key.node.clone()).or_default();
        recent.retain(|(_, at)| now.saturating_duration_since(*at) <= self.window);
        let pair = (key.tenant.clone(), key.shard);
        match recent.iter().position(|(p, _)| *p == pair) {
            Some(i) => recent[i].1 = now,
            None if recent.len() < KEPT => recent.push((pair, now)),
            None => {}
        }
        recent.len() >= self.distinct
    }

    /// Forgets nodes for which `keep` is false (after a catalog reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.recent.retain(|node, _| keep(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str, tenant: &str, shard: u32) -> ShardKey {
        ShardKey {
            node: node.into(),
            tenant: tenant.into(),
            shard,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_shard_blames_only_itself() {
        let e = Escalation::default();
        for _ in 0..10 {
            assert!(!e.timed_out(&key("a", "t1", 0)));
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        // Another node's shard is another story.
        assert!(!e.timed_out(&key("b", "t2", 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn several_shards_of_a_node_together_blame_the_node() {
        let e = Escalation::default();
        assert!(!e.timed_out(&key("a", "t1", 0)));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(e.timed_out(&key("a", "t1", 1)), "another shard");
        assert!(e.timed_out(&key("a", "t2", 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_apart_in_time_are_not_together() {
        let e = Escalation::default();
        assert!(!e.timed_out(&key("a", "t1", 0)));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(!e.timed_out(&key("a", "t2", 0)));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(!e.timed_out(&key("a", "t1", 0)));
    }
}
