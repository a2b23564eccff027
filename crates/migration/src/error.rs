//! The migration store's errors.

use crate::State;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the migration store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("no migration store at {url}: {reason}")]
    StoreMissing { url: String, reason: String },
    #[error("migration store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("migration store migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Something the store holds is not what Tandem wrote there.
    #[error("migration store: {0}")]
    Corrupt(String),
    #[error("account {0} is not known to the migration; is `tandem produce` running with this migration store, or is the account in a slice?")]
    UnknownAccount(String),
    #[error("account {account} is {state}; {wanted} needs it {allowed}")]
    NotAllowed {
        account: String,
        state: State,
        wanted: &'static str,
        allowed: String,
    },
    #[error("no slice named {0}; `tandem slice list` shows the slices")]
    UnknownSlice(String),
    #[error("a slice named {0} exists already")]
    SliceExists(String),
    #[error("cannot serve the router on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
