//! The operator's credentials for node APIs, and clients that carry them.
//!
//! Index-node and model-node APIs require the cluster's internal token
//! ([`tandem_common::internal`]). An operator command (`tandem verify`,
//! `tandem promote`, `tandem replica add`, `tandem load-shard`, the drills)
//! takes it from the topology file's `internal_token` (set once by `main`,
//! or by `tandem dev` for the cluster it starts), else from the
//! `TANDEM_INTERNAL_TOKEN` environment variable.

use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context as _;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::index_node_client::IndexNodeClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An `IndexNode` client whose calls carry the internal token.
pub type IndexClient = IndexNodeClient<InterceptedService<Channel, InternalToken>>;

static TOKEN: RwLock<Option<InternalToken>> = RwLock::new(None);

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

/// A client of the index-node at `addr` (`host:port` or a URI), connected
/// within two seconds.
pub async fn index_node(addr: &str) -> anyhow::Result<IndexClient> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(uri)
        .with_context(|| format!("bad node address {addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(IndexNodeClient::with_interceptor(
        channel,
        internal_token()?,
    ))
}
