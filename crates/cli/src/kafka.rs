//! Can the brokers be reached with the settings given? Asked by `tandem health`, and before
//! `produce`, `consume` and `replay` start, so that credentials the brokers refuse stop the
//! command with a clear reason instead of leaving librdkafka to retry them for ever.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use crate::args::KafkaArgs;

/// Remembers the first authentication or TLS failure the client reports.
#[derive(Default)]
struct Watch {
    refused: Arc<Mutex<Option<String>>>,
}

impl Watch {
    fn refuse(&self, reason: &str) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| reason.to_owned());
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        );
        if refused {
            self.refuse(reason);
        }
    }

    /// librdkafka reports a failed TLS handshake only in its log, not as an error.
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let refused = fac == "FAIL"
            && (log_message.contains("SSL handshake failed")
                || log_message.contains("certificate verify failed"));
        if refused {
            self.refuse(log_message);
        }
    }
}

impl ConsumerContext for Watch {}

/// Why the brokers did not answer.
enum Unanswered {
    /// They refused the credentials or the TLS handshake.
    Refused(String),
    /// Nothing answered in time.
    Silent(KafkaError),
}

/// Asks the brokers for their metadata. Credentials or certificates the brokers refuse are a
/// usage error (exit 2); brokers that do not answer within `timeout` a runtime failure.
pub async fn check(kafka: &KafkaArgs, timeout: Duration) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in kafka.properties()? {
        config.set(key, value);
    }
    let watch = Watch::default();
    let refused = watch.refused.clone();
    let client: BaseConsumer<Watch> = config
        .create_with_context(watch)
        .map_err(|e| crate::exit::Usage(format!("Kafka settings: {e}")))?;
    // Asked again every second, so that a refusal ends the wait at once.
    let answered = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            let step = timeout
                .saturating_sub(started.elapsed())
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            let answer = client.fetch_metadata(None, step);
            // Errors reach the context (and the poll's answer) only when the client is polled.
            while let Some(event) = client.poll(Duration::ZERO) {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "Kafka client error while checking the brokers");
                }
            }
            let refusal = refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match (answer, refusal) {
                (Ok(_), _) => return Ok(()),
                (Err(_), Some(reason)) => return Err(Unanswered::Refused(reason)),
                (Err(e), None) if started.elapsed() >= timeout => {
                    return Err(Unanswered::Silent(e))
                }
                (Err(_), None) => {}
            }
        }
    })
    .await?;
    let brokers = &kafka.brokers;
    match answered {
        Ok(()) => Ok(()),
        Err(Unanswered::Refused(reason)) => Err(crate::exit::Usage(format!(
            "the brokers at {brokers} refused the connection: {reason}; check the SASL \
             username and password, or the TLS settings"
        ))
        .into()),
        Err(Unanswered::Silent(e)) => Err(anyhow::anyhow!(
            "no answer from the brokers at {brokers}: {e}"
        )),
    }
}

/// One partition of a topic as the brokers see it: its high watermark, and the offset `group`
/// committed (None when it committed none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub high_watermark: i64,
    pub committed: Option<i64>,
}

/// Each partition's high watermark and `group`'s committed offset, asked of the brokers within
/// `timeout`. The client does not join the group.
pub async fn offsets(
    kafka: &KafkaArgs,
    group: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionOffsets>> {
    use rdkafka::{Offset, TopicPartitionList};
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    config.set("group.id", group);
    config.set("enable.auto.commit", "false");
    for (key, value) in kafka.properties()? {
        config.set(key, value);
    }
    let client: BaseConsumer = config
        .create()
        .map_err(|e| crate::exit::Usage(format!("Kafka settings: {e}")))?;
    let topic = kafka.topic.clone();
    let asked = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PartitionOffsets>> {
        let metadata = client.fetch_metadata(Some(&topic), timeout)?;
        let count = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        let mut list = TopicPartitionList::new();
        for p in 0..i32::try_from(count).unwrap_or(i32::MAX) {
            list.add_partition(&topic, p);
        }
        let committed = client.committed_offsets(list, timeout)?;
        (0..i32::try_from(count).unwrap_or(i32::MAX))
            .map(|p| {
                let (_, high) = client.fetch_watermarks(&topic, p, timeout)?;
                let committed = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                Ok(PartitionOffsets {
                    partition: p,
                    high_watermark: high,
                    committed,
                })
            })
            .collect()
    });
    asked.await?
}
