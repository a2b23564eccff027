//! How the producer runs.

use std::time::Duration;

use tandem_event::Framing;

/// How the producer runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    /// The checkpoint store: `sqlite://…` or `postgres://…`.
    pub store_url: String,
    /// Pause between cycles.
    pub interval: Duration,
    /// Rows read and published per batch.
    pub batch_size: usize,
    /// Accounts detected at the same time.
    pub concurrency: usize,
    pub framing: Framing,
    /// Librdkafka properties, applied last.
    pub kafka: Vec<(String, String)>,
    /// How often the differencing check looks for deleted rows.
    pub delete_check_interval: Duration,
    /// How often `run` looks for accounts in the shared legacy tables (a read of every
    /// table's account column); [`Producer::cycle`](crate::Producer::cycle) always looks.
    pub discover_interval: Duration,
    /// How long an account's lease lasts without renewal; another instance takes the account
    /// over this long after its holder died.
    pub lease_ttl: Duration,
    /// On shutdown, how long the cycle under way may take to finish its batch and stop.
    pub grace: Duration,
    /// The migration store shared with the consumer and the router: each account's state
    /// decides whether it is followed. Without it every account found is followed.
    pub migration_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: "127.0.0.1:9092".into(),
            topic: "tandem.changes".into(),
            store_url: "sqlite://tandem-producer.db".into(),
            interval: Duration::from_millis(200),
            batch_size: 500,
            concurrency: 8,
            framing: Framing::SingleObject,
            kafka: Vec::new(),
            delete_check_interval: Duration::from_secs(30),
            discover_interval: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            migration_url: None,
        }
    }
}
