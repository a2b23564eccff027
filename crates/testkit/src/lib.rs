//! Shared helpers for Tandem's tests and benchmarks: the real broker and PostgreSQL the test
//! command started, unique names so tests run in parallel, and cloudsim on a loopback port.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let brokers = tandem_testkit::brokers()?;
//! let topic = tandem_testkit::topic(&brokers, 4).await?;
//! let db = tandem_testkit::PgDatabase::create().await?;
//! let cloud = tandem_testkit::Cloud::start(Default::default()).await?;
//! // ... run the pipeline against them ...
//! cloud.stop().await?;
//! db.drop().await
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The Kafka-protocol broker the test command started (`TANDEM_TEST_BROKERS`).
pub fn brokers() -> anyhow::Result<String> {
    std::env::var("TANDEM_TEST_BROKERS").context(
        "TANDEM_TEST_BROKERS is not set: run the tests through tests/run.sh, which starts a broker",
    )
}

/// The PostgreSQL server for tests (`TANDEM_TEST_PG`, default the local server).
pub fn postgres_url() -> String {
    std::env::var("TANDEM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A name no other test in this run (or a parallel run) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh topic with `partitions` partitions and its dead-letter topic (`<topic>.dlq`).
pub async fn topic(brokers: &str, partitions: i32) -> anyhow::Result<String> {
    let topic = unique("tandem-test").replace('_', "-");
    tandem_producer::ensure_topic(brokers, &topic, partitions, &[]).await?;
    tandem_producer::ensure_topic(brokers, &format!("{topic}.dlq"), 1, &[]).await?;
    Ok(topic)
}

/// A PostgreSQL database created for one test and dropped by [`PgDatabase::drop`].
#[derive(Debug)]
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let server = postgres_url();
        let name = unique("tandem_test");
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {server}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(PgDatabase {
            url: format!("{server}/{name}"),
            name,
        })
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_url())).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// cloudsim serving on a loopback port, with its data in a temporary directory.
#[derive(Debug)]
pub struct Cloud {
    pub url: String,
    stop: CancellationToken,
    faults: std::sync::Arc<tokio::sync::RwLock<tandem_cloudsim::Faults>>,
    task: tokio::task::JoinHandle<Result<(), tandem_cloudsim::Error>>,
    _dir: tempfile::TempDir,
}

impl Cloud {
    pub async fn start(faults: tandem_cloudsim::Faults) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let options = tandem_cloudsim::Options {
            database_url: format!("sqlite://{}", dir.path().join("cloud.db").display()),
            faults,
        };
        let server = tandem_cloudsim::CloudSim::bind("127.0.0.1:0".parse()?, options).await?;
        let url = server.base_url();
        let faults = server.faults();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(stop.clone()));
        Ok(Cloud {
            url,
            stop,
            faults,
            task,
            _dir: dir,
        })
    }

    /// Replaces the fault settings of the running server.
    pub async fn set_faults(&self, faults: tandem_cloudsim::Faults) {
        *self.faults.write().await = faults;
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Reads a topic's change events from the beginning, a few at a time, as a test goes on.
pub struct Reader {
    consumer: rdkafka::consumer::StreamConsumer,
    codec: tandem_event::Codec,
    topic: String,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Reader {
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        use rdkafka::consumer::Consumer as _;
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("tandem-test-reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(Reader {
            consumer,
            codec: tandem_event::Codec::default(),
            topic: topic.to_owned(),
        })
    }

    /// The next `count` events (with their Kafka keys), waiting up to 30 s.
    pub async fn take(
        &self,
        count: usize,
    ) -> anyhow::Result<Vec<(String, tandem_event::ChangeEvent)>> {
        use rdkafka::Message as _;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while events.len() < count {
            let message = tokio::time::timeout_at(deadline, self.consumer.recv())
                .await
                .with_context(|| {
                    format!(
                        "read {} of {count} events from {}",
                        events.len(),
                        self.topic
                    )
                })??;
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            events.push((
                key,
                self.codec.decode(message.payload().unwrap_or_default())?,
            ));
        }
        Ok(events)
    }
}

/// Reads `count` events from the start of `topic` (every partition), waiting up to `timeout`.
/// Returns them in per-partition order, with their Kafka keys.
pub async fn read_events(
    brokers: &str,
    topic: &str,
    count: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<(String, tandem_event::ChangeEvent)>> {
    let reader = Reader::new(brokers, topic)?;
    tokio::time::timeout(timeout, reader.take(count))
        .await
        .with_context(|| format!("read {count} events from {topic}"))?
}
