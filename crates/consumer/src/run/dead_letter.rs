//! The dead-letter topic: a message that cannot be applied is sent there with its original
//! bytes, the reason and where it came from in headers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracing::warn;

use super::Inner;
use crate::{DeadLetter, Error, Result};
impl Inner {
    /// Sends the original bytes to the dead-letter topic with the reason and origin in headers.
    pub(super) async fn dead_letter(&self, message: &impl Message, reason: &str) -> Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tandem.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "tandem.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "tandem.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "tandem.source.offset",
                value: Some(&offset),
            });
        let mut record = FutureRecord::to(&self.options.dead_letter_topic)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.dead_letters
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(source, _)| Error::Broker {
                brokers: self.options.brokers.clone(),
                source,
            })?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        crate::metrics::dead_lettered();
        // For `tandem status` and the status page; the topic holds the message either way.
        let letter = DeadLetter {
            account: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            reason: reason.to_owned(),
            at: tandem_event::now_millis(),
        };
        if let Err(e) = self.engine.store().record_dead_letter(&letter).await {
            warn!(error = %e, "cannot record the dead letter in the store; it is in the dead-letter topic");
        }
        warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettered"
        );
        Ok(())
    }
}
