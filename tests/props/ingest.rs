//! JSON-lines detections: every detection a sync process can send comes back as itself, and
//! any text at all is answered line by line, good or rejected with a reason, never a panic.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};
use tandem_event::{Kind, Row, Value};
use tandem_producer::ingest::{parse_detection, parse_lines, Accounts, Detection};

use crate::check;

/// What JSON can carry of a column value: integers, finite doubles, strings, booleans, null.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Long),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(Value::Double),
        ".*".prop_map(Value::String),
    ]
}

fn detection() -> impl Strategy<Value = Detection> {
    let kind = proptest::sample::select(vec![
        Kind::Created,
        Kind::Updated,
        Kind::Deleted,
        Kind::DatabaseRestored,
    ]);
    (
        option::of(".+"),
        kind,
        ".+",
        ".+",
        0..=i64::MAX,
        btree_map(".*", value(), 0..6),
        option::of(any::<i64>()),
    )
        .prop_map(
            |(account_id, kind, entity_type, entity_id, version, row, occurred_at)| Detection {
                account_id,
                kind,
                entity_type,
                entity_id,
                version,
                data: matches!(kind, Kind::Created | Kind::Updated).then_some(row),
                occurred_at,
            },
        )
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Long(n) => json!(n),
        Value::Double(d) => json!(d),
        Value::String(s) => json!(s),
        Value::Bytes(_) => unreachable!("JSON lines carry no bytes"),
    }
}

/// The line a sync process would write for `detection`.
fn line(detection: &Detection) -> String {
    let mut object = Map::new();
    if let Some(account) = &detection.account_id {
        object.insert("account_id".into(), json!(account));
    }
    object.insert("kind".into(), json!(detection.kind.symbol()));
    object.insert("entity_type".into(), json!(detection.entity_type));
    object.insert("entity_id".into(), json!(detection.entity_id));
    object.insert("version".into(), json!(detection.version));
    if let Some(row) = &detection.data {
        let data: Map<String, Json> = row.iter().map(|(c, v)| (c.clone(), to_json(v))).collect();
        object.insert("data".into(), Json::Object(data));
    }
    if let Some(at) = detection.occurred_at {
        object.insert("occurred_at".into(), json!(at));
    }
    Json::Object(object).to_string()
}

#[test]
fn every_detection_written_as_a_line_reads_back_as_itself() {
    check("detection round trip", detection(), |detection| {
        let text = line(&detection);
        let back = parse_detection(&text)
            .map_err(|(field, message)| TestCaseError::fail(format!("{field}: {message}")))?;
        prop_assert_eq!(back, detection);
        Ok(())
    });
}

/// Lines made of detection-like pieces, broken ones among them: each nonblank line is either
/// taken or rejected by its own line number, with the field at fault.
#[test]
fn any_text_is_answered_line_by_line() {
    let piece = prop_oneof![
        detection().prop_map(|d| line(&d)),
        detection().prop_map(|d| {
            let text = line(&d);
            text.chars().take(text.chars().count() / 2).collect()
        }),
        r#"\{"(kind|version|data|entity_id|account_id)":[^\n]{0,20}\}"#,
        "[^\n]{0,40}",
        Just(String::new()),
    ];
    check(
        "parse_lines answers every line",
        (vec(piece, 0..12), option::of("[^\u{0}-\u{1f}]{1,8}")),
        |(lines, default)| {
            let text = lines.join("\n");
            let accounts = match &default {
                Some(account) => Accounts::Default(account),
                None => Accounts::Named,
            };
            let (good, bad) = parse_lines(&text, accounts);
            let nonblank: Vec<usize> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, _)| i + 1)
                .collect();
            let mut answered: Vec<usize> = good
                .iter()
                .map(|(n, _)| *n)
                .chain(bad.iter().map(|r| r.line))
                .collect();
            answered.sort_unstable();
            prop_assert_eq!(answered, nonblank);
            for rejection in &bad {
                prop_assert!(!rejection.field.is_empty() && !rejection.message.is_empty());
            }
            Ok(())
        },
    );
}

mod regressions {
    use super::*;

    /// serde_json read some doubles one unit in the last place off until the workspace turned
    /// on its `float_roundtrip` feature: a balance sent as 0.1 + 0.2 arrived as another number.
    #[test]
    fn doubles_arrive_exactly() {
        for d in [
            0.300_000_000_000_000_04,
            2.225_073_858_507_201e-308,
            1e23,
            5e-324,
        ] {
            let detection = Detection {
                account_id: None,
                kind: Kind::Updated,
                entity_type: "t".into(),
                entity_id: "1".into(),
                version: 1,
                data: Some(Row::from([("x".to_owned(), Value::Double(d))])),
                occurred_at: None,
            };
            assert_eq!(parse_detection(&line(&detection)), Ok(detection), "{d:e}");
        }
    }
}
