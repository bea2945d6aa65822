//! Connections to the nodes of the catalog.
//!
//! Every downstream call goes over one HTTP/2 connection per node
//! ([`tandem_common::h2_channel`]: on `h2` directly, multiplexed,
//! reconnecting by itself), looked up here by node id. Not tonic's
//! `Channel`, whose request buffer adds a task hand-off to every call, nor
//! hyper's pooled client, which adds two: measurable on a hop that should
//! cost almost nothing (see the router benchmark). Connecting is bounded by
//! a short timeout so that a dead node fails fast and the next replica is
//! tried within the caller's deadline.

use std::sync::Arc;
use std::time::Duration;

use crate::IdMap;
use tandem_common::h2_channel::{ChannelError, ChannelSettings, H2Channel};

use crate::catalog::Node;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// HTTP/2 keepalive pings detect a silently dead peer on idle connections.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What a call needs to reach one node, as `tandem_common::unary::call`
/// takes it. Cheap to clone.
pub type NodeChannel = H2Channel;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Channels {
    /// Node id -> (the address the channel was made for, the channel).
    by_node: IdMap<Arc<str>, (Arc<str>, H2Channel)>,
}

impl Channels {
    /// No connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `node`, made on first use (and again if the node's
    /// address changed). Fails only for an address that is not an
    /// `http://` URI (the catalog validates addresses, so this is a
    /// configuration bug surfaced as a transport failure).
    pub fn get(&self, node: &Node) -> Result<NodeChannel, ChannelError> {
        if let Some(entry) = self.by_node.get(&node.id) {
            if entry.0 == node.addr {
                return Ok(entry.1.clone());
            }
        }
        let origin = node
            .addr
            .parse()
            .map_err(|_| ChannelError::InvalidOrigin(node.addr.to_string()))?;
        let settings = ChannelSettings {
            connect_timeout: CONNECT_TIMEOUT,
            keepalive: KEEPALIVE,
        };
        let channel = H2Channel::new(origin, settings)?;
        self.by_node
            .insert(node.id.clone(), (node.addr.clone(), channel.clone()));
        Ok(channel)
    }

    /// Forgets nodes for which `keep` is false (after a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node.retain(|id, _| keep(id));
    }
}
