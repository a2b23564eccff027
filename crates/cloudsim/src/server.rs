//! The simulator as a server: bind first, then serve until cancelled.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api;
use crate::auth::Tokens;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::options::Options;
use crate::state::AppState;
use crate::store::Store;
use crate::tls::TlsListener;

/// A simulator whose database is open and whose socket is bound, but that does not serve
/// yet; binding first lets callers learn the port (`127.0.0.1:0`) before serving.
#[derive(Debug)]
pub struct CloudSim {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    tls: Option<rustls::ServerConfig>,
    ca_pem: Option<String>,
}

impl CloudSim {
    /// Opens (creating if needed) and migrates the database, then binds `addr`.
    pub async fn bind(addr: SocketAddr, options: Options) -> Result<CloudSim> {
        options.faults.validate().map_err(Error::InvalidFaults)?;
        let (ca_pem, tls) = match &options.tls {
            Some(source) => {
                let (ca_pem, config) = crate::tls::load(source)?;
                (ca_pem, Some(config))
            }
            None => (None, None),
        };
        let store = Store::open(&options.database_url).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let state = AppState {
            store,
            faults: Arc::new(RwLock::new(options.faults)),
            tokens: options.auth.map(Tokens::new),
            registry: Default::default(),
        };
        Ok(CloudSim {
            listener,
            local_addr,
            state,
            tls,
            ca_pem,
        })
    }

    /// The live fault settings, shared with the running server (what `PUT /admin/faults`
    /// replaces); for embedding cloudsim in tests.
    pub fn faults(&self) -> Arc<RwLock<Faults>> {
        self.state.faults.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port` (`https://` when serving TLS), with `127.0.0.1` standing in for an
    /// unspecified bind address.
    pub fn base_url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// The PEM of the certificate authority that signed a generated certificate: what clients
    /// must trust. `None` over plain HTTP or with a certificate from files.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish and closes
    /// the database.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        info!(addr = %self.local_addr, "cloudsim serving");
        let app = api::router(self.state.clone());
        let served = match self.tls {
            Some(config) => {
                let listener = TlsListener::new(self.listener, config).map_err(Error::Serve)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        };
        self.state.store.close().await;
        info!(addr = %self.local_addr, "cloudsim stopped");
        served.map_err(Error::Serve)
    }
}
