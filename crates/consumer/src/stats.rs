//! Counters and latency distributions a caller can watch while the consumer runs. Memory is
//! fixed: counters are atomics and the latencies histograms, however many events pass.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tandem_event::{ChangeEvent, Latencies, Percentiles};

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
    /// An applied event's way, stage by stage.
    pub stages: Stages,
    /// Connected to the broker and the store, and assigned partitions or applying.
    pub ready: AtomicBool,
    /// The accounts furthest behind, worst first, as last reported.
    pub worst: Mutex<Vec<AccountLag>>,
    /// Each partition's lag, as last reported.
    pub partitions: Mutex<Vec<PartitionLag>>,
    /// Parked accounts and their held events, as the store last said.
    pub parked: Mutex<Vec<(String, u64)>>,
}

/// How far one account is behind, as this member sees it: the events read and waiting in its
/// queue and those held while it is parked, and the age of the oldest one read (seconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountLag {
    pub account: String,
    pub events: u64,
    pub seconds: f64,
}

/// One partition's store position against its high watermark.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub position: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// The stages of an applied event's way, each a latency distribution in milliseconds. The
/// first two are reckoned from the event's own timestamps, set by the producer's clock, so
/// they are only as right as the two machines' clocks agree.
#[derive(Debug, Default)]
pub struct Stages {
    /// Legacy commit → found by the producer (`detected_at − occurred_at`).
    pub detect: Latencies,
    /// Found by the producer → read from Kafka by the consumer: the publish, the broker's
    /// acknowledgement and the consumer's fetch.
    pub deliver: Latencies,
    /// Read by the consumer → visible in the cloud: the wait in the account's queue, the
    /// store and the cloud calls.
    pub apply: Latencies,
    /// Legacy commit → visible in the cloud.
    pub end_to_end: Latencies,
}

/// [`Stages`] read at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StagePercentiles {
    pub detect_ms: Percentiles,
    pub deliver_ms: Percentiles,
    pub apply_ms: Percentiles,
    pub end_to_end_ms: Percentiles,
}

impl Stages {
    /// `event` was read from Kafka at `read_ms` and became visible in the cloud at
    /// `applied_ms` (epoch millis).
    pub fn record(&self, event: &ChangeEvent, read_ms: i64, applied_ms: i64) {
        let occurred = event.occurred_at;
        self.detect.record(occurred, occurred, event.detected_at);
        self.deliver.record(occurred, event.detected_at, read_ms);
        self.apply.record(occurred, read_ms, applied_ms);
        self.end_to_end.record(occurred, occurred, applied_ms);
        crate::metrics::stages(
            event.detected_at - occurred,
            read_ms - event.detected_at,
            applied_ms - read_ms,
            applied_ms - occurred,
        );
    }

    /// From now on only events that happened at or after `since_ms` (epoch millis) count;
    /// what was recorded so far is forgotten.
    pub fn measure_from(&self, since_ms: i64) {
        for stage in [&self.detect, &self.deliver, &self.apply, &self.end_to_end] {
            stage.measure_from(since_ms);
        }
    }

    pub fn percentiles(&self) -> StagePercentiles {
        StagePercentiles {
            detect_ms: self.detect.percentiles(),
            deliver_ms: self.deliver.percentiles(),
            apply_ms: self.apply.percentiles(),
            end_to_end_ms: self.end_to_end.percentiles(),
        }
    }
}

impl Stats {
    /// Events applied or skipped or dead-lettered: every event the consumer is done with.
    pub fn done(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
            + self.skipped.load(Ordering::Relaxed)
            + self.dead_lettered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_event::Kind;

    #[test]
    fn each_stage_is_reckoned_from_its_own_timestamps() {
        let stages = Stages::default();
        let mut event = ChangeEvent::new("a", Kind::Updated, "contacts", "1", 0, 1);
        event.occurred_at = 1_000;
        event.detected_at = 1_120;
        stages.record(&event, 1_150, 1_400);
        let p = stages.percentiles();
        assert_eq!(p.detect_ms.p50, 120);
        assert_eq!(p.deliver_ms.p50, 30);
        assert_eq!(p.apply_ms.p50, 250);
        assert_eq!(p.end_to_end_ms.p50, 400);
        // Events from before the chosen moment count in no stage.
        stages.measure_from(2_000);
        stages.record(&event, 1_150, 1_400);
        assert_eq!(stages.percentiles(), StagePercentiles::default());
    }
}
