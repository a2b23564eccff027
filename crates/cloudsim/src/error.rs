//! The crate's error type: why the simulator could not start or keep serving.

use std::io;
use std::net::SocketAddr;

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
    #[error("TLS: {0}")]
    Tls(String),
    #[error("corrupt {what} in the database: {reason}")]
    CorruptRecord { what: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
