//! The mapping file as written: what `mapping.toml` may contain, before it is checked.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MappingFile {
    #[serde(default = "default_external_ref_field")]
    pub(super) external_ref_field: String,
    #[serde(rename = "resource", default)]
    pub(super) resources: Vec<ResourceSpec>,
}

pub(super) fn default_external_ref_field() -> String {
    "external_ref".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourceSpec {
    pub(super) name: String,
    pub(super) root: String,
    pub(super) collection: String,
    #[serde(default)]
    pub(super) fields: BTreeMap<String, FieldSpec>,
    #[serde(default)]
    pub(super) embed: Vec<EmbedSpec>,
    pub(super) when: Option<WhenSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhenSpec {
    pub(super) column: String,
    pub(super) equals: Option<toml::Value>,
    pub(super) not_equals: Option<toml::Value>,
    #[serde(rename = "in")]
    pub(super) one_of: Option<Vec<toml::Value>>,
    pub(super) is_null: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EmbedSpec {
    pub(super) field: String,
    pub(super) entity: String,
    pub(super) parent_column: String,
    #[serde(default)]
    pub(super) fields: BTreeMap<String, FieldSpec>,
}

/// A field: a column name, or a table saying how the value is made.
#[derive(Debug)]
pub(super) enum FieldSpec {
    Column(String),
    Table(FieldTable),
}

/// Told apart by hand rather than by serde's `untagged`, which would hide why a table is
/// wrong (an unknown key, a value of the wrong type) behind "did not match any variant".
impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a column name or a table such as { column = \"c\", type = \"decimal\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, column: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Column(column.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FieldSpec, A::Error> {
                let table =
                    FieldTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec::Table(table))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FieldTable {
    pub(super) column: Option<String>,
    pub(super) template: Option<String>,
    pub(super) constant: Option<toml::Value>,
    #[serde(rename = "ref")]
    pub(super) reference: Option<String>,
    #[serde(rename = "type")]
    pub(super) coerce: Option<String>,
}
