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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use tandem_event::{canonical_key, Row, Value};

use crate::{Error, Result};

mod timestamp;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default = "default_external_ref_field")]
    external_ref_field: String,
    #[serde(rename = "resource", default)]
    resources: Vec<ResourceSpec>,
}

fn default_external_ref_field() -> String {
    "external_ref".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSpec {
    name: String,
    root: String,
    collection: String,
    #[serde(default)]
    fields: BTreeMap<String, FieldSpec>,
    #[serde(default)]
    embed: Vec<EmbedSpec>,
    when: Option<WhenSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenSpec {
    column: String,
    equals: Option<toml::Value>,
    not_equals: Option<toml::Value>,
    #[serde(rename = "in")]
    one_of: Option<Vec<toml::Value>>,
    is_null: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedSpec {
    field: String,
    entity: String,
    parent_column: String,
    #[serde(default)]
    fields: BTreeMap<String, FieldSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FieldSpec {
    Column(String),
    Table(FieldTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldTable {
    column: Option<String>,
    template: Option<String>,
    constant: Option<toml::Value>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    coerce: Option<String>,
}

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

/// A checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub external_ref_field: String,
    pub resources: Vec<Resource>,
    origin: PathBuf,
}

/// Why a document could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("reference to {resource} {key:?} is not mapped to a cloud id yet")]
    Unresolved { resource: String, key: String },
    #[error("field {field}: {message}")]
    Coerce { field: String, message: String },
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

    /// Parses and checks a mapping; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let fail = |key: String, message: String| Error::Config {
            file: origin.to_path_buf(),
            key,
            message,
        };
        let file: MappingFile = toml::from_str(text).map_err(|e| {
            fail(
                e.span()
                    .map(|s| format!("at byte {}", s.start))
                    .unwrap_or_default(),
                e.message().to_owned(),
            )
        })?;
        if file.resources.is_empty() {
            return Err(fail("resource".into(), "no [[resource]] is defined".into()));
        }
        let names: HashSet<&str> = file.resources.iter().map(|r| r.name.as_str()).collect();
        let mut resources = Vec::new();
        let mut seen_names = HashSet::new();
        let mut seen_collections = HashSet::new();
        let mut embedded_entities = HashSet::new();
        for spec in &file.resources {
            let at = |key: &str| format!("resource.{}.{key}", spec.name);
            if !seen_names.insert(&spec.name) {
                return Err(fail(at("name"), "two resources have this name".into()));
            }
            // Documents are paired with legacy rows by (collection, external ref), so two
            // resources in one collection would share one identity.
            if !seen_collections.insert(&spec.collection) {
                return Err(fail(
                    at("collection"),
                    format!(
                        "collection {:?} is used by another resource; two resources would share one identity",
                        spec.collection
                    ),
                ));
            }
            let compile = |fields: &BTreeMap<String, FieldSpec>, prefix: &str| {
                fields
                    .iter()
                    .map(|(name, field)| {
                        let key = format!("{prefix}.{name}");
                        compile_field(field, &names)
                            .map(|e| (name.clone(), e))
                            .map_err(|m| fail(key, m))
                    })
                    .collect::<Result<Vec<_>>>()
            };
            let fields = compile(&spec.fields, &at("fields"))?;
            let mut embeds = Vec::new();
            for (i, embed) in spec.embed.iter().enumerate() {
                if !embedded_entities.insert(&embed.entity) {
                    return Err(fail(
                        at(&format!("embed[{i}].entity")),
                        format!("{:?} is embedded by two resources", embed.entity),
                    ));
                }
                embeds.push(Embed {
                    field: embed.field.clone(),
                    entity: embed.entity.clone(),
                    parent_column: embed.parent_column.clone(),
                    fields: compile(&embed.fields, &at(&format!("embed[{i}].fields")))?,
                });
            }
            let when = spec
                .when
                .as_ref()
                .map(compile_condition)
                .transpose()
                .map_err(|m| fail(at("when"), m))?;
            resources.push(Resource {
                name: spec.name.clone(),
                root: spec.root.clone(),
                collection: spec.collection.clone(),
                fields,
                embeds,
                when,
            });
        }
        let mapping = Mapping {
            external_ref_field: file.external_ref_field,
            resources,
            origin: origin.to_path_buf(),
        };
        mapping.check_reference_cycles()?;
        Ok(mapping)
    }

    fn check_reference_cycles(&self) -> Result<()> {
        fn visit<'a>(
            mapping: &'a Mapping,
            name: &'a str,
            path: &mut Vec<&'a str>,
        ) -> Result<(), Vec<&'a str>> {
            if let Some(start) = path.iter().position(|n| *n == name) {
                let mut cycle = path[start..].to_vec();
                cycle.push(name);
                return Err(cycle);
            }
            path.push(name);
            if let Some(resource) = mapping.resource(name) {
                for (_, expr) in resource.all_fields() {
                    if let Expr::Ref {
                        resource: target, ..
                    } = expr
                    {
                        // A resource may refer to another of the same root (a charge to its
                        // lease); only a reference back to itself loops.
                        visit(mapping, target, path)?;
                    }
                }
            }
            path.pop();
            Ok(())
        }
        for resource in &self.resources {
            visit(self, &resource.name, &mut Vec::new()).map_err(|cycle| Error::Config {
                file: self.origin.clone(),
                key: format!("resource.{}.fields", resource.name),
                message: format!("references form a cycle: {}", cycle.join(" → ")),
            })?;
        }
        Ok(())
    }

    /// Checks every table and column the mapping names against the legacy schema
    /// (table → columns).
    pub fn check_columns(&self, tables: &BTreeMap<String, Vec<String>>) -> Result<()> {
        let fail = |key: String, message: String| Error::Config {
            file: self.origin.clone(),
            key,
            message,
        };
        let check = |table: &str, fields: &[(String, Expr)], prefix: &str| -> Result<()> {
            let columns = &tables[table];
            for (name, expr) in fields {
                for column in expr.columns() {
                    if !columns.iter().any(|c| c == column) {
                        return Err(fail(
                            format!("{prefix}.{name}"),
                            format!("column {column:?} does not exist in table {table:?}"),
                        ));
                    }
                }
            }
            Ok(())
        };
        for r in &self.resources {
            let at = |key: &str| format!("resource.{}.{key}", r.name);
            if !tables.contains_key(&r.root) {
                return Err(fail(
                    at("root"),
                    format!("table {:?} is not in the sources file", r.root),
                ));
            }
            check(&r.root, &r.fields, &at("fields"))?;
            if let Some(when) = &r.when {
                if !tables[&r.root].contains(&when.column) {
                    return Err(fail(
                        at("when.column"),
                        format!(
                            "column {:?} does not exist in table {:?}",
                            when.column, r.root
                        ),
                    ));
                }
            }
            for (i, e) in r.embeds.iter().enumerate() {
                let Some(columns) = tables.get(&e.entity) else {
                    return Err(fail(
                        at(&format!("embed[{i}].entity")),
                        format!("table {:?} is not in the sources file", e.entity),
                    ));
                };
                if !columns.contains(&e.parent_column) {
                    return Err(fail(
                        at(&format!("embed[{i}].parent_column")),
                        format!(
                            "column {:?} does not exist in table {:?}",
                            e.parent_column, e.entity
                        ),
                    ));
                }
                check(&e.entity, &e.fields, &at(&format!("embed[{i}].fields")))?;
            }
        }
        Ok(())
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

    /// Renders the document of `resource` for the root row `row` (key `root_key`), with the
    /// children of each embed (in embed order) and a resolver for references.
    pub fn render(
        &self,
        resource: &Resource,
        root_key: &str,
        row: &Row,
        children: &[Vec<(String, Row)>],
        resolve: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> Result<Map<String, Json>, RenderError> {
        let mut doc = render_fields(&resource.fields, row, resolve)?;
        for (embed, rows) in resource.embeds.iter().zip(children) {
            let mut sorted: Vec<&(String, Row)> = rows.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let items = sorted
                .into_iter()
                .map(|(_, child)| render_fields(&embed.fields, child, resolve).map(Json::Object))
                .collect::<Result<Vec<_>, _>>()?;
            doc.insert(embed.field.clone(), Json::Array(items));
        }
        doc.insert(
            self.external_ref_field.clone(),
            Json::String(root_key.to_owned()),
        );
        Ok(doc)
    }
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
    fn columns(&self) -> Vec<&str> {
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

fn compile_field(field: &FieldSpec, resources: &HashSet<&str>) -> Result<Expr, String> {
    let table = match field {
        FieldSpec::Column(column) => {
            return Ok(Expr::Column {
                column: column.clone(),
                coerce: Coerce::Keep,
            })
        }
        FieldSpec::Table(t) => t,
    };
    let coerce = match table.coerce.as_deref() {
        None => Coerce::Keep,
        Some("string") => Coerce::String,
        Some("integer") => Coerce::Integer,
        Some("decimal") => Coerce::Decimal,
        Some("boolean") => Coerce::Boolean,
        Some("timestamp") => Coerce::Timestamp,
        Some(other) => {
            return Err(format!(
                "unknown type {other:?} (expected string, integer, decimal, boolean or timestamp)"
            ))
        }
    };
    match (
        &table.column,
        &table.template,
        &table.constant,
        &table.reference,
    ) {
        (Some(column), None, None, None) => Ok(Expr::Column {
            column: column.clone(),
            coerce,
        }),
        (None, Some(template), None, None) => parse_template(template).map(Expr::Template),
        (None, None, Some(constant), None) => serde_json::to_value(constant)
            .map(Expr::Constant)
            .map_err(|e| e.to_string()),
        (Some(column), None, None, Some(resource)) => {
            if !resources.contains(resource.as_str()) {
                return Err(format!("refers to unknown resource {resource:?}"));
            }
            Ok(Expr::Ref {
                resource: resource.clone(),
                column: column.clone(),
            })
        }
        (None, None, None, Some(_)) => Err("a ref needs the column holding the legacy key".into()),
        _ => Err("give exactly one of column, template, constant (or ref with column)".into()),
    }
}

fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("template {template:?} has an unclosed '{{'"))?;
        let column = &rest[open + 1..open + close];
        if column.is_empty() {
            return Err(format!("template {template:?} has an empty '{{}}'"));
        }
        parts.push(Part::Column(column.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn render_fields(
    fields: &[(String, Expr)],
    row: &Row,
    resolve: &mut dyn FnMut(&str, &str) -> Option<String>,
) -> Result<Map<String, Json>, RenderError> {
    let mut doc = Map::new();
    for (name, expr) in fields {
        let value = match expr {
            Expr::Column { column, coerce } => {
                coerce_value(row.get(column).unwrap_or(&Value::Null), *coerce).map_err(
                    |message| RenderError::Coerce {
                        field: name.clone(),
                        message,
                    },
                )?
            }
            Expr::Template(parts) => Json::String(
                parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(t) => t.clone(),
                        Part::Column(c) => row.get(c).map(Value::to_text).unwrap_or_default(),
                    })
                    .collect(),
            ),
            Expr::Constant(value) => value.clone(),
            Expr::Ref { resource, column } => match row.get(column) {
                None | Some(Value::Null) => Json::Null,
                Some(v) => {
                    let key = canonical_key(std::slice::from_ref(v));
                    let id = resolve(resource, &key).ok_or_else(|| RenderError::Unresolved {
                        resource: resource.clone(),
                        key,
                    })?;
                    Json::String(id)
                }
            },
        };
        doc.insert(name.clone(), value);
    }
    Ok(doc)
}

/// A column value as it came: numbers stay numbers, text stays text.
fn keep(value: &Value) -> Json {
    coerce_value(value, Coerce::Keep).unwrap_or(Json::Null)
}

fn compile_condition(when: &WhenSpec) -> Result<Condition, String> {
    let json = |v: &toml::Value| {
        serde_json::to_value(v).map_err(|e| format!("cannot compare with {v}: {e}"))
    };
    let test = match (&when.equals, &when.not_equals, &when.one_of, when.is_null) {
        (Some(v), None, None, None) => Test::Equals(json(v)?),
        (None, Some(v), None, None) => Test::NotEquals(json(v)?),
        (None, None, Some(vs), None) => Test::OneOf(vs.iter().map(json).collect::<Result<_, _>>()?),
        (None, None, None, Some(null)) => Test::IsNull(null),
        _ => return Err("give exactly one of equals, not_equals, in, is_null".into()),
    };
    Ok(Condition {
        column: when.column.clone(),
        test,
    })
}

fn coerce_value(value: &Value, coerce: Coerce) -> Result<Json, String> {
    Ok(match (coerce, value) {
        (_, Value::Null) => Json::Null,
        (Coerce::Keep, Value::Boolean(b)) => Json::Bool(*b),
        (Coerce::Keep, Value::Long(n)) => Json::from(*n),
        (Coerce::Keep, Value::Double(d)) => Json::from(*d),
        (Coerce::Keep | Coerce::String, v) => Json::String(v.to_text()),
        (Coerce::Integer, Value::Long(n)) => Json::from(*n),
        (Coerce::Integer, Value::String(s)) => Json::from(
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("{s:?} is not an integer"))?,
        ),
        (Coerce::Decimal, Value::Long(n)) => Json::String(n.to_string()),
        (Coerce::Decimal, Value::String(s)) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            let valid = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
                && digits.matches('.').count() <= 1;
            if !valid {
                return Err(format!("{s:?} is not a decimal"));
            }
            Json::String(t.to_owned())
        }
        (Coerce::Boolean, Value::Boolean(b)) => Json::Bool(*b),
        (Coerce::Boolean, Value::Long(n)) => Json::Bool(*n != 0),
        (Coerce::Boolean, Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => Json::Bool(true),
            "false" | "f" | "0" | "no" => Json::Bool(false),
            _ => return Err(format!("{s:?} is not a boolean")),
        },
        (Coerce::Timestamp, Value::Long(n)) => timestamp::from_millis(*n)?,
        (Coerce::Timestamp, Value::String(s)) => timestamp::from_text(s)?,
        (c, v) => return Err(format!("cannot turn {v:?} into {c:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../../../deploy/demo/mapping.toml");

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn conditions_pick_the_rows_a_resource_applies_to() -> Result<()> {
        let text = "[[resource]]\nname='owner'\nroot='contacts'\ncollection='owners'\n\
                    when={column='kind', in=['owner','landlord']}\nfields={n='name'}\n\
                    [[resource]]\nname='vip'\nroot='contacts'\ncollection='vips'\n\
                    when={column='tier', equals=3}\nfields={n='name'}\n\
                    [[resource]]\nname='mail'\nroot='contacts'\ncollection='mail'\n\
                    when={column='email', is_null=false}\nfields={n='name'}";
        let mapping = Mapping::parse(text, Path::new("m.toml"))?;
        let r = |name: &str| {
            mapping
                .resource(name)
                .cloned()
                .ok_or(Error::Internal(name.into()))
        };
        let a = row(&[
            ("kind", Value::String("landlord".into())),
            ("tier", Value::Long(3)),
            ("email", Value::Null),
        ]);
        let b = row(&[
            ("kind", Value::String("tenant".into())),
            ("tier", Value::Long(2)),
            ("email", Value::String("b@example.com".into())),
        ]);
        assert!(r("owner")?.applies_to(&a) && !r("owner")?.applies_to(&b));
        assert!(r("vip")?.applies_to(&a) && !r("vip")?.applies_to(&b));
        assert!(!r("mail")?.applies_to(&a) && r("mail")?.applies_to(&b));
        let bad = "[[resource]]\nname='x'\nroot='t'\ncollection='x'\nwhen={column='k', equals=1, is_null=true}";
        let err = Mapping::parse(bad, Path::new("m.toml"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("resource.x.when") && e.contains("exactly one")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn demo_mapping_renders_contact_with_phones() -> Result<()> {
        let mapping = Mapping::parse(DEMO, Path::new("mapping.toml"))?;
        let contact = mapping
            .resource("contact")
            .ok_or(Error::Internal("no contact".into()))?;
        let root = row(&[
            ("id", Value::Long(7)),
            ("first_name", Value::String("Ada".into())),
            ("last_name", Value::String("Byron".into())),
            ("email", Value::String("ada@example.com".into())),
        ]);
        let phones = vec![
            (
                "9".to_string(),
                row(&[
                    ("number", Value::String("2".into())),
                    ("kind", Value::String("work".into())),
                ]),
            ),
            (
                "10".to_string(),
                row(&[
                    ("number", Value::String("1".into())),
                    ("kind", Value::String("home".into())),
                ]),
            ),
        ];
        let doc = mapping
            .render(contact, "7", &root, &[phones], &mut |_, _| None)
            .map_err(|e| Error::Internal(e.to_string()))?;
        assert_eq!(doc["display_name"], "Ada Byron");
        assert_eq!(doc["external_ref"], "7");
        assert_eq!(
            doc["phones"][0]["number"], "1",
            "children in key order: \"10\" < \"9\""
        );
        Ok(())
    }

    #[test]
    fn references_resolve_or_report_what_is_missing() -> Result<()> {
        let mapping = Mapping::parse(DEMO, Path::new("mapping.toml"))?;
        let property = mapping
            .resource("property")
            .ok_or(Error::Internal("no property".into()))?;
        let root = row(&[("id", Value::Long(1)), ("owner_contact_id", Value::Long(7))]);
        let doc = mapping
            .render(property, "1", &root, &[], &mut |r, k| {
                Some(format!("{r}:{k}"))
            })
            .map_err(|e| Error::Internal(e.to_string()))?;
        assert_eq!(doc["owner_id"], "contact:7");
        let err = mapping.render(property, "1", &root, &[], &mut |_, _| None);
        assert_eq!(
            err,
            Err(RenderError::Unresolved {
                resource: "contact".into(),
                key: "7".into()
            })
        );
        Ok(())
    }

    #[test]
    fn decimals_stay_exact_and_bad_ones_are_rejected() {
        assert_eq!(
            coerce_value(&Value::String("1250.10".into()), Coerce::Decimal),
            Ok(Json::String("1250.10".into()))
        );
        assert!(coerce_value(&Value::String("12,5".into()), Coerce::Decimal).is_err());
        assert!(coerce_value(&Value::Double(1.5), Coerce::Decimal).is_err());
    }

    #[test]
    fn bad_mappings_name_file_resource_and_field() {
        let cases = [
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={ref='nope', column='c'}}", "resource.a.fields.x"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={column='c', template='{c}'}}", "resource.a.fields.x"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\n[[resource]]\nname='b'\nroot='t'\ncollection='a'", "resource.b.collection"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={ref='b', column='c'}}\n[[resource]]\nname='b'\nroot='t'\ncollection='b'\nfields={y={ref='a', column='c'}}", "cycle"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={column='c', type='money'}}", "unknown type"),
        ];
        for (text, expected) in cases {
            let err = Mapping::parse(text, Path::new("m.toml"))
                .expect_err(text)
                .to_string();
            assert!(err.contains("m.toml") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn unknown_columns_are_reported_against_the_legacy_schema() -> Result<()> {
        let mapping = Mapping::parse(DEMO, Path::new("mapping.toml"))?;
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        tables.insert("contacts".into(), vec!["id".into()]);
        let err = mapping
            .check_columns(&tables)
            .expect_err("columns are missing")
            .to_string();
        assert!(
            err.contains("resource.contact.fields") && err.contains("does not exist"),
            "{err}"
        );
        Ok(())
    }
}
