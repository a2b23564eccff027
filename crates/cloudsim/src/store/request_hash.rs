//! The fingerprint that tells a retried request from a different one under the same
//! Idempotency-Key.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// sha256 (hex) of the collection and the canonical JSON of the body, so that a retried
/// request matches however its client ordered the keys.
pub(super) fn request_hash(collection: &str, doc: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    write_canonical(&Value::Object(doc.clone()), &mut canonical);
    let digest = Sha256::new()
        .chain_update(collection.as_bytes())
        .chain_update(b"\n")
        .chain_update(canonical.as_bytes())
        .finalize();
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// JSON with object keys sorted at every level. Done by hand rather than relying on
/// serde_json's map ordering, which flips if any crate in the build enables `preserve_order`.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn request_hash_ignores_key_order() {
        let a = object(json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": null}}));
        let b = object(json!({"a": {"x": null, "y": [1, {"p": 3, "q": 2}]}, "b": 1}));
        assert_eq!(request_hash("users", &a), request_hash("users", &b));
    }

    #[test]
    fn request_hash_depends_on_collection_and_values() {
        let a = object(json!({"name": "x"}));
        let b = object(json!({"name": "y"}));
        assert_ne!(request_hash("users", &a), request_hash("users", &b));
        assert_ne!(request_hash("users", &a), request_hash("groups", &a));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut out = String::new();
        write_canonical(&json!({"b": "\"", "a": [true, 1.5]}), &mut out);
        assert_eq!(out, r#"{"a":[true,1.5],"b":"\""}"#);
    }
}
