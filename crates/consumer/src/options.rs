//! How the consumer runs.

use std::time::Duration;

use rdkafka::config::ClientConfig;

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Where messages that cannot be applied go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Librdkafka properties, applied last.
    pub kafka: Vec<(String, String)>,
    /// Accounts applied at the same time (each account's events strictly in order).
    pub concurrency: usize,
    /// Events read from Kafka and not yet applied, at most; at the bound, fetching pauses.
    pub max_in_flight: usize,
    /// How long an account's lease lasts without renewal: after a member dies, how long its
    /// accounts wait before another member applies them.
    pub lease_ttl: Duration,
    /// Schemas of Confluent-framed messages: ids known up front and a registry to ask.
    pub schemas: crate::schemas::Schemas,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: "127.0.0.1:9092".into(),
            topic: "tandem.changes".into(),
            group: "tandem-consumer".into(),
            dead_letter_topic: "tandem.changes.dlq".into(),
            kafka: Vec::new(),
            concurrency: 32,
            max_in_flight: 1024,
            lease_ttl: Duration::from_secs(10),
            schemas: Default::default(),
        }
    }
}
impl Options {
    /// A Kafka client's configuration: the brokers, then `defaults` for this kind of client,
    /// then the librdkafka properties given (`-X`), applied last. Every client of the consumer
    /// — the group member, the dead-letter producer, the lookups — is built from it, so all of
    /// them connect the same way (TLS, SASL, timeouts).
    pub(crate) fn kafka_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        config
    }
}
