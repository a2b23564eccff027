//! A checked mapping's parts: resources, their field expressions, embedded children and the
//! conditions that say which rows a resource applies to.

use serde_json::Value as Json;
use tandem_event::{Row, Value};

use super::render::keep;

/// How a column value is turned into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coerce {
    /// As it came: numbers stay numbers, text stays text.
    Keep,
    String,
    Integer,
    /// An exact decimal, always written as a JSON string.
    Decimal,
    Boolean,
    /// Epoch milliseconds or a date-time text in any offset (see `timestamp.rs`), written as
    /// RFC 3339 in UTC with milliseconds (or finer, when the value has it).
    Timestamp,
}

/// When a resource applies to a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Json),
    NotEquals(Json),
    OneOf(Vec<Json>),
    IsNull(bool),
}

impl Condition {
    pub fn holds(&self, row: &Row) -> bool {
        let value = match row.get(&self.column) {
            None | Some(Value::Null) => Json::Null,
            Some(v) => keep(v),
        };
        match &self.test {
            Test::Equals(want) => &value == want,
            Test::NotEquals(other) => &value != other,
            Test::OneOf(options) => options.contains(&value),
            Test::IsNull(null) => value.is_null() == *null,
        }
    }
}

/// One field expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column {
        column: String,
        coerce: Coerce,
    },
    Template(Vec<Part>),
    Constant(Json),
    /// The cloud id of `resource` whose root key is this column's value.
    Ref {
        resource: String,
        column: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Column(String),
}

#[derive(Debug, Clone)]
pub struct Embed {
    pub field: String,
    pub entity: String,
    pub parent_column: String,
    pub fields: Vec<(String, Expr)>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub root: String,
    pub collection: String,
    pub fields: Vec<(String, Expr)>,
    pub embeds: Vec<Embed>,
    /// Rows the resource applies to; every row of its root when `None`.
    pub when: Option<Condition>,
}

impl Resource {
    /// Whether this resource applies to a row of its root.
    pub fn applies_to(&self, row: &Row) -> bool {
        self.when.as_ref().is_none_or(|when| when.holds(row))
    }

    /// Field expressions of the resource and of its embeds.
    pub fn all_fields(&self) -> impl Iterator<Item = &(String, Expr)> {
        self.fields
            .iter()
            .chain(self.embeds.iter().flat_map(|e| e.fields.iter()))
    }
}

impl Expr {
    pub(super) fn columns(&self) -> Vec<&str> {
        match self {
            Expr::Column { column, .. } | Expr::Ref { column, .. } => vec![column],
            Expr::Template(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Column(c) => Some(c.as_str()),
                    Part::Text(_) => None,
                })
                .collect(),
            Expr::Constant(_) => Vec::new(),
        }
    }
}
