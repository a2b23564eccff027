//! The part of the Confluent Schema Registry REST API that Tandem uses, so the Confluent
//! framing can be tested end to end: registering a schema under a subject
//! (`POST /subjects/{subject}/versions`), which answers the same id for the same schema, and
//! looking a schema up by id (`GET /schemas/ids/{id}`). `GET /subjects` lists the subjects.
//! Schemas are kept in memory: a restarted simulator starts with none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::state::AppState;

/// Registered schemas: the id of one is its index + 1.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    schemas: Vec<String>,
    subjects: BTreeMap<String, Vec<u32>>,
}

pub(crate) type SharedRegistry = Arc<Mutex<Registry>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(schema))
}

/// The registry's own media type; clients send and accept it or plain JSON.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// An error as the registry words them: its own code beside the HTTP status.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    answer(status, json!({"error_code": code, "message": message}))
}

async fn register(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    let Some(schema) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|request| request.get("schema")?.as_str().map(str::to_owned))
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "the body must be {\"schema\": \"<Avro schema as a string>\"}",
        );
    };
    // The same schema, however it is spaced, is the same schema.
    let Ok(parsed) = serde_json::from_str::<Value>(&schema) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "the schema is not JSON",
        );
    };
    let mut registry = state
        .registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let existing = registry
        .schemas
        .iter()
        .position(|known| serde_json::from_str::<Value>(known).ok().as_ref() == Some(&parsed));
    let id = match existing {
        Some(index) => index as u32 + 1,
        None => {
            registry.schemas.push(schema);
            registry.schemas.len() as u32
        }
    };
    let versions = registry.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    answer(StatusCode::OK, json!({"id": id}))
}

async fn schema(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let registry = state
        .registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let found = id
        .parse::<usize>()
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|index| registry.schemas.get(index));
    match found {
        Some(schema) => answer(StatusCode::OK, json!({"schema": schema})),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn subjects(State(state): State<AppState>) -> Response {
    let registry = state
        .registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    answer(
        StatusCode::OK,
        json!(registry.subjects.keys().collect::<Vec<_>>()),
    )
}
