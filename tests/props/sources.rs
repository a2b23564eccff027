//! The sources file: any text is a set of sources or an error naming the key at fault, and
//! every well-formed file reads back as the tables it lists.

use std::path::Path;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use serde_json::Value as Json;
use tandem_producer::config::Sources;

use crate::check;

fn parse(text: &str) -> tandem_producer::Result<Sources> {
    Sources::parse(text, Path::new("sources.toml"))
}

/// Lines a sources file is made of, valid and not, shuffled into files that get past the TOML
/// parser and into the checks.
const LINES: &[&str] = &[
    "[legacy]",
    "url = \"sqlite://legacy.db\"",
    "url = \"postgres://u@h/db\"",
    "url = \"mysql://h/db\"",
    "url = 3",
    "account_column = \"account_id\"",
    "accounts = [\"acme\", \"\"]",
    "identity_query = \"SELECT 1\"",
    "notify_channel = \"tandem\"",
    "[legacy.databases]",
    "acme = \"sqlite://acme.db\"",
    "[[tables]]",
    "name = \"contacts\"",
    "name = \"\"",
    "key = [\"id\"]",
    "key = []",
    "key = [\"id\", \"year\"]",
    "version_column = \"row_version\"",
    "occurred_at_column = \"changed_at_ms\"",
    "[tables.tombstones]",
    "table = \"contacts_deleted\"",
    "version_column = \"deleted_version\"",
    "[migration]",
    "enroll = \"slices\"",
    "enroll = \"nobody\"",
    "new_accounts = \"hold\"",
    "freeze = \"UPDATE x SET frozen = 1 WHERE account_id = $1\"",
];

#[test]
fn any_text_is_sources_or_an_error() {
    let text = prop_oneof![
        ".{0,200}",
        vec(proptest::sample::select(LINES), 0..30).prop_map(|lines| lines.join("\n")),
    ];
    check("sources parse", text, |text| {
        if let Err(e) = parse(&text) {
            prop_assert!(e.to_string().contains("sources.toml"), "{e}");
        }
        Ok(())
    });
}

/// Names as a sources file may hold them: mostly plain SQL identifiers, which are taken, and
/// now and then any printable text, which is refused.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z_][A-Za-z0-9_]{0,11}",
        1 => "[^\u{0}-\u{1f}\u{7f}]{1,12}",
    ]
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A file of well-formed TOML reads back as the tables it lists when every name is a plain
/// identifier and no table is listed twice; otherwise the error names the first key at fault.
#[test]
fn a_well_formed_file_reads_back_as_its_tables_or_names_the_key_at_fault() {
    let table = (name(), btree_set(name(), 1..4), name(), any::<bool>());
    check(
        "sources tables",
        (vec(table, 1..5), name()),
        |(tables, account_column)| {
            let quote = |s: &str| Json::String(s.to_owned()).to_string();
            let mut text = format!(
                "[legacy]\nurl = \"sqlite://legacy.db\"\naccount_column = {}\n",
                quote(&account_column)
            );
            for (name, key, version, occurred) in &tables {
                let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
                text.push_str(&format!(
                    "[[tables]]\nname = {}\nkey = [{}]\nversion_column = {}\n",
                    quote(name),
                    key.join(", "),
                    quote(version)
                ));
                if *occurred {
                    text.push_str("occurred_at_column = \"changed_at_ms\"\n");
                }
            }
            // The first problem, in the order the file is checked: the legacy section, then
            // each table's name, listing, key columns and version column.
            let mut fault =
                (!is_identifier(&account_column)).then(|| "legacy.account_column".to_owned());
            let mut seen = std::collections::HashSet::new();
            for (i, (name, key, version, _)) in tables.iter().enumerate() {
                if fault.is_some() {
                    break;
                }
                fault = if !is_identifier(name) || !seen.insert(name) {
                    Some(format!("tables[{i}].name"))
                } else if !key.iter().all(|k| is_identifier(k)) {
                    Some(format!("tables[{i}].key"))
                } else if !is_identifier(version) {
                    Some(format!("tables[{i}].version_column"))
                } else {
                    None
                };
            }
            match (parse(&text), fault) {
                (Ok(sources), None) => {
                    prop_assert_eq!(sources.tables.len(), tables.len());
                    for (read, (name, key, version, occurred)) in sources.tables.iter().zip(&tables)
                    {
                        prop_assert_eq!(&read.name, name);
                        prop_assert_eq!(
                            read.key.iter().collect::<Vec<_>>(),
                            key.iter().collect::<Vec<_>>()
                        );
                        prop_assert_eq!(&read.version_column, version);
                        prop_assert_eq!(read.occurred_at_column.is_some(), *occurred);
                    }
                }
                (Ok(_), Some(fault)) => prop_assert!(false, "taken despite {fault}:\n{text}"),
                (Err(e), None) => prop_assert!(false, "refused: {e}\n{text}"),
                (Err(e), Some(fault)) => {
                    prop_assert!(
                        e.to_string().contains(&fault),
                        "{e} does not name {fault}\n{text}"
                    )
                }
            }
            Ok(())
        },
    );
}
