//! The caller's deadline: parsed from the `grpc-timeout` header (what a
//! client's `set_timeout` sends), or a configured default, capped.
//!
//! Every downstream call gets only what remains of it, so a query never
//! outlives its caller's patience anywhere in the fleet.

use std::time::Duration;

use tandem_common::grpc_deadline::parse_grpc_timeout;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The caller's `grpc-timeout`, if it sent a well-formed one (see
/// [`parse_grpc_timeout`]).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// The instant by which the caller wants its answer.
pub fn deadline_for(metadata: &MetadataMap, default: Duration, max: Duration) -> Instant {
    let budget = grpc_timeout(metadata).unwrap_or(default).min(max);
    Instant::now() + budget
}

/// Time left until `deadline` (zero once passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn parses_units() {
        assert_eq!(grpc_timeout(&md("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&md("2S")), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(&md("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(&md("100u")), Some(Duration::from_micros(100)));
        for bad in ["", "m", "12x", "-5m", "1234567890S"] {
            let mut m = MetadataMap::new();
            if let Ok(v) = bad.parse() {
                m.insert("grpc-timeout", v);
            }
            assert_eq!(grpc_timeout(&m), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_capped_and_defaulted() {
        let max = Duration::from_secs(30);
        let d = deadline_for(&md("1H"), Duration::from_secs(2), max);
        assert_eq!(remaining(d), max);
        let d = deadline_for(&MetadataMap::new(), Duration::from_secs(2), max);
        assert_eq!(remaining(d), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(remaining(d), Duration::ZERO);
    }
}
