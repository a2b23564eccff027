//! The sources file: which legacy database(s) to watch and which tables in them.
//!
//! ```toml
//! [legacy]
//! url = "sqlite://legacy.db"        # one shared database ...
//! account_column = "account_id"     # ... whose rows carry the account
//!
//! [[tables]]
//! name = "contacts"
//! key = ["id"]
//! version_column = "row_version"
//! occurred_at_column = "changed_at_ms"   # optional: when the change happened, epoch millis
//! ```
//!
//! One database per account is written as `[legacy.databases]` with `account = "url"` entries
//! instead of `url` and `account_column`. An optional `[migration]` section holds the
//! migration's policy ([`tandem_migration::Policy`]): enrolment by slice, new accounts, and the
//! freeze statement a cutover runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub legacy: Legacy,
    pub tables: Vec<Table>,
    /// How accounts are enrolled and cut over; every account found is enrolled by default.
    #[serde(default)]
    pub migration: tandem_migration::Policy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Legacy {
    /// The shared database holding every account.
    pub url: Option<String>,
    /// The column that names the account in every table of the shared database.
    pub account_column: Option<String>,
    /// The accounts to watch; all accounts found in the tables when absent.
    pub accounts: Option<Vec<String>>,
    /// One database per account: account → URL.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// A query returning one value that changes when the database is restored from a backup
    /// (e.g. a restore id or the database's creation time).
    pub identity_query: Option<String>,
    /// A query returning the database's current version counter (e.g. the sequence's
    /// last value); exact restore detection even when the newest rows were deleted.
    pub version_query: Option<String>,
    /// PostgreSQL: a `LISTEN` channel whose notifications wake the detector early. A payload
    /// naming an account wakes only that account's cycle.
    pub notify_channel: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    pub key: Vec<String>,
    pub version_column: String,
    pub occurred_at_column: Option<String>,
    /// A legacy table recording deleted keys; used instead of the differencing check.
    pub tombstones: Option<Tombstones>,
}

/// A tombstone table: the same key column(s) (and account column) as its table, and a version
/// column stamped when the row was deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstones {
    pub table: String,
    pub version_column: String,
}

/// Where the legacy data lives, once the sources file is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Shared {
        url: String,
        account_column: String,
        accounts: Option<Vec<String>>,
    },
    PerAccount(BTreeMap<String, String>),
}

impl Sources {
    /// Reads and checks a sources file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses sources from text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let sources: Sources = from_toml(text).map_err(|(key, message)| Error::Config {
            file: origin.to_path_buf(),
            key,
            message,
        })?;
        sources.check(origin)?;
        Ok(sources)
    }

    fn check(&self, origin: &Path) -> Result<()> {
        let fail = |key: String, message: &str| Error::Config {
            file: origin.to_path_buf(),
            key,
            message: message.to_owned(),
        };
        self.layout(origin)?;
        self.migration
            .check()
            .map_err(|(key, message)| fail(format!("migration.{key}"), &message))?;
        if self.tables.is_empty() {
            return Err(fail(
                "tables".into(),
                "at least one [[tables]] entry is needed",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, table) in self.tables.iter().enumerate() {
            let key = |k: &str| format!("tables[{i}].{k} ({})", table.name);
            if !is_identifier(&table.name) {
                return Err(fail(key("name"), "must be a plain SQL identifier"));
            }
            if !seen.insert(&table.name) {
                return Err(fail(key("name"), "is listed twice"));
            }
            if table.key.is_empty() {
                return Err(fail(key("key"), "needs at least one key column"));
            }
            if let Some(tomb) = &table.tombstones {
                if !is_identifier(&tomb.table) || !is_identifier(&tomb.version_column) {
                    return Err(fail(
                        key("tombstones"),
                        "table and version_column must be plain SQL identifiers",
                    ));
                }
            }
            let columns = table
                .key
                .iter()
                .map(|c| ("key", c))
                .chain([("version_column", &table.version_column)])
                .chain(
                    table
                        .occurred_at_column
                        .iter()
                        .map(|c| ("occurred_at_column", c)),
                );
            for (field, column) in columns {
                if !is_identifier(column) {
                    return Err(fail(
                        key(field),
                        &format!("column {column:?} is not a plain SQL identifier"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The checked layout of the legacy data.
    pub fn layout(&self, origin: &Path) -> Result<Layout> {
        let legacy = &self.legacy;
        let fail = |key: &str, message: &str| Error::Config {
            file: origin.to_path_buf(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        match (&legacy.url, legacy.databases.is_empty()) {
            (Some(url), true) => {
                let account_column = legacy.account_column.clone().ok_or_else(|| {
                    fail(
                        "legacy.account_column",
                        "a shared database needs the column that names the account",
                    )
                })?;
                if !is_identifier(&account_column) {
                    return Err(fail(
                        "legacy.account_column",
                        "must be a plain SQL identifier",
                    ));
                }
                Ok(Layout::Shared {
                    url: url.clone(),
                    account_column,
                    accounts: legacy.accounts.clone(),
                })
            }
            (None, false) => {
                if legacy.account_column.is_some() || legacy.accounts.is_some() {
                    return Err(fail(
                        "legacy.databases",
                        "one database per account takes neither account_column nor accounts",
                    ));
                }
                Ok(Layout::PerAccount(legacy.databases.clone()))
            }
            (Some(_), false) => Err(fail(
                "legacy",
                "set either url (one shared database) or databases (one per account), not both",
            )),
            (None, true) => Err(fail(
                "legacy",
                "set url (one shared database) or databases (one per account)",
            )),
        }
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Identifiers are spliced into SQL, so only plain names are accepted.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    use super::*;

    fn parse(text: &str) -> Result<Sources> {
        Sources::parse(text, Path::new("sources.toml"))
    }

    #[test]
    fn shared_layout_parses() -> Result<()> {
        let s = parse(
            r#"
            [legacy]
            url = "sqlite://x.db"
            account_column = "account_id"
            [[tables]]
            name = "contacts"
            key = ["id"]
            version_column = "row_version"
            "#,
        )?;
        assert!(matches!(s.layout(Path::new("s"))?, Layout::Shared { .. }));
        Ok(())
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            ("[legacy]\nurl = \"sqlite://x\"\n[[tables]]\nname=\"t\"\nkey=[\"id\"]\nversion_column=\"v\"", "legacy.account_column"),
            ("[legacy]\nurl = \"sqlite://x\"\naccount_column=\"a\"\n[[tables]]\nname=\"t;drop\"\nkey=[\"id\"]\nversion_column=\"v\"", "tables[0].name"),
            ("[legacy]\nurl = \"sqlite://x\"\naccount_column=\"a\"\n[[tables]]\nname=\"t\"\nkey=[]\nversion_column=\"v\"", "tables[0].key"),
            ("[legacy]\nurl = \"sqlite://x\"\naccount_column=\"a\"\ntables = 3", "legacy.tables: unknown field"),
            // Typos are named by their path and line, not by a byte offset.
            ("[legacy]\nurl = \"sqlite://x\"\naccount_column=\"a\"\n[[tables]]\nname=\"t\"\nkey=[\"id\"]\nversion_colum=\"v\"", "tables[0].version_colum: unknown field `version_colum`"),
            ("[legacy]\nurl = \"sqlite://x\"\naccount_column=\"a\"\n[[tables]]\nname=\"t\"\nkey=[\"id\"]\nversion_colum=\"v\"", "(line 7)"),
            ("[legacy\nurl = 1", "(line 1)"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains("sources.toml") && err.contains(key), "{err}");
        }
    }
}
