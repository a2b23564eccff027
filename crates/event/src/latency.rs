//! Latency distributions that Tandem's producer and consumer keep as events go by: fixed
//! memory however many events pass, readable at any moment from another task.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency told apart (one hour); longer ones count as one hour.
pub const MAX_LATENCY_MS: u64 = 3_600_000;

/// One stage's latencies in milliseconds: a histogram of three significant digits from 1 ms to
/// an hour (a fixed array of about 20K counters).
#[derive(Debug)]
pub struct Latencies {
    /// Only events that happened at or after this moment (epoch millis) count.
    since_ms: AtomicI64,
    histogram: Mutex<Histogram<u64>>,
}

/// Percentiles of a latency, in milliseconds, over `count` samples (all 0 without samples).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            since_ms: AtomicI64::new(i64::MIN),
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3)
                    .expect("the bounds are constants, and valid"),
            ),
        }
    }
}

impl Latencies {
    fn histogram(&self) -> MutexGuard<'_, Histogram<u64>> {
        self.histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Something that happened at `occurred_ms` went from `from_ms` to `to_ms` (epoch millis)
    /// in this stage. It counts only when it happened at or after the moment set by
    /// [`Latencies::measure_from`]. Clocks of two machines may disagree: a negative latency
    /// counts as 1 ms.
    pub fn record(&self, occurred_ms: i64, from_ms: i64, to_ms: i64) {
        if occurred_ms < self.since_ms.load(Ordering::Relaxed) {
            return;
        }
        let latency = u64::try_from(to_ms - from_ms)
            .unwrap_or(0)
            .clamp(1, MAX_LATENCY_MS);
        self.histogram().saturating_record(latency);
    }

    /// From now on only events that happened at or after `since_ms` count; what was recorded
    /// so far is forgotten.
    pub fn measure_from(&self, since_ms: i64) {
        self.since_ms.store(since_ms, Ordering::Relaxed);
        self.histogram().reset();
    }

    pub fn count(&self) -> u64 {
        self.histogram().len()
    }

    /// The latency at quantile `q` (0.5 for the median); 0 without samples.
    pub fn at(&self, q: f64) -> u64 {
        let histogram = self.histogram();
        if histogram.is_empty() {
            0
        } else {
            histogram.value_at_quantile(q)
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        let histogram = self.histogram();
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
        }
    }

    /// The memory the distribution takes, in counters: it does not grow with events.
    pub fn counters(&self) -> usize {
        self.histogram().distinct_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_latencies_take_no_more_memory_than_one() {
        let latencies = Latencies::default();
        latencies.record(0, 0, 250);
        let counters = latencies.counters();
        for i in 0..1_000_000i64 {
            latencies.record(i, i, i + 1 + i % 1000);
        }
        assert_eq!(latencies.count(), 1_000_001);
        assert_eq!(latencies.counters(), counters);
        // Uniform over 1..=1000 ms: the median is about 500, the 99th percentile about 990.
        let p = latencies.percentiles();
        assert!((495..=505).contains(&p.p50), "p50 {}", p.p50);
        assert!((945..=955).contains(&p.p95), "p95 {}", p.p95);
        assert!((985..=995).contains(&p.p99), "p99 {}", p.p99);
        assert_eq!(p.max, 1000);
    }

    #[test]
    fn only_events_from_the_chosen_moment_on_count() {
        let latencies = Latencies::default();
        latencies.record(10, 10, 5_000);
        latencies.measure_from(1_000);
        latencies.record(999, 999, 60_000);
        latencies.record(1_000, 1_000, 1_200);
        assert_eq!(latencies.count(), 1);
        assert!((199..=201).contains(&latencies.at(0.99)));
        // Longer than the histogram tells apart: counted as its largest value; a clock that
        // went back counts as 1 ms.
        latencies.record(2_000, 2_000, 2_000 + 10 * MAX_LATENCY_MS as i64);
        latencies.record(2_000, 2_000, 1_000);
        assert_eq!(latencies.count(), 3);
        assert!(latencies.percentiles().max >= MAX_LATENCY_MS);
        assert_eq!(Latencies::default().percentiles(), Percentiles::default());
    }
}
