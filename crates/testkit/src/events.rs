//! Change events made by hand, in the demo's domain.

use tandem_event::{ChangeEvent, Kind, Row, Value};

/// A contact of the demo's domain as the producer would publish it: created when `version`
/// equals `id`, else updated.
pub fn contact(account: &str, id: i64, version: i64, email: &str) -> ChangeEvent {
    let kind = if version == id {
        Kind::Created
    } else {
        Kind::Updated
    };
    let mut event = ChangeEvent::new(account, kind, "contacts", &id.to_string(), 0, version);
    let row: Row = [
        ("id", Value::Long(id)),
        ("first_name", Value::String(format!("First{id}"))),
        ("last_name", Value::String("Last".into())),
        ("email", Value::String(email.into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    event.data = Some(row);
    event.occurred_at = tandem_event::now_millis();
    event
}
