//! Brokers of a test's own, as managed Kafka services run them:
//!
//! - [`TlsBroker`]: reached over TLS only — a Tansu advertising the address of a
//!   TLS-terminating proxy in front of it, with a certificate authority made for the test;
//! - [`SaslBroker`]: a Tansu that requires SASL/SCRAM-SHA-256 authentication
//!   (`--authentication`), with one user. Tansu 0.6 offers no PLAIN, and creates users only
//!   while authentication is off, so the user is created first, on SQLite storage, and the
//!   broker started again on it with authentication on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
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
    /// Starts Tansu behind a TLS proxy on loopback ports.
    pub async fn start() -> anyhow::Result<TlsBroker> {
        let dir = tempfile::tempdir()?;
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let certificates = tandem_cloudsim::tls::generate(&names)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &certificates.ca_pem)?;
        let config = tandem_cloudsim::tls::server_config(certificates.chain, certificates.key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy_addr = listener.local_addr()?;
        let upstream: SocketAddr = {
            let free = std::net::TcpListener::bind("127.0.0.1:0")?;
            free.local_addr()?
        };
        let broker = tansu(&dir, upstream, proxy_addr, &[])?;
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

/// A broker that requires SASL/SCRAM-SHA-256 before anything else, knowing one user.
#[derive(Debug)]
pub struct SaslBroker {
    pub brokers: String,
    pub username: String,
    pub password: String,
    broker: Child,
    _dir: tempfile::TempDir,
}

impl SaslBroker {
    pub async fn start() -> anyhow::Result<SaslBroker> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = {
            let free = std::net::TcpListener::bind("127.0.0.1:0")?;
            free.local_addr()?
        };
        let storage = ["--storage-engine", "sqlite://tansu.db"];
        let (username, password) = ("tandem".to_owned(), crate::unique("pw"));
        let mut open = tansu(&dir, addr, addr, &storage)?;
        let created = Command::new(tansu_binary()?)
            .args(["user", "create", "--broker", &format!("tcp://{addr}")])
            .args(["--mechanism", "scram256", &username, &password])
            .stdout(Stdio::null())
            .stderr(crate::log_to(&dir.path().join("tansu-user.log")))
            .status()
            .context("cannot run tansu user create")?;
        let _ = open.kill();
        let _ = open.wait();
        anyhow::ensure!(created.success(), "tansu user create failed: {created}");
        let broker = tansu(
            &dir,
            addr,
            addr,
            &[&storage[..], &["--authentication"]].concat(),
        )?;
        Ok(SaslBroker {
            brokers: addr.to_string(),
            username,
            password,
            broker,
            _dir: dir,
        })
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// The Tansu binary tests/run.sh installed (`TANDEM_TANSU`).
fn tansu_binary() -> anyhow::Result<String> {
    std::env::var("TANDEM_TANSU").context(
        "TANDEM_TANSU is not set: run the tests through tests/run.sh, which installs Tansu",
    )
}

/// Starts Tansu (the binary `TANDEM_TANSU` names, as tests/run.sh sets it) on `listen`,
/// advertising `advertised`, and waits until it accepts connections.
fn tansu(
    dir: &tempfile::TempDir,
    listen: SocketAddr,
    advertised: SocketAddr,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let memory = ["--storage-engine", "memory://test/"];
    let storage = if extra.contains(&"--storage-engine") {
        &[][..]
    } else {
        &memory[..]
    };
    let child = Command::new(tansu_binary()?)
        .current_dir(dir.path())
        .args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(storage)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(crate::log_to(&dir.path().join("tansu.log")))
        .spawn()
        .context("cannot start Tansu")?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(listen).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(child)
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}
