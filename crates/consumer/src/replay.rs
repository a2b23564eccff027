//! Replay: an account's events read again from the topic and applied into a target, through
//! the same engine, mapping, idempotency and ordering as the live consumer.
//!
//! Only the account's partition is read, and messages of other accounts are dropped by their
//! key before anything is decoded. The replay records its position in the store under a group
//! of its own (`replay:<target>`), so a replay interrupted at any point and started again
//! carries on; what it had applied is recognised by the mirror and not sent again.

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use crate::schemas::Decoder;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::apply::{Engine, Outcome};
use crate::store::{Grant, LeaseId, Position};
use crate::{Error, Options, Result};

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The first event the topic still holds.
    Earliest,
    /// The beginning of the account's latest snapshot that is complete in the log.
    Snapshot,
    /// The first event written at or after this moment.
    Time(SystemTime),
}

/// What to replay, from where, into what.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The Kafka connection (brokers, topic, `-X` properties); its group is not used.
    pub kafka: Options,
    /// The legacy account whose events are replayed.
    pub account: String,
    /// The cloud account they are applied into.
    pub into: String,
    pub from: ReplayFrom,
    /// Start over: forget what an earlier run of this replay applied.
    pub restart: bool,
    /// The partition to read, when the account's cannot be found or computed (a producer
    /// with another partitioner than Tandem's).
    pub partition: Option<i32>,
    /// Rebuild the live target in place, under this live consumer group: the group's workers
    /// stop applying the target meanwhile (the replay holds its lease), what the store kept
    /// for it is forgotten, its cloud documents are found again by their external reference
    /// (creates in `lookup` mode) so their ids do not change, and documents the rebuilt state
    /// no longer has are deleted.
    pub in_place: Option<String>,
}

/// Counts of a replay so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Messages of the partition read, every account's.
    pub read: u64,
    /// The account's events handled (applied or found applied already).
    pub events: u64,
    /// Of those, the ones that changed something in the cloud or the store.
    pub applied: u64,
    /// The next offset to read, and where the partition ended when the replay started.
    pub offset: i64,
    pub start: i64,
    pub end: i64,
}

/// How a replay went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayReport {
    pub progress: ReplayProgress,
    pub partition: i32,
    /// Of the partition's messages between the start and the end, the share read (the rest
    /// was before the start).
    pub share_read: f64,
    pub seconds: f64,
}

/// The group a replay into `target` records its positions under.
pub fn replay_group(target: &str) -> String {
    format!("replay:{target}")
}

/// The partition librdkafka's default partitioner gives a key: CRC-32 of the key modulo the
/// partition count, as the producer sends it.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let partitions = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(crc32fast::hash(key.as_bytes()) % partitions).unwrap_or(0)
}

/// Replays one account into a target.
#[derive(Debug)]
pub struct Replay {
    engine: Engine,
    options: ReplayOptions,
    decoder: Decoder,
}

impl Replay {
    pub fn new(engine: Engine, options: ReplayOptions) -> Result<Self> {
        // Starting over, or rebuilding in place, the target's cloud documents may exist
        // already, some deleted since: each is found by its external reference, never by an
        // idempotency key that would answer with a document deleted since.
        let engine = if options.restart || options.in_place.is_some() {
            engine.with_create_mode(crate::CreateMode::Lookup)
        } else {
            engine
        };
        Ok(Replay {
            engine,
            decoder: Decoder::new(&options.kafka.schemas)?,
            options,
        })
    }

