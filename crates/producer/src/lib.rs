//! Tandem's producer: detects changes in legacy databases and publishes them as
//! [`ChangeEvent`](tandem_event::ChangeEvent)s to Kafka, keyed by account.
//!
//! ```no_run
//! # async fn run() -> tandem_producer::Result<()> {
//! use std::path::Path;
//! use tandem_producer::{config::Sources, Options, Producer};
//!
//! let path = Path::new("sources.toml");
//! let sources = Sources::load(path)?;
//! let producer = Producer::connect(&sources, path, Options::default()).await?;
//! producer.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
//!
//! Per account and table, a cycle reads rows whose version is above the high-water mark, in
//! version order and in batches; a key the manifest has not seen is `CREATED`, else `UPDATED`.
//! The checkpoint (manifest and high-water mark) advances only after Kafka acknowledged the batch,
//! so a producer stopped at any point re-publishes at most one batch (with the same event ids)
//! and never skips a change.

pub mod config;
mod detect;
mod error;
pub mod ingest;
pub mod legacy;
mod lifecycle;
pub mod metrics;
mod options;
mod producer;
mod publish;
mod stats;
mod store;
mod wake;

pub use detect::{Differences, RestoreSignal, Snapshot};
pub use error::{Error, Result};
pub use options::Options;
pub use producer::Producer;
pub use publish::{
    ensure_topic, producer_config, Checkpoint, Outbox, Publisher, TopicReport, TopicSettings,
};
pub use stats::Stats;
pub use store::{AccountState, ProducerAccount, Published, Store};
pub use tandem_event::now_millis;
