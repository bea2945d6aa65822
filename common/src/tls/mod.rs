//! TLS on every listener and channel of a tandem process, with rustls.
//!
//! A process given `--tls-cert`, `--tls-key` and `--tls-ca` ([`TlsArgs`])
//! serves TLS on its gRPC and admin listeners ([`accept`]) and speaks TLS
//! to every peer whose address is `https://` (`crate::channel`). The
//! kubelet's health-only port and the Prometheus port stay plaintext: the
//! kubelet's gRPC probes cannot speak TLS, and metrics carry no tenant data.
//!
//! - **Mutual TLS.** The process presents its certificate on outgoing
//!   connections too, and a listener verifies a client certificate when
//!   one is presented (against the same CA file), without requiring one:
//!   frontends have none. A call that came over a verified client
//!   certificate is an internal call (see `crate::internal`).
//! - **Reload without a restart.** [`Tls::watch`] re-reads the three files
//!   every few seconds; a changed, consistent set takes effect for every
//!   new handshake (connections already open keep theirs, so no search is
//!   dropped). A broken set (unparsable, a key that does not fit the
//!   certificate, an empty CA file) is refused and logged, and the last
//!   good one keeps serving. Comparing contents rather than modification
//!   times also catches Kubernetes' Secret updates, which swap a symlink.

pub mod accept;
mod header_watch;
mod material;
pub mod throwaway;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};

pub use material::TlsFiles;
use material::{Current, FileBytes, Material};

/// The ALPN protocol of gRPC: HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The TLS flags every tandem binary takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate chain this process serves and presents to its peers
    /// (with --tls-key and --tls-ca: TLS on every listener but the
    /// health-only and metrics ports, and to every `https://` peer).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for peers' certificates and callers'
    /// client certificates.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// How often the three files are checked for a change (milliseconds).
    #[arg(long, default_value_t = 2000)]
    pub tls_reload_ms: u64,
}

impl TlsArgs {
    /// The files, when TLS is configured.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }

    /// The process's TLS, loaded and watched; `None` when no TLS flags were
    /// given (plaintext, logged as a warning: fine on a laptop, not in a
    /// fleet). Must run inside a tokio runtime.
    pub fn start(&self) -> anyhow::Result<Option<Tls>> {
        let Some(files) = self.files() else {
            tracing::warn!(
                "TLS is off: every listener and channel of this process is plaintext \
                 (pass --tls-cert, --tls-key and --tls-ca in a fleet)"
            );
            return Ok(None);
        };
        let tls = Tls::load(files)?;
        tls.watch(Duration::from_millis(self.tls_reload_ms.max(100)));
        Ok(Some(tls))
    }
}

/// A process's TLS: server and client configurations whose certificate,
/// key and trusted CAs follow the files. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    /// The bytes the material in force (or the last refused set) was read
    /// from: a set is parsed again only when the files change.
    last_read: Mutex<FileBytes>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.inner.files)
            .finish()
    }
}

impl Tls {
    /// Reads and checks the files and builds the configurations; a broken
    /// set is an error (a process does not start on it).
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bytes = FileBytes::read(&files)?;
        let material = Material::parse(&bytes, &provider)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(material)));

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(current.clone())
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec()];

        // `dangerous()` is rustls' name for plugging in a verifier; ours
        // delegates to webpki with the CAs in force (see `material`).
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(current.clone())
            .with_client_cert_resolver(current.clone());
        client.alpn_protocols = vec![ALPN_H2.to_vec()];

        Ok(Self {
            inner: Arc::new(Inner {
                files,
                provider,
                current,
                last_read: Mutex::new(bytes),
                server: Arc::new(server),
                client: Arc::new(client),
            }),
        })
    }

    /// Reads the files again: `Ok(true)` when they changed and the new set
    /// is in force, `Ok(false)` when they did not change, an error when
    /// they changed but are broken or unreadable (the material in force
    /// stays).
    pub fn reload(&self) -> anyhow::Result<bool> {
        let bytes = FileBytes::read(&self.inner.files)?;
        let mut last = self
            .inner
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last == bytes {
            return Ok(false);
        }
        // Refused sets are remembered too, so a broken file is reported
        // once, not at every check.
        *last = bytes.clone();
        let material = Material::parse(&bytes, &self.inner.provider)?;
        self.inner.current.0.store(Arc::new(material));
        Ok(true)
    }

    /// Checks the files every `every` in the background, for as long as
    /// this `Tls` (or a clone) lives.
    pub fn watch(&self, every: Duration) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let tls = Tls { inner };
                match tls.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!("TLS certificate, key and CA reloaded");
                        metrics::counter!("tandem_tls_reloads_total", "result" => "applied")
                            .increment(1);
                    }
                    Err(error) => {
                        tracing::error!(
                            error = %format!("{error:#}"),
                            "TLS files changed but are refused; the previous certificate keeps serving"
                        );
                        metrics::counter!("tandem_tls_reloads_total", "result" => "refused")
                            .increment(1);
                    }
                }
            }
        });
    }

    /// The acceptor for this process's listeners.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.server.clone())
    }

    /// The connector for this process's channels to `https://` peers
    /// (presenting its certificate: mutual TLS).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.inner.client.clone())
    }

    /// The leaf certificate (DER) a fresh handshake with the peer at `addr`,
    /// verified as `name`, is shown: which certificate a process serves now
    /// (after a rotation, say).
    pub async fn peer_leaf(
        &self,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let name = rustls::pki_types::ServerName::try_from(name.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let conn = self.connector().connect(name, tcp).await?;
        let certs = conn.get_ref().1.peer_certificates().unwrap_or_default();
        let leaf = certs.first().context("the peer showed no certificate")?;
        Ok(leaf.to_vec())
    }

    /// The leaf certificate in force (DER), e.g. to see that a reload took.
    pub fn current_leaf(&self) -> Vec<u8> {
        let material = self.inner.current.0.load();
        material.leaf().to_vec()
    }
}

#[cfg(test)]
mod tests;
