//! Tandem's consumer: applies [`ChangeEvent`](tandem_event::ChangeEvent)s from Kafka to the
//! cloud API through a declarative [`mapping`], idempotently and in order per account.
//!
//! ```no_run
//! # async fn run() -> tandem_consumer::Result<()> {
//! use std::{path::Path, sync::Arc, time::Duration};
//! use tandem_consumer::{mapping::Mapping, CloudClient, Consumer, Engine, Options, Store};
//!
//! let mapping = Arc::new(Mapping::load(Path::new("mapping.toml"))?);
//! let store = Store::open("sqlite://tandem-consumer.db").await?;
//! let client = CloudClient::new("http://127.0.0.1:8080", Duration::from_secs(10), 8);
//! let consumer = Consumer::new(Engine::new(mapping, store, client), Options::default())?;
//! consumer.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
//!
//! Each event's effects are sent first (creates carry a deterministic `Idempotency-Key`), then
//! its bookkeeping — source mirror, ID map and the partition's next offset — is committed in one
//! store transaction. A crash in between re-applies the event, and the cloud answers the repeated
//! create with the resource it already made.

mod apply;
mod client;
pub mod mapping;
mod run;
mod store;
pub mod verify;

use std::path::PathBuf;

pub use apply::{idempotency_key, CreateMode, Engine, Outcome};
pub use client::{ApiError, AuditEntry, CloudClient, Fence};
pub use run::{Consumer, Options, Stats};
pub use store::{Bookkeeping, Grant, LeaseId, MirrorRow, Position, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {key}: {message}", file.display())]
    Config {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot open {what} {url}: {source}")]
    Connect {
        what: &'static str,
        url: String,
        source: sqlx::Error,
    },
    #[error("no consumer store at {url}: {reason}")]
    StoreMissing { url: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot reach broker {brokers}: {source}")]
    Broker {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("{resource} {root_key}: cloud API call failed: {source}")]
    Api {
        resource: String,
        root_key: String,
        source: ApiError,
    },
    #[error("{resource} {root_key}: refers to {target} {key:?}, which is not known yet")]
    Unresolved {
        resource: String,
        root_key: String,
        target: String,
        key: String,
    },
    #[error("{resource} {root_key}: {source}")]
    Render {
        resource: String,
        root_key: String,
        source: mapping::RenderError,
    },
    /// The worker's lease on the account ran out and another worker took it: what this one
    /// did was not recorded, and the account's next holder repeats it.
    #[error("account {account}: lease lost to another worker; nothing recorded")]
    LeaseLost { account: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Worth trying the same event again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Api { source, .. } if source.is_transient()) || self.is_fenced()
    }

    /// The worker no longer holds the account (it gave up the partition, or its lease ran
    /// out): a cloud call was not sent, or the bookkeeping not committed. The event is left
    /// unrecorded for the account's next holder.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            Error::Api {
                source: ApiError::Fenced,
                ..
            } | Error::LeaseLost { .. }
        )
    }

    /// The consumer cannot go on safely (its store or broker is gone).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Store(_)
                | Error::Connect { .. }
                | Error::StoreMissing { .. }
                | Error::Migrate(_)
                | Error::Broker { .. }
                | Error::Internal(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
