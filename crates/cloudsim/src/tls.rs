//! HTTPS for the simulator: a certificate authority and a server certificate it generates
//! for itself (or files it is given), and a listener that completes TLS handshakes before
//! axum sees a connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::error::{Error, Result};

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Made at start-up for these names (DNS names or IP addresses), signed by a certificate
    /// authority made with it; the authority's PEM is what clients trust.
    Generated { names: Vec<String> },
    /// PEM files: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// A certificate authority (PEM), and a certificate chain it signed with the chain's key.
#[derive(Debug)]
pub struct Certificates {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A new certificate authority and a server certificate it signed for `names`.
pub fn generate(names: &[String]) -> Result<Certificates> {
    let failed = |e: rcgen::Error| Error::Tls(format!("cannot generate a certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tandem cloudsim CA");
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(failed)?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;
    Ok(Certificates {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// A TLS server configuration for `chain` and `key`, with the ring provider.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| Error::Tls(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The server's certificates: generated, or read from files. The CA PEM is `None` for files
/// (clients are given the CA that signed them).
pub(crate) fn load(source: &TlsSource) -> Result<(Option<String>, rustls::ServerConfig)> {
    match source {
        TlsSource::Generated { names } => {
            let certificates = generate(names)?;
            let config = server_config(certificates.chain, certificates.key)?;
            Ok((Some(certificates.ca_pem), config))
        }
        TlsSource::Files { cert, key } => {
            let unreadable = |path: &PathBuf, e: rustls::pki_types::pem::Error| {
                Error::Tls(format!("{}: {e}", path.display()))
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| unreadable(cert, e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| unreadable(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, e))?;
            Ok((None, server_config(chain, key_der)?))
        }
    }
}

/// Accepts TCP connections and completes their TLS handshakes concurrently, so that one slow
/// or failing client does not hold up the others; axum is handed finished TLS streams.
#[derive(Debug)]
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (send, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        debug!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, send) = (acceptor.clone(), send.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = send.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local_addr,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends on its own; without it, nothing is ever accepted.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
