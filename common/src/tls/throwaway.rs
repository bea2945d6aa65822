//! A throwaway certificate authority, for clusters that live on one
//! machine: `tandem dev --tls`, the tests and the benchmarks. A fleet gets
//! its certificates from its own CA (cert-manager, a corporate PKI).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names a loopback cluster's certificates carry.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A CA key and the (fixed) parameters it signs with.
pub struct ThrowawayCa {
    key: KeyPair,
}

impl ThrowawayCa {
    /// A CA with a fresh key.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            key: KeyPair::generate()?,
        })
    }

    /// The CA of a kept key (PEM), e.g. to sign a new certificate for a
    /// cluster that already trusts the CA's certificate.
    pub fn from_key_pem(pem: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: KeyPair::from_pem(pem)?,
        })
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A self-signed CA certificate for the key, PEM: what peers trust.
    /// Certificates issued by this key (now or later) chain to it.
    pub fn certificate_pem(&self) -> anyhow::Result<String> {
        Ok(ca_params().self_signed(&self.key)?.pem())
    }

    /// A fresh key and a certificate for `names` (DNS names or IP
    /// addresses), good for serving and for mutual TLS as a client:
    /// `(certificate PEM, key PEM)`.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<(String, String)> {
        let issuer = Issuer::new(ca_params(), &self.key);
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tandem process");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(rand::random::<u64>().into());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CA's parameters, the same every time, so that a certificate issued
/// later from a kept key names the same issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "tandem throwaway CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}
