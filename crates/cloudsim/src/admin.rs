//! Routes outside the simulated platform: the audit log (routed with `/v1`, behind the same
//! credentials), fault settings, tokens and health. Faults
//! never apply here, so tests can always inspect and repair the server.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use crate::api_error::ApiError;
use crate::auth;
use crate::faults::Faults;
use crate::state::AppState;

const DEFAULT_AUDIT_PAGE: u32 = 10_000;
const MAX_AUDIT_PAGE: u32 = 100_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route(
            "/admin/corrupt/{account}/{collection}/{id}",
            put(corrupt_body).delete(corrupt_delete),
        )
        .route("/admin/tokens", get(auth::counts))
        .route("/admin/tokens/revoke", post(auth::revoke))
        .route("/oauth/token", post(auth::token))
        .route("/health", get(health))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditParams {
    account: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let limit = match params.limit {
        None => DEFAULT_AUDIT_PAGE,
        Some(0) => return Err(ApiError::BadRequest("limit must be at least 1".to_owned())),
        Some(limit) => limit.min(MAX_AUDIT_PAGE),
    };
    let (entries, next) = state
        .store
        .audit(params.account.as_deref(), params.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(json!({ "entries": entries, "next": next })))
}

async fn get_faults(State(state): State<AppState>) -> Json<Faults> {
    Json(state.faults.read().await.clone())
}

async fn put_faults(State(state): State<AppState>, body: Bytes) -> Result<Json<Faults>, ApiError> {
    let faults: Faults = serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest(format!("invalid faults: {error}")))?;
    faults.validate().map_err(ApiError::BadRequest)?;
    info!(?faults, "fault settings replaced");
    *state.faults.write().await = faults.clone();
    Ok(Json(faults))
}

/// Replaces a document's body behind the API's back (no faults, no idempotency; audited as
/// `admin-update`). For tests of what Tandem does about a cloud it did not change itself.
async fn corrupt_body(
    State(state): State<AppState>,
    Path((account, collection, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let doc = match serde_json::from_slice(&body) {
        Ok(Value::Object(doc)) => doc,
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".to_owned(),
            ))
        }
    };
    corrupted(
        state
            .store
            .corrupt(&account, &collection, &id, Some(doc))
            .await?,
    )
}

/// Removes a document behind the API's back (audited as `admin-delete`).
async fn corrupt_delete(
    State(state): State<AppState>,
    Path((account, collection, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    corrupted(
        state
            .store
            .corrupt(&account, &collection, &id, None)
            .await?,
    )
}

fn corrupted(found: bool) -> Result<StatusCode, ApiError> {
    if found {
        info!("a document was corrupted through the admin API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such document".to_owned()))
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
