//! Membership of the consumer group: the client and its rebalance callbacks, and leaving and
//! joining the group again when the watchdog finds this member stranded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{info, warn};

use super::tracker::{lock, Shared};
use super::Inner;
use crate::{Error, Options, Result, Stats};

pub(super) struct Context {
    pub(super) tracker: Shared,
    pub(super) stats: Arc<Stats>,
    /// Which of this consumer's group memberships the client is (see [`Tracker::member`]).
    pub(super) member: u64,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut tracker = lock(&self.tracker);
        if tracker.member != self.member {
            // A membership given up by a rejoin, closing: its partitions were abandoned then,
            // and the current membership's must not be.
            tracing::debug!("rebalance of a retired group membership; ignored");
            return;
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = %partition_list(tpl), "partitions assigned");
                self.stats
                    .assigned_partitions
                    .store(tpl.count() as u64, Ordering::Relaxed);
                crate::metrics::rebalanced("assign", tpl.count());
            }
            Rebalance::Revoke(tpl) => {
                info!(partitions = %partition_list(tpl), "partitions revoked");
                self.stats.assigned_partitions.store(0, Ordering::Relaxed);
                crate::metrics::rebalanced("revoke", 0);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        // Positions are read afresh from the store: another member may have moved them on.
        tracker.abandon();
        if let Rebalance::Assign(tpl) = rebalance {
            let now = Instant::now();
            for e in tpl.elements() {
                let key = (e.topic().to_owned(), e.partition());
                tracker.unstarted.insert(key, (now, 0));
            }
        }
    }
}

/// `[0, 2, 3]`: the partition numbers of an assignment, for the log.
pub(super) fn partition_list(tpl: &TopicPartitionList) -> String {
    let numbers: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| e.partition().to_string())
        .collect();
    format!("[{}]", numbers.join(", "))
}

/// A new consumer group member, not subscribed yet; `id` is its place in [`Tracker::member`].
pub(super) fn member(
    options: &Options,
    tracker: &Shared,
    stats: &Arc<Stats>,
    id: u64,
) -> Result<StreamConsumer<Context>> {
    options
        .kafka_config(&[
            ("group.id", &options.group),
            ("enable.auto.commit", "true"),
            // Kafka-side commits follow the store: an offset is stored only once durable.
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            // Changes should be visible in well under a second; don't let fetches idle long.
            ("fetch.wait.max.ms", "20"),
            // What librdkafka prefetches stays small; the in-flight bound does the rest.
            ("queued.max.messages.kbytes", "16384"),
        ])
        .create_with_context(Context {
            tracker: tracker.clone(),
            stats: stats.clone(),
            member: id,
        })
        .map_err(|source| Error::Broker {
            brokers: options.brokers.clone(),
            source,
        })
}

impl Inner {
    /// The current group membership.
    pub(super) fn kafka(&self) -> Arc<StreamConsumer<Context>> {
        self.consumer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Leaves the consumer group and joins it again as a new member: work in flight is
    /// abandoned unrecorded (as at a rebalance), so workers give their accounts' leases up,
    /// and the new member reads its partitions from the store's positions.
    pub(super) async fn rejoin_group(&self) -> Result<()> {
        let id = {
            let mut tracker = lock(&self.tracker);
            tracker.member += 1;
            tracker.abandon();
            tracker.member
        };
        self.stats.assigned_partitions.store(0, Ordering::Relaxed);
        let fresh = Arc::new(member(&self.options, &self.tracker, &self.stats, id)?);
        let old = std::mem::replace(
            &mut *self
                .consumer
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh.clone(),
        );
        // Closing the old membership sends the broker its leave and blocks until that is
        // done, so it runs off the async threads, once no worker still holds the old client
        // (storing an offset takes it for a moment).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if tokio::task::spawn_blocking(move || drop(old))
            .await
            .is_err()
        {
            warn!("closing the old group membership failed");
        }
        fresh
            .subscribe(&[&self.options.topic])
            .map_err(|source| Error::Broker {
                brokers: self.options.brokers.clone(),
                source,
            })?;
        info!("joined the consumer group again as a new member");
        Ok(())
    }
}
