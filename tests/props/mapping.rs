//! The mapping file, its template language and its timestamp coercion: any text is a mapping or
//! a clear error, templates render exactly the text and columns they name, and every date-time a
//! legacy database sends becomes the RFC 3339 instant it stands for.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value as Json;
use tandem_consumer::mapping::Mapping;
use tandem_event::{Row, Value};

use crate::check;

fn parse(text: &str) -> tandem_consumer::Result<Mapping> {
    Mapping::parse(text, Path::new("mapping.toml"))
}

/// Lines a mapping file is made of, valid and not, to be shuffled into files that get past
/// the TOML parser and into the checks.
const LINES: &[&str] = &[
    "[[resource]]",
    "name = \"contact\"",
    "name = \"property\"",
    "root = \"contacts\"",
    "root = \"properties\"",
    "collection = \"contacts\"",
    "[resource.fields]",
    "email = \"email\"",
    "name = { template = \"{first} {last}\" }",
    "name = { template = \"{first\" }",
    "name = { template = \"{}\" }",
    "owner = { ref = \"contact\", column = \"owner_id\" }",
    "owner = { ref = \"property\", column = \"id\" }",
    "owner = { ref = \"nowhere\" }",
    "since = { column = \"created\", type = \"timestamp\" }",
    "n = { column = \"n\", type = \"integer\" }",
    "n = { column = \"n\", type = \"rational\" }",
    "kind = { constant = \"person\" }",
    "kind = { constant = 3, column = \"x\" }",
    "when = { column = \"kind\", equals = \"owner\" }",
    "when = { column = \"kind\", in = [1, \"a\"] }",
    "when = { column = \"kind\" }",
    "[[resource.embed]]",
    "field = \"phones\"",
    "entity = \"contact_phones\"",
    "parent_column = \"contact_id\"",
    "fields = { number = \"number\" }",
    "external_ref_field = \"ref\"",
    "external_ref_field = \"\"",
];

#[test]
fn any_text_is_a_mapping_or_an_error() {
    let text = prop_oneof![
        ".{0,200}",
        vec(proptest::sample::select(LINES), 0..30).prop_map(|lines| lines.join("\n")),
    ];
    check("mapping parse", text, |text| {
        let _ = parse(&text);
        Ok(())
    });
}

/// Template text: anything but `{` (which opens a column) and characters TOML will not take
/// in a basic string.
const TEXT: &str = "[^{\u{0}-\u{1f}\u{7f}]{0,6}";

#[test]
fn a_template_renders_its_text_and_columns_in_order() {
    let pieces = vec((TEXT, "[a-z_]{1,6}", ".{0,6}"), 0..5);
    check("templates", (pieces, TEXT), |(pieces, tail)| {
        let mut template = String::new();
        let mut want = String::new();
        let mut row = Row::new();
        for (text, column, value) in &pieces {
            template.push_str(&format!("{text}{{{column}}}"));
            // A column named twice takes its first value everywhere.
            let value = row
                .entry(column.clone())
                .or_insert_with(|| Value::String(value.clone()));
            want.push_str(text);
            want.push_str(&value.to_text());
        }
        template.push_str(&tail);
        want.push_str(&tail);
        let text = format!(
            "[[resource]]\nname = \"r\"\nroot = \"t\"\ncollection = \"c\"\n\
                 [resource.fields]\nout = {{ template = {} }}\n",
            Json::String(template.clone())
        );
        let mapping = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let resource = &mapping.resources[0];
        let doc = mapping
            .render(resource, "k", &row, &[], &mut |_, _| None)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(doc.get("out"), Some(&Json::String(want)));
        Ok(())
    });
}

fn timestamp_mapping() -> Mapping {
    parse(
        "[[resource]]\nname = \"r\"\nroot = \"t\"\ncollection = \"c\"\n\
         [resource.fields]\nat = { column = \"at\", type = \"timestamp\" }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The `at` field of the document for a row whose `at` column holds `value`.
fn render_at(mapping: &Mapping, value: Value) -> Result<Json, String> {
    let row = Row::from([("at".to_owned(), value)]);
    mapping
        .render(&mapping.resources[0], "k", &row, &[], &mut |_, _| None)
        .map(|mut doc| doc.remove("at").unwrap_or_default())
        .map_err(|e| e.to_string())
}

/// RFC 3339's shape in UTC (`2027-01-21T09:47:00.000Z`), parsed back to the instant.
fn rfc3339(json: &Json) -> Result<jiff::Timestamp, TestCaseError> {
    let text = json
        .as_str()
        .ok_or_else(|| TestCaseError::fail(format!("{json} is not text")))?;
    let b = text.as_bytes();
    let shaped = b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b.ends_with(b"Z")
        && &text[..4] != "0000";
    prop_assert!(shaped, "{text:?} is not RFC 3339 in UTC");
    text.parse()
        .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))
}

/// Epoch milliseconds become the instant they count, or an error; never text that is not
/// RFC 3339 (years before 1 have no RFC 3339 form).
#[test]
fn epoch_milliseconds_become_their_instant_or_an_error() {
    let mapping = timestamp_mapping();
    let millis = prop_oneof![
        any::<i64>(),
        -62_135_596_800_000i64 - 100_000_000_000..-62_135_596_800_000 + 100_000_000_000,
        // The edge of the year 1, to the millisecond.
        -62_135_596_800_000i64 - 2_000..-62_135_596_800_000 + 2_000,
        -100_000_000_000_000i64..300_000_000_000_000,
    ];
    check("epoch milliseconds", millis, |millis| {
        match render_at(&mapping, Value::Long(millis)) {
            Ok(json) => prop_assert_eq!(rfc3339(&json)?.as_millisecond(), millis),
            Err(message) => prop_assert!(message.starts_with("field at: "), "{message}"),
        }
        Ok(())
    });
}

/// A date-time written with any offset, a space or a `T`, and any fraction of a second is
/// the same instant in UTC.
#[test]
fn date_times_in_any_offset_become_the_same_instant() {
    let mapping = timestamp_mapping();
    let instant = (
        // 0001-01-01 … 9999-12-31, in seconds, with nanoseconds.
        -62_135_596_800i64..253_402_214_400,
        0..1_000_000_000i32,
    );
    check(
        "date-time text",
        (instant, -86_399i32..86_400, any::<bool>(), 0..4usize),
        |((seconds, nanos), offset, t, precision)| {
            let Ok(at) = jiff::Timestamp::new(seconds, nanos) else {
                return Ok(());
            };
            let nanos = [
                0,
                nanos / 1_000_000 * 1_000_000,
                nanos / 1_000 * 1_000,
                nanos,
            ][precision];
            let at = jiff::Timestamp::new(at.as_second(), nanos)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let offset = jiff::tz::Offset::from_seconds(offset / 60 * 60)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let local = at.to_zoned(jiff::tz::TimeZone::fixed(offset));
            if local.year() < 1 || local.year() > 9999 {
                return Ok(());
            }
            let separator = if t { "T" } else { " " };
            let text = local
                .strftime(&format!("%Y-%m-%d{separator}%H:%M:%S%.f%:z"))
                .to_string();
            let json = render_at(&mapping, Value::String(text.clone()))
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(rfc3339(&json)?, at, "{}", text);
            Ok(())
        },
    );
}
