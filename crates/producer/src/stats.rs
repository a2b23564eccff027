//! Counters a caller can watch while the producer runs.

use std::sync::atomic::AtomicU64;

use tandem_event::Latencies;

/// Counters a caller can watch while the producer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub cycles: AtomicU64,
    pub failed_cycles: AtomicU64,
    pub deletes: AtomicU64,
    pub restores: AtomicU64,
    /// Account cycles skipped because the account was quiet: nothing new, nothing due.
    pub quiet: AtomicU64,
    /// Account cycles that were only a version scan, done together with others' (see
    /// `detect/together.rs`).
    pub together: AtomicU64,
    /// Rounds that read nothing: no commit reached the legacy databases or the store since a
    /// round that found every account quiet.
    pub idle_rounds: AtomicU64,
    /// Found by the detector → acknowledged by the broker, per event, in milliseconds: the
    /// producer's side of the consumer's `deliver` stage. A batch's events count when its
    /// last one is acknowledged.
    pub acknowledge: Latencies,
}
