//! A Kafka-protocol broker reached over TLS: a Tansu of its own, advertising the address of a
//! TLS-terminating proxy in front of it, with a certificate authority made for the test. The
//! proxy stands where a managed Kafka's TLS listener would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A broker whose clients must speak TLS and trust `ca_file`.
#[derive(Debug)]
pub struct TlsBroker {
    /// Bootstrap servers: the proxy's address.
    pub brokers: String,
    /// PEM of the certificate authority that signed the proxy's certificate.
    pub ca_file: PathBuf,
    broker: Child,
    proxy: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    /// Starts Tansu (the binary `TANDEM_TANSU` names, as tests/run.sh sets it) behind a TLS
    /// proxy on loopback ports.
    pub async fn start() -> anyhow::Result<TlsBroker> {
        let tansu = std::env::var("TANDEM_TANSU").context(
            "TANDEM_TANSU is not set: run the tests through tests/run.sh, which installs Tansu",
        )?;
        let dir = tempfile::tempdir()?;
        let (ca_pem, chain, key) = certificates()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy_addr = listener.local_addr()?;
        let upstream: SocketAddr = {
            let free = std::net::TcpListener::bind("127.0.0.1:0")?;
            free.local_addr()?
        };
        let broker = Command::new(tansu)
            .args(["broker", "--listener-url", &format!("tcp://{upstream}")])
            .args(["--advertised-listener-url", &format!("tcp://{proxy_addr}")])
            .args(["--storage-engine", "memory://tls/"])
            .stdout(Stdio::null())
            .stderr(crate::log_to(&dir.path().join("tansu.log")))
            .spawn()
            .context("cannot start Tansu")?;
        for _ in 0..100 {
            if TcpStream::connect(upstream).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let proxy = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(TlsBroker {
            brokers: proxy_addr.to_string(),
            ca_file,
            broker,
            proxy,
            _dir: dir,
        })
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// A certificate authority (PEM) and a certificate it signed for 127.0.0.1 and localhost,
/// with its key.
type Certificates = (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn certificates() -> anyhow::Result<Certificates> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tandem test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let chain = vec![cert.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((ca.pem(), chain, key))
}
