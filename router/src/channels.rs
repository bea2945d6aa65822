//! Connections to the nodes of the catalog.
//!
//! Every downstream call goes over one tonic channel per node (one HTTP/2
//! connection, multiplexed, reconnecting by itself; see
//! `tandem_common::channel`), looked up here by node id. Connecting is
//! bounded by a short timeout so that a dead node fails fast and the next
//! replica is tried within the caller's deadline.

use std::sync::Arc;
use std::time::Duration;

use tandem_common::channel::{channel, ChannelSettings, InvalidAddress};
use tandem_common::tls::Tls;
use tonic::transport::Channel;

use crate::catalog::Node;
use crate::IdMap;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// HTTP/2 keepalive pings detect a silently dead peer.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What a call needs to reach one node. Cheap to clone.
pub type NodeChannel = Channel;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Channels {
    /// Node id -> (the address the channel was made for, the channel).
    by_node: IdMap<Arc<str>, (Arc<str>, Channel)>,
    /// The router's TLS, for `https://` nodes.
    tls: Option<Tls>,
}

impl Channels {
    /// No connections yet; `https://` nodes will be reached with `tls`.
    pub fn new(tls: Option<Tls>) -> Self {
        Self {
            by_node: IdMap::default(),
            tls,
        }
    }

    /// The channel to `node`, made on first use (and again if the node's
    /// address changed). Fails only for an address that is not an
    /// `http://` or `https://` URI, or one that is `https://` while the
    /// router has no TLS (a configuration bug surfaced as a transport
    /// failure).
    pub fn get(&self, node: &Node) -> Result<NodeChannel, InvalidAddress> {
        if let Some(entry) = self.by_node.get(&node.id) {
            if entry.0 == node.addr {
                return Ok(entry.1.clone());
            }
        }
        let settings = ChannelSettings {
            connect_timeout: CONNECT_TIMEOUT,
            keepalive: KEEPALIVE,
            tls: self.tls.clone(),
        };
        let channel = channel(&node.addr, settings)?;
        self.by_node
            .insert(node.id.clone(), (node.addr.clone(), channel.clone()));
        Ok(channel)
    }

    /// Forgets nodes for which `keep` is false (after a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node.retain(|id, _| keep(id));
    }
}
