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
mod event;

pub use codec::{Codec, Framing, SCHEMA_FILES};
pub use event::{canonical_key, event_id, ChangeEvent, Kind, Row, Value};

/// What can go wrong turning events into bytes and back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the built-in Avro schema {file} does not parse: {source}")]
    Schema {
        file: &'static str,
        source: Box<apache_avro::Error>,
    },
    #[error("message is too short to carry an Avro header ({len} bytes)")]
    Truncated { len: usize },
    #[error("message does not start with the expected header (found {found:02x?})")]
    BadMagic { found: Vec<u8> },
    #[error("message was written with an unknown schema (fingerprint {fingerprint:016x})")]
    UnknownFingerprint { fingerprint: u64 },
    #[error("message was written with an unknown schema id {id}")]
    UnknownSchemaId { id: u32 },
    #[error("message body is not a valid ChangeEvent: {0}")]
    Body(String),
    #[error("cannot encode event: {0}")]
    Encode(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
