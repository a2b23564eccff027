//! Who may change state through Tandem's HTTP ports: the producer's detections and the
//! consumer's account actions need `Authorization: Bearer <token>`, the token read from
//! `TANDEM_API_TOKEN` or the file `TANDEM_API_TOKEN_FILE` names. Reads (`/metrics`, the probes,
//! the status page) stay open; the ports bind to loopback unless told otherwise
//! ([`listen_addr`]). docs/SECURITY.md gives the threat model.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// The environment variable holding the token (or `…_FILE`, a file holding it).
pub const TOKEN_VARIABLE: &str = "TANDEM_API_TOKEN";

/// Tokens shorter than this are refused at start-up: they can be guessed.
const SHORTEST_TOKEN: usize = 16;

/// The bearer token state-changing requests must carry; none configured turns them off.
#[derive(Clone, Default)]
pub struct ApiToken(Option<Arc<str>>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("ApiToken").field(&shown).finish()
    }
}

impl ApiToken {
    /// Reads `TANDEM_API_TOKEN` or `TANDEM_API_TOKEN_FILE`.
    pub fn from_env() -> anyhow::Result<Self> {
        match crate::secret::read(TOKEN_VARIABLE)? {
            None => Ok(ApiToken(None)),
            Some(token) => Self::new(&token),
        }
    }

    /// A token of at least 16 characters, with no whitespace.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        if token.chars().count() < SHORTEST_TOKEN || token.chars().any(char::is_whitespace) {
            return Err(crate::exit::Usage(format!(
                "{TOKEN_VARIABLE}: the API token must be at least {SHORTEST_TOKEN} characters, \
                 without spaces (e.g. `openssl rand -hex 24`)"
            ))
            .into());
        }
        Ok(ApiToken(Some(token.into())))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// Puts every route of `actions` behind the token, and refuses bodies over `max_body` bytes
/// with 413: at once when the request says its length, else once that much has been read.
pub fn guard(actions: Router, token: ApiToken, max_body: usize) -> Router {
    actions
        .layer(DefaultBodyLimit::max(max_body))
        .route_layer(axum::middleware::from_fn_with_state(max_body, cap))
        .route_layer(axum::middleware::from_fn_with_state(token, require))
}

async fn cap(State(max_body): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body as u64 => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {length} bytes; at most {max_body} are taken"),
        ),
        _ => next.run(request).await,
    }
}

async fn require(State(token): State<ApiToken>, request: Request, next: Next) -> Response {
    let Some(expected) = &token.0 else {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this action is off: no API token is configured (set {TOKEN_VARIABLE} or \
                 {TOKEN_VARIABLE}_FILE where Tandem runs)"
            ),
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")));
    match given {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer <token> header is required".into(),
        ),
        Some(None) => refuse(
            StatusCode::UNAUTHORIZED,
            "the Authorization header must be `Bearer <token>`".into(),
        ),
        Some(Some(given)) if same(given.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(Some(_)) => refuse(StatusCode::UNAUTHORIZED, "the API token is wrong".into()),
    }
}

fn refuse(status: StatusCode, error: String) -> Response {
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Compares in time that depends only on the lengths, not on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// `--http-listen` and `--http` values: `HOST:PORT`, or a port alone, which binds to loopback
/// (127.0.0.1) so that nothing off the machine reaches the port unless asked for.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an address: give PORT (loopback), 127.0.0.1:PORT, or 0.0.0.0:PORT \
             to be reached from other machines"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_to_loopback() {
        let shown = |text: &str| listen_addr(text).map(|a| a.to_string());
        assert_eq!(shown("9464").as_deref(), Ok("127.0.0.1:9464"));
        assert_eq!(shown("0.0.0.0:80").as_deref(), Ok("0.0.0.0:80"));
        assert_eq!(shown("[::1]:80").as_deref(), Ok("[::1]:80"));
        assert!(shown("localhost").is_err_and(|e| e.contains("PORT")));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(ApiToken::new("short").is_err());
        assert!(ApiToken::new("sixteen chars ok").is_err());
        assert!(ApiToken::new("0123456789abcdef").is_ok_and(|t| t.is_set()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
