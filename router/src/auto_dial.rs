//! The health-driven dial: a region whose own index replicas fail health
//! shifts its active-active traffic to the paired region by itself, and
//! shifts it back, with hysteresis, once they are healthy again, as a load
//! balancer's health checks would. Off unless `auto_dial_after_ms` is set
//! (per router, so per region in a fleet).
//!
//! Every `AUTO_DIAL_TICK` the router looks at the index-nodes of its own
//! region: the share that are not healthy (ejected or on probation, from
//! the outlier detector fed by calls and probes). At or above
//! `auto_dial_threshold` the region is *failing*. The states:
//!
//! - **Normal**: the operator's dial applies.
//! - **Failing** since T: failing, not yet for `auto_dial_after_ms`; a
//!   healthy look returns to Normal.
//! - **Shifted**: failing for `auto_dial_after_ms`: the region's effective
//!   dial is 0 (its active-active tenants are served by the paired region,
//!   as long as a router there is healthy).
//! - **Recovering** since T: healthy again, not yet for
//!   `auto_dial_back_after_ms`; a failing look returns to Shifted.
//!
//! Only the edges into Shifted and back to Normal change traffic; both are
//! logged and counted (`router_auto_dial_changes_total{to}`), and
//! `router_auto_dial_shifted` is 1 while shifted.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::NodeKind;
use crate::state::RouterState;

/// How often the region's health is looked at.
pub const AUTO_DIAL_TICK: Duration = Duration::from_millis(250);

/// When to shift and shift back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoDialConfig {
    /// Failing this long: shift away.
    pub after: Duration,
    /// Healthy again this long: shift back.
    pub back_after: Duration,
    /// Share of the region's index-nodes unhealthy that makes it failing.
    pub threshold: f64,
}

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Failing { since: Instant },
    Shifted,
    Recovering { since: Instant },
}

/// A change of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The region's traffic went to the paired region.
    ShiftedAway,
    /// It came back.
    ShiftedBack,
}

/// The state machine (see the module documentation).
#[derive(Debug)]
pub struct AutoDial {
    config: AutoDialConfig,
    state: Mutex<State>,
    shifted: AtomicBool,
}

impl AutoDial {
    /// A machine in the Normal state.
    pub fn new(config: AutoDialConfig) -> Self {
        AutoDial {
            config,
            state: Mutex::new(State::Normal),
            shifted: AtomicBool::new(false),
        }
    }

    /// Whether the region's traffic is shifted away (its dial is 0).
    pub fn shifted(&self) -> bool {
        self.shifted.load(Relaxed)
    }

    /// Takes one look: `unhealthy` of the region's index-nodes are not
    /// healthy, at `now`. Returns the change of traffic, if any.
    pub fn observe(&self, unhealthy: f64, now: Instant) -> Option<Change> {
        let failing = unhealthy >= self.config.threshold;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, change) = match (*state, failing) {
            (State::Normal, true) => (State::Failing { since: now }, None),
            (State::Normal, false) => (State::Normal, None),
            (State::Failing { since }, true) if now - since >= self.config.after => {
                (State::Shifted, Some(Change::ShiftedAway))
            }
            (State::Failing { since }, true) => (State::Failing { since }, None),
            (State::Failing { .. }, false) => (State::Normal, None),
            (State::Shifted, true) => (State::Shifted, None),
            (State::Shifted, false) => (State::Recovering { since: now }, None),
            (State::Recovering { since }, false) if now - since >= self.config.back_after => {
                (State::Normal, Some(Change::ShiftedBack))
            }
            (State::Recovering { since }, false) => (State::Recovering { since }, None),
            (State::Recovering { .. }, true) => (State::Shifted, None),
        };
        *state = next;
        self.shifted.store(
            matches!(next, State::Shifted | State::Recovering { .. }),
            Relaxed,
        );
        change
    }
}

/// The share of `state`'s own region's index-nodes that are not healthy
/// (0 when it has none).
pub fn unhealthy_share(state: &RouterState) -> f64 {
    let catalog = state.catalog.current();
    let (mut all, mut unhealthy) = (0usize, 0usize);
    for node in catalog
        .nodes()
        .filter(|n| n.kind == NodeKind::Index && n.region == state.region)
    {
        all += 1;
        unhealthy += usize::from(!state.resilience.nodes.health(&node.id).is_healthy());
    }
    if all == 0 {
        0.0
    } else {
        unhealthy as f64 / all as f64
    }
}

/// Looks at the region every [`AUTO_DIAL_TICK`] until the task is dropped.
pub async fn run(state: Arc<RouterState>, auto: Arc<AutoDial>) {
    let mut tick = tokio::time::interval(AUTO_DIAL_TICK);
    loop {
        tick.tick().await;
        let share = unhealthy_share(&state);
        let Some(change) = auto.observe(share, Instant::now()) else {
            continue;
        };
        let (to, shifted) = match change {
            Change::ShiftedAway => ("away", 1.0),
            Change::ShiftedBack => ("back", 0.0),
        };
        tracing::warn!(region = %state.region, unhealthy = share, to,
            "health-driven dial: traffic of this region shifted");
        metrics::counter!("router_auto_dial_changes_total", "to" => to).increment(1);
        metrics::gauge!("router_auto_dial_shifted").set(shifted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> AutoDial {
        AutoDial::new(AutoDialConfig {
            after: Duration::from_secs(5),
            back_after: Duration::from_secs(30),
            threshold: 0.5,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn shifts_after_failing_long_enough_and_back_with_hysteresis() {
        let a = auto();
        let look = |share| a.observe(share, Instant::now());
        assert_eq!(look(0.0), None);
        assert_eq!(look(0.5), None, "failing starts");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(look(1.0), None);
        assert!(!a.shifted());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(look(1.0), Some(Change::ShiftedAway));
        assert!(a.shifted());
        // Healthy again, but not long enough; a relapse restarts the wait.
        assert_eq!(look(0.0), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(look(0.6), None);
        assert!(a.shifted());
        assert_eq!(look(0.0), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(look(0.0), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(look(0.0), Some(Change::ShiftedBack));
        assert!(!a.shifted());
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_blip_changes_nothing() {
        let a = auto();
        assert_eq!(a.observe(1.0, Instant::now()), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(a.observe(0.25, Instant::now()), None, "below the threshold");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            a.observe(1.0, Instant::now()),
            None,
            "the wait starts again"
        );
        assert!(!a.shifted());
    }
}
