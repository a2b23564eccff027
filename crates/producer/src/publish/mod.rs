//! Publishing events to Kafka with an idempotent producer; a batch counts as published only when
//! the broker acknowledged every message of it.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tandem_event::{ChangeEvent, Codec};

use crate::{Error, Result};

mod outbox;
mod topic;

pub use outbox::{Checkpoint, Outbox, TableBatch};
pub use topic::{ensure_topic, TopicReport, TopicSettings};

/// Librdkafka settings for an idempotent producer; `extra` passes through unchanged, last.
pub fn producer_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    codec: Codec,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Publisher {
    /// Creates the producer and checks the broker answers and the topic exists.
    pub async fn connect(
        brokers: &str,
        topic: &str,
        codec: Codec,
        extra: &[(String, String)],
    ) -> Result<Self> {
        let producer: FutureProducer =
            producer_config(brokers, extra)
                .create()
                .map_err(|source| Error::Broker {
                    brokers: brokers.to_owned(),
                    source,
                })?;
        let client = producer.clone();
        let topic_name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic_name), Duration::from_secs(10))
        })
        .await
        .map_err(|e| Error::Task {
            what: "broker metadata lookup",
            message: e.to_string(),
        })?
        .map_err(|source| Error::Broker {
            brokers: brokers.to_owned(),
            source,
        })?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(Error::NoTopic {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
            });
        }
        Ok(Publisher {
            producer,
            topic: topic.to_owned(),
            codec,
        })
    }

    /// Sends every event, keyed by account, and waits until the broker acknowledged all of
    /// them. Returns where each landed: (partition, offset), in the events' order.
    pub async fn publish(&self, events: &[ChangeEvent]) -> Result<Vec<(i32, i64)>> {
        let payloads = events
            .iter()
            .map(|e| self.codec.encode(e).map(|bytes| (e, bytes)))
            .collect::<Result<Vec<_>, _>>()?;
        let sends = payloads.iter().map(|(event, bytes)| {
            let record = FutureRecord::to(&self.topic)
                .key(event.account_id.as_bytes())
                .payload(bytes);
            async move {
                self.producer
                    .send(record, Timeout::After(Duration::from_secs(30)))
                    .await
                    .map_err(|(source, _)| Error::Publish {
                        topic: self.topic.clone(),
                        source,
                    })
            }
        });
        let delivered = try_join_all(sends).await?;
        Ok(delivered
            .into_iter()
            .map(|d| (d.partition, d.offset))
            .collect())
    }
}
