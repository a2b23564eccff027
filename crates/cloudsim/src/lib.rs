//! `tandem-cloudsim`: a stand-in for the cloud platform that Tandem keeps in step with the
//! legacy database.
//!
//! It is an HTTP server holding per-account collections of JSON documents in SQLite, with an
//! audit log of every applied mutation and run-time fault injection (latency, 503s, 429s,
//! rejected accounts, connections that break after a commit), so the consumer's retry and
//! idempotency logic can be exercised against something real.
//!
//! ```no_run
//! use tandem_cloudsim::{CloudSim, Options};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> tandem_cloudsim::Result<()> {
//! let sim = CloudSim::bind(([127, 0, 0, 1], 0).into(), Options::default()).await?;
//! let base_url = sim.base_url(); // hand this to the consumer
//! let shutdown = CancellationToken::new();
//! sim.serve(shutdown.child_token()).await
//! # }
//! ```
//!
//! HTTP API: `POST|GET /v1/accounts/{account}/{collection}`,
//! `GET|PUT|DELETE /v1/accounts/{account}/{collection}/{id}`, `GET /admin/audit`,
//! `GET|PUT /admin/faults`, `GET /health`; with credentials required, `POST /oauth/token`,
//! `GET /admin/tokens` and `POST /admin/tokens/revoke`. HTTPS with a certificate it generates
//! or one from files. The Confluent Schema Registry's `POST /subjects/{subject}/versions`,
//! `GET /schemas/ids/{id}` and `GET /subjects`.

mod admin;
mod api;
mod api_error;
mod auth;
mod error;
mod faults;
mod options;
mod registry;
mod server;
mod state;
mod store;
pub mod tls;

pub use auth::AuthOptions;
pub use error::{Error, Result};
pub use faults::Faults;
pub use options::Options;
pub use server::CloudSim;
pub use store::request_hash::request_hash;
