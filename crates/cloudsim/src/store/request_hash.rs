//! The fingerprint that tells a retried request from a different one under the same
//! Idempotency-Key.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// sha256 (hex) of the collection and the canonical JSON of the body, so that a retried
/// request matches however its client ordered the keys.
pub fn request_hash(collection: &str, doc: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    write_canonical(&Value::Object(doc.clone()), &mut canonical);
    let digest = Sha256::new()
        .chain_update(collection.as_bytes())
        .chain_update(b"\n")
        .chain_update(canonical.as_bytes())
        .finalize();
    hex::encode(digest)
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

    // Inputs are written as request text and parsed, as the server parses a body, because
    // `json!` literals come out key-sorted already and so cannot show that the layout of the
    // text a client sent does not matter.
    fn parse(text: &str) -> serde_json::Result<Map<String, Value>> {
        serde_json::from_str(text)
    }

    #[test]
    fn the_same_request_laid_out_differently_hashes_the_same() -> serde_json::Result<()> {
        let first = r#"{"name":"ada","tags":{"a":1,"b":[1,{"p":3,"q":2}]},"x":null}"#;
        // Keys in another order at every level, other whitespace, and an escaped character.
        let retried = concat!(
            "{ \"x\" : null,\n",
            "  \"tags\": { \"b\": [ 1, {\"q\": 2, \"p\": 3} ],\t\"a\": 1 },\n",
            "  \"name\": \"\\u0061da\"\n",
            "}",
        );
        assert_eq!(
            request_hash("users", &parse(first)?),
            request_hash("users", &parse(retried)?)
        );
        Ok(())
    }

    #[test]
    fn request_hash_is_sha256_of_collection_and_canonical_body() -> serde_json::Result<()> {
        // Hashes are stored with their idempotency keys and outlive an upgrade, so the format
        // is pinned: if it changed, every retry that straddles an upgrade would be refused as
        // a key conflict. The expected value comes from outside this code:
        //   printf 'users\n{"name":"ada","tags":{"a":1,"b":[1,{"p":3,"q":2}]}}' | sha256sum
        let doc = parse(r#"{"tags": {"b": [1, {"q": 2, "p": 3}], "a": 1}, "name": "ada"}"#)?;
        assert_eq!(
            request_hash("users", &doc),
            "187ae5d3e62a52611b9bf0b5d1ef6ccf98fcb7583422dfa1204970171d5a6708"
        );
        Ok(())
    }

    #[test]
    fn any_change_of_content_changes_the_hash() -> serde_json::Result<()> {
        let base = r#"{"name":"ada","tags":{"a":1,"b":[1,{"p":3,"q":2}]}}"#;
        let different = [
            // a top-level value
            r#"{"name":"eve","tags":{"a":1,"b":[1,{"p":3,"q":2}]}}"#,
            // a value nested inside an array
            r#"{"name":"ada","tags":{"a":1,"b":[1,{"p":4,"q":2}]}}"#,
            // array order is content, unlike key order
            r#"{"name":"ada","tags":{"a":1,"b":[{"p":3,"q":2},1]}}"#,
            // a number and the string of its digits are different values
            r#"{"name":"ada","tags":{"a":"1","b":[1,{"p":3,"q":2}]}}"#,
            // an extra key
            r#"{"name":"ada","tags":{"a":1,"b":[1,{"p":3,"q":2}]},"x":null}"#,
        ];
        let base_hash = request_hash("users", &parse(base)?);
        for text in different {
            assert_ne!(request_hash("users", &parse(text)?), base_hash, "{text}");
        }
        assert_ne!(request_hash("groups", &parse(base)?), base_hash);
        Ok(())
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_without_whitespace() -> serde_json::Result<()> {
        // With serde_json's default map the keys of a parsed object are sorted already; the
        // sort in `write_canonical` is what keeps this output the same if a crate in the
        // build turns on `preserve_order`, and this test is what would notice its loss then.
        let value: Value =
            serde_json::from_str(r#"{"b": "\"", "a": [true, 1.5, {"d": 1, "c": 2}]}"#)?;
        let mut out = String::new();
        write_canonical(&value, &mut out);
        assert_eq!(out, r#"{"a":[true,1.5,{"c":2,"d":1}],"b":"\""}"#);
        Ok(())
    }
}
