//! The network between two regions, emulated: a delay added to every call
//! a process makes to a peer in the other region.
//!
//! Loopback has no distance, and the machines tandem is tested on have no
//! `netem`, so a two-region cluster on one machine would hide what the
//! real pair of regions costs (a fallback, a forward, a replication pull
//! crossing regions). A process given `--inter-region-latency-ms` waits
//! that long (plus up to `--inter-region-jitter-ms` either way, drawn per
//! call) before each call to a node of the other region: the round trip
//! the real network would add. Off (zero) in a fleet, where the network is
//! real.
//!
//! [`Network`] is the way to the other region as one process sees it: the
//! emulated distance, and the cross-region fault a drill may set on the
//! process (a partition that fails or hangs its calls there, a slow link;
//! see [`crate::faults`]). Every call to the other region goes through
//! [`Network::cross`].

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tonic::Status;

use crate::faults::FaultRegistry;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterRegion {
    /// The round trip added to a call to the other region.
    pub latency: Duration,
    /// Up to this much more or less, uniformly, per call.
    pub jitter: Duration,
}

impl InterRegion {
    /// From milliseconds (both 0: off).
    pub fn from_ms(latency: u64, jitter: u64) -> Self {
        Self {
            latency: Duration::from_millis(latency),
            jitter: Duration::from_millis(jitter),
        }
    }

    /// Whether it adds anything.
    pub fn is_off(&self) -> bool {
        self.latency.is_zero() && self.jitter.is_zero()
    }

    /// One call's delay: `latency` ± up to `jitter`, never below zero.
    pub fn draw(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let jitter = self.jitter.as_micros() as i64;
        let offset = rand::rng().random_range(-jitter..=jitter);
        let micros = (self.latency.as_micros() as i64 + offset).max(0);
        Duration::from_micros(micros as u64)
    }

    /// Waits one call's delay when `from` and `to` are different regions.
    pub async fn cross(&self, from: &str, to: &str) {
        if from != to && !self.is_off() {
            tokio::time::sleep(self.draw()).await;
        }
    }
}

/// The way from this process to the other region (see the module
/// documentation). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Network {
    here: Arc<str>,
    distance: InterRegion,
    faults: FaultRegistry,
}

impl Network {
    /// The way out of region `here`: `distance` away, and cut or slowed by
    /// the cross-region fault of `faults` (the process's own registry).
    pub fn new(here: impl Into<Arc<str>>, distance: InterRegion, faults: FaultRegistry) -> Self {
        Self {
            here: here.into(),
            distance,
            faults,
        }
    }

    /// No distance and no faults (tests, single-region processes).
    pub fn local(here: impl Into<Arc<str>>) -> Self {
        Self::new(here, InterRegion::default(), FaultRegistry::new())
    }

    /// This process's region.
    pub fn here(&self) -> &str {
        &self.here
    }

    /// Whether a call to region `to` may leave (the partition's error if
    /// not), without the distance: for a call whose distance is added on
    /// its way back.
    pub async fn reachable(&self, to: &str) -> Result<(), Status> {
        if *self.here == *to {
            return Ok(());
        }
        self.faults.cross_region().await
    }

    /// One crossing to region `to`: the partition's error, or `Ok` after
    /// the distance (nothing for a call within the region).
    pub async fn cross(&self, to: &str) -> Result<(), Status> {
        if *self.here == *to {
            return Ok(());
        }
        self.faults.cross_region().await?;
        self.distance.cross(&self.here, to).await;
        Ok(())
    }
}

/// The flags of a process that emulates the distance (its config file
/// may set the same keys); flattened into each binary's flags.
#[derive(clap::Args, serde::Serialize, Clone, Copy, Debug, Default)]
pub struct InterRegionFlags {
    /// Emulated round trip (ms) added to each call to another region (0:
    /// off; for clusters on one machine, which have no real distance).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_region_latency_ms: Option<u64>,
    /// Up to this much (ms) more or less per call.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_region_jitter_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_jitter_and_above_zero() {
        let net = InterRegion::from_ms(10, 3);
        let (low, high) = (Duration::from_millis(7), Duration::from_millis(13));
        for _ in 0..1000 {
            let d = net.draw();
            assert!(low <= d && d <= high, "{d:?}");
        }
        let wide = InterRegion::from_ms(1, 5);
        assert!((0..1000).all(|_| wide.draw() <= Duration::from_millis(6)));
        assert_eq!(
            InterRegion::from_ms(10, 0).draw(),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn the_flags_reach_a_process_config() {
        #[derive(serde::Serialize)]
        struct Args {
            #[serde(flatten)]
            network: InterRegionFlags,
        }
        let network = InterRegionFlags {
            inter_region_latency_ms: Some(10),
            inter_region_jitter_ms: None,
        };
        let table = toml::Table::try_from(Args { network }).unwrap();
        assert_eq!(table["inter_region_latency_ms"].as_integer(), Some(10));
        assert!(!table.contains_key("inter_region_jitter_ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_call_to_the_other_region_waits() {
        let net = InterRegion::from_ms(40, 0);
        let start = tokio::time::Instant::now();
        net.cross("us-east-1", "us-east-1").await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        net.cross("us-east-1", "us-east-2").await;
        assert_eq!(start.elapsed(), Duration::from_millis(40));
        InterRegion::default().cross("a", "b").await;
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_cuts_only_the_way_to_the_other_region() {
        use tandem_proto::v1::{Fault, FaultAction};
        let faults = FaultRegistry::new();
        let net = Network::new("us-east-1", InterRegion::from_ms(10, 0), faults.clone());
        faults
            .set(Fault {
                cross_region: true,
                action: FaultAction::Unavailable as i32,
                ..Default::default()
            })
            .unwrap();
        let start = tokio::time::Instant::now();
        assert!(net.cross("us-east-1").await.is_ok());
        let cut = net.cross("us-east-2").await.unwrap_err();
        assert_eq!(cut.code(), tonic::Code::Unavailable);
        assert!(net.reachable("us-east-2").await.is_err());
        assert_eq!(start.elapsed(), Duration::ZERO, "a cut call fails at once");
        faults.clear_all();
        assert!(net.cross("us-east-2").await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(10));
    }
}
