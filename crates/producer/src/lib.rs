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
pub mod ingest;
pub mod legacy;
mod publish;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
pub use tandem_event::now_millis;
use tandem_event::{Codec, Framing};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use detect::{Differences, RestoreSignal};
pub use publish::{ensure_topic, producer_config, Publisher};
pub use store::{AccountState, Store};

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
    #[error("account {0}: another producer instance holds the lease")]
    LostLease(String),
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
    /// How often the differencing check looks for deleted rows.
    pub delete_check_interval: Duration,
    /// How long an account's lease lasts without renewal; another instance takes the account
    /// over this long after its holder died.
    pub lease_ttl: Duration,
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
            delete_check_interval: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// Counters a caller can watch while the producer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub cycles: AtomicU64,
    pub failed_cycles: AtomicU64,
    pub deletes: AtomicU64,
    pub restores: AtomicU64,
}

#[derive(Debug)]
pub struct Producer {
    legacy: Legacy,
    store: Store,
    publisher: Publisher,
    options: Options,
    stats: Arc<Stats>,
    /// This instance's name in account leases.
    owner: String,
    notify_channel: Option<(String, String)>,
    /// Per account, the published mark (epoch, version) this instance last raised it to; a
    /// batch at or below it needs no raise.
    published: std::sync::Mutex<std::collections::HashMap<String, (i64, i64)>>,
}

impl Producer {
    /// Connects to the legacy database(s), the store and the broker, checking each.
    pub async fn connect(sources: &Sources, origin: &Path, options: Options) -> Result<Self> {
        let legacy = Legacy::connect(sources, origin).await?;
        let store = Store::open(&options.store_url).await?;
        let codec = Codec::new(options.framing)?;
        let publisher =
            Publisher::connect(&options.brokers, &options.topic, codec, &options.kafka).await?;
        let notify_channel = match (&sources.legacy.notify_channel, sources.layout(origin)?) {
            (Some(channel), config::Layout::Shared { url, .. }) if url.starts_with("postgres") => {
                Some((url, channel.clone()))
            }
            (Some(_), _) => {
                return Err(Error::Config {
                    file: origin.to_path_buf(),
                    key: "legacy.notify_channel".into(),
                    message: "needs one shared PostgreSQL database".into(),
                })
            }
            (None, _) => None,
        };
        let owner = format!(
            "{}-{}-{:x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "producer".into()),
            std::process::id(),
            now_millis()
        );
        Ok(Producer {
            legacy,
            store,
            publisher,
            options,
            stats: Arc::default(),
            owner,
            notify_channel,
            published: Default::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn legacy(&self) -> &Legacy {
        &self.legacy
    }

    /// Runs cycles on the interval until `shutdown` is cancelled, earlier when the legacy
    /// database notifies the configured channel. A failed cycle is logged and retried at the
    /// next interval; nothing it read is checkpointed. Leases are given up on the way out.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let listener = self.notify_channel.as_ref().map(|(url, channel)| {
            tokio::spawn(listen(
                url.clone(),
                channel.clone(),
                wake.clone(),
                shutdown.child_token(),
            ))
        });
        loop {
            if let Err(e) = self.cycle().await {
                warn!(error = %e, "producer cycle failed; retrying next interval");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.options.interval) => {}
                _ = wake.notified() => {}
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        for account in self.legacy.accounts().await.unwrap_or_default() {
            if let Err(e) = self.store.release(&account, &self.owner).await {
                warn!(account, error = %e, "cannot release the lease");
            }
        }
        Ok(())
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
}

/// Wakes the detector on every notification of `channel`, reconnecting after errors.
async fn listen(
    url: String,
    channel: String,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(&channel).await?;
            info!(channel, "listening for change notifications");
            loop {
                listener.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = listener => {
                if let Err(e) = result {
                    warn!(channel, error = %e, "change notifications interrupted; reconnecting");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
