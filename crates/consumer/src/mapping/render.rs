//! Rendering a document: a row (laid over its mirror) and its embedded children through a
//! resource's field expressions, with values coerced to their declared types.

use serde_json::{Map, Value as Json};
use tandem_event::{canonical_key, Row, Value};

use super::{timestamp, Coerce, Expr, Mapping, Part, Resource};

/// Why a document could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("reference to {resource} {key:?} is not mapped to a cloud id yet")]
    Unresolved { resource: String, key: String },
    #[error("field {field}: {message}")]
    Coerce { field: String, message: String },
}

impl Mapping {
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
pub(super) fn keep(value: &Value) -> Json {
    coerce_value(value, Coerce::Keep).unwrap_or(Json::Null)
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
    use std::path::Path;

    use super::*;

    const DEMO: &str = include_str!("../../../../deploy/demo/mapping.toml");

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn demo_mapping_renders_contact_with_phones() -> Result<(), Box<dyn std::error::Error>> {
        let mapping = Mapping::parse(DEMO, Path::new("mapping.toml"))?;
        let contact = mapping.resource("contact").ok_or("no contact")?;
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
        let doc = mapping.render(contact, "7", &root, &[phones], &mut |_, _| None)?;
        assert_eq!(doc["display_name"], "Ada Byron");
        assert_eq!(doc["external_ref"], "7");
        assert_eq!(
            doc["phones"][0]["number"], "1",
            "children in key order: \"10\" < \"9\""
        );
        Ok(())
    }

    #[test]
    fn references_resolve_or_report_what_is_missing() -> Result<(), Box<dyn std::error::Error>> {
        let mapping = Mapping::parse(DEMO, Path::new("mapping.toml"))?;
        let property = mapping.resource("property").ok_or("no property")?;
        let root = row(&[("id", Value::Long(1)), ("owner_contact_id", Value::Long(7))]);
        let doc = mapping.render(property, "1", &root, &[], &mut |r, k| {
            Some(format!("{r}:{k}"))
        })?;
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
}