    /// Rebuilds the live target in place (see [`ReplayOptions::in_place`]): returns the report
    /// and how many cloud documents the rebuilt state no longer had and were deleted.
    pub async fn run_in_place(
        &self,
        stop: &CancellationToken,
        progress: impl FnMut(&ReplayProgress),
    ) -> Result<(ReplayReport, u64)> {
        let o = &self.options;
        let group = o.in_place.clone().ok_or_else(|| Error::Replay {
            account: o.account.clone(),
            message: "an in-place rebuild needs the live consumer group".into(),
        })?;
        let store = self.engine.store();
        let lease = LeaseId {
            group,
            owner: format!("{}-{}", replay_group(&o.into), std::process::id()),
        };
        let ttl = o.kafka.lease_ttl;
        // The live workers of the target finish what they are applying and give the lease up.
        while store.try_lease(&lease, &o.into, ttl).await? == Grant::Elsewhere {
            tokio::select! {
                _ = stop.cancelled() => return Err(Error::Replay {
                    account: o.account.clone(),
                    message: "stopped while waiting for the live consumer to give the account up".into(),
                }),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        let renewing = CancellationToken::new();
        let renewal = tokio::spawn({
            let (store, lease, target, renewing) = (
                store.clone(),
                lease.clone(),
                o.into.clone(),
                renewing.clone(),
            );
            async move {
                loop {
                    tokio::select! {
                        _ = renewing.cancelled() => return,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    if let Err(e) = store.try_lease(&lease, &target, ttl).await {
                        tracing::warn!(error = %e, "cannot renew the rebuild's lease");
                    }
                }
            }
        });
        let outcome = async {
            store
                .reset_target(&o.into, &[&replay_group(&o.into)])
                .await?;
            let report = self.run(stop, progress).await?;
            let swept = if stop.is_cancelled() {
                0
            } else {
                self.sweep().await?
            };
            Ok((report, swept))
        }
        .await;
        renewing.cancel();
        let _ = renewal.await;
        if let Err(e) = store.release_lease(&lease, &o.into).await {
            tracing::warn!(error = %e, "cannot give the rebuild's lease up; it expires");
        }
        outcome
    }

    /// Deletes the target's cloud documents that carry Tandem's external reference but that
    /// the rebuilt ID map does not have; documents without the reference are never touched.
    async fn sweep(&self) -> Result<u64> {
        let (mapping, cloud, store) = (
            self.engine.mapping(),
            self.engine.client(),
            self.engine.store(),
        );
        let target = &self.options.into;
        let mut deleted = 0;
        for resource in &mapping.resources {
            let keep = store.mapped_keys(target, &resource.name).await?;
            let api = |source| Error::Api {
                resource: resource.name.clone(),
                root_key: String::new(),
                source,
            };
            for doc in cloud
                .list(target, &resource.collection)
                .await
                .map_err(api)?
            {
                let reference = doc
                    .get(&mapping.external_ref_field)
                    .and_then(serde_json::Value::as_str);
                let id = doc.get("id").and_then(serde_json::Value::as_str);
                if let (Some(reference), Some(id)) = (reference, id) {
                    if !keep.contains(reference) {
                        cloud
                            .delete(target, &resource.collection, id)
                            .await
                            .map_err(api)?;
                        deleted += 1;
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Reads the account's partition from the start `from` gives (or from where an earlier
    /// run stopped) up to where it ended when this run began, applying the account's events
    /// into the target; `progress` hears about it every thousand messages and at the end.
    pub async fn run(
        &self,
        stop: &CancellationToken,
        mut progress: impl FnMut(&ReplayProgress),
    ) -> Result<ReplayReport> {
        let started = Instant::now();
        let o = &self.options;
        let store = self.engine.store();
        let group = replay_group(&o.into);
        let topic = o.kafka.topic.clone();
        let broker_error = |source| Error::Broker {
            brokers: o.kafka.brokers.clone(),
            source,
        };
        let client: Arc<StreamConsumer<Quiet>> = Arc::new(
            o.kafka
                .kafka_config(&[
                    ("group.id", &group),
                    ("enable.auto.commit", "false"),
                    ("enable.partition.eof", "true"),
                ])
                .create_with_context(Quiet)
                .map_err(broker_error)?,
        );
        let partition = match o.partition {
            Some(p) => p,
            None => match store.account_partition(&o.account, &topic).await? {
                Some(p) => p,
                None => {
                    let name = topic.clone();
                    let metadata = blocking(&client, move |c| {
                        c.fetch_metadata(Some(&name), Duration::from_secs(10))
                    })
                    .await?
                    .map_err(broker_error)?;
                    let count = metadata
                        .topics()
                        .first()
                        .map_or(0, |t| t.partitions().len());
                    partition_of(&o.account, i32::try_from(count).unwrap_or(1))
                }
            },
        };
        let name = topic.clone();
        let (low, high) = blocking(&client, move |c| {
            c.fetch_watermarks(&name, partition, Duration::from_secs(10))
        })
        .await?
        .map_err(broker_error)?;
        if o.restart {
            store.reset_target(&o.into, &[&group]).await?;
        }
        // A run of this replay before carries on from where it got to.
        let resume = store
            .account_position(&group, &topic, partition, &o.into)
            .await?
            .unwrap_or(0);
        let start = match o.from {
            // A log that no longer starts at its first offset may have lost the account's
            // first events: a rebuild from it would be partial, and silently so.
            ReplayFrom::Earliest if low > 0 && resume == 0 => {
                return Err(Error::Replay {
                    account: o.account.clone(),
                    message: format!(
                        "the topic no longer holds its first events (partition {partition} now \
                         starts at offset {low}); replay --from snapshot, or publish a new \
                         snapshot with `tandem snapshot --account {}` first",
                        o.account
                    ),
                });
            }
            ReplayFrom::Earliest => low,
            ReplayFrom::Time(at) => {
                let millis = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, partition, Offset::Offset(millis))
                    .map_err(broker_error)?;
                let found = blocking(&client, move |c| {
                    c.offsets_for_times(tpl, Duration::from_secs(10))
                })
                .await?
                .map_err(broker_error)?;
                match found.elements().first().map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => offset.max(low),
                    _ => high,
                }
            }
            ReplayFrom::Snapshot => {
                let missing = |why: String| Error::Replay {
                    account: o.account.clone(),
                    message: format!(
                        "{why}; publish a new snapshot with `tandem snapshot --account {}`, \
                         then replay --from snapshot",
                        o.account
                    ),
                };
                let mark = store
                    .latest_snapshot(&o.account, &topic)
                    .await?
                    .ok_or_else(|| {
                        missing("no complete snapshot of it was read from the topic".into())
                    })?;
                if mark.begin < low {
                    return Err(missing(format!(
                        "its latest complete snapshot {} began at offset {}, but the topic now \
                         starts at {low}: retention has deleted it",
                        mark.snapshot_id, mark.begin
                    )));
                }
                mark.begin
            }
        };
        let from = start.max(resume);
        let mut counts = ReplayProgress {
            offset: from,
            start,
            end: high,
            ..ReplayProgress::default()
        };
        self.read(
            &client,
            (&topic, partition),
            from,
            stop,
            &mut counts,
            &mut progress,
        )
        .await?;
        progress(&counts);
        let span = (high - start).max(1) as f64;
        Ok(ReplayReport {
            progress: counts,
            partition,
            share_read: (counts.read as f64 / span).min(1.0),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Reads `partition` from `from` to its end, applying the account's events.
    #[allow(clippy::too_many_arguments)]
    async fn read(
        &self,
        client: &StreamConsumer<Quiet>,
        (topic, partition): (&str, i32),
        from: i64,
        stop: &CancellationToken,
        counts: &mut ReplayProgress,
        progress: &mut impl FnMut(&ReplayProgress),
    ) -> Result<()> {
        let o = &self.options;
        let broker_error = |source| Error::Broker {
            brokers: o.kafka.brokers.clone(),
            source,
        };
        let key = o.account.as_bytes();
        let group = replay_group(&o.into);
        // Some brokers (Tansu 0.6) deliver a partition only from the record batch that starts
        // at or after the offset asked for: ask from earlier, further each time the first
        // message comes from beyond `from`, and skip what is below it.
        let mut back = 0i64;
        loop {
            let seek_to = (from - back).max(0);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(seek_to))
                .map_err(broker_error)?;
            client.assign(&tpl).map_err(broker_error)?;
            let mut started = false;
            loop {
                // The end: the partition's end reached, or nothing more for a few seconds
                // (a broker whose end offset is the start of its last batch).
                let next = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    next = tokio::time::timeout(Duration::from_secs(3), client.recv()) => next,
                };
                let message = match next {
                    Err(_) | Ok(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                        if started || seek_to == 0 {
                            return Ok(());
                        }
                        break;
                    }
                    Ok(Err(e)) => return Err(broker_error(e)),
                    Ok(Ok(message)) => message,
                };
                let offset = message.offset();
                if !started {
                    if offset > from && seek_to > 0 {
                        break;
                    }
                    started = true;
                }
                if offset < from {
                    continue;
                }
                counts.read += 1;
                counts.offset = offset + 1;
                if counts.read.is_multiple_of(1000) {
                    progress(counts);
                }
                if message.key() != Some(key) {
                    continue;
                }
                let mut event = match self
                    .decoder
                    .decode(message.payload().unwrap_or_default())
                    .await
                {
                    Ok(event) => event,
                    // The live consumer dead-lettered it already; a rebuild does not need it.
                    Err(_) => continue,
                };
                event.account_id = o.into.clone();
                let position = Position {
                    group: group.clone(),
                    topic: topic.to_owned(),
                    partition,
                    next_offset: offset + 1,
                    watermark: offset + 1,
                };
                counts.events += 1;
                if self.engine.apply(&event, Some(position)).await? == Outcome::Applied {
                    counts.applied += 1;
                }
            }
            back = (back * 2).max(64);
        }
    }
}

/// The replay's client context: reaching the end of the partition is how a replay knows it is
/// done, not an error to log.
#[derive(Debug, Clone, Copy)]
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(error, rdkafka::error::KafkaError::PartitionEOF(_)) {
            tracing::warn!(%error, reason, "kafka client error during a replay");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Runs one of the Kafka client's blocking lookups off the async threads.
async fn blocking<T: Send + 'static>(
    client: &Arc<StreamConsumer<Quiet>>,
    f: impl FnOnce(&StreamConsumer<Quiet>) -> T + Send + 'static,
) -> Result<T> {
    let client = client.clone();
    tokio::task::spawn_blocking(move || f(&client))
        .await
        .map_err(|e| Error::Task {
            what: "replay's broker lookup",
            message: e.to_string(),
        })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_land_where_the_default_partitioner_puts_them() {
        // CRC-32 (IEEE) of the key, as librdkafka's consistent partitioners compute it.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_of("acme", 1), 0);
        let p = partition_of("acme", 12);
        assert!((0..12).contains(&p));
        assert_eq!(
            partition_of("acme", 12),
            p,
            "the same key, the same partition"
        );
    }
}
