//! Detections handed in by an existing sync process — through the library
//! ([`publish_detections`]), JSON lines (`tandem publish`) or HTTP
//! (`POST /v1/accounts/{account}/detections`) — validated, given epochs and event ids like
//! detected changes, and acknowledged only after Kafka acknowledged them.
//!
//! One detection per line:
//!
//! ```json
//! {"account_id":"acme","kind":"UPDATED","entity_type":"contacts","entity_id":"42","version":1234,"data":{"email":"a@example.com","balance":"12.50"},"occurred_at":1790000000000}
//! ```
//!
//! `kind` is `CREATED`, `UPDATED`, `DELETED` or `DATABASE_RESTORED` (which starts a new epoch);
//! `data` (required for `CREATED`/`UPDATED`) maps columns to null, booleans, integers, floats or
//! strings — exact decimals and timestamps as strings; `occurred_at` (epoch millis) is optional;
//! `account_id` may be left out where the account is given otherwise (the URL, `--account`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value as Json_;
use tandem_event::{check_account, ChangeEvent, Kind, Row, Value};
use tokio_util::sync::CancellationToken;

use crate::{now_millis, Error, Outbox, Result};

/// One detection handed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub account_id: Option<String>,
    pub kind: Kind,
    pub entity_type: String,
    pub entity_id: String,
    pub version: i64,
    pub data: Option<Row>,
    pub occurred_at: Option<i64>,
}

/// Why one line was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// 1-based line number.
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

const FIELDS: [&str; 7] = [
    "account_id",
    "kind",
    "entity_type",
    "entity_id",
    "version",
    "data",
    "occurred_at",
];

/// Parses one JSON line; the error names the field and what is wrong with it.
pub fn parse_detection(line: &str) -> Result<Detection, (String, String)> {
    let bad = |field: &str, message: &str| (field.to_owned(), message.to_owned());
    let value: Json_ =
        serde_json::from_str(line).map_err(|e| bad("(line)", &format!("not JSON: {e}")))?;
    let Json_::Object(object) = value else {
        return Err(bad("(line)", "must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(unknown, "unknown field"));
    }
    let text = |field: &str| match object.get(field) {
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::String(s)) => Ok(Some(s.clone())),
        Some(Json_::Number(n)) if field == "entity_id" => Ok(Some(n.to_string())),
        Some(_) => Err(bad(field, "must be a string")),
    };
    let kind = match text("kind")? {
        None => return Err(bad("kind", "is required")),
        Some(k) => match k.parse::<Kind>() {
            Ok(kind @ (Kind::Created | Kind::Updated | Kind::Deleted | Kind::DatabaseRestored)) => {
                kind
            }
            _ => {
                return Err(bad(
                    "kind",
                    "must be CREATED, UPDATED, DELETED or DATABASE_RESTORED",
                ))
            }
        },
    };
    let marker = kind == Kind::DatabaseRestored;
    let entity_type = text("entity_type")?.unwrap_or_default();
    let entity_id = text("entity_id")?.unwrap_or_default();
    if !marker && entity_type.is_empty() {
        return Err(bad("entity_type", "is required"));
    }
    if !marker && entity_id.is_empty() {
        return Err(bad("entity_id", "is required"));
    }
    let version = match object.get("version") {
        Some(Json_::Number(n)) => n
            .as_i64()
            .filter(|v| *v >= 0)
            .ok_or_else(|| bad("version", "must be a non-negative integer"))?,
        None => return Err(bad("version", "is required")),
        Some(_) => return Err(bad("version", "must be a non-negative integer")),
    };
    let occurred_at = match object.get("occurred_at") {
        None | Some(Json_::Null) => None,
        Some(Json_::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| bad("occurred_at", "must be epoch milliseconds"))?,
        ),
        Some(_) => return Err(bad("occurred_at", "must be epoch milliseconds")),
    };
    let data = match (kind, object.get("data")) {
        (Kind::Created | Kind::Updated, Some(Json_::Object(map))) => {
            let mut row = Row::new();
            for (column, value) in map {
                let value = match value {
                    Json_::Null => Value::Null,
                    Json_::Bool(b) => Value::Boolean(*b),
                    Json_::String(s) => Value::String(s.clone()),
                    Json_::Number(n) => match (n.as_i64(), n.as_f64()) {
                        (Some(i), _) => Value::Long(i),
                        (None, Some(f)) => Value::Double(f),
                        _ => {
                            return Err(bad(
                                &format!("data.{column}"),
                                "number out of range (send exact decimals as strings)",
                            ))
                        }
                    },
                    _ => {
                        return Err(bad(
                            &format!("data.{column}"),
                            "must be null, a boolean, a number or a string",
                        ))
                    }
                };
                row.insert(column.clone(), value);
            }
            Some(row)
        }
        (Kind::Created | Kind::Updated, _) => {
            return Err(bad("data", "an object of column values is required"))
        }
        (_, None | Some(Json_::Null)) => None,
        (_, Some(_)) => return Err(bad("data", "only CREATED and UPDATED carry data")),
    };
    Ok(Detection {
        account_id: text("account_id")?,
        kind,
        entity_type,
        entity_id,
        version,
        data,
        occurred_at,
    })
}

