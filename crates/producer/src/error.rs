//! What can go wrong in the producer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {key}: {message}", file.display())]
    Config {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot open {what} {url}: {source}")]
    Connect {
        what: &'static str,
        url: String,
        source: sqlx::Error,
    },
    #[error("query against {url} failed: {source}")]
    Query { url: String, source: sqlx::Error },
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("table {table}, column {column}: {message}")]
    BadValue {
        table: String,
        column: String,
        message: String,
    },
    #[error("no legacy database is configured for account {0:?}")]
    UnknownAccount(String),
    #[error("table {0:?} is not in the sources file")]
    UnknownTable(String),
    #[error("cannot reach broker {brokers}: {source}")]
    Broker {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic:?} does not exist on {brokers} (create it, e.g. with --create-topic)")]
    NoTopic { brokers: String, topic: String },
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Codec(#[from] tandem_event::Error),
    #[error(transparent)]
    Migration(#[from] tandem_migration::Error),
    #[error("account {0}: another producer instance holds the lease")]
    LostLease(String),
    /// A legacy query answered something other than what its setting asks for.
    #[error("{key}: {message}")]
    LegacyAnswer { key: String, message: String },
    /// Something the legacy layout cannot do, with the way around it.
    #[error("{0}")]
    Unsupported(String),
    /// A detection handed in that cannot be published (see `ingest`).
    #[error("detection: {0}")]
    Detection(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The producer was asked to stop before a step that must run to its end was done; the
    /// next start runs the step again from its beginning.
    #[error(
        "account {account}: stopped before the {step} was complete; it starts again next time"
    )]
    Stopped { account: String, step: &'static str },
    /// One of the producer's own tasks died (a panic).
    #[error("the producer's {what} stopped unexpectedly: {message}")]
    Task { what: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
