//! How a process turns its peers' names into addresses.
//!
//! By default through the system's resolver (`getaddrinfo`: `/etc/hosts`,
//! then DNS), as any program does. A process started with
//! `--hosts-file FILE` resolves through that file only: lines of
//! `ADDRESS NAME [NAME ...]`, `#` comments, as `/etc/hosts`. The file is
//! read again at every lookup, so that an edit takes effect at once: that
//! is how a drill takes name resolution away from a running cluster
//! (`tandem drill dns-failure` empties it) without touching the machine's
//! own resolver. A name the file lacks, or a file that cannot be read,
//! fails the lookup as an unanswered DNS query would.
//!
//! The choice is process-wide, like `/etc/hosts` itself: every channel to
//! a peer ([`crate::channel`]) and the router's re-resolution of names
//! use [`Resolver::current`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub enum Resolver {
    /// The system's resolver.
    #[default]
    System,
    /// This hosts-format file, read at every lookup, and nothing else.
    HostsFile(Arc<Path>),
}

/// The process's resolver, once chosen.
static PROCESS: OnceLock<Resolver> = OnceLock::new();

impl Resolver {
    /// The process's resolver (the system's unless [`Resolver::install`]
    /// chose another).
    pub fn current() -> Resolver {
        PROCESS.get().cloned().unwrap_or_default()
    }

    /// Makes `self` the process's resolver; once, at start-up, before any
    /// channel is made. A second call is refused.
    pub fn install(self) -> anyhow::Result<()> {
        tracing::info!(resolver = ?self, "peer names resolved through");
        PROCESS
            .set(self)
            .map_err(|_| anyhow::anyhow!("the process's resolver is already chosen"))
    }

    /// The addresses `host` resolves to, with `port`; an error if none.
    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match self {
            Resolver::System => Ok(tokio::net::lookup_host((bare, port)).await?.collect()),
            Resolver::HostsFile(path) => {
                let text = tokio::fs::read_to_string(path).await?;
                let found: Vec<SocketAddr> = addresses_of(&text, bare)
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                if found.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{bare:?} is not in the hosts file"),
                    ));
                }
                Ok(found)
            }
        }
    }
}

/// Every address the hosts-format `text` gives `name` (in file order).
fn addresses_of<'t>(text: &'t str, name: &'t str) -> impl Iterator<Item = IpAddr> + 't {
    text.lines().filter_map(move |line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip = fields.next()?.parse::<IpAddr>().ok()?;
        fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
    })
}

/// The resolver as hyper's connector uses it (the connector sets the port).
impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            let found = resolver.lookup(name.as_str(), 0).await?;
            Ok(found.into_iter())
        })
    }
}

/// The flag of every process that calls peers.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ResolveArgs {
    /// Resolve peers' names through this hosts-format file only (`ADDRESS
    /// NAME...` lines), read at every lookup; default: the system's
    /// resolver.
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
}

impl ResolveArgs {
    /// Makes the flag's choice the process's resolver.
    pub fn install(&self) -> anyhow::Result<()> {
        match &self.hosts_file {
            Some(path) => Resolver::HostsFile(Arc::from(path.as_path())).install(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_is_read_as_etc_hosts() {
        let text = "# comment\n127.0.0.1 localhost index-1  # trailing\n::1 localhost\n\
                    bogus line\n10.0.0.1 Other\n";
        let all = |name| addresses_of(text, name).collect::<Vec<_>>();
        assert_eq!(
            all("localhost"),
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(all("index-1"), ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(all("other"), ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(all("comment").is_empty());
        assert!(all("bogus").is_empty());
    }

    #[tokio::test]
    async fn an_edit_takes_effect_at_the_next_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n").unwrap();
        let resolver = Resolver::HostsFile(Arc::from(path.as_path()));
        let found = resolver.lookup("localhost", 7001).await.unwrap();
        assert_eq!(found, ["127.0.0.1:7001".parse().unwrap()]);
        // An address needs no file.
        let literal = resolver.lookup("[::1]", 7).await.unwrap();
        assert_eq!(literal, ["[::1]:7".parse().unwrap()]);
        // Emptied: the name is gone, as in a DNS outage.
        std::fs::write(&path, "").unwrap();
        let gone = resolver.lookup("localhost", 7001).await.unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        std::fs::remove_file(&path).unwrap();
        assert!(resolver.lookup("localhost", 7001).await.is_err());
    }
}
