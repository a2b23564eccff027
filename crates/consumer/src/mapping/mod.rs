//! The declarative mapping: which cloud resources a legacy row becomes, and how.
//!
//! ```toml
//! [[resource]]
//! name = "contact"              # the resource type
//! root = "contacts"             # the legacy table whose rows it comes from
//! collection = "contacts"       # the cloud collection it is written to
//! [resource.fields]
//! email = "email"                                   # copy a column
//! name = { template = "{first_name} {last_name}" }  # a template over columns
//! kind = { constant = "person" }                    # a constant
//! balance = { column = "balance", type = "decimal" } # a column, coerced
//! since = { column = "created", type = "timestamp" } # a date-time in any offset → RFC 3339 UTC
//! [[resource.embed]]            # child rows folded into the document (consolidation)
//! field = "phones"
//! entity = "contact_phones"
//! parent_column = "contact_id"
//! fields = { number = "number", label = "kind" }
//!
//! [[resource]]
//! name = "property"
//! root = "properties"
//! collection = "properties"
//! fields = { owner_id = { ref = "contact", column = "owner_contact_id" } }  # a reference
//! ```
//!
//! A resource may apply to some rows only: `when = { column = "kind", equals = "owner" }` (also
//! `not_equals`, `in = [...]`, `is_null = true|false`). A row that stops matching has its
//! resource deleted; one that starts matching has it created.
//!
//! Several resources may share a root (break-down). Every document also carries its root key in
//! the `external_ref` field (configurable with a top-level `external_ref_field`), which is how
//! `verify` pairs cloud documents with legacy rows.

use std::path::{Path, PathBuf};

use tandem_event::{canonical_key, Row, Value};

use crate::{Error, Result};

mod compile;
mod model;
mod render;
mod spec;
mod timestamp;

pub use model::{Coerce, Condition, Embed, Expr, Part, Resource, Test};
pub use render::RenderError;

/// A checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub external_ref_field: String,
    pub resources: Vec<Resource>,
    origin: PathBuf,
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// Resources whose root is `entity_type`.
    pub fn rooted_at<'a>(&'a self, entity_type: &'a str) -> impl Iterator<Item = &'a Resource> {
        self.resources.iter().filter(move |r| r.root == entity_type)
    }

    /// The resource embedding `entity_type`, with the embed.
    pub fn embedding(&self, entity_type: &str) -> Option<(&Resource, &Embed)> {
        self.resources.iter().find_map(|r| {
            r.embeds
                .iter()
                .find(|e| e.entity == entity_type)
                .map(|e| (r, e))
        })
    }

    /// The parent key of a child row, if `entity_type` is embedded somewhere.
    pub fn parent_key(&self, entity_type: &str, row: &Row) -> Option<String> {
        let (_, embed) = self.embedding(entity_type)?;
        match row.get(&embed.parent_column) {
            None | Some(Value::Null) => None,
            Some(v) => Some(canonical_key(std::slice::from_ref(v))),
        }
    }
}
