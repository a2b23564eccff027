//! The Kafka side of the consumer: a consumer group whose applied positions live in Tandem's
//! store, dead-lettering of messages that cannot be applied, and Kafka commits that follow the
//! store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tandem_event::{ChangeEvent, Codec};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::apply::{Engine, Outcome};
use crate::store::Position;
use crate::{Error, Result};

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: "127.0.0.1:9092".into(),
            topic: "tandem.changes".into(),
            group: "tandem-consumer".into(),
            dead_letter_topic: "tandem.changes.dlq".into(),
            kafka: Vec::new(),
        }
    }
}

/// Counters and latencies a caller can watch while the consumer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Messages re-delivered by Kafka that the store says were applied already.
    pub already_applied: AtomicU64,
    /// Events kept for a parked account.
    pub held: AtomicU64,
    /// Partitions currently assigned to this member.
    pub assigned_partitions: AtomicU64,
    /// Per applied event: when it happened in the legacy database (epoch millis) and how long
    /// until it was visible in the cloud (millis).
    pub latencies_ms: Mutex<Vec<(i64, u64)>>,
}

/// Positions read from the store, per (topic, partition); emptied on every rebalance so a newly
/// assigned partition is read afresh (another member may have moved it on meanwhile).
type Positions = Arc<Mutex<HashMap<(String, i32), i64>>>;

struct Context {
    positions: Positions,
    stats: Arc<Stats>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = tpl.count(), "partitions assigned");
                self.stats
                    .assigned_partitions
                    .store(tpl.count() as u64, Ordering::Relaxed);
            }
            Rebalance::Revoke(tpl) => {
                info!(partitions = tpl.count(), "partitions revoked");
                self.stats.assigned_partitions.store(0, Ordering::Relaxed);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        if let Ok(mut positions) = self.positions.lock() {
            positions.clear();
        }
    }
}

