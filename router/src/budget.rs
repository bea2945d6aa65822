//! Retry budget: retries and hedges together may add at most `ratio` of the
//! original calls, plus a small floor, over a sliding window.
//!
//! The model is Finagle's / linkerd's retry budget: each original call
//! deposits one token, each retry or hedge withdraws one, and the balance is
//! `ratio_percent% x deposits + min_per_sec x window - withdrawals`, counting
//! only what happened during the last `window`, so tokens expire instead of
//! piling up during a quiet hour and being spent in a storm. The floor lets a
//! router with little traffic still retry (one failed call of five must not be
//! "over budget"). When the budget is spent, the serving layer fails the call
//! (or returns what it has) instead of adding load to a fleet that is already
//! failing: that is what turns a brown-out into a brown-out instead of an
//! outage.
//!
//! Deposit once per downstream call's first attempt (per shard call, not per
//! query: retries are per shard call too). One budget per router process is
//! the intended use; nothing stops a finer one.
//!
//! The window is kept as `SLICES` time slices in packed atomics (slice tag +
//! count in one `u64`, updated by compare-and-swap), so the hot path takes no
//! lock. Tokens expire a slice at a time: a token lives between
//! `window - window / SLICES` and `window`. `try_withdraw` checks and then
//! withdraws, so concurrent callers can overdraw by at most one token each; a
//! budget is a rate guard, not an accountant.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// Number of time slices the window is cut into.
const SLICES: u64 = 10;

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries + hedges allowed per 100 original calls (default 20).
    pub ratio_percent: u32,
    /// Retries + hedges allowed per second regardless of traffic (default 10).
    pub min_per_sec: u32,
    /// How long deposits and withdrawals count (default 10 s).
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio_percent: 20,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// A sliding-window retry budget; see the module docs.
#[derive(Debug)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    slice_nanos: u64,
    /// The floor over the whole window, in hundredths of a token.
    reserve_x100: u64,
    epoch: Instant,
    deposits: [AtomicU64; SLICES as usize],
    withdrawals: [AtomicU64; SLICES as usize],
    exhausted: AtomicU64,
}

