//! `tandem-cloudsim`: a stand-in for the cloud platform that Tandem keeps in step with the
//! legacy database.
//!
//! It is an HTTP server holding per-account collections of JSON documents in SQLite, with an
//! audit log of every applied mutation and run-time fault injection (latency, 503s, 429s,
//! rejected accounts, connections that break after a commit), so the consumer's retry and
//! idempotency logic can be exercised against something real.
//!
//! ```no_run
//! use tandem_cloudsim::{CloudSim, Options};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> tandem_cloudsim::Result<()> {
//! let sim = CloudSim::bind(([127, 0, 0, 1], 0).into(), Options::default()).await?;
//! let base_url = sim.base_url(); // hand this to the consumer
//! let shutdown = CancellationToken::new();
//! sim.serve(shutdown.child_token()).await
//! # }
//! ```
//!
//! HTTP API: `POST|GET /v1/accounts/{account}/{collection}`,
//! `GET|PUT|DELETE /v1/accounts/{account}/{collection}/{id}`, `GET /admin/audit`,
//! `GET|PUT /admin/faults`, `GET /health`.

mod admin;
mod api;
mod faults;
mod store;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use faults::Faults;

use api::AppState;
use store::Store;

/// Why the simulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database URL {url:?}: {source}")]
    DatabaseUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open database {url:?}: {source}")]
    OpenDatabase {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate database {url:?}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("invalid fault settings: {0}")]
    InvalidFaults(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] io::Error),
    #[error("database query failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt {what} in the database: {reason}")]
    CorruptRecord { what: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// SQLite URL, e.g. `sqlite:///var/lib/tandem/cloud.db`; created if missing.
    pub database_url: String,
    /// Faults in force at start-up.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            database_url: "sqlite::memory:".to_owned(),
            faults: Faults::default(),
        }
    }
}

/// A simulator whose database is open and whose socket is bound, but that does not serve
/// yet; binding first lets callers learn the port (`127.0.0.1:0`) before serving.
#[derive(Debug)]
pub struct CloudSim {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
}

impl CloudSim {
    /// Opens (creating if needed) and migrates the database, then binds `addr`.
    pub async fn bind(addr: SocketAddr, options: Options) -> Result<CloudSim> {
        options.faults.validate().map_err(Error::InvalidFaults)?;
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
        };
        Ok(CloudSim {
            listener,
            local_addr,
            state,
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

    /// `http://host:port`, with `127.0.0.1` standing in for an unspecified bind address.
    pub fn base_url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish and closes
    /// the database.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        info!(addr = %self.local_addr, "cloudsim serving");
        let app = api::router(self.state.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        self.state.store.close().await;
        info!(addr = %self.local_addr, "cloudsim stopped");
        served.map_err(Error::Serve)
    }
}
