//! Connections to the nodes of the catalog.
//!
//! Every downstream call goes over one tonic channel per node (one HTTP/2
//! connection, multiplexed, reconnecting by itself; see
//! `tandem_common::channel`), looked up here by node id. Connecting is
//! bounded by a short timeout so that a dead node fails fast and the next
//! replica is tried within the caller's deadline.
//!
//! **Names are checked again while connected.** A node named by DNS (a
//! Kubernetes pod or Service name) is resolved when its channel connects,
//! and again by [`Channels::recheck_names`] every few seconds: when the
//! name points elsewhere (a rescheduled pod), the node gets a fresh
//! channel at its next call, and the old connection closes once the calls
//! in flight on it have ended. Without this, a connection to an address
//! that still answers (a pod draining, an address given to another pod)
//! would keep being used.

use std::future::Future;
use std::net::SocketAddr;
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

/// One node's channel.
#[derive(Debug)]
struct Entry {
    /// The address the channel was made for.
    addr: Arc<str>,
    channel: Channel,
    /// What the address's host name resolved to at the last check (sorted;
    /// `None` before the first check, or for an IP address).
    resolved: Option<Vec<SocketAddr>>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Channels {
    by_node: IdMap<Arc<str>, Entry>,
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
    /// address changed, or its name now resolves elsewhere). Fails only
    /// for an address that is not an `http://` or `https://` URI, or one
    /// that is `https://` while the router has no TLS (a configuration bug
    /// surfaced as a transport failure).
    pub fn get(&self, node: &Node) -> Result<NodeChannel, InvalidAddress> {
        if let Some(entry) = self.by_node.get(&node.id) {
            if entry.addr == node.addr {
                return Ok(entry.channel.clone());
            }
        }
        let settings = ChannelSettings {
            connect_timeout: CONNECT_TIMEOUT,
            keepalive: KEEPALIVE,
            tls: self.tls.clone(),
        };
        let channel = channel(&node.addr, settings)?;
        let entry = Entry {
            addr: node.addr.clone(),
            channel: channel.clone(),
            resolved: None,
        };
        self.by_node.insert(node.id.clone(), entry);
        Ok(channel)
    }

    /// Forgets nodes for which `keep` is false (after a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node.retain(|id, _| keep(id));
    }

    /// Resolves every DNS-named node's `host:port` with `resolve`, and
    /// drops the channel of each whose name now resolves to other
    /// addresses than at the previous check; returns their ids. A failed
    /// resolution changes nothing (the connection may still be good).
    pub async fn recheck_names<F, Fut>(&self, resolve: F) -> Vec<Arc<str>>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = std::io::Result<Vec<SocketAddr>>>,
    {
        let named: Vec<(Arc<str>, Arc<str>, String)> = self
            .by_node
            .iter()
            .filter_map(|e| Some((e.key().clone(), e.addr.clone(), dns_authority(&e.addr)?)))
            .collect();
        let mut moved = Vec::new();
        for (id, addr, authority) in named {
            let Ok(mut now) = resolve(authority).await else {
                // The connection may still be good: kept, and counted.
                metrics::counter!("router_dns_failures_total").increment(1);
                continue;
            };
            now.sort();
            let Some(mut entry) = self.by_node.get_mut(&id) else {
                continue;
            };
            if entry.addr != addr {
                continue;
            }
            match &entry.resolved {
                Some(before) if *before != now => {
                    drop(entry);
                    self.by_node.remove_if(&id, |_, e| e.addr == addr);
                    tracing::info!(node = %id, %addr, "the node's name resolves elsewhere now: reconnecting");
                    metrics::counter!("router_dns_changes_total").increment(1);
                    moved.push(id);
                }
                _ => entry.resolved = Some(now),
            }
        }
        moved
    }
}

/// The `host:port` of `addr` when its host is a DNS name (not an IP
/// address).
fn dns_authority(addr: &str) -> Option<String> {
    let uri: tonic::codegen::http::Uri = addr.parse().ok()?;
    let host = uri.host()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(format!("{host}:{}", uri.port_u16()?))
}

/// Re-resolves the nodes' names every `every`, for as long as the router
/// runs (see the module documentation).
pub async fn recheck_names_forever(channels: &Channels, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let resolver = tandem_common::resolve::Resolver::current();
        channels
            .recheck_names(|authority| {
                let resolver = resolver.clone();
                async move {
                    let (host, port) = authority
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                        .ok_or_else(|| std::io::Error::other("no port"))?;
                    resolver.lookup(&host, port).await
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::catalog::NodeKind;

    fn node(id: &str, addr: &str) -> Node {
        Node {
            id: id.into(),
            region: "r".into(),
            kind: NodeKind::Index,
            addr: addr.into(),
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_elsewhere_gets_a_fresh_channel() {
        let channels = Channels::new(None);
        let named = node("a", "http://index-0.index.tandem.svc:7000");
        let literal = node("b", "http://127.0.0.1:7000");
        channels.get(&named).unwrap();
        channels.get(&literal).unwrap();
        let answer = Mutex::new(vec!["10.0.0.1:7000".parse().unwrap()]);
        let asked = Mutex::new(Vec::new());
        let resolve = |authority: String| {
            asked.lock().unwrap().push(authority);
            let now = answer.lock().unwrap().clone();
            async move { Ok::<_, std::io::Error>(now) }
        };
        // The first check learns the addresses; the same again changes
        // nothing; an IP-addressed node is never resolved.
        assert!(channels.recheck_names(resolve).await.is_empty());
        assert!(channels.recheck_names(resolve).await.is_empty());
        assert_eq!(*asked.lock().unwrap(), ["index-0.index.tandem.svc:7000"; 2]);
        // The pod moved.
        *answer.lock().unwrap() = vec!["10.0.0.9:7000".parse().unwrap()];
        let moved = channels.recheck_names(resolve).await;
        assert_eq!(moved, [Arc::<str>::from("a")]);
        assert!(channels.by_node.get("a").is_none());
        assert!(channels.by_node.get("b").is_some());
        // A failed lookup keeps the channel.
        channels.get(&named).unwrap();
        let failing = |_: String| async { Err(std::io::Error::other("no DNS")) };
        assert!(channels.recheck_names(failing).await.is_empty());
        assert!(channels.by_node.get("a").is_some());
    }

    #[test]
    fn only_dns_names_are_rechecked() {
        assert_eq!(
            dns_authority("https://a.b.svc:7000").as_deref(),
            Some("a.b.svc:7000")
        );
        assert_eq!(dns_authority("http://127.0.0.1:7000"), None);
        assert_eq!(dns_authority("http://[::1]:7000"), None);
    }
}
