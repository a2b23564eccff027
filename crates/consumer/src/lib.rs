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

mod access;
mod apply;
mod client;
mod error;
pub mod mapping;
pub mod metrics;
mod options;
pub mod repair;
pub mod replay;
mod run;
pub mod schemas;
mod stats;
mod store;
pub mod verify;

pub use access::{http_client, AccessError, CloudAccess, CloudAuth};
pub use apply::{idempotency_key, CreateMode, Engine, Outcome};
pub use client::{ApiError, AuditEntry, CloudClient, Fence};
pub use error::{Disposition, Error, Result};
pub use options::Options;
pub use run::{Consumer, WORST_LISTED};
pub use stats::{AccountLag, PartitionLag, StagePercentiles, Stages, Stats};
pub use store::{
    AccountProgress, Bookkeeping, DeadLetter, Grant, LeaseId, MirrorRow, Position, SnapshotMark,
    Store,
};
