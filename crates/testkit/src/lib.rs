//! Shared helpers for Tandem's tests and benchmarks: the real broker and PostgreSQL the test
//! command started, unique names so tests run in parallel, cloudsim on a loopback port, the
//! consumer and the `tandem` binary started against them, the demo's legacy data with a
//! workload, and waiting until the cloud matches it.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let brokers = tandem_testkit::brokers()?;
//! let topic = tandem_testkit::topic(&brokers, 4).await?;
//! let db = tandem_testkit::PgDatabase::create().await?;
//! let cloud = tandem_testkit::Cloud::start(Default::default()).await?;
//! let consumer = tandem_testkit::TestConsumer::start(
//!     tandem_testkit::ConsumerSetup::new(&brokers, &topic, &db.url, &cloud.url),
//! )
//! .await?;
//! // ... publish, then wait for the outcome ...
//! consumer.until("one event applied", |s| s.applied.load(std::sync::atomic::Ordering::Relaxed) == 1).await?;
//! consumer.stop().await?;
//! cloud.stop().await?;
//! db.drop().await
//! # }
//! ```

mod browser;
mod consumer;
mod events;
mod infra;
mod legacy;
pub mod notes;
mod process;
mod reader;
mod tls;

pub use browser::Browser;
pub use consumer::{drained, ConsumerSetup, TestConsumer};
pub use events::contact;
pub use infra::{brokers, postgres_url, topic, unique, Cloud, PgDatabase, TlsPostgres};
pub use legacy::{drift_report, seeded_legacy, until_clean, verify_all, workload, Seeded};
pub use process::{log_to, sigterm, ReplayParts, Running, Tandem};
pub use reader::{read_events, read_until_quiet, Reader};
pub use tls::{SaslBroker, TlsBroker};
