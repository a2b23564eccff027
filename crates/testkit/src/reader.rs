//! Reading a topic's change events as a test goes on.

use anyhow::Context as _;

use crate::unique;

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

/// Every event of `topic` from its start, read until none arrives for `quiet`.
pub async fn read_until_quiet(
    brokers: &str,
    topic: &str,
    quiet: std::time::Duration,
) -> anyhow::Result<Vec<(String, tandem_event::ChangeEvent)>> {
    use rdkafka::Message as _;
    let reader = Reader::new(brokers, topic)?;
    let mut events = Vec::new();
    while let Ok(message) = tokio::time::timeout(quiet, reader.consumer.recv()).await {
        let message = message?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        events.push((
            key,
            reader.codec.decode(message.payload().unwrap_or_default())?,
        ));
    }
    Ok(events)
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
