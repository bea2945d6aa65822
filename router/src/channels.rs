//! gRPC channels to the nodes of the catalog, one per node, made lazily.
//!
//! A channel is a multiplexed HTTP/2 connection that reconnects by itself;
//! it is created on first use and kept for as long as the node's address is
//! unchanged (a catalog reload that moves a node gets a new channel).
//! Connecting is bounded by a short timeout so that a dead node fails fast
//! and the next replica is tried within the caller's deadline.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tonic::transport::{Channel, Endpoint};

use crate::catalog::Node;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// HTTP/2 keepalive pings detect a silently dead peer on idle connections.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// See the module documentation. Cheap to share (`Arc` inside the map).
#[derive(Debug, Default)]
pub struct Channels {
    by_node: DashMap<Arc<str>, (Arc<str>, Channel)>,
}

impl Channels {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `node`, creating it if needed. Fails only for an
    /// address tonic cannot parse (the catalog validates addresses, so this
    /// is a configuration bug surfaced as a transport failure).
    pub fn get(&self, node: &Node) -> Result<Channel, tonic::transport::Error> {
        if let Some(entry) = self.by_node.get(&node.id) {
            if entry.0 == node.addr {
                return Ok(entry.1.clone());
            }
        }
        let channel = endpoint(&node.addr)?.connect_lazy();
        self.by_node
            .insert(node.id.clone(), (node.addr.clone(), channel.clone()));
        Ok(channel)
    }

    /// Drops channels of nodes for which `keep` is false (after a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node.retain(|id, _| keep(id));
    }
}

/// The endpoint settings every downstream connection uses.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(addr.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_while_idle(true))
}
