//! How to run the simulator.

use crate::faults::Faults;

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// SQLite URL, e.g. `sqlite:///var/lib/tandem/cloud.db`; created if missing.
    pub database_url: String,
    /// Faults in force at start-up.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            database_url: "sqlite::memory:".to_owned(),
            faults: Faults::default(),
        }
    }
}
