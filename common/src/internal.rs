//! Internal authentication: the node APIs answer only tandem's own
//! processes and its operators.
//!
//! Every process of a cluster (routers, index-nodes, model-nodes) and the
//! operator's CLI hold the same **internal token**. A call to a node API
//! (`IndexNode`, `ModelNode`), a router's call forwarded to its paired
//! router, and a follower's pull from its leader carry it in the
//! [`INTERNAL_TOKEN_HEADER`]; a call without it, or with another, gets
//! UNAUTHENTICATED. The public API (`Search`, `Documents`) is authenticated
//! by tenant keys instead and never needs it; health checks need nothing.
//!
//! With TLS (see [`crate::tls`]), a call that came over a connection whose
//! client certificate verified against the cluster's CA is internal too:
//! tandem's processes present their certificates on every channel (mutual
//! TLS), so in a fleet the certificate is the process's credential and the
//! token the operators'.
//!
//! The token is read from a file (`--internal-token-file`, the form a
//! Kubernetes Secret is mounted in) or from the `TANDEM_INTERNAL_TOKEN`
//! environment variable, never from a command-line argument, which any
//! local user can read. There is no default: a process without a token
//! refuses to start, so no node API is ever open by omission.

use std::path::Path;

use anyhow::Context as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Extensions, Request, Status};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The metadata key internal calls carry the token in.
pub const INTERNAL_TOKEN_HEADER: &str = "x-tandem-internal-token";

/// The environment variable a process reads the token from when no file
/// is given.
pub const INTERNAL_TOKEN_ENV: &str = "TANDEM_INTERNAL_TOKEN";

/// Shortest token accepted: a guessable internal token opens every node.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The cluster's internal token. Cloning is cheap; `Debug` never prints it.
#[derive(Clone)]
pub struct InternalToken {
    value: AsciiMetadataValue,
    /// SHA-256 of the token, computed once: every internal call is checked
    /// against it, so the check hashes only what the caller presented.
    digest: [u8; 32],
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

impl InternalToken {
    /// A token from its text (surrounding whitespace ignored): at least
    /// [`MIN_TOKEN_CHARS`] visible ASCII characters.
    pub fn new(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        anyhow::ensure!(
            text.chars().count() >= MIN_TOKEN_CHARS,
            "the internal token is shorter than {MIN_TOKEN_CHARS} characters"
        );
        anyhow::ensure!(
            text.chars().all(|c| c.is_ascii_graphic()),
            "the internal token must be visible ASCII characters without spaces"
        );
        let value = AsciiMetadataValue::try_from(text)
            .context("the internal token is not a valid header value")?;
        Ok(Self {
            value,
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// A fresh random token (for a new cluster).
    pub fn generate() -> Self {
        let bytes: [u8; 24] = rand::random();
        Self::new(&format!("internal-{}", hex::encode(bytes))).expect("hex is a valid token")
    }

    /// The token in `path` (an unreadable or empty file is an error).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the internal token file {}", path.display()))?;
        Self::new(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The process's token: from `file` if given, else from
    /// [`INTERNAL_TOKEN_ENV`]; neither is an error.
    pub fn resolve(file: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(path) = file {
            return Self::from_file(path);
        }
        match std::env::var(INTERNAL_TOKEN_ENV) {
            Ok(text) => Self::new(&text).context(INTERNAL_TOKEN_ENV),
            Err(_) => anyhow::bail!(
                "no internal token: pass --internal-token-file or set {INTERNAL_TOKEN_ENV} \
                 (every process of a cluster and its operators share one)"
            ),
        }
    }

    /// Writes the token to `path`, readable by its owner only.
    pub fn write_file(&self, path: &Path) -> anyhow::Result<()> {
        crate::secret_file::write(path, self.as_str().as_bytes())
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }

    /// Adds the token to an outgoing call's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(INTERNAL_TOKEN_HEADER, self.value.clone());
    }

    /// Whether an incoming call carries this token (compared through
    /// digests in constant time, like every secret, see [`crate::auth`]).
    pub fn carried_by(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get(INTERNAL_TOKEN_HEADER)
            .is_some_and(|presented| {
                let digest = Sha256::digest(presented.as_bytes());
                bool::from(digest.as_slice().ct_eq(&self.digest))
            })
    }

    /// Whether an incoming call is internal: it came with a verified
    /// client certificate ([`verified_peer`]) or carries this token.
    pub fn admits(&self, extensions: &Extensions, metadata: &MetadataMap) -> bool {
        verified_peer(extensions) || self.carried_by(metadata)
    }

    /// Checks an incoming call: UNAUTHENTICATED unless it came with a
    /// verified client certificate or carries this token.
    pub fn check_call(
        &self,
        extensions: &Extensions,
        metadata: &MetadataMap,
    ) -> Result<(), Status> {
        if verified_peer(extensions) {
            return Ok(());
        }
        self.check(metadata)
    }

    /// Checks an incoming call's token: UNAUTHENTICATED unless it carries
    /// this token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get(INTERNAL_TOKEN_HEADER) {
            None => Err(Status::unauthenticated(
                "this is an internal API of tandem: calls need the cluster's internal token",
            )),
            Some(_) if self.carried_by(metadata) => Ok(()),
            Some(_) => Err(Status::unauthenticated("internal token not accepted")),
        }
    }

    /// The server-side interceptor that admits only calls carrying the
    /// token (wrap a node API's server in it).
    pub fn require(&self) -> RequireInternal {
        RequireInternal(self.clone())
    }
}

/// Client side: every call through `Client::with_interceptor(channel,
/// token)` carries the token.
impl Interceptor for InternalToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.attach(request.metadata_mut());
        Ok(request)
    }
}