/// The longest line taken: a longer one is rejected without being parsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The largest request body `POST …/detections` reads; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Which account lines without an `account_id` belong to, and whether lines may name another.
#[derive(Debug, Clone, Copy)]
pub enum Accounts<'a> {
    /// Every line names its account.
    Named,
    /// Lines without an account belong to this one; others may name theirs.
    Default(&'a str),
    /// Every line belongs to this account (the URL's); naming another is an error.
    Only(&'a str),
}

/// Parses JSON lines (blank lines skipped): the good detections with their line numbers, and
/// a rejection per bad line.
pub fn parse_lines(
    text: &str,
    accounts: Accounts<'_>,
) -> (Vec<(usize, Detection)>, Vec<Rejection>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let reject = |(field, message): (String, String)| Rejection {
            line: line_no,
            field,
            message,
        };
        if line.len() > MAX_LINE_BYTES {
            bad.push(reject((
                "(line)".into(),
                format!("longer than {MAX_LINE_BYTES} bytes"),
            )));
            continue;
        }
        let parsed = parse_detection(line).and_then(|detection| {
            match detection.account_id.as_deref().map(check_account) {
                Some(Err(problem)) => Err(("account_id".into(), problem)),
                _ => Ok(detection),
            }
        });
        match parsed {
            Ok(mut detection) => match (accounts, &detection.account_id) {
                (Accounts::Only(expected), Some(named)) if named != expected => bad.push(reject((
                    "account_id".into(),
                    format!("names {named:?}, but the detections are for {expected:?}"),
                ))),
                (Accounts::Only(account) | Accounts::Default(account), None) => {
                    detection.account_id = Some(account.to_owned());
                    good.push((line_no, detection));
                }
                (Accounts::Named, None) => {
                    bad.push(reject(("account_id".into(), "is required".into())))
                }
                _ => good.push((line_no, detection)),
            },
            Err(e) => bad.push(reject(e)),
        }
    }
    (good, bad)
}

