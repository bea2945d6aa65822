//! What a client needs to know: the regions' router addresses, which one is
//! home, the tenant's API key, and the timing of calls and probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One region's front door: its router's gRPC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionEndpoint {
    /// Region name, e.g. `us-east-1`.
    pub name: String,
    /// Router address: `host:port` (`http://` is added) or a full URI.
    pub addr: String,
    /// The region's other routers, if it has several: calls are spread
    /// over all of them (tonic's balanced channel).
    pub more: Vec<String>,
}

impl RegionEndpoint {
    /// A region named `name` whose router listens on `addr`.
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Self {
        RegionEndpoint {
            name: name.into(),
            addr: addr.into(),
            more: Vec::new(),
        }
    }

    /// A region served by several routers (the first is `addrs[0]`).
    pub fn with_routers(name: impl Into<String>, addrs: Vec<String>) -> Self {
        let mut addrs = addrs.into_iter();
        let mut region = RegionEndpoint::new(name, addrs.next().unwrap_or_default());
        region.more = addrs.collect();
        region
    }

    /// The address as a URI tonic can dial: topology files and flags carry
    /// plain `host:port`.
    pub fn uri(&self) -> String {
        uri_of(&self.addr, false)
    }
}

/// `addr` (`host:port` or a URI) as a URI: a `host:port` gets `https://`
/// when the cluster serves TLS, `http://` otherwise; a URI is kept.
pub fn uri_of(addr: &str, tls: bool) -> String {
    match (addr.contains("://"), tls) {
        (true, _) => addr.to_string(),
        (false, true) => format!("https://{addr}"),
        (false, false) => format!("http://{addr}"),
    }
}

/// TLS to an `https://` tandem address: verified against `ca_cert` (PEM)
/// if given, else against the system's trusted roots.
pub fn tls_config(ca_cert: Option<&[u8]>) -> tonic::transport::ClientTlsConfig {
    let tls = tonic::transport::ClientTlsConfig::new();
    match ca_cert {
        Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    }
}

/// Everything [`crate::TandemClient::connect`] needs. Fields are public so
/// callers can start from [`ClientConfig::new`] and change what they need.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Every region's router; calls go to the home region's, the others
    /// take over when it fails (preference: home, then this order).
    pub regions: Vec<RegionEndpoint>,
    /// Name of the client's own region (must be in `regions`).
    pub home_region: String,
    /// Tenant API key, sent as `authorization: Bearer <key>` on every call.
    pub api_key: Option<String>,
    /// Deadline of a whole call, the retry on another router included.
    pub timeout: Duration,
    /// Optional cap on one attempt: when it expires before the call's
    /// deadline, the router is treated as failed (it hangs, e.g. a frozen
    /// process whose kernel still accepts connections) and the call is
    /// retried elsewhere. `None`: only connection errors and UNAVAILABLE
    /// cause a failover.
    pub attempt_timeout: Option<Duration>,
    /// TCP connect timeout: short, so a router that is gone fails fast.
    pub connect_timeout: Duration,
    /// Pause between health probes of the home router while away from it.
    pub probe_interval: Duration,
    /// A probe not answered within this counts as not serving.
    pub probe_timeout: Duration,
    /// Consecutive SERVING probes before calls return home.
    pub return_after: u32,
    /// PEM of the CA that `https://` routers' certificates chain to (a
    /// private CA, as `tandem dev --tls` makes); `None`: the system's
    /// trusted roots.
    pub ca_cert: Option<Vec<u8>>,
}

impl ClientConfig {
    /// Default timing for `regions`, with the first one as home.
    pub fn new(regions: Vec<RegionEndpoint>) -> Self {
        let home_region = regions.first().map(|r| r.name.clone()).unwrap_or_default();
        ClientConfig {
            regions,
            home_region,
            api_key: None,
            timeout: Duration::from_secs(2),
            attempt_timeout: None,
            connect_timeout: Duration::from_millis(250),
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(250),
            return_after: 2,
            ca_cert: None,
        }
    }

    /// Sets the home region.
    pub fn with_home_region(mut self, name: impl Into<String>) -> Self {
        self.home_region = name.into();
        self
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

/// Why a client could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No region was given.
    #[error("no regions configured")]
    NoRegions,
    /// More routers than the client can index.
    #[error("too many regions: {0}")]
    TooManyRegions(usize),
    /// Two regions share a name.
    #[error("region {0:?} is listed twice")]
    DuplicateRegion(String),
    /// The home region is not among the regions.
    #[error("home region {0:?} is not among the configured regions")]
    UnknownHomeRegion(String),
    /// A router address is not a valid URI.
    #[error("region {region:?}: bad router address {addr:?}: {reason}")]
    BadAddress {
        /// Region whose address is bad.
        region: String,
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent as a header value.
    #[error("the API key contains characters not allowed in a header")]
    BadApiKey,
    /// `connect` was called outside a tokio runtime.
    #[error("TandemClient::connect must run inside a tokio runtime")]
    NoRuntime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_get_a_scheme() {
        assert_eq!(
            RegionEndpoint::new("a", "127.0.0.1:80").uri(),
            "http://127.0.0.1:80"
        );
        assert_eq!(RegionEndpoint::new("a", "https://x:1").uri(), "https://x:1");
    }

    #[test]
    fn first_region_is_home_by_default() {
        let c = ClientConfig::new(vec![
            RegionEndpoint::new("a", "x:1"),
            RegionEndpoint::new("b", "x:2"),
        ]);
        assert_eq!(c.home_region, "a");
        assert_eq!(c.with_home_region("b").home_region, "b");
        assert_eq!(ClientConfig::new(vec![]).home_region, "");
    }
}
