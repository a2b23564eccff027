//! Message framing: Avro single-object encoding (default) or the Confluent wire format.

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{avro, ChangeEvent, Error, Result};

/// Every released version of the `ChangeEvent` schema, oldest first; the last is the one written.
/// A schema file added to `schemas/` must be added here too (a test checks the two agree).
pub const SCHEMA_FILES: &[(&str, &str)] = &[(
    "change_event.avsc",
    include_str!("../../../schemas/change_event.avsc"),
)];

/// The two-byte marker that starts an Avro single-object encoded message.
const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// The byte that starts a Confluent-framed message.
const CONFLUENT_MAGIC: u8 = 0;

/// How a message body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Avro single-object encoding: marker + 8-byte schema fingerprint; needs no registry.
    #[default]
    SingleObject,
    /// Confluent wire format: magic byte + 4-byte schema id, as registered in a schema registry.
    Confluent { schema_id: u32 },
}

#[derive(Debug)]
struct Known {
    schema: Schema,
    fingerprint: [u8; 8],
}

impl Known {
    fn parse(file: &'static str, text: &str) -> Result<Known> {
        let schema = Schema::parse_str(text).map_err(|source| Error::Schema {
            file,
            source: Box::new(source),
        })?;
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&schema.fingerprint::<Rabin>().bytes[..8]);
        Ok(Known {
            schema,
            fingerprint,
        })
    }
}

/// Encodes and decodes [`ChangeEvent`]s. Decoding accepts every schema in [`SCHEMA_FILES`],
/// and Confluent-framed messages whose schema id it was told of
/// ([`Codec::learn_confluent_schema`]: from a schema registry or a map of ids to files).
#[derive(Debug)]
pub struct Codec {
    framing: Framing,
    known: Vec<Arc<Known>>,
    /// Writer schemas of Confluent-framed messages, by schema id.
    confluent: RwLock<HashMap<u32, Arc<Known>>>,
}

impl Default for Codec {
    fn default() -> Self {
        // The built-in schemas are part of the binary and covered by tests, so they parse.
        Codec::new(Framing::SingleObject).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Codec {
    pub fn new(framing: Framing) -> Result<Self> {
        let known = SCHEMA_FILES
            .iter()
            .map(|(file, text)| Ok(Arc::new(Known::parse(file, text)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Codec {
            framing,
            known,
            confluent: RwLock::new(HashMap::new()),
        })
    }

    /// Confluent-framed messages with schema id `id` were written with the Avro schema
    /// `text` (what a registry answers for the id). They are read into the current schema
    /// as any older schema is; a schema that cannot be resolved to it fails its messages.
    pub fn learn_confluent_schema(&self, id: u32, text: &str) -> Result<()> {
        let known = Arc::new(Known::parse("a registered schema", text)?);
        self.confluent
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, known);
        Ok(())
    }

    fn confluent_schema(&self, id: u32) -> Option<Arc<Known>> {
        match self.framing {
            Framing::Confluent { schema_id } if schema_id == id => Some(self.current().clone()),
            _ => self
                .confluent
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned(),
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    fn current(&self) -> &Arc<Known> {
        // SCHEMA_FILES is a non-empty constant.
        &self.known[self.known.len() - 1]
    }

    /// The current schema, which [`Codec::encode`] writes.
    pub fn schema(&self) -> &Schema {
        &self.current().schema
    }

    /// The event as message bytes in this codec's framing, written with the current schema.
    pub fn encode(&self, event: &ChangeEvent) -> Result<Vec<u8>> {
        self.encode_value(avro::to_avro(event), self.current())
    }

    fn encode_value(&self, value: apache_avro::types::Value, known: &Known) -> Result<Vec<u8>> {
        let body = GenericDatumWriter::builder(&known.schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|e| Error::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 10);
        match self.framing {
            Framing::SingleObject => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&known.fingerprint);
            }
            Framing::Confluent { schema_id } => {
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&schema_id.to_be_bytes());
            }
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Writes `event` with one of the released schemas (by file name), keeping only the fields
    /// that schema has. Used to prove old events stay readable.
    pub fn encode_with_schema(&self, event: &ChangeEvent, file: &str) -> Result<Vec<u8>> {
        let index = SCHEMA_FILES
            .iter()
            .position(|(name, _)| *name == file)
            .ok_or_else(|| Error::Encode(format!("no released schema named {file}")))?;
        let known = &self.known[index];
        let apache_avro::types::Value::Record(fields) = avro::to_avro(event) else {
            return Err(Error::Encode("event is not a record".into()));
        };
        let Schema::Record(record) = &known.schema else {
            return Err(Error::Encode(format!("{file} is not a record schema")));
        };
        let kept = fields
            .into_iter()
            .filter(|(name, _)| record.lookup.contains_key(name))
            .collect();
        self.encode_value(apache_avro::types::Value::Record(kept), known)
    }

    /// Decodes message bytes in either framing, resolving old schemas to the current one.
    pub fn decode(&self, bytes: &[u8]) -> Result<ChangeEvent> {
        let (writer, mut body): (Arc<Known>, &[u8]) = match bytes {
            [0xC3, 0x01, rest @ ..] => {
                let (fp, body) = rest
                    .split_first_chunk::<8>()
                    .ok_or(Error::Truncated { len: bytes.len() })?;
                let writer = self.known.iter().find(|k| &k.fingerprint == fp).ok_or(
                    Error::UnknownFingerprint {
                        fingerprint: u64::from_le_bytes(*fp),
                    },
                )?;
                (writer.clone(), body)
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                let (id, body) = rest
                    .split_first_chunk::<4>()
                    .ok_or(Error::Truncated { len: bytes.len() })?;
                let id = u32::from_be_bytes(*id);
                let writer = self
                    .confluent_schema(id)
                    .ok_or(Error::UnknownSchemaId { id })?;
                (writer, body)
            }
            _ if bytes.len() < 5 => return Err(Error::Truncated { len: bytes.len() }),
            _ => {
                return Err(Error::BadMagic {
                    found: bytes[..2].to_vec(),
                })
            }
        };
        let value = GenericDatumReader::builder(&writer.schema)
            .reader_schema(self.schema())
            .build()
            .and_then(|reader| reader.read_value(&mut body))
            .map_err(|e| Error::Body(e.to_string()))?;
        if !body.is_empty() {
            return Err(Error::Body(format!(
                "{} bytes left over after the record",
                body.len()
            )));
        }
        avro::from_avro(value)
    }
}