/// Publishes detections as change events in the accounts' current epochs (a
/// `DATABASE_RESTORED` moves its account to the next one), and returns them once Kafka
/// acknowledged every one.
pub async fn publish_detections(
    outbox: &Outbox,
    detections: &[Detection],
) -> Result<Vec<ChangeEvent>> {
    // Per account, in the order handed in; accounts are independent of one another.
    let mut by_account: BTreeMap<&str, Vec<&Detection>> = BTreeMap::new();
    for detection in detections {
        let account = detection.account_id.as_deref().ok_or_else(|| {
            Error::Detection(format!(
                "{} {}/{} names no account",
                detection.kind, detection.entity_type, detection.entity_id
            ))
        })?;
        by_account.entry(account).or_default().push(detection);
    }
    let detected_at = now_millis();
    let mut published = Vec::with_capacity(detections.len());
    for (account, detections) in by_account {
        let mut state = outbox.store().account(account).await?;
        let mut restored = false;
        let mut events = Vec::with_capacity(detections.len());
        for detection in detections {
            if detection.kind == Kind::DatabaseRestored {
                state.epoch += 1;
                restored = true;
            }
            let mut event = ChangeEvent::new(
                account,
                detection.kind,
                &detection.entity_type,
                &detection.entity_id,
                state.epoch,
                detection.version,
            );
            event.data = detection.data.clone();
            event.occurred_at = detection.occurred_at.unwrap_or(detected_at);
            event.detected_at = detected_at;
            events.push(event);
        }
        outbox.send_handed_in(account, &events).await?;
        if restored {
            outbox.store().set_account(account, &state).await?;
        }
        published.extend(events);
    }
    Ok(published)
}

#[derive(Debug, Serialize)]
struct Answer {
    accepted: usize,
    rejected: Vec<Rejection>,
}

async fn post_detections(
    State(outbox): State<Arc<Outbox>>,
    Path(account): Path<String>,
    body: String,
) -> Response {
    if let Err(problem) = check_account(&account) {
        let error = serde_json::json!({ "error": format!("account in the path: {problem}") });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let (good, rejected) = parse_lines(&body, Accounts::Only(&account));
    let detections: Vec<Detection> = good.into_iter().map(|(_, d)| d).collect();
    if let Err(e) = publish_detections(&outbox, &detections).await {
        let error = serde_json::json!({ "error": e.to_string() });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response();
    }
    let status = if rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let answer = Answer {
        accepted: detections.len(),
        rejected,
    };
    (status, Json(answer)).into_response()
}

/// The producer's HTTP API: `POST /v1/accounts/{account}/detections` with JSON lines, bodies
/// up to [`MAX_BODY_BYTES`] (413 beyond). It checks no credentials: whoever serves it puts it
/// behind its own (`tandem produce --http` requires a bearer token).
pub fn router(outbox: Outbox) -> Router {
    Router::new()
        .route("/v1/accounts/{account}/detections", post(post_detections))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(outbox))
}

/// Serves [`router`] on `addr` until `shutdown`, without credentials (for embedding and tests
/// on loopback); returns the bound address once listening.
pub async fn serve(
    addr: SocketAddr,
    outbox: Outbox,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    let app = router(outbox);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_lines_are_told_apart_with_line_and_field() {
        let text = [
            r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":5,"data":{"email":"a@b","n":2,"x":1.5,"ok":true,"gone":null}}"#,
            r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"2","version":"five","data":{}}"#,
            "",
            r#"{"kind":"DELETED","entity_type":"contacts","entity_id":3,"version":6}"#,
            r#"not json"#,
            r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"4","version":7}"#,
            r#"{"kind":"EXPLODED","entity_type":"contacts","entity_id":"4","version":7}"#,
            r#"{"kind":"DELETED","entity_type":"contacts","entity_id":"5","version":8,"colour":"red"}"#,
            r#"{"account_id":"other","kind":"DELETED","entity_type":"c","entity_id":"5","version":8}"#,
            r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"6","version":9,"data":{"tags":[1]}}"#,
        ]
        .join("\n");
        let (good, bad) = parse_lines(&text, Accounts::Only("acme"));
        assert_eq!(good.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(good[1].1.entity_id, "3");
        assert_eq!(
            good[0].1.data.as_ref().map(|d| d["n"].clone()),
            Some(Value::Long(2))
        );
        let fields: Vec<(usize, &str)> = bad.iter().map(|r| (r.line, r.field.as_str())).collect();
        assert_eq!(
            fields,
            [
                (2, "version"),
                (5, "(line)"),
                (6, "data"),
                (7, "kind"),
                (8, "colour"),
                (9, "account_id"),
                (10, "data.tags")
            ]
        );
    }
}
