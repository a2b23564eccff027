//! Conversion between [`ChangeEvent`] and Avro's generic values.
//!
//! Written by hand rather than through serde so that the union branches of `data` are explicit
//! and a value that does not fit the schema is reported with the field it concerns.

use std::collections::HashMap;

use apache_avro::types::Value as Avro;

use crate::{ChangeEvent, Error, Kind, Result, Row, Value};

/// Union branch indexes of a `data` map value, in schema order.
const NULL: u32 = 0;
const BOOLEAN: u32 = 1;
const LONG: u32 = 2;
const DOUBLE: u32 = 3;
const STRING: u32 = 4;
const BYTES: u32 = 5;

fn kind_index(kind: Kind) -> u32 {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default() as u32
}

fn value_to_avro(value: &Value) -> Avro {
    let (branch, inner) = match value {
        Value::Null => (NULL, Avro::Null),
        Value::Boolean(b) => (BOOLEAN, Avro::Boolean(*b)),
        Value::Long(n) => (LONG, Avro::Long(*n)),
        Value::Double(d) => (DOUBLE, Avro::Double(*d)),
        Value::String(s) => (STRING, Avro::String(s.clone())),
        Value::Bytes(b) => (BYTES, Avro::Bytes(b.clone())),
    };
    Avro::Union(branch, Box::new(inner))
}

fn optional(value: Option<Avro>) -> Avro {
    match value {
        None => Avro::Union(0, Box::new(Avro::Null)),
        Some(v) => Avro::Union(1, Box::new(v)),
    }
}

/// The event as an Avro record of the current schema.
pub(crate) fn to_avro(event: &ChangeEvent) -> Avro {
    let data = event.data.as_ref().map(|row| {
        Avro::Map(
            row.iter()
                .map(|(k, v)| (k.clone(), value_to_avro(v)))
                .collect::<HashMap<_, _>>(),
        )
    });
    Avro::Record(vec![
        ("event_id".into(), Avro::String(event.event_id.clone())),
        ("account_id".into(), Avro::String(event.account_id.clone())),
        (
            "kind".into(),
            Avro::Enum(kind_index(event.kind), event.kind.symbol().into()),
        ),
        (
            "entity_type".into(),
            Avro::String(event.entity_type.clone()),
        ),
        ("entity_id".into(), Avro::String(event.entity_id.clone())),
        ("epoch".into(), Avro::Long(event.epoch)),
        ("version".into(), Avro::Long(event.version)),
        ("data".into(), optional(data)),
        (
            "snapshot_id".into(),
            optional(event.snapshot_id.clone().map(Avro::String)),
        ),
        ("occurred_at".into(), Avro::Long(event.occurred_at)),
        ("detected_at".into(), Avro::Long(event.detected_at)),
    ])
}

fn bad(what: impl Into<String>) -> Error {
    Error::Body(what.into())
}

fn unwrap_union(value: Avro) -> Avro {
    match value {
        Avro::Union(_, inner) => *inner,
        other => other,
    }
}

fn string(field: &str, value: Avro) -> Result<String> {
    match unwrap_union(value) {
        Avro::String(s) => Ok(s),
        other => Err(bad(format!(
            "field {field} should be a string, found {other:?}"
        ))),
    }
}

fn long(field: &str, value: Avro) -> Result<i64> {
    match unwrap_union(value) {
        Avro::Long(n) => Ok(n),
        Avro::Int(n) => Ok(n.into()),
        other => Err(bad(format!(
            "field {field} should be a long, found {other:?}"
        ))),
    }
}

fn value_from_avro(column: &str, value: Avro) -> Result<Value> {
    Ok(match unwrap_union(value) {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Boolean(b),
        Avro::Int(n) => Value::Long(n.into()),
        Avro::Long(n) => Value::Long(n),
        Avro::Float(f) => Value::Double(f.into()),
        Avro::Double(d) => Value::Double(d),
        Avro::String(s) => Value::String(s),
        Avro::Bytes(b) => Value::Bytes(b),
        other => {
            return Err(bad(format!(
                "data.{column} has an unsupported type {other:?}"
            )))
        }
    })
}

/// The event out of an Avro record already resolved to the current schema.
pub(crate) fn from_avro(value: Avro) -> Result<ChangeEvent> {
    let Avro::Record(fields) = value else {
        return Err(bad("top-level value is not a record"));
    };
    let mut fields: HashMap<String, Avro> = fields.into_iter().collect();
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| bad(format!("field {name} is missing")))
    };
    let kind = match take("kind")? {
        Avro::Enum(_, symbol) => symbol.parse::<Kind>().map_err(bad)?,
        other => {
            return Err(bad(format!(
                "field kind should be an enum, found {other:?}"
            )))
        }
    };
    let data = match unwrap_union(take("data")?) {
        Avro::Null => None,
        Avro::Map(map) => Some(
            map.into_iter()
                .map(|(k, v)| value_from_avro(&k, v).map(|v| (k, v)))
                .collect::<Result<Row>>()?,
        ),
        other => return Err(bad(format!("field data should be a map, found {other:?}"))),
    };
    let snapshot_id = match unwrap_union(take("snapshot_id")?) {
        Avro::Null => None,
        other => Some(string("snapshot_id", other)?),
    };
    Ok(ChangeEvent {
        event_id: string("event_id", take("event_id")?)?,
        account_id: string("account_id", take("account_id")?)?,
        kind,
        entity_type: string("entity_type", take("entity_type")?)?,
        entity_id: string("entity_id", take("entity_id")?)?,
        epoch: long("epoch", take("epoch")?)?,
        version: long("version", take("version")?)?,
        data,
        snapshot_id,
        occurred_at: long("occurred_at", take("occurred_at")?)?,
        detected_at: long("detected_at", take("detected_at")?)?,
    })
}