pub struct Consumer {
    engine: Engine,
    consumer: StreamConsumer<Context>,
    dead_letters: FutureProducer,
    codec: Codec,
    options: Options,
    positions: Positions,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("options", &self.options)
            .finish()
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Consumer {
    pub fn new(engine: Engine, options: Options) -> Result<Self> {
        let broker_error = |source| Error::Broker {
            brokers: options.brokers.clone(),
            source,
        };
        let positions = Positions::default();
        let stats = Arc::<Stats>::default();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group)
            .set("enable.auto.commit", "true")
            // Kafka-side commits follow the store: an offset is stored only once applied.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Changes should be visible in well under a second; don't let fetches idle long.
            .set("fetch.wait.max.ms", "100");
        for (key, value) in &options.kafka {
            config.set(key, value);
        }
        let consumer: StreamConsumer<Context> = config
            .create_with_context(Context {
                positions: positions.clone(),
                stats: stats.clone(),
            })
            .map_err(broker_error)?;
        consumer
            .subscribe(&[&options.topic])
            .map_err(broker_error)?;
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", &options.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let dead_letters: FutureProducer = producer_config.create().map_err(broker_error)?;
        Ok(Consumer {
            engine,
            consumer,
            dead_letters,
            codec: Codec::default(),
            options,
            positions,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Consumes until `shutdown` is cancelled. The current event is finished (or left
    /// unrecorded) before returning, so a restart resumes exactly where the store says.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut resumes = tokio::time::interval(Duration::from_secs(1));
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = resumes.tick() => {
                    self.resume_parked().await?;
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.handle(&message, &shutdown).await?,
                Err(e) => warn!(error = %e, "kafka consumer error"),
            }
        }
        info!("consumer stopped");
        Ok(())
    }

    /// The next offset the store says to apply for a partition.
    async fn stored_position(&self, topic: &str, partition: i32) -> Result<i64> {
        let key = (topic.to_owned(), partition);
        if let Some(next) = self
            .positions
            .lock()
            .ok()
            .and_then(|p| p.get(&key).copied())
        {
            return Ok(next);
        }
        let next = self
            .engine
            .store()
            .position(&self.options.group, topic, partition)
            .await?
            .unwrap_or(0);
        if let Ok(mut positions) = self.positions.lock() {
            positions.insert(key, next);
        }
        Ok(next)
    }

    fn advance(&self, topic: &str, partition: i32, next: i64) {
        if let Ok(mut positions) = self.positions.lock() {
            positions.insert((topic.to_owned(), partition), next);
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(next))
            .is_ok()
        {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                warn!(error = %e, topic, partition, "cannot store the Kafka offset");
            }
        }
    }

    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if offset < self.stored_position(topic, partition).await? {
            tracing::debug!(partition, offset, "already applied per the store");
            self.stats.already_applied.fetch_add(1, Ordering::Relaxed);
            // Applied before, per the store: a re-delivery after a crash or a rebalance.
            return Ok(());
        }
        let position = Position {
            group: self.options.group.clone(),
            topic: topic.to_owned(),
            partition,
            next_offset: offset + 1,
        };
        let payload = message.payload().unwrap_or_default();
        let event = match self.codec.decode(payload) {
            Ok(event) => event,
            Err(e) => {
                self.dead_letter(message, &e.to_string()).await?;
                self.engine.skip_position(position).await?;
                self.advance(topic, partition, offset + 1);
                return Ok(());
            }
        };
        tracing::debug!(partition, offset, account = %event.account_id, kind = %event.kind, entity = %event.entity_type, key = %event.entity_id, "applying");
        let store = self.engine.store();
        if store.parked_reason(&event.account_id).await?.is_some() {
            // The account waits for an operator; its events are kept in order meanwhile.
            store
                .hold(&event.account_id, payload, None, position)
                .await?;
            self.stats.held.fetch_add(1, Ordering::Relaxed);
            self.advance(topic, partition, offset + 1);
            return Ok(());
        }
        loop {
            match self.engine.apply(&event, Some(position.clone())).await {
                Ok(outcome) => {
                    self.record(&event, outcome);
                    break;
                }
                Err(e) if e.is_transient() => {
                    // Retried in place: the partition waits rather than skip the event.
                    warn!(account = %event.account_id, event_id = %event.event_id, error = %e, "transient failure; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    // The account is parked: this event and its later ones are kept until an
                    // operator fixed the cause and resumed it (`tandem accounts resume`).
                    error!(account = %event.account_id, event_id = %event.event_id, error = %e, "event cannot be applied; dead-lettered and the account parked");
                    let reason = e.to_string();
                    self.dead_letter(message, &reason).await?;
                    store
                        .hold(&event.account_id, payload, Some(&reason), position)
                        .await?;
                    break;
                }
            }
        }
        self.advance(topic, partition, offset + 1);
        Ok(())
    }

    /// Applies the held events of accounts an operator resumed, oldest first; an account whose
    /// event fails again is parked again, one whose held events all applied is unparked.
    async fn resume_parked(&self) -> Result<()> {
        let store = self.engine.store();
        for account in store.resume_requested().await? {
            let mut stuck = false;
            for (seq, bytes) in store.held(&account).await? {
                let event = match self.codec.decode(&bytes) {
                    Ok(event) => event,
                    Err(e) => {
                        warn!(account, seq, error = %e, "held message no longer decodes; dropped");
                        store.release(&account, seq).await?;
                        continue;
                    }
                };
                match self.engine.apply(&event, None).await {
                    Ok(outcome) => {
                        self.record(&event, outcome);
                        store.release(&account, seq).await?;
                    }
                    Err(e) if e.is_transient() => {
                        stuck = true;
                        break;
                    }
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e) => {
                        error!(account, event_id = %event.event_id, error = %e, "resumed account fails again; parked");
                        store.repark(&account, &e.to_string()).await?;
                        stuck = true;
                        break;
                    }
                }
            }
            if !stuck && store.unpark(&account).await? {
                info!(account, "account resumed");
            }
        }
        Ok(())
    }

    fn record(&self, event: &ChangeEvent, outcome: Outcome) {
        match outcome {
            Outcome::Applied => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                let latency = (now_millis() - event.occurred_at).max(0) as u64;
                if let Ok(mut latencies) = self.stats.latencies_ms.lock() {
                    latencies.push((event.occurred_at, latency));
                }
            }
            Outcome::Skipped => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the original bytes to the dead-letter topic with the reason and origin in headers.
    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) -> Result<()> {
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
