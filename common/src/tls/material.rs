//! What a process's TLS is made of, read from its files, and the rustls
//! hooks that always use the latest good read.
//!
//! [`Material`] is one consistent read of the three files: the process's
//! certificate chain and private key, and the CA certificates it trusts
//! (for peers' server certificates and for callers' client certificates).
//! [`Current`] holds the material in force; [`Current`] implements the
//! four rustls hooks (server and client certificate resolvers, server and
//! client certificate verifiers) by delegating to that material, so one
//! `ServerConfig` and one `ClientConfig` built at start-up serve every
//! later certificate without being rebuilt.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    client::WebPkiServerVerifier, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

/// Where a process's certificate, key and trusted CAs are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates trusted for peers and callers.
    pub ca: PathBuf,
}

/// The files' contents, kept to notice a change.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FileBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl FileBytes {
    /// Reads the three files (an unreadable one is an error naming it).
    pub(crate) fn read(files: &TlsFiles) -> anyhow::Result<Self> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
        };
        Ok(Self {
            cert: read(&files.cert, "certificate")?,
            key: read(&files.key, "key")?,
            ca: read(&files.ca, "CA certificate")?,
        })
    }
}

/// One consistent, checked read of a process's TLS files.
#[derive(Debug)]
pub(crate) struct Material {
    key: Arc<CertifiedKey>,
    servers: Arc<WebPkiServerVerifier>,
    clients: Arc<dyn ClientCertVerifier>,
}

impl Material {
    /// Parses and checks `bytes`: the certificate chain must be non-empty
    /// and match the key, and the CA file must hold at least one usable
    /// certificate. A broken read is refused whole.
    pub(crate) fn parse(bytes: &FileBytes, provider: &Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes.cert)
            .collect::<Result<_, _>>()
            .context("the TLS certificate file is not PEM")?;
        anyhow::ensure!(
            !chain.is_empty(),
            "the TLS certificate file holds no certificate"
        );
        let key = PrivateKeyDer::from_pem_slice(&bytes.key)
            .context("the TLS key file holds no private key")?;
        let key = CertifiedKey::from_der(chain, key, provider)
            .context("the TLS key does not fit the certificate")?;
        let roots = roots(&bytes.ca)?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("cannot build the server certificate verifier")?;
        let clients = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .context("cannot build the client certificate verifier")?;
        Ok(Self {
            key: Arc::new(key),
            servers,
            clients,
        })
    }
}

impl Material {
    /// The leaf certificate (DER).
    pub(crate) fn leaf(&self) -> &[u8] {
        self.key
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }
}

/// The CA certificates in `pem`, as a root store.
pub(crate) fn roots(pem: &[u8]) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.context("the CA file is not PEM")?)
            .context("the CA file holds a certificate that cannot be a trust anchor")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the CA file holds no certificate");
    Ok(Arc::new(roots))
}

/// The material in force, swapped whole on reload; the rustls hooks of
/// every config read it per handshake.
#[derive(Debug)]
pub(crate) struct Current(pub(crate) ArcSwap<Material>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().key.clone())
    }
}

/// Outgoing connections present the process's certificate as a client
/// certificate: mutual TLS between tandem's processes.
impl ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Peers' server certificates are checked by webpki against the CAs in
/// force (the hook exists only so that a reloaded CA file takes effect).
impl ServerCertVerifier for Current {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0.load().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .load()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .load()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().servers.supported_verify_schemes()
    }
}

/// A caller may present a client certificate (tandem's processes do) or
/// not (frontends, the CLI with the internal token); one it presents must
/// chain to the CAs in force. Whether a call is internal is decided per
/// call (see `crate::internal`), not by refusing the handshake.
impl ClientCertVerifier for Current {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would borrow from material that a reload may drop; without
        // them a client offers the one certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0
            .load()
            .clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .load()
            .clients
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .load()
            .clients
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().clients.supported_verify_schemes()
    }
}
