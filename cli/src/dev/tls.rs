//! `tandem dev --tls`: a throwaway CA and the certificate every process of
//! the cluster serves and presents, in `<data_dir>/tls/`.
//!
//! The CA is made once per data directory and kept across restarts (the
//! topology file names it as `ca_cert`, and clients keep trusting it); its
//! key stays next to it, mode 0600, so [`DevTls::issue`] can sign a fresh
//! certificate for the processes, which they pick up without a restart.
//! One certificate for every process is enough on a laptop: it names
//! `localhost`, `127.0.0.1` and `::1`, and is good for both ends of mutual
//! TLS. A fleet has a certificate per workload from its own CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tandem_common::secret_file;
use tandem_common::tls::throwaway::{ThrowawayCa, LOOPBACK_NAMES};

/// The files of a dev cluster's TLS.
#[derive(Clone, Debug)]
pub struct DevTls {
    /// The CA certificate (PEM): the topology's `ca_cert`.
    pub ca: PathBuf,
    /// The CA's private key (PEM, 0600).
    ca_key: PathBuf,
    /// The processes' certificate (PEM).
    pub cert: PathBuf,
    /// The processes' private key (PEM, 0600).
    pub key: PathBuf,
}

impl DevTls {
    /// The files in `dir/tls/`, made if the CA is not there yet.
    pub fn ensure(dir: &Path) -> anyhow::Result<Self> {
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)
            .with_context(|| format!("cannot create {}", tls_dir.display()))?;
        let files = Self {
            ca: tls_dir.join("ca.pem"),
            ca_key: tls_dir.join("ca-key.pem"),
            cert: tls_dir.join("node.pem"),
            key: tls_dir.join("node-key.pem"),
        };
        if !(files.ca.exists() && files.ca_key.exists()) {
            let ca = ThrowawayCa::generate()?;
            secret_file::write(&files.ca_key, ca.key_pem().as_bytes())?;
            std::fs::write(&files.ca, ca.certificate_pem()?)
                .with_context(|| format!("cannot write {}", files.ca.display()))?;
        }
        if !(files.cert.exists() && files.key.exists()) {
            files.issue()?;
        }
        Ok(files)
    }

    /// Signs a fresh certificate and key for the processes and writes them
    /// over the old ones (key first: a process that reads the pair between
    /// the two writes refuses it as mismatched and keeps the old one until
    /// its next check).
    pub fn issue(&self) -> anyhow::Result<()> {
        let ca_key_pem = std::fs::read_to_string(&self.ca_key)
            .with_context(|| format!("cannot read {}", self.ca_key.display()))?;
        let (cert, key) = ThrowawayCa::from_key_pem(&ca_key_pem)?.issue(&LOOPBACK_NAMES)?;
        secret_file::write(&self.key, key.as_bytes())?;
        secret_file::write(&self.cert, cert.as_bytes())?;
        Ok(())
    }

    /// The flags that give a process this TLS.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_string(),
            self.cert.display().to_string(),
            "--tls-key".to_string(),
            self.key.display().to_string(),
            "--tls-ca".to_string(),
            self.ca.display().to_string(),
        ]
    }
}
