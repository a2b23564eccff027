//! Counters a caller can watch while the producer runs.

use std::sync::atomic::AtomicU64;

/// Counters a caller can watch while the producer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub cycles: AtomicU64,
    pub failed_cycles: AtomicU64,
    pub deletes: AtomicU64,
    pub restores: AtomicU64,
}