fn pack(tag: u32, count: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(count)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

impl RetryBudget {
    /// A budget with the given tunables. A zero window is treated as 1 ms.
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let window = cfg.window.max(Duration::from_millis(1));
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let window_millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        RetryBudget {
            cfg: RetryBudgetConfig { window, ..cfg },
            slice_nanos: (window_nanos / SLICES).max(1),
            // min_per_sec x seconds x 100 = min_per_sec x millis / 10.
            reserve_x100: u64::from(cfg.min_per_sec).saturating_mul(window_millis) / 10,
            epoch: Instant::now(),
            deposits: std::array::from_fn(|_| AtomicU64::new(0)),
            withdrawals: std::array::from_fn(|_| AtomicU64::new(0)),
            exhausted: AtomicU64::new(0),
        }
    }

    /// The tunables in force.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.cfg
    }

    /// Index of the current slice since `epoch`.
    fn now_slice(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) / self.slice_nanos
    }

    fn add(slots: &[AtomicU64; SLICES as usize], slice: u64) {
        let slot = &slots[(slice % SLICES) as usize];
        // Tags are the slice index truncated to 32 bits; comparisons wrap.
        let tag = slice as u32;
        let mut current = slot.load(Relaxed);
        loop {
            let (t, count) = unpack(current);
            let next = if t == tag {
                pack(tag, count.saturating_add(1))
            } else if tag.wrapping_sub(t) < u32::MAX / 2 {
                // The slot holds an older slice: reuse it.
                pack(tag, 1)
            } else {
                // A newer slice already took the slot (we were descheduled
                // for a whole window); this event is too old to count.
                return;
            };
            match slot.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn sum(slots: &[AtomicU64; SLICES as usize], slice: u64) -> u64 {
        let tag = slice as u32;
        slots
            .iter()
            .map(|s| unpack(s.load(Relaxed)))
            .filter(|(t, _)| u64::from(tag.wrapping_sub(*t)) < SLICES)
            .map(|(_, count)| u64::from(count))
            .sum()
    }

    /// Records an original call (one token for the budget).
    pub fn deposit(&self) {
        Self::add(&self.deposits, self.now_slice());
    }

    /// Retries and hedges that may be made now, in whole tokens.
    pub fn available(&self) -> u64 {
        self.available_at(self.now_slice())
    }

    fn available_at(&self, slice: u64) -> u64 {
        let earned = u64::from(self.cfg.ratio_percent)
            .saturating_mul(Self::sum(&self.deposits, slice))
            .saturating_add(self.reserve_x100);
        let spent = Self::sum(&self.withdrawals, slice).saturating_mul(100);
        earned.saturating_sub(spent) / 100
    }

    /// Whether more than half of what the window earned is unspent: a
    /// retry that would feed an overload (after a shed answer) is made
    /// only then.
    pub fn has_headroom(&self) -> bool {
        let slice = self.now_slice();
        let earned = u64::from(self.cfg.ratio_percent)
            .saturating_mul(Self::sum(&self.deposits, slice))
            .saturating_add(self.reserve_x100);
        self.available_at(slice).saturating_mul(100) * 2 > earned
    }

    /// Takes a token for one retry or hedge. `false` means the budget is
    /// spent: do not retry or hedge (and count it, see
    /// [`RetryBudget::exhausted_total`]).
    pub fn try_withdraw(&self) -> bool {
        let slice = self.now_slice();
        if self.available_at(slice) == 0 {
            self.exhausted.fetch_add(1, Relaxed);
            return false;
        }
        Self::add(&self.withdrawals, slice);
        true
    }

    /// How many withdrawals were refused since start (a metric).
    pub fn exhausted_total(&self) -> u64 {
        self.exhausted.load(Relaxed)
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(RetryBudgetConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ratio_only() -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            min_per_sec: 0,
            ..RetryBudgetConfig::default()
        })
    }

    fn withdraw_all(b: &RetryBudget) -> u64 {
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
            assert!(n <= 1_000_000, "budget never ran out");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_sec_over_the_window_without_traffic() {
        let b = RetryBudget::default();
        assert_eq!(b.available(), 100);
        assert_eq!(withdraw_all(&b), 100);
        assert!(!b.try_withdraw());
        assert_eq!(b.exhausted_total(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_allows_a_fifth_of_the_calls() {
        let b = ratio_only();
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(withdraw_all(&b), 20);
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.try_withdraw(), "4 calls earn 0.8 of a token");
        b.deposit();
        assert!(b.try_withdraw(), "the fifth completes a token");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window() {
        let b = ratio_only();
        for _ in 0..50 {
            b.deposit();
        }
        advance(secs(5)).await;
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!(b.available(), 20);
        advance(secs(5)).await;
        assert_eq!(b.available(), 10, "the first 50 expired");
        advance(secs(5)).await;
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_expire_too() {
        let b = RetryBudget::default();
        assert_eq!(withdraw_all(&b), 100);
        advance(secs(9)).await;
        assert!(!b.try_withdraw(), "still inside the window");
        advance(secs(1)).await;
        assert_eq!(b.available(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_is_capped_at_ratio_plus_floor() {
        // 1000 calls/s for 10 s, every one of which wants a retry.
        let b = RetryBudget::default();
        let mut retried = 0u64;
        for _ in 0..100 {
            for _ in 0..100 {
                b.deposit();
                if b.try_withdraw() {
                    retried += 1;
                }
            }
            advance(Duration::from_millis(100)).await;
        }
        // 20% of 10_000 plus 10/s x 10 s.
        assert_eq!(retried, 2_100);
    }

    #[tokio::test(start_paused = true)]
    async fn odd_configs_do_not_panic() {
        let b = RetryBudget::new(RetryBudgetConfig {
            ratio_percent: u32::MAX,
            min_per_sec: u32::MAX,
            window: Duration::ZERO,
        });
        assert_eq!(b.config().window, Duration::from_millis(1));
        b.deposit();
        assert!(b.try_withdraw());
        // Ten years of 100 us slices: the 32-bit slice tags wrap many times.
        advance(Duration::from_secs(10 * 365 * 86_400)).await;
        assert!(b.try_withdraw());
    }
}
