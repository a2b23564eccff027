//! What this member knows of its partitions and of the work in flight: per partition the
//! offsets received and not yet durable, and per account the queue its worker applies.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use tandem_event::ChangeEvent;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// What this member knows of one assigned partition.
#[derive(Debug)]
pub(super) struct Partition {
    /// Offsets received and not yet durable.
    pub(super) pending: BTreeSet<i64>,
    /// One past the highest offset received.
    pub(super) next: i64,
    /// The store's position at assignment: every lower offset was applied before.
    pub(super) stored: i64,
    /// Per account: the next offset to apply, as the store said on first sight.
    pub(super) accounts: HashMap<String, i64>,
    /// Whether a message at or below `stored` came in since the assignment (see
    /// [`Inner::rewind`]).
    pub(super) started: bool,
    /// Where the last rewind sought to.
    pub(super) rewound_to: Option<i64>,
}

/// How far back the first rewind of a partition seeks; each further one seeks twice as far.
pub(super) const FIRST_REWIND: i64 = 64;

impl Partition {
    /// Where to seek back to when `offset`, the first message since the assignment, lies
    /// beyond the store's position; None once the partition started at or below it.
    pub(super) fn rewind(&mut self, offset: i64) -> Option<i64> {
        if self.started {
            return None;
        }
        // From offset 0 on there is nothing earlier to read: the log starts later.
        if offset <= self.stored || self.rewound_to == Some(0) {
            self.started = true;
            return None;
        }
        let back = self
            .rewound_to
            .map_or(FIRST_REWIND, |to| (self.stored - to).max(FIRST_REWIND) * 2);
        let target = (self.stored - back).max(0);
        self.rewound_to = Some(target);
        Some(target)
    }

    /// The partition's position once `done` (if given) is durable: the lowest offset still
    /// pending, else one past the highest received.
    pub(super) fn watermark(&self, done: Option<i64>) -> i64 {
        self.pending
            .iter()
            .copied()
            .find(|&o| Some(o) != done)
            .unwrap_or(self.next)
    }
}

/// One event handed to its account's queue.
pub(super) struct Work {
    pub(super) generation: u64,
    /// Cancelled when this member gives up its partitions: no cloud call is sent after that.
    pub(super) fence: CancellationToken,
    pub(super) partition: (String, i32),
    pub(super) message: OwnedMessage,
    pub(super) event: ChangeEvent,
    /// When the message was read from Kafka (epoch millis).
    pub(super) read_ms: i64,
    /// A place among the events in flight; returned when the work is done or abandoned.
    pub(super) _slot: OwnedSemaphorePermit,
}

/// Work in flight. The generation moves on at every rebalance and at shutdown: queued work of
/// an older generation is abandoned unrecorded (Kafka delivers it again from the position), and
/// its fence is cancelled, so work being applied sends no further cloud call.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) generation: u64,
    pub(super) fence: CancellationToken,
    pub(super) partitions: HashMap<(String, i32), Partition>,
    /// Assigned partitions whose first message at or below the store's position has not come
    /// yet: when they were assigned or last sought back, and how many times they were.
    pub(super) unstarted: HashMap<(String, i32), (Instant, u32)>,
    /// Accounts with a worker running, and what waits in their queue.
    pub(super) queues: HashMap<String, VecDeque<Work>>,
    /// The current group membership: moves on when the consumer leaves the group and joins it
    /// again, so the old client's late rebalance callbacks are ignored.
    pub(super) member: u64,
    /// Per legacy account, its target as the store said and when: read again after a few
    /// seconds, so a target set by an operator takes effect without a restart.
    pub(super) targets: HashMap<String, (String, Instant)>,
}

impl Tracker {
    pub(super) fn abandon(&mut self) {
        self.generation += 1;
        self.fence.cancel();
        self.fence = CancellationToken::new();
        self.partitions.clear();
        self.unstarted.clear();
    }
}

/// How long an assigned partition may deliver nothing, while the broker holds events beyond
/// the store's position, before it is sought back; doubled after each seek, up to a minute.
pub(super) const FIRST_PROBE: Duration = Duration::from_secs(2);

pub(super) type Shared = Arc<Mutex<Tracker>>;

pub(super) fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(stored: i64) -> Partition {
        Partition {
            pending: BTreeSet::new(),
            next: stored,
            stored,
            accounts: HashMap::new(),
            started: false,
            rewound_to: None,
        }
    }

    #[test]
    fn a_partition_delivered_from_beyond_its_position_is_sought_back_further_each_time() {
        let mut p = partition(1000);
        assert_eq!(p.rewind(1005), Some(936));
        assert_eq!(p.rewind(1005), Some(872));
        assert_eq!(p.rewind(1005), Some(744));
        // A message at or below the position: the partition has started, and later messages
        // are taken as they come.
        assert_eq!(p.rewind(990), None);
        assert_eq!(p.rewind(2000), None);
    }

    #[test]
    fn a_partition_delivered_from_its_position_or_before_is_taken_as_it_comes() {
        let mut p = partition(1000);
        assert_eq!(p.rewind(1000), None);
        let mut q = partition(1000);
        assert_eq!(q.rewind(12), None);
    }

    #[test]
    fn a_log_that_starts_beyond_the_position_is_read_from_its_start() {
        let mut p = partition(10);
        assert_eq!(p.rewind(50), Some(0));
        // Offset 0 was asked for and 50 came: nothing earlier exists.
        assert_eq!(p.rewind(50), None);
    }
}