/// Server side: refuses a call without the token (see
/// [`InternalToken::require`]).
#[derive(Clone, Debug)]
pub struct RequireInternal(InternalToken);

impl Interceptor for RequireInternal {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0
            .check_call(request.extensions(), request.metadata())?;
        Ok(request)
    }
}

/// Whether a call came over a TLS connection with a client certificate.
/// A listener's verifier admits only certificates that chain to the
/// cluster's CA (the handshake fails otherwise), so one that is present
/// is verified: the caller is one of tandem's processes.
pub fn verified_peer(extensions: &Extensions) -> bool {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .is_some_and(|certs| !certs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: Option<&str>) -> MetadataMap {
        let mut md = MetadataMap::new();
        if let Some(v) = value {
            md.insert(INTERNAL_TOKEN_HEADER, v.parse().unwrap());
        }
        md
    }

    #[test]
    fn only_the_token_passes() {
        let token = InternalToken::new("  a-long-enough-token\n").unwrap();
        assert_eq!(token.as_str(), "a-long-enough-token");
        assert!(token.check(&with(Some("a-long-enough-token"))).is_ok());
        for md in [
            with(None),
            with(Some("a-long-enough-tokem")),
            with(Some("x")),
        ] {
            let status = token.check(&md).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains("a-long-enough"));
        }
        let mut md = MetadataMap::new();
        token.attach(&mut md);
        assert!(token.carried_by(&md));
    }

    #[test]
    fn weak_or_odd_tokens_are_refused() {
        assert!(InternalToken::new("short").is_err());
        assert!(InternalToken::new("has a space inside it").is_err());
        assert!(InternalToken::new("ünïcödé-ünïcödé-ünïcödé").is_err());
        let generated = InternalToken::generate();
        assert!(generated.as_str().len() > MIN_TOKEN_CHARS);
        assert_ne!(generated.as_str(), InternalToken::generate().as_str());
        assert_eq!(format!("{generated:?}"), "InternalToken(<redacted>)");
    }

    #[test]
    fn a_token_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("internal-token");
        let token = InternalToken::generate();
        token.write_file(&path).unwrap();
        assert_eq!(
            InternalToken::from_file(&path).unwrap().as_str(),
            token.as_str()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(InternalToken::from_file(&dir.path().join("missing")).is_err());
        std::fs::write(&path, "").unwrap();
        assert!(InternalToken::from_file(&path).is_err());
    }
}
