//! Counters and the latency distribution a caller can watch while the consumer runs. Memory is
//! fixed: counters are atomics and the latencies a histogram, however many events pass.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// The largest latency told apart (one hour); longer ones count as one hour.
const MAX_LATENCY_MS: u64 = 3_600_000;

#[derive(Debug)]
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
    /// Only events that happened at or after this moment (epoch millis) count in the latency.
    latency_since_ms: AtomicI64,
    /// Legacy commit → visible in the cloud, per applied event, in milliseconds.
    latency_ms: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            applied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            already_applied: AtomicU64::new(0),
            held: AtomicU64::new(0),
            assigned_partitions: AtomicU64::new(0),
            latency_since_ms: AtomicI64::new(i64::MIN),
            latency_ms: Mutex::new(new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Three significant digits from 1 ms to an hour: a fixed array of about 20K counters.
    Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3).expect("the bounds are constants, and valid")
}

impl Stats {
    /// An event that happened at `occurred_ms` (epoch millis) became visible in the cloud at
    /// `now_ms`.
    pub fn record_latency(&self, occurred_ms: i64, now_ms: i64) {
        if occurred_ms < self.latency_since_ms.load(Ordering::Relaxed) {
            return;
        }
        let latency = u64::try_from(now_ms - occurred_ms)
            .unwrap_or(0)
            .clamp(1, MAX_LATENCY_MS);
        if let Ok(mut histogram) = self.latency_ms.lock() {
            histogram.saturating_record(latency);
        }
    }

    /// From now on, only events that happened at or after `since_ms` count in the latency; what
    /// was recorded so far is forgotten.
    pub fn measure_latency_from(&self, since_ms: i64) {
        self.latency_since_ms.store(since_ms, Ordering::Relaxed);
        if let Ok(mut histogram) = self.latency_ms.lock() {
            histogram.reset();
        }
    }

    /// How many latencies were recorded.
    pub fn latency_count(&self) -> u64 {
        self.latency_ms.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The latency at quantile `q` (0.5 for the median), in milliseconds; 0 with none recorded.
    pub fn latency_at(&self, q: f64) -> u64 {
        self.latency_ms
            .lock()
            .map(|h| {
                if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(q)
                }
            })
            .unwrap_or(0)
    }

    /// The memory the latency distribution takes, in counters: it does not grow with events.
    pub fn latency_counters(&self) -> usize {
        self.latency_ms
            .lock()
            .map(|h| h.distinct_values())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_latencies_take_no_more_memory_than_one() {
        let stats = Stats::default();
        stats.record_latency(0, 250);
        let counters = stats.latency_counters();
        for i in 0..1_000_000i64 {
            stats.record_latency(i, i + 1 + i % 1000);
        }
        assert_eq!(stats.latency_count(), 1_000_001);
        assert_eq!(stats.latency_counters(), counters);
        // Uniform over 1..=1000 ms: the median is about 500, the 99th percentile about 990.
        let (p50, p99) = (stats.latency_at(0.5), stats.latency_at(0.99));
        assert!((495..=505).contains(&p50), "p50 {p50}");
        assert!((985..=995).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn only_events_from_the_chosen_moment_on_count() {
        let stats = Stats::default();
        stats.record_latency(10, 5_000);
        stats.measure_latency_from(1_000);
        stats.record_latency(999, 60_000);
        stats.record_latency(1_000, 1_200);
        assert_eq!(stats.latency_count(), 1);
        assert!((199..=201).contains(&stats.latency_at(0.99)));
        // Longer than the histogram tells apart: counted as its largest value.
        stats.record_latency(2_000, 2_000 + 10 * MAX_LATENCY_MS as i64);
        assert_eq!(stats.latency_count(), 2);
    }
}
