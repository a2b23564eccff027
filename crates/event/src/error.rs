//! What can go wrong turning events into bytes and back.

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
