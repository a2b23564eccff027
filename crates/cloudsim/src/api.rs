//! The HTTP surface: routing and the `/v1` document handlers.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::debug;

use crate::admin;
use crate::api_error::{error_response, ApiError, ApiResult};
use crate::auth;
use crate::faults;
use crate::state::AppState;
use crate::store::CreateOutcome;

const DEFAULT_PAGE: u32 = 1000;
const MAX_PAGE: u32 = 10_000;

pub(crate) fn router(state: AppState) -> Router {
    // route_layer: faults apply only to matched /v1 routes, never to /admin or /health.
    let v1 = Router::new()
        .route(
            "/v1/accounts/{account}/{collection}",
            get(list).post(create),
        )
        .route(
            "/v1/accounts/{account}/{collection}/{id}",
            get(fetch).put(replace).delete(remove),
        )
        .route_layer(middleware::from_fn_with_state(
            state.faults.clone(),
            faults::inject,
        ))
        .route("/admin/audit", get(admin::audit))
        .route_layer(middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::require,
        ));
    Router::new()
        .merge(v1)
        .merge(admin::routes())
        .merge(crate::registry::routes())
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route".to_owned(),
            )
        })
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct CollectionPath {
    account: String,
    collection: String,
}

impl CollectionPath {
    fn validate(self) -> ApiResult<Self> {
        validate_account(&self.account)?;
        validate_collection(&self.collection)?;
        Ok(self)
    }
}

#[derive(Debug, Deserialize)]
struct DocumentPath {
    account: String,
    collection: String,
    id: String,
}

impl DocumentPath {
    fn validate(self) -> ApiResult<Self> {
        validate_account(&self.account)?;
        validate_collection(&self.collection)?;
        Ok(self)
    }
}

fn validate_account(account: &str) -> ApiResult<()> {
    let valid = !account.is_empty()
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid account name {account:?}: expected [A-Za-z0-9_.-]+"
        )))
    }
}

fn validate_collection(collection: &str) -> ApiResult<()> {
    let valid = !collection.is_empty()
        && collection
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid collection name {collection:?}: expected [a-z0-9_-]+"
        )))
    }
}

/// The request body, which must be a JSON object. Parsed by hand rather than with `Json` so
/// that a missing content type is accepted and every failure is a JSON 400.
fn json_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(ApiError::BadRequest(
            "request body must be a JSON object".to_owned(),
        )),
        Err(error) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {error}"
        ))),
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() => Ok(Some(key)),
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be a non-empty visible ASCII string".to_owned(),
        )),
    }
}

/// Replays exactly what was stored: same status, same body bytes.
fn stored_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn create(
    State(state): State<AppState>,
    path: Result<Path<CollectionPath>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Path(path) = path?;
    let path = path.validate()?;
    let doc = json_object(&body)?;
    let key = idempotency_key(&headers)?;
    let outcome = state
        .store
        .create(&path.account, &path.collection, doc, key)
        .await?;
    match outcome {
        CreateOutcome::Created(response) => {
            debug!(account = %path.account, collection = %path.collection, "created document");
            Ok(stored_response(response.status, response.body))
        }
        CreateOutcome::Replayed(response) => {
            debug!(account = %path.account, key, "replayed idempotent create");
            Ok(stored_response(response.status, response.body))
        }
        CreateOutcome::KeyConflict => Err(ApiError::Unprocessable(format!(
            "Idempotency-Key {:?} was already used with a different request",
            key.unwrap_or_default()
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<u32>,
    after: Option<String>,
    /// Only documents whose `external_ref` is this: how a client without idempotency keys
    /// finds what it created before.
    external_ref: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    path: Result<Path<CollectionPath>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(path) = path?;
    let path = path.validate()?;
    let Query(params) = params?;
    let limit = match params.limit {
        None => DEFAULT_PAGE,
        Some(0) => return Err(ApiError::BadRequest("limit must be at least 1".to_owned())),
        Some(limit) => limit.min(MAX_PAGE),
    };
    let after_seq = match params.after.as_deref() {
        None => 0,
        Some(cursor) => cursor_seq(&path.collection, cursor)?,
    };
    let page = state
        .store
        .list(
            &path.account,
            &path.collection,
            after_seq,
            limit,
            params.external_ref.as_deref(),
        )
        .await?;
    Ok(Json(json!({ "items": page.items, "next": page.next })))
}

/// The sequence number inside an id of the form `{collection}_{n}`. Parsing it, instead of
/// looking the id up, keeps paging correct when the cursor document has been deleted.
fn cursor_seq(collection: &str, cursor: &str) -> ApiResult<i64> {
    cursor
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "after={cursor:?} is not an id of collection {collection}"
            ))
        })
}

async fn fetch(
    State(state): State<AppState>,
    path: Result<Path<DocumentPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(path) = path?;
    let path = path.validate()?;
    match state
        .store
        .get(&path.account, &path.collection, &path.id)
        .await?
    {
        Some(doc) => Ok(Json(doc)),
        None => Err(not_found(&path)),
    }
}

async fn replace(
    State(state): State<AppState>,
    path: Result<Path<DocumentPath>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Path(path) = path?;
    let path = path.validate()?;
    let doc = json_object(&body)?;
    let key = idempotency_key(&headers)?;
    match state
        .store
        .replace(&path.account, &path.collection, &path.id, doc, key)
        .await?
    {
        Some(doc) => Ok(Json(doc)),
        None => Err(not_found(&path)),
    }
}

async fn remove(
    State(state): State<AppState>,
    path: Result<Path<DocumentPath>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let Path(path) = path?;
    let path = path.validate()?;
    let key = idempotency_key(&headers)?;
    if state
        .store
        .delete(&path.account, &path.collection, &path.id, key)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&path))
    }
}

fn not_found(path: &DocumentPath) -> ApiError {
    ApiError::NotFound(format!(
        "no document {} in collection {} of account {}",
        path.id, path.collection, path.account
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_account("Acme.eu-1_x").is_ok());
        assert!(validate_account("a b").is_err());
        assert!(validate_account("").is_err());
        assert!(validate_collection("user_groups-2").is_ok());
        assert!(validate_collection("Users").is_err());
        assert!(validate_collection("a.b").is_err());
    }

    #[test]
    fn cursor_is_parsed_from_the_id() {
        assert!(matches!(
            cursor_seq("user_groups", "user_groups_42"),
            Ok(42)
        ));
        assert!(cursor_seq("users", "groups_42").is_err());
        assert!(cursor_seq("users", "users_x").is_err());
    }
}
