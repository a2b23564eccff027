//! A consumer run in the test's own process against the real broker, store and cloudsim.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use std::sync::atomic::Ordering;
use tandem_consumer::mapping::Mapping;

use tandem_consumer::{CloudClient, Consumer, Engine, Stats, Store};
use tokio_util::sync::CancellationToken;

/// How a test consumer is set up; `new` gives the defaults tests use.
#[derive(Debug, Clone)]
pub struct ConsumerSetup {
    pub mapping: String,
    pub store: String,
    pub cloud: String,
    pub options: tandem_consumer::Options,
}

impl ConsumerSetup {
    /// The demo's mapping, group `<topic>-group`, dead letters to `<topic>.dlq`, and a short
    /// session so a rebalance after a test's member goes away does not take long.
    pub fn new(brokers: &str, topic: &str, store: &str, cloud: &str) -> Self {
        ConsumerSetup {
            mapping: tandem_workload::MAPPING.to_owned(),
            store: store.to_owned(),
            cloud: cloud.to_owned(),
            options: tandem_consumer::Options {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
                group: format!("{topic}-group"),
                dead_letter_topic: format!("{topic}.dlq"),
                kafka: vec![("session.timeout.ms".into(), "6000".into())],
                ..Default::default()
            },
        }
    }

    pub fn group(mut self, group: &str) -> Self {
        self.options.group = group.to_owned();
        self
    }

    /// No Kafka-side commits at all: where a restart resumes is the store's call alone.
    pub fn without_kafka_commits(self) -> Self {
        self.kafka("enable.auto.commit", "false")
    }

    /// A librdkafka property for every client of the consumer, applied last.
    pub fn kafka(mut self, key: &str, value: &str) -> Self {
        self.options.kafka.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running consumer; stopped with [`TestConsumer::stop`].
#[derive(Debug)]
pub struct TestConsumer {
    pub consumer: Arc<Consumer>,
    pub store: Store,
    pub cloud: CloudClient,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<tandem_consumer::Result<()>>,
}

impl TestConsumer {
    pub async fn start(setup: ConsumerSetup) -> anyhow::Result<Self> {
        let mapping = Arc::new(Mapping::parse(&setup.mapping, Path::new("mapping.toml"))?);
        let cloud = CloudClient::new(&setup.cloud, Duration::from_secs(10), 8);
        let store = Store::open(&setup.store).await?;
        let engine = Engine::new(mapping, store.clone(), cloud.clone());
        let consumer = Arc::new(Consumer::new(engine, setup.options)?);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (consumer, stop) = (consumer.clone(), stop.clone());
            async move { consumer.run(stop).await }
        });
        Ok(TestConsumer {
            consumer,
            store,
            cloud,
            stop,
            task,
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.consumer.stats()
    }

    /// Waits until `done` holds of the consumer's counters (60 s at most); fails early if the
    /// consumer stopped.
    pub async fn until(&self, what: &str, done: impl Fn(&Stats) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.consumer.stats()) {
            ensure!(
                !self.task.is_finished(),
                "the consumer stopped while waiting for {what}"
            );
            ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.consumer.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until the consumer handled `published` events (applied, skipped, dead-lettered
    /// or held).
    pub async fn until_handled(&self, published: u64) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        self.until(&format!("{published} events handled"), |s| {
            s.applied.load(Relaxed)
                + s.skipped.load(Relaxed)
                + s.dead_lettered.load(Relaxed)
                + s.held.load(Relaxed)
                >= published
        })
        .await
    }

    /// Stops the consumer and returns how its run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Waits until the consumer has handled every event the producer published.
pub async fn drained(producer: &tandem_producer::Producer, stats: &Stats) -> anyhow::Result<()> {
    tandem_cli::demo::drain(producer, Duration::from_secs(1)).await?;
    let published = producer.stats().published.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = stats.applied.load(Ordering::Relaxed)
            + stats.skipped.load(Ordering::Relaxed)
            + stats.dead_lettered.load(Ordering::Relaxed);
        if done >= published {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "consumer handled {done} of {published} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
