//! The migration's lifecycle: the state of each account, kept in one store that the producer,
//! the consumer, the router and the operator's commands share.
//!
//! - [`State`]: pending → syncing → live → cut-over → done, besides paused and rolled-back, and
//!   the route each state means;
//! - [`Policy`]: how accounts are enrolled, and what happens to accounts that appear later;
//! - [`Store`]: accounts and their history, slices, the census of accounts at the start, the
//!   producer's drain for a cutover, the last verify of each account;
//! - [`router`]: `GET /v1/route/{account}` answered from memory, and migrate-now.
//!
//! ```no_run
//! # async fn run() -> tandem_migration::Result<()> {
//! use tandem_migration::{State, Store};
//! let store = Store::open("sqlite://tandem-migration.db").await?;
//! store.transition("acme", &[State::Pending], State::Syncing, "ops", "slice eu-small").await?;
//! # Ok(()) }
//! ```

mod error;
mod policy;
pub mod router;
mod state;
mod store;

pub use error::{Error, Result};
pub use policy::{Enroll, NewAccounts, Policy};
pub use state::{Route, State, UnknownState};
pub use store::{Account, Drift, HistoryEntry, Settings, Slice, Store};
