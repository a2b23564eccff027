//! How to run the simulator.

use crate::auth::AuthOptions;
use crate::faults::Faults;
use crate::tls::TlsSource;

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// SQLite URL, e.g. `sqlite:///var/lib/tandem/cloud.db`; created if missing.
    pub database_url: String,
    /// Faults in force at start-up.
    pub faults: Faults,
    /// Serve HTTPS with this certificate; plain HTTP without.
    pub tls: Option<TlsSource>,
    /// Require credentials on `/v1` and the audit log; open without.
    pub auth: Option<AuthOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            database_url: "sqlite::memory:".to_owned(),
            faults: Faults::default(),
            tls: None,
            auth: None,
        }
    }
}
