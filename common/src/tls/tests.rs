//! Loading and reloading a process's TLS files.

use std::path::Path;

use super::*;

/// A CA whose certificates the tests issue.
struct TestCa {
    ca: throwaway::ThrowawayCa,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let ca = throwaway::ThrowawayCa::generate().unwrap();
        let pem = ca.certificate_pem().unwrap();
        Self { ca, pem }
    }

    /// A certificate for `localhost`/127.0.0.1: (cert PEM, key PEM).
    fn issue(&self) -> (String, String) {
        self.ca.issue(&["localhost", "127.0.0.1"]).unwrap()
    }
}

fn write_set(dir: &Path, (cert, key): &(String, String), ca: &str) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.ca, ca).unwrap();
    files
}

fn leaf_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn a_consistent_set_loads_and_a_changed_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let first = ca.issue();
    let files = write_set(dir.path(), &first, &ca.pem);
    let tls = Tls::load(files.clone()).unwrap();
    assert_eq!(tls.current_leaf(), leaf_of(&first.0));
    assert!(!tls.reload().unwrap(), "unchanged files are not a reload");

    let second = ca.issue();
    write_set(dir.path(), &second, &ca.pem);
    assert!(tls.reload().unwrap());
    assert_eq!(tls.current_leaf(), leaf_of(&second.0));
}

#[test]
fn a_broken_set_is_refused_and_the_last_good_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let good = ca.issue();
    let files = write_set(dir.path(), &good, &ca.pem);
    let tls = Tls::load(files.clone()).unwrap();

    // A key that belongs to another certificate.
    let other = ca.issue();
    write_set(dir.path(), &(good.0.clone(), other.1.clone()), &ca.pem);
    let error = format!("{:#}", tls.reload().unwrap_err());
    assert!(error.contains("does not fit"), "{error}");
    assert_eq!(tls.current_leaf(), leaf_of(&good.0));
    // Reported once, not at every check.
    assert!(!tls.reload().unwrap());

    // Garbage, an empty CA file, a missing file.
    for (cert, key, ca_pem) in [
        ("not pem", good.1.as_str(), ca.pem.as_str()),
        (good.0.as_str(), "", ca.pem.as_str()),
        (good.0.as_str(), good.1.as_str(), ""),
    ] {
        write_set(dir.path(), &(cert.to_string(), key.to_string()), ca_pem);
        assert!(
            tls.reload().is_err(),
            "{cert:.10} / {key:.10} / {ca_pem:.10}"
        );
        assert_eq!(tls.current_leaf(), leaf_of(&good.0));
    }
    std::fs::remove_file(&files.key).unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.current_leaf(), leaf_of(&good.0));

    // A process does not start on a broken set.
    assert!(Tls::load(files.clone()).is_err());
    write_set(dir.path(), &good, &ca.pem);
    assert!(tls.reload().unwrap(), "the good set again");
}

#[test]
fn tls_flags_come_as_a_set() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }
    let none = Cli::try_parse_from(["x"]).unwrap();
    assert_eq!(none.tls.files(), None);
    assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
    let all = Cli::try_parse_from([
        "x",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--tls-ca",
        "ca.pem",
    ])
    .unwrap();
    assert_eq!(all.tls.files().unwrap().key, PathBuf::from("k.pem"));
}

mod handshakes {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::channel::{channel, ChannelSettings};
    use crate::internal::InternalToken;

    const TOKEN: &str = "a-test-internal-token";

    /// A TLS listener serving health behind the internal check.
    async fn serve(tls: &Tls) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, health) = tonic_health::server::health_reporter();
        let token = InternalToken::new(TOKEN).unwrap();
        let server = Server::builder()
            .add_service(InterceptedService::new(health, token.require()))
            .serve_with_incoming(accept::tls(listener, tls.acceptor()));
        tokio::spawn(server);
        addr
    }

    async fn check(channel: Channel, token: bool) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        if token {
            InternalToken::new(TOKEN)
                .unwrap()
                .attach(request.metadata_mut());
        }
        HealthClient::new(channel).check(request).await.map(drop)
    }

    /// A client that trusts `ca_pem` and presents no certificate.
    async fn operator(addr: SocketAddr, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
            .unwrap()
            .connect()
            .await
    }

    #[tokio::test]
    async fn processes_pass_by_certificate_operators_by_token_strangers_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let first = ca.issue();
        let tls = Tls::load(write_set(dir.path(), &first, &ca.pem)).unwrap();
        let addr = serve(&tls).await;

        // A tandem process: mutual TLS, no token needed.
        let settings = ChannelSettings {
            tls: Some(tls.clone()),
            ..ChannelSettings::default()
        };
        let process = channel(&format!("https://127.0.0.1:{}", addr.port()), settings).unwrap();
        check(process.clone(), false).await.unwrap();

        // An operator's client trusts the CA but has no certificate.
        let op = operator(addr, &ca.pem).await.unwrap();
        let refused = check(op.clone(), false).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        check(op, true).await.unwrap();

        // A client trusting another CA, and a plaintext client, get nowhere.
        let stranger = TestCa::new();
        if let Ok(channel) = operator(addr, &stranger.pem).await {
            assert!(check(channel, true).await.is_err());
        }
        let plain = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        assert!(check(plain, true).await.is_err());

        // A rotated certificate is served to new handshakes; the open
        // connection keeps working.
        assert_eq!(
            tls.peer_leaf(addr, "localhost").await.unwrap(),
            leaf_of(&first.0)
        );
        let second = ca.issue();
        write_set(dir.path(), &second, &ca.pem);
        assert!(tls.reload().unwrap());
        assert_eq!(
            tls.peer_leaf(addr, "localhost").await.unwrap(),
            leaf_of(&second.0)
        );
        check(process, false).await.unwrap();
    }

    #[test]
    fn an_https_peer_needs_tls() {
        let error = channel("https://127.0.0.1:1", ChannelSettings::default()).unwrap_err();
        assert!(error.to_string().contains("no TLS"), "{error}");
    }
}
