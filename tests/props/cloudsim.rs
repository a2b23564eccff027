//! cloudsim's request hash, which tells a retried create from a different one under the same
//! Idempotency-Key: the same document however it is laid out hashes the same, and different
//! documents hash differently.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value as Json};
use tandem_cloudsim::request_hash;

use crate::check;

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(Json::from),
        ".{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Json::Array),
            btree_map(".{0,6}", inner, 0..6).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Map<String, Json>> {
    btree_map(".{0,6}", json(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// The text a client might send for `value`: keys in reverse order, with whitespace.
fn laid_out_otherwise(value: &Json) -> String {
    match value {
        Json::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| {
                    format!(
                        "\n  {} :\t{}",
                        Json::String(k.clone()),
                        laid_out_otherwise(v)
                    )
                })
                .collect();
            format!("{{ {} }}", entries.join(" ,"))
        }
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(laid_out_otherwise).collect();
            format!("[ {} ]", items.join(" , "))
        }
        scalar => scalar.to_string(),
    }
}

#[test]
fn a_document_hashes_the_same_however_it_is_laid_out() {
    check("request hash ignores layout", document(), |doc| {
        let text = laid_out_otherwise(&Json::Object(doc.clone()));
        let read: Map<String, Json> =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(
            request_hash("c", &read),
            request_hash("c", &doc),
            "{}",
            text
        );
        Ok(())
    });
}

#[test]
fn different_documents_hash_differently() {
    check(
        "request hash separates documents",
        (document(), document(), ".{0,4}", ".{0,4}"),
        |(a, b, ca, cb)| {
            if a != b || ca != cb {
                prop_assert_ne!(request_hash(&ca, &a), request_hash(&cb, &b));
            }
            Ok(())
        },
    );
}
