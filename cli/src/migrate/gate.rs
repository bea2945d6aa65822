//! The health gate of a ramp step: the new region's replicas against the
//! old ones, for one tenant, from every router's counters.
//!
//! Each router counts, per ramped tenant and arm, the searches since the
//! ramp took its current percentage, their errors (failed, or answered
//! from the other side) and their p99 (see the router's `ramp` module).
//! [`read`] sums the counts of every router that reports the step's
//! percentage and takes the largest p99 (a conservative merge: the fleet's
//! p99 is at most the worst router's). [`judge`] then compares.

use std::time::Duration;

use tandem_proto::v1::router_admin_client::RouterAdminClient;
use tandem_proto::v1::StatusRequest;

use tonic::transport::Channel;

use crate::commands::Target;

/// The bounds a step must hold (flags of `tandem migrate`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Largest rise of the error rate over the old side's (absolute: 0.01
    /// is one percentage point).
    pub max_error_increase: f64,
    /// Largest ratio of the new side's p99 to the old side's ...
    pub max_p99_ratio: f64,
    /// ... plus this slack (small latencies are noisy).
    pub p99_slack: Duration,
    /// Fewest searches on the new side for a step to be judged.
    pub min_requests: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_error_increase: 0.01,
            max_p99_ratio: 2.0,
            p99_slack: Duration::from_millis(25),
            min_requests: 20,
        }
    }
}

/// One side's totals over every router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// Searches.
    pub requests: u64,
    /// Of which failed or answered from the other side.
    pub errors: u64,
    /// The largest router p99, in microseconds.
    pub p99_micros: u64,
}

impl Side {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn add(&mut self, arm: Option<&tandem_proto::v1::RampArm>) {
        if let Some(a) = arm {
            self.requests += a.requests;
            self.errors += a.errors;
            if a.requests > 0 {
                self.p99_micros = self.p99_micros.max(a.p99_micros);
            }
        }
    }
}

/// A step's figures: the old (home) side and the new (pair) side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// The home region's replicas.
    pub old: Side,
    /// The pair region's replicas.
    pub new: Side,
    /// Routers that reported the step (of those asked).
    pub routers: usize,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |s: &Side| {
            format!(
                "{} searches, {:.2} % errors, p99 {:.1} ms",
                s.requests,
                s.error_rate() * 100.0,
                s.p99_micros as f64 / 1000.0
            )
        };
        write!(f, "new: {}; old: {}", side(&self.new), side(&self.old))
    }
}

/// What a step's figures say.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Within the bounds.
    Pass,
    /// Too few searches on the new side to judge (`min_requests`).
    TooFew,
    /// Out of bounds, and why.
    Fail(String),
}

/// Compares the new side with the old one (see [`Bounds`]).
pub fn judge(f: &Figures, b: &Bounds) -> Verdict {
    if f.new.requests < b.min_requests {
        return Verdict::TooFew;
    }
    let rise = f.new.error_rate() - f.old.error_rate();
    if rise > b.max_error_increase {
        return Verdict::Fail(format!(
            "the new region's error rate is {:.2} points above the old one's (bound {:.2})",
            rise * 100.0,
            b.max_error_increase * 100.0
        ));
    }
    let limit = f.old.p99_micros as f64 * b.max_p99_ratio + b.p99_slack.as_micros() as f64;
    if f.old.requests > 0 && f.new.p99_micros as f64 > limit {
        return Verdict::Fail(format!(
            "the new region's p99 is {:.1} ms, over {:.1} x the old {:.1} ms + {} ms",
            f.new.p99_micros as f64 / 1000.0,
            b.max_p99_ratio,
            f.old.p99_micros as f64 / 1000.0,
            b.p99_slack.as_millis()
        ));
    }
    Verdict::Pass
}

/// Every router's admin channel and the admin token, made once and read
/// every second of a step.
pub struct Routers {
    channels: Vec<Channel>,
    token: String,
}

impl Routers {
    /// The routers of `target`.
    pub async fn of(target: &Target) -> anyhow::Result<Routers> {
        let (routers, token) = target.admin().await?;
        let channels = routers.into_iter().map(|(_, c)| c).collect();
        Ok(Routers { channels, token })
    }
}

/// The figures of `tenant`'s ramp at `percent` from every router (routers
/// that do not answer, or still report another percentage, are left out
/// and not counted in [`Figures::routers`]).
pub async fn read(routers: &Routers, tenant: &str, percent: u8) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    for channel in &routers.channels {
        let request = crate::commands::bearer(StatusRequest {}, &routers.token)?;
        let Ok(status) = RouterAdminClient::new(channel.clone())
            .status(request)
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        let ramp = status
            .ramps
            .iter()
            .find(|r| r.tenant == tenant && r.percent == u32::from(percent));
        if let Some(r) = ramp {
            figures.old.add(r.home.as_ref());
            figures.new.add(r.pair.as_ref());
            figures.routers += 1;
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(old: (u64, u64, u64), new: (u64, u64, u64)) -> Figures {
        let side = |(requests, errors, p99_ms): (u64, u64, u64)| Side {
            requests,
            errors,
            p99_micros: p99_ms * 1000,
        };
        Figures {
            old: side(old),
            new: side(new),
            routers: 2,
        }
    }

    #[test]
    fn a_step_passes_within_the_bounds_and_fails_outside() {
        let b = Bounds::default();
        assert_eq!(
            judge(&figures((900, 0, 10), (100, 1, 12)), &b),
            Verdict::Pass
        );
        assert_eq!(
            judge(&figures((900, 0, 10), (10, 5, 12)), &b),
            Verdict::TooFew
        );
        let errors = judge(&figures((900, 9, 10), (100, 3, 10)), &b);
        assert!(
            matches!(&errors, Verdict::Fail(m) if m.contains("error rate")),
            "{errors:?}"
        );
        // 2 x 10 ms + 25 ms = 45 ms.
        assert_eq!(
            judge(&figures((900, 0, 10), (100, 0, 44)), &b),
            Verdict::Pass
        );
        let slow = judge(&figures((900, 0, 10), (100, 0, 60)), &b);
        assert!(
            matches!(&slow, Verdict::Fail(m) if m.contains("p99")),
            "{slow:?}"
        );
        let shown = figures((900, 9, 10), (100, 3, 60)).to_string();
        assert!(
            shown.contains("new: 100 searches, 3.00 % errors, p99 60.0 ms"),
            "{shown}"
        );
    }
}
