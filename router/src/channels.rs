//! Connections to the nodes of the catalog.
//!
//! Every downstream call goes through one shared HTTP/2 client (hyper's
//! pooled client: one multiplexed connection per node, reconnecting by
//! itself), addressed by the node's origin. We use it directly rather than
//! tonic's `Channel`, whose request buffer adds a task hand-off to every
//! call: measurable on a hop that should cost almost nothing (see the router
//! benchmark). Connecting is bounded by a short timeout so that a dead node
//! fails fast and the next replica is tried within the caller's deadline.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::catalog::Node;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// HTTP/2 keepalive pings detect a silently dead peer on idle connections.
const KEEPALIVE: Duration = Duration::from_secs(10);

pub use tandem_common::unary::Transport;

/// What a call needs to reach one node: the shared transport and the
/// node's origin (`http://host:port`), as `tandem_common::unary::call`
/// takes them.
#[derive(Clone, Debug)]
pub struct NodeChannel {
    /// The shared HTTP/2 client.
    pub transport: Transport,
    /// The node's origin.
    pub origin: Uri,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Channels {
    transport: Transport,
    origins: DashMap<Arc<str>, (Arc<str>, Uri)>,
}

impl Default for Channels {
    fn default() -> Self {
        Self::new()
    }
}

impl Channels {
    /// A transport with no connections yet.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let transport = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEPALIVE)
            .http2_keep_alive_while_idle(true)
            .build(connector);
        Self {
            transport,
            origins: DashMap::new(),
        }
    }

    /// The channel to `node`. Fails only for an address that is not a URI
    /// (the catalog validates addresses, so this is a configuration bug
    /// surfaced as a transport failure).
    pub fn get(&self, node: &Node) -> Result<NodeChannel, http::uri::InvalidUri> {
        if let Some(entry) = self.origins.get(&node.id) {
            if entry.0 == node.addr {
                return Ok(NodeChannel {
                    transport: self.transport.clone(),
                    origin: entry.1.clone(),
                });
            }
        }
        let origin: Uri = node.addr.parse()?;
        self.origins
            .insert(node.id.clone(), (node.addr.clone(), origin.clone()));
        Ok(NodeChannel {
            transport: self.transport.clone(),
            origin,
        })
    }

    /// Forgets nodes for which `keep` is false (after a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.origins.retain(|id, _| keep(id));
    }
}
