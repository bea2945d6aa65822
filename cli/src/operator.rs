//! The operator's credentials, and connections that use them.
//!
//! Index-node and model-node APIs require the cluster's internal token
//! ([`tandem_common::internal`]). An operator command (`tandem verify`,
//! `tandem promote`, `tandem replica add`, `tandem load-shard`, the drills)
//! takes it from the topology file's `internal_token` (set once by `main`,
//! or by `tandem dev` for the cluster it starts), else from the
//! `TANDEM_INTERNAL_TOKEN` environment variable.
//!
//! A cluster that serves TLS names its CA (the topology's `ca_cert`, or
//! `--ca-cert`): every `host:port` address is then dialled as `https://`
//! and verified against it ([`endpoint`]).

use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context as _;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tandem_proto::v1::model_node_client::ModelNodeClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An `IndexNode` client whose calls carry the internal token.
pub type IndexClient = IndexNodeClient<InterceptedService<Channel, InternalToken>>;
/// A model-node client that sends the internal token.
pub type ModelClient = ModelNodeClient<InterceptedService<Channel, InternalToken>>;

static TOKEN: RwLock<Option<InternalToken>> = RwLock::new(None);

/// The PEM of the cluster's CA, when it serves TLS.
static CA_CERT: RwLock<Option<Vec<u8>>> = RwLock::new(None);

/// Sets this invocation's internal token (that of the cluster it operates
/// on; `tandem dev` sets its own cluster's).
pub fn use_internal_token(token: InternalToken) {
    *TOKEN.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
}

/// This invocation's internal token: the one set, else the environment's.
pub fn internal_token() -> anyhow::Result<InternalToken> {
    if let Some(token) = TOKEN.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(token);
    }
    InternalToken::resolve(None).context(
        "node APIs need the cluster's internal token: pass --topology of the cluster \
         (its internal_token) or set TANDEM_INTERNAL_TOKEN",
    )
}

/// Makes the cluster's CA (a PEM file) this invocation's: addresses
/// without a scheme are dialled over TLS and verified against it. `None`:
/// a plaintext cluster (`tandem dev` sets its own cluster's either way).
pub fn use_ca_cert(path: Option<&Path>) -> anyhow::Result<()> {
    let pem = match path {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    *CA_CERT.write().unwrap_or_else(|e| e.into_inner()) = pem;
    Ok(())
}

/// The CA set by [`use_ca_cert`], if any.
pub fn ca_cert() -> Option<Vec<u8>> {
    CA_CERT.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `addr` (`host:port` or a URI) as a URI: a `host:port` gets `https://`
/// when a CA is set, `http://` otherwise.
pub fn uri(addr: &str) -> String {
    tandem_client::uri_of(addr, ca_cert().is_some())
}

/// An endpoint for `addr` (see [`uri`]), with TLS verified against the
/// CA for an `https://` one (the system's roots when none is set).
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    endpoint_at(&uri(addr), None)
}

/// An endpoint for the URI `uri`; for `https://`, TLS verified against the
/// CA and, when given, the certificate name `domain` (an address dialled
/// for a name).
fn endpoint_at(uri: &str, domain: Option<&str>) -> anyhow::Result<Endpoint> {
    let endpoint =
        Endpoint::from_shared(uri.to_string()).with_context(|| format!("bad address {uri:?}"))?;
    if !uri.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = tandem_client::tls_config(ca_cert().as_deref());
    if let Some(domain) = domain {
        tls = tls.domain_name(domain);
    }
    endpoint
        .tls_config(tls)
        .with_context(|| format!("cannot set up TLS for {uri}"))
}

/// One endpoint per address that `addr`'s host name resolves to (one for
/// an IP address), labelled with it: how `--admin` reaches every router pod
/// behind a Kubernetes headless Service. TLS is still verified against the
/// name, not the address.
pub async fn every_address(addr: &str) -> anyhow::Result<Vec<(String, Endpoint)>> {
    let uri: tonic::transport::Uri = uri(addr)
        .parse()
        .with_context(|| format!("bad address {addr:?}"))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(vec![(addr.to_string(), endpoint(addr)?)]);
    }
    let mut resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    resolved.sort();
    resolved.dedup();
    let mut out = Vec::with_capacity(resolved.len());
    let scheme = if https { "https" } else { "http" };
    for socket in resolved {
        let endpoint = endpoint_at(&format!("{scheme}://{socket}"), Some(host))?;
        out.push((format!("{host} at {socket}"), endpoint));
    }
    Ok(out)
}

/// A client of the index-node at `addr` (`host:port` or a URI), connected
/// within two seconds.
pub async fn index_node(addr: &str) -> anyhow::Result<IndexClient> {
    Ok(IndexNodeClient::with_interceptor(
        connected(addr).await?,
        internal_token()?,
    ))
}

/// A channel to the node at `addr`, connected within two seconds.
async fn connected(addr: &str) -> anyhow::Result<Channel> {
    endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// A client of the model-node at `addr`, connected within two seconds.
pub async fn model_node(addr: &str) -> anyhow::Result<ModelClient> {
    Ok(ModelNodeClient::with_interceptor(
        connected(addr).await?,
        internal_token()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_stands_for_every_address_it_resolves_to() {
        let one = every_address("127.0.0.1:7001").await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, "127.0.0.1:7001");
        let named = every_address("localhost:7001").await.unwrap();
        assert!(
            named
                .iter()
                .any(|(label, _)| label == "localhost at 127.0.0.1:7001"),
            "{:?}",
            named.iter().map(|(l, _)| l).collect::<Vec<_>>()
        );
    }
}
