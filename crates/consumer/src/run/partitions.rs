//! Positions per partition: where the store says a partition and each account in it continue,
//! reading a partition again from earlier when the broker delivers it from beyond that, and
//! moving the position (and Kafka's stored offset) once work is durable.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::tracker::{lock, Partition, FIRST_PROBE};
use super::Inner;
use crate::store::Position;
use crate::Result;
impl Inner {
    /// The store's position of a partition, loaded on first sight after an assignment.
    pub(super) async fn partition_next(&self, key: &(String, i32)) -> Result<(u64, i64)> {
        {
            let tracker = lock(&self.tracker);
            if let Some(p) = tracker.partitions.get(key) {
                return Ok((tracker.generation, p.stored));
            }
        }
        let stored = self
            .engine
            .store()
            .position(&self.options.group, &key.0, key.1)
            .await?
            .unwrap_or(0);
        let mut tracker = lock(&self.tracker);
        let generation = tracker.generation;
        let p = tracker
            .partitions
            .entry(key.clone())
            .or_insert_with(|| Partition {
                pending: BTreeSet::new(),
                next: stored,
                stored,
                accounts: HashMap::new(),
                started: false,
                rewound_to: None,
            });
        Ok((generation, p.stored))
    }

    /// Whether `offset`, just received, must be dropped because the partition is read again
    /// from earlier. A partition must be delivered from at or below the store's position, or
    /// the events in between are missed: the committed Kafka offset can lie inside a record
    /// batch, and some brokers (Tansu 0.6) then fetch from the next batch on, skipping the
    /// rest of that one. When the first message since the assignment lies beyond the store's
    /// position, the partition is sought back (further each time) until one does not.
    pub(super) fn rewind(&self, key: &(String, i32), offset: i64, generation: u64) -> bool {
        let Some((target, stored)) = self.rewind_target(key, Some(offset), generation) else {
            return false;
        };
        warn!(
            partition = key.1,
            offset,
            position = stored,
            target,
            "the broker delivered the partition from beyond the store's position; reading it again from earlier"
        );
        self.seek_back(key, target);
        true
    }

    /// Where to seek a partition back to, and the store's position, given its first message
    /// since the assignment (`None`: nothing came); None once it started where it must.
    pub(super) fn rewind_target(
        &self,
        key: &(String, i32),
        offset: Option<i64>,
        generation: u64,
    ) -> Option<(i64, i64)> {
        let mut tracker = lock(&self.tracker);
        if tracker.generation != generation {
            return None;
        }
        let p = tracker.partitions.get_mut(key)?;
        let stored = p.stored;
        match p.rewind(offset.unwrap_or(stored + 1)) {
            Some(target) => Some((target, stored)),
            None => {
                tracker.unstarted.remove(key);
                None
            }
        }
    }

    /// Seeks a partition back to `target` and restarts its probe clock.
    pub(super) fn seek_back(&self, key: &(String, i32), target: i64) {
        let sought = self.kafka().seek(
            &key.0,
            key.1,
            Offset::Offset(target),
            Duration::from_secs(10),
        );
        let mut tracker = lock(&self.tracker);
        if let Err(e) = sought {
            // The partition's next message, or its next probe, tries again.
            warn!(partition = key.1, error = %e, "cannot seek the partition back");
            if let Some(p) = tracker.partitions.get_mut(key) {
                p.rewound_to = None;
            }
        }
        if let Some((since, seeks)) = tracker.unstarted.get_mut(key) {
            *since = Instant::now();
            *seeks += 1;
        }
    }

    /// Seeks back the assigned partitions that delivered nothing for a while: the record
    /// batch the store's position lies in may be the partition's last, and then no later
    /// message shows the gap (see [`Inner::rewind`]). The broker's end offset cannot tell
    /// (Tansu 0.6 reports the start of the last batch), so a quiet partition is read again
    /// from a little earlier: what is below the position is skipped, and the first message at
    /// or below it shows the partition is read from where it must be.
    pub(super) async fn probe(&self) -> Result<()> {
        let due: Vec<((String, i32), u64)> = {
            let tracker = lock(&self.tracker);
            tracker
                .unstarted
                .iter()
                .filter(|(_, (since, seeks))| {
                    since.elapsed() >= FIRST_PROBE * 2u32.saturating_pow((*seeks).min(5))
                })
                .map(|(key, _)| (key.clone(), tracker.generation))
                .collect()
        };
        for (key, generation) in due {
            self.partition_next(&key).await?;
            let Some((target, stored)) = self.rewind_target(&key, None, generation) else {
                continue;
            };
            tracing::debug!(
                partition = key.1,
                position = stored,
                target,
                "nothing of the partition came; reading it again from a little earlier"
            );
            self.seek_back(&key, target);
        }
        Ok(())
    }

    /// Where `account` continues in a partition, per the store (read once per assignment).
    pub(super) async fn account_next(&self, key: &(String, i32), account: &str) -> Result<i64> {
        if let Some(next) = lock(&self.tracker)
            .partitions
            .get(key)
            .and_then(|p| p.accounts.get(account).copied())
        {
            return Ok(next);
        }
        let next = self
            .engine
            .store()
            .account_position(&self.options.group, &key.0, key.1, account)
            .await?
            .unwrap_or(0);
        if let Some(p) = lock(&self.tracker).partitions.get_mut(key) {
            p.accounts.insert(account.to_owned(), next);
        }
        Ok(next)
    }

    pub(super) fn begin(&self, key: &(String, i32), offset: i64, generation: u64) {
        let mut tracker = lock(&self.tracker);
        if tracker.generation == generation {
            if let Some(p) = tracker.partitions.get_mut(key) {
                p.pending.insert(offset);
                p.next = p.next.max(offset + 1);
            }
        }
    }

    /// The partition's position once `offset` is durable; 0 (record nothing for the
    /// partition) when this member no longer owns it.
    pub(super) fn watermark(&self, key: &(String, i32), offset: i64, generation: u64) -> i64 {
        let tracker = lock(&self.tracker);
        match tracker.partitions.get(key) {
            Some(p) if tracker.generation == generation => p.watermark(Some(offset)),
            _ => 0,
        }
    }

    pub(super) fn position(&self, key: &(String, i32), offset: i64, watermark: i64) -> Position {
        Position {
            group: self.options.group.clone(),
            topic: key.0.clone(),
            partition: key.1,
            next_offset: offset + 1,
            watermark,
        }
    }

    /// `offset` is durable: it leaves the pending set and Kafka's stored offset follows the
    /// partition's new position.
    pub(super) fn finish(&self, key: &(String, i32), offset: i64, generation: u64) {
        let watermark = {
            let mut tracker = lock(&self.tracker);
            if tracker.generation != generation {
                return;
            }
            let Some(p) = tracker.partitions.get_mut(key) else {
                return;
            };
            p.pending.remove(&offset);
            p.watermark(None)
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&key.0, key.1, Offset::Offset(watermark))
            .is_ok()
        {
            if let Err(e) = self.kafka().store_offsets(&tpl) {
                warn!(error = %e, topic = key.0, partition = key.1, "cannot store the Kafka offset");
            }
        }
    }
}
