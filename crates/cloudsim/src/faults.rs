//! Fault injection for the `/v1` routes: latency, rejected accounts, 503s, 429s and
//! connections that break after a mutation was committed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tracing::debug;

use crate::api_error::error_response;

/// Faults the server injects into `/v1` requests; change them at run time with
/// `PUT /admin/faults`. All rates are fractions in `0.0..=1.0`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Fraction of requests answered 503 before doing anything.
    pub error_rate: f64,
    /// Fraction of requests answered 429 with `Retry-After` before doing anything.
    pub rate_limit_rate: f64,
    /// The `Retry-After` value, in seconds, sent with injected 429s.
    pub retry_after_secs: u64,
    /// Delay added to every request.
    pub latency_ms: u64,
    /// Extra delay, uniform in `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Fraction of successful POST/PUT/DELETE requests whose connection breaks after the
    /// change was committed, so the client cannot tell whether it was applied.
    pub drop_after_apply_rate: f64,
    /// Accounts whose every change (POST, PUT, DELETE) is answered 422, as an API answers
    /// what fails its validation; reads of them still work.
    pub reject_accounts: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            latency_jitter_ms: 0,
            drop_after_apply_rate: 0.0,
            reject_accounts: Vec::new(),
        }
    }
}

impl Faults {
    /// Checks that every rate is a fraction; the message names the offending field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("drop_after_apply_rate", self.drop_after_apply_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, got {rate}"));
            }
        }
        Ok(())
    }
}

pub(crate) type SharedFaults = Arc<RwLock<Faults>>;

/// Middleware for the `/v1` routes, applying faults in a fixed order: latency, rejected
/// accounts, 503, 429, then the handler, then a broken connection for mutations.
pub(crate) async fn inject(
    State(faults): State<SharedFaults>,
    request: Request,
    next: Next,
) -> Response {
    // A snapshot, so that a change through /admin/faults never affects half a request.
    let faults = faults.read().await.clone();

    let jitter = if faults.latency_jitter_ms > 0 {
        rand::random_range(0..=faults.latency_jitter_ms)
    } else {
        0
    };
    let delay = faults.latency_ms.saturating_add(jitter);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE
    );
    if let Some(account) = account_of(request.uri().path()).filter(|_| mutating) {
        if faults
            .reject_accounts
            .iter()
            .any(|rejected| rejected == account)
        {
            debug!(account, "fault injection: rejecting account");
            return error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("account {account} rejected by fault injection"),
            );
        }
    }
    if roll(faults.error_rate) {
        debug!(path = request.uri().path(), "fault injection: 503");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable (fault injection)".to_owned(),
        );
    }
    if roll(faults.rate_limit_rate) {
        debug!(path = request.uri().path(), "fault injection: 429");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded (fault injection)".to_owned(),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(faults.retry_after_secs),
        );
        return response;
    }

    let response = next.run(request).await;
    if mutating && response.status().is_success() && roll(faults.drop_after_apply_rate) {
        debug!("fault injection: breaking the connection after the commit");
        return broken(response);
    }
    response
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

/// The account segment of `/v1/accounts/{account}/...`. It needs no percent-decoding:
/// valid account names contain only unreserved characters.
fn account_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/accounts/")?.split('/').next()
}

/// Keeps the status and headers but replaces the body with a stream that fails, which makes
/// hyper abort the connection mid-response.
fn broken(response: Response) -> Response {
    let (mut parts, _body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    // A 204 has no body, so hyper would never poll the failing stream and the client would
    // see a clean answer.
    if parts.status == StatusCode::NO_CONTENT {
        parts.status = StatusCode::OK;
    }
    let failing = futures::stream::once(async {
        Err::<Bytes, io::Error>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection dropped by fault injection",
        ))
    });
    Response::from_parts(parts, Body::from_stream(failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields() -> Result<(), serde_json::Error> {
        let faults: Faults = serde_json::from_str(r#"{"error_rate": 0.5}"#)?;
        assert_eq!(faults.retry_after_secs, 1);
        assert_eq!(faults.error_rate, 0.5);
        assert!(faults.reject_accounts.is_empty());
        Ok(())
    }

    #[test]
    fn rates_must_be_fractions() {
        let bad = Faults {
            rate_limit_rate: 1.5,
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
        let nan = Faults {
            error_rate: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().is_err());
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn account_is_the_segment_after_accounts() {
        assert_eq!(account_of("/v1/accounts/acme/users/u_1"), Some("acme"));
        assert_eq!(account_of("/v1/accounts/acme/users"), Some("acme"));
        assert_eq!(account_of("/admin/faults"), None);
    }
}
