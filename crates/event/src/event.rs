//! The change event and its values.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A typed column value as it travels in an event. Exact decimals and timestamps travel as
/// [`Value::String`], never as doubles, so no precision is lost on the way.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Boolean(bool),
    Long(i64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// The value as the text it would show in a key or a template.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Boolean(b) => b.to_string(),
            Value::Long(n) => n.to_string(),
            Value::Double(d) => d.to_string(),
            Value::String(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }
}

/// Now, in epoch milliseconds: the unit of every timestamp in an event, and the clock leases
/// are compared on. `TANDEM_FAULT_CLOCK_OFFSET_MS` (signed milliseconds) moves this process's
/// clock, to test members whose clocks disagree (`tests/chaos.sh clock-skew`).
pub fn now_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    now.saturating_add(clock_offset())
}

/// The injected clock offset, read once.
fn clock_offset() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let Ok(text) = std::env::var("TANDEM_FAULT_CLOCK_OFFSET_MS") else {
            return 0;
        };
        text.trim().parse().unwrap_or_else(|_| {
            eprintln!("tandem: TANDEM_FAULT_CLOCK_OFFSET_MS={text:?} is not milliseconds; ignored");
            0
        })
    })
}

/// The longest account id taken from a caller.
pub const MAX_ACCOUNT_BYTES: usize = 256;

/// Checks an account id handed in from outside (a detection, an HTTP path): not empty, at
/// most 256 bytes, no control characters; the error says which.
pub fn check_account(account: &str) -> std::result::Result<(), String> {
    if account.is_empty() {
        Err("must not be empty".into())
    } else if account.len() > MAX_ACCOUNT_BYTES {
        Err(format!("longer than {MAX_ACCOUNT_BYTES} bytes"))
    } else if account.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// A row's after-image: column name → value.
pub type Row = BTreeMap<String, Value>;

/// What happened. Names match the Avro enum symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Created,
    Updated,
    Deleted,
    DatabaseRestored,
    SnapshotBegin,
    SnapshotEnd,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Created,
        Kind::Updated,
        Kind::Deleted,
        Kind::DatabaseRestored,
        Kind::SnapshotBegin,
        Kind::SnapshotEnd,
    ];

    /// The Avro enum symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Kind::Created => "CREATED",
            Kind::Updated => "UPDATED",
            Kind::Deleted => "DELETED",
            Kind::DatabaseRestored => "DATABASE_RESTORED",
            Kind::SnapshotBegin => "SNAPSHOT_BEGIN",
            Kind::SnapshotEnd => "SNAPSHOT_END",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.symbol() == s)
            .ok_or_else(|| format!("unknown change kind {s:?}"))
    }
}

/// One change of one legacy row, or an account-level marker (restore, snapshot bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub event_id: String,
    pub account_id: String,
    pub kind: Kind,
    pub entity_type: String,
    pub entity_id: String,
    pub epoch: i64,
    pub version: i64,
    pub data: Option<Row>,
    pub snapshot_id: Option<String>,
    pub occurred_at: i64,
    pub detected_at: i64,
}

impl ChangeEvent {
    /// An event with its deterministic id filled in, no data and zero timestamps.
    pub fn new(
        account_id: &str,
        kind: Kind,
        entity_type: &str,
        entity_id: &str,
        epoch: i64,
        version: i64,
    ) -> Self {
        ChangeEvent {
            event_id: event_id(account_id, entity_type, entity_id, epoch, version, kind),
            account_id: account_id.to_owned(),
            kind,
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            epoch,
            version,
            data: None,
            snapshot_id: None,
            occurred_at: 0,
            detected_at: 0,
        }
    }
}

/// The canonical string of a key (`entity_id`): the parts' text joined with `|`, with `\\` and
/// `|` inside a part escaped by a backslash. A single-column key whose text has neither is just
/// that text.
pub fn canonical_key(parts: &[Value]) -> String {
    parts
        .iter()
        .map(|v| v.to_text().replace('\\', "\\\\").replace('|', "\\|"))
        .collect::<Vec<_>>()
        .join("|")
}

/// The deterministic event id: the same detection published twice has the same id.
///
/// Each part is length-prefixed before hashing so that `("ab", "c")` and `("a", "bc")` differ.
pub fn event_id(
    account_id: &str,
    entity_type: &str,
    entity_id: &str,
    epoch: i64,
    version: i64,
    kind: Kind,
) -> String {
    let mut hash = Sha256::new();
    for part in [account_id, entity_type, entity_id, kind.symbol()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(epoch.to_be_bytes());
    hash.update(version.to_be_bytes());
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_deterministic_and_separates_every_part() {
        let base = event_id("a", "t", "1", 0, 5, Kind::Created);
        assert_eq!(base, event_id("a", "t", "1", 0, 5, Kind::Created));
        assert_eq!(base.len(), 32);
        let others = [
            event_id("b", "t", "1", 0, 5, Kind::Created),
            event_id("a", "u", "1", 0, 5, Kind::Created),
            event_id("a", "t", "2", 0, 5, Kind::Created),
            event_id("a", "t", "1", 1, 5, Kind::Created),
            event_id("a", "t", "1", 0, 6, Kind::Created),
            event_id("a", "t", "1", 0, 5, Kind::Updated),
            event_id("at", "", "1", 0, 5, Kind::Created),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn canonical_keys_keep_composite_parts_apart() {
        let key = |parts: &[&str]| {
            canonical_key(
                &parts
                    .iter()
                    .map(|p| Value::String(p.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(canonical_key(&[Value::Long(42)]), "42");
        assert_eq!(key(&["a", "b"]), "a|b");
        assert_ne!(key(&["a|b", "c"]), key(&["a", "b|c"]));
        assert_ne!(key(&["a\\", "b"]), key(&["a\\|b"]));
    }

    #[test]
    fn kind_symbols_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(kind.symbol().parse::<Kind>(), Ok(kind));
        }
        assert!("EXPLODED".parse::<Kind>().is_err());
    }
}
