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
pub mod legacy;
mod publish;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tandem_event::{ChangeEvent, Codec, Framing, Kind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use publish::{ensure_topic, producer_config, Publisher};
pub use store::Store;

use crate::config::Sources;
use crate::legacy::Legacy;

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
    #[error("query against {url} failed: {source}")]
    Query { url: String, source: sqlx::Error },
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("table {table}, column {column}: {message}")]
    BadValue {
        table: String,
        column: String,
        message: String,
    },
    #[error("no legacy database is configured for account {0:?}")]
    UnknownAccount(String),
    #[error("table {0:?} is not in the sources file")]
    UnknownTable(String),
    #[error("cannot reach broker {brokers}: {source}")]
    Broker {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic:?} does not exist on {brokers} (create it, e.g. with --create-topic)")]
    NoTopic { brokers: String, topic: String },
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Codec(#[from] tandem_event::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the producer runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    /// The checkpoint store: `sqlite://…` or `postgres://…`.
    pub store_url: String,
    /// Pause between cycles.
    pub interval: Duration,
    /// Rows read and published per batch.
    pub batch_size: usize,
    /// Accounts detected at the same time.
    pub concurrency: usize,
    pub framing: Framing,
    /// Librdkafka properties, applied last.
    pub kafka: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: "127.0.0.1:9092".into(),
            topic: "tandem.changes".into(),
            store_url: "sqlite://tandem-producer.db".into(),
            interval: Duration::from_millis(200),
            batch_size: 500,
            concurrency: 8,
            framing: Framing::SingleObject,
            kafka: Vec::new(),
        }
    }
}

/// Counters a caller can watch while the producer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub cycles: AtomicU64,
    pub failed_cycles: AtomicU64,
}

#[derive(Debug)]
pub struct Producer {
    legacy: Legacy,
    store: Store,
    publisher: Publisher,
    options: Options,
    stats: Arc<Stats>,
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Producer {
    /// Connects to the legacy database(s), the store and the broker, checking each.
    pub async fn connect(sources: &Sources, origin: &Path, options: Options) -> Result<Self> {
        let legacy = Legacy::connect(sources, origin).await?;
        let store = Store::open(&options.store_url).await?;
        let codec = Codec::new(options.framing)?;
        let publisher =
            Publisher::connect(&options.brokers, &options.topic, codec, &options.kafka).await?;
        Ok(Producer {
            legacy,
            store,
            publisher,
            options,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn legacy(&self) -> &Legacy {
        &self.legacy
    }

    /// Runs cycles on the interval until `shutdown` is cancelled. A failed cycle is logged and
    /// retried at the next interval; nothing it read is checkpointed.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        loop {
            if let Err(e) = self.cycle().await {
                warn!(error = %e, "producer cycle failed; retrying next interval");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.options.interval) => {}
            }
        }
    }

    /// One cycle over every account, `concurrency` accounts at a time. Returns the number of
    /// events published; an account that fails does not stop the others.
    pub async fn cycle(&self) -> Result<u64> {
        let accounts = self.legacy.accounts().await?;
        let results: Vec<(String, Result<u64>)> = futures::stream::iter(accounts)
            .map(|account| async move {
                let result = self.cycle_account(&account).await;
                (account, result)
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        let mut published = 0;
        let mut first_error = None;
        for (account, result) in results {
            match result {
                Ok(n) => published += n,
                Err(e) => {
                    warn!(account, error = %e, "account cycle failed");
                    self.stats.failed_cycles.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if published == 0 => Err(e),
            _ => Ok(published),
        }
    }

    /// One account: every table in configured order, batch after batch, up to the versions
    /// that existed when the cycle started.
    ///
    /// The upper bound makes each cycle a consistent cut: a row and the row it refers to
    /// (written earlier, so with a lower version) land in the same cycle or the referenced one
    /// in an earlier cycle, and tables in dependency order publish the referenced row first.
    pub async fn cycle_account(&self, account: &str) -> Result<u64> {
        let epoch = self.store.epoch(account).await?;
        let mut upto = 0;
        for table in self.legacy.tables() {
            upto = upto.max(self.legacy.max_version(account, &table.name).await?);
        }
        let mut published = 0;
        for table in self.legacy.tables() {
            loop {
                let high_water = self.store.high_water(account, &table.name).await?;
                let rows = self
                    .legacy
                    .changes(
                        account,
                        &table.name,
                        (high_water, upto),
                        self.options.batch_size,
                    )
                    .await?;
                if rows.is_empty() {
                    break;
                }
                let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
                let known = self.store.known_keys(account, &table.name, &keys).await?;
                let detected_at = now_millis();
                let events: Vec<ChangeEvent> = rows
                    .iter()
                    .map(|row| {
                        let kind = if known.contains(&row.entity_id) {
                            Kind::Updated
                        } else {
                            Kind::Created
                        };
                        let mut event = ChangeEvent::new(
                            account,
                            kind,
                            &table.name,
                            &row.entity_id,
                            epoch,
                            row.version,
                        );
                        event.data = Some(row.data.clone());
                        event.occurred_at = row.occurred_at.unwrap_or(detected_at);
                        event.detected_at = detected_at;
                        event
                    })
                    .collect();
                self.publisher.publish(&events).await?;
                self.store
                    .advance(account, &table.name, &rows, epoch)
                    .await?;
                published += events.len() as u64;
                self.stats
                    .published
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                info!(account, table = %table.name, events = events.len(), "published");
                if rows.len() < self.options.batch_size {
                    break;
                }
            }
        }
        Ok(published)
    }
}
