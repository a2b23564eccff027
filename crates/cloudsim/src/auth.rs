//! Authentication as SaaS APIs ask for it: an OAuth2 token endpoint for the client
//! credentials grant, bearer tokens that expire, and a static API token. What Tandem calls
//! (`/v1` and the audit log) requires a credential; `/health`, the token endpoint and the
//! simulator's own controls (faults, corruption, tokens) do not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use crate::state::AppState;

/// Which credentials the simulator accepts.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// The OAuth2 client allowed to take tokens at `/oauth/token`, with its secret.
    pub client: Option<(String, String)>,
    /// How long a token from `/oauth/token` is valid.
    pub token_ttl: Duration,
    /// A token accepted as `Authorization: Bearer …` or in the `X-Api-Key` header.
    pub static_token: Option<String>,
}

/// Tokens handed out and the counts a test reads.
#[derive(Debug)]
pub(crate) struct Tokens {
    options: AuthOptions,
    live: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
    refused: AtomicU64,
}

pub(crate) type SharedTokens = Arc<Tokens>;

impl Tokens {
    pub(crate) fn new(options: AuthOptions) -> SharedTokens {
        Arc::new(Tokens {
            options,
            live: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if let Some(expected) = &self.options.static_token {
            if bearer == Some(expected.as_str()) || api_key == Some(expected.as_str()) {
                return true;
            }
        }
        let Some(token) = bearer else { return false };
        let now = Instant::now();
        let mut live = self.live();
        live.retain(|_, expires| *expires > now);
        live.contains_key(token)
    }
}

/// Requires a valid credential; answers 401 otherwise.
pub(crate) async fn require(
    State(tokens): State<Option<SharedTokens>>,
    request: Request,
    next: Next,
) -> Response {
    match tokens {
        Some(tokens) if !tokens.accepts(request.headers()) => {
            tokens.refused.fetch_add(1, Ordering::Relaxed);
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "missing, unknown or expired credentials"})),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
        _ => next.run(request).await,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `POST /oauth/token`: the client credentials grant, the client authenticated with HTTP
/// Basic or in the form (RFC 6749 §2.3.1), answered as §5.1 and §5.2 say.
pub(crate) async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenRequest>,
) -> Response {
    let oauth_error =
        |status: StatusCode, error: &str| (status, Json(json!({"error": error}))).into_response();
    let Some(tokens) = state.tokens else {
        return oauth_error(StatusCode::NOT_FOUND, "invalid_request");
    };
    let Some((client_id, client_secret)) = &tokens.options.client else {
        return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    };
    if form.grant_type != "client_credentials" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let presented = basic_credentials(&headers).or(form.client_id.zip(form.client_secret));
    if presented.as_ref() != Some(&(client_id.clone(), client_secret.clone())) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let access_token = format!("tok-{:032x}", rand::random::<u128>());
    let ttl = tokens.options.token_ttl;
    tokens
        .live()
        .insert(access_token.clone(), Instant::now() + ttl);
    tokens.issued.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().max(1),
    }))
    .into_response()
}

/// `client_id:client_secret` from an `Authorization: Basic` header, form-URL-decoded as
/// RFC 6749 §2.3.1 asks.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

fn form_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `GET /admin/tokens`: tokens issued and requests refused so far.
pub(crate) async fn counts(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(match state.tokens {
        Some(tokens) => json!({
            "issued": tokens.issued.load(Ordering::Relaxed),
            "refused": tokens.refused.load(Ordering::Relaxed),
            "live": tokens.live().len(),
        }),
        None => json!({"issued": 0, "refused": 0, "live": 0}),
    })
}

/// `POST /admin/tokens/revoke`: every token issued so far stops working at once, as when a
/// provider rotates its signing keys; clients must take new ones.
pub(crate) async fn revoke(State(state): State<AppState>) -> StatusCode {
    if let Some(tokens) = state.tokens {
        tokens.live().clear();
    }
    StatusCode::NO_CONTENT
}
