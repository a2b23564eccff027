//! Checking a mapping: each resource's fields, embeds and condition compiled, names and
//! collections unique, no cycle of references, and every column present in the legacy schema.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::spec::{FieldSpec, MappingFile, WhenSpec};
use super::{Coerce, Condition, Embed, Expr, Mapping, Part, Resource, Test};
use crate::{Error, Result};

impl Mapping {
    /// Parses and checks a mapping; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let fail = |key: String, message: String| Error::Config {
            file: origin.to_path_buf(),
            key,
            message,
        };
        let file: MappingFile = from_toml(text).map_err(|(key, message)| fail(key, message))?;
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

/// Reads TOML text into `T`. An error says where: the key path (`resource[1].fields.amount`,
/// empty when the text does not parse at all) and the message with its line.
fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> std::result::Result<T, (String, String)> {
    let described = |e: &toml::de::Error| {
        let line = e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        format!("{} (line {line})", e.message().trim_end())
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| (String::new(), described(&e)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = Some(e.path().to_string())
            .filter(|k| k != ".")
            .unwrap_or_default();
        (key, described(&e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use tandem_event::{Row, Value};

    use crate::mapping::Mapping;

    const DEMO: &str = include_str!("../../../../deploy/demo/mapping.toml");

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn conditions_pick_the_rows_a_resource_applies_to() -> Result<(), Box<dyn std::error::Error>> {
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
                .ok_or(format!("no resource {name}"))
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
    fn bad_mappings_name_file_resource_and_field() {
        let cases = [
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={ref='nope', column='c'}}", "resource.a.fields.x"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={column='c', template='{c}'}}", "resource.a.fields.x"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\n[[resource]]\nname='b'\nroot='t'\ncollection='a'", "resource.b.collection"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={ref='b', column='c'}}\n[[resource]]\nname='b'\nroot='t'\ncollection='b'\nfields={y={ref='a', column='c'}}", "cycle"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={column='c', type='money'}}", "unknown type"),
            ("[[resource]]\nname='a'\nroot='t'\ncollection='a'\nfields={x={column='c', typ='decimal'}}", "resource[0].fields.x.typ: unknown field `typ`"),
        ];
        for (text, expected) in cases {
            let err = Mapping::parse(text, Path::new("m.toml"))
                .expect_err(text)
                .to_string();
            assert!(err.contains("m.toml") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn unknown_columns_are_reported_against_the_legacy_schema(
    ) -> Result<(), Box<dyn std::error::Error>> {
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
