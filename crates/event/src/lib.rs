//! Tandem's event contract: the [`ChangeEvent`] every producer writes and every consumer reads,
//! and the [`Codec`] that turns it into Kafka message bytes and back.
//!
//! ```
//! use tandem_event::{ChangeEvent, Codec, Kind};
//!
//! let event = ChangeEvent::new("acme", Kind::Created, "contacts", "42", 0, 7);
//! let codec = Codec::default(); // Avro single-object encoding
//! let bytes = codec.encode(&event)?;
//! assert_eq!(codec.decode(&bytes)?, event);
//! # Ok::<(), tandem_event::Error>(())
//! ```
//!
//! The Avro schemas live in the repository's `schemas/` directory; every schema version ever
//! released stays there and stays readable, because replays read old events.

mod avro;
mod codec;
mod error;
mod event;
mod latency;

pub use codec::{Codec, Framing, SCHEMA_FILES};
pub use error::{Error, Result};
pub use event::{
    canonical_key, check_account, event_id, now_millis, ChangeEvent, Kind, Row, Value,
    MAX_ACCOUNT_BYTES,
};
pub use latency::{Latencies, Percentiles, MAX_LATENCY_MS};
