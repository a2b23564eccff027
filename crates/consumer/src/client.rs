//! The REST client for the cloud API: creates with an `Idempotency-Key`, updates, deletes that
//! tolerate 404, listing, and retries of transient failures with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::access::{http_client, AccessError, CloudAccess, Credentials};

/// Why an API call failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Worth retrying: timeouts, connection errors, 5xx, 429.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The API rejected the request; retrying the same request will not help.
    #[error("rejected with {status}: {body}")]
    Rejected { status: StatusCode, body: String },
    #[error("not found")]
    NotFound,
    /// The API answered with success but not with what it should have (a create without an
    /// id, an audit log of another shape).
    #[error("unexpected answer: {message}")]
    Unexpected { message: String },
    /// A request URL could not be built from the account, collection or lookup value.
    #[error("cannot build a request URL: {message}")]
    Url { message: String },
    /// The API refused the credentials, or none could be taken from the token endpoint.
    /// Retried: a token is taken again, and credentials can be fixed without losing events.
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    /// Not sent: the call's fence was closed (the consumer gave up the account's partition, or
    /// its lease on the account ran out).
    #[error("not sent: this worker no longer holds the account")]
    Fenced,
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Transient { .. } | ApiError::Unauthorized { .. }
        )
    }
}

/// One entry of the cloud's audit log (cloudsim's `/admin/audit`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub account: String,
    pub collection: String,
    pub id: String,
    pub op: String,
    pub external_ref: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct CloudClient {
    http: reqwest::Client,
    credentials: Arc<Credentials>,
    base: String,
    retry: ExponentialBuilder,
    timeout: Duration,
    /// Once closed, no further request is sent; one already sent is completed.
    fence: Option<Fence>,
}

/// When a client stops sending requests: once `cancelled` is cancelled, or from `until` on.
#[derive(Debug, Clone)]
pub struct Fence {
    pub cancelled: CancellationToken,
    pub until: Option<std::time::Instant>,
    /// A request still unanswered at this instant is given up (and fails transiently), so
    /// none is left waiting on an answer once the right to send it has lapsed.
    pub answers_by: Option<std::time::Instant>,
}

impl Fence {
    pub fn is_closed(&self) -> bool {
        self.cancelled.is_cancelled()
            || self
                .until
                .is_some_and(|until| std::time::Instant::now() >= until)
    }
}

impl CloudClient {
    /// `base` is the API root, e.g. `http://127.0.0.1:8080`; `attempts` caps tries per call.
    /// The system's certificate authorities, no credentials.
    pub fn new(base: &str, timeout: Duration, attempts: usize) -> Self {
        let http = Self::builder(timeout).build().unwrap_or_default();
        Self::with_http(base, http, Credentials::default(), timeout, attempts)
    }

    /// A client reaching the API at `base` as `access` says: TLS settings and credentials.
    pub fn connect(
        base: &str,
        access: &CloudAccess,
        timeout: Duration,
        attempts: usize,
    ) -> Result<Self, AccessError> {
        let http = access.client(Self::builder(timeout))?;
        let credentials = Credentials::new(&access.auth, &http)?;
        Ok(Self::with_http(base, http, credentials, timeout, attempts))
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        http_client().timeout(timeout).pool_max_idle_per_host(64)
    }

    fn with_http(
        base: &str,
        http: reqwest::Client,
        credentials: Credentials,
        timeout: Duration,
        attempts: usize,
    ) -> Self {
        CloudClient {
            http,
            credentials: Arc::new(credentials),
            base: base.trim_end_matches('/').to_owned(),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(attempts.saturating_sub(1))
                .with_jitter(),
            timeout,
            fence: None,
        }
    }

    /// This client, sending requests only while `fence` is open: every try, first or retry,
    /// checks it before it is sent.
    pub fn fenced(&self, fence: Fence) -> CloudClient {
        CloudClient {
            fence: Some(fence),
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Takes an access token now, where the credentials need one: a wrong client secret or
    /// token URL is found at start-up rather than at the first change.
    pub async fn check_credentials(&self) -> Result<(), ApiError> {
        self.credentials.header().await.map(drop)
    }

    fn url(&self, account: &str, collection: &str, id: Option<&str>) -> String {
        match id {
            Some(id) => format!("{}/v1/accounts/{account}/{collection}/{id}", self.base),
            None => format!("{}/v1/accounts/{account}/{collection}", self.base),
        }
    }

    /// One request, retried while it fails transiently; a `Retry-After` overrides the backoff.
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Map<String, Json>>,
        idempotency_key: Option<&str>,
    ) -> Result<Json, ApiError> {
        self.send(method, url, body, idempotency_key, true).await
    }

    /// One request; with `retry`, repeated while it fails transiently. A request that is not
    /// safe to repeat (a create without an idempotency key) is sent once.
    #[tracing::instrument(name = "cloud_call", skip_all, fields(method = %method, url))]
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Map<String, Json>>,
        idempotency_key: Option<&str>,
        retry: bool,
    ) -> Result<Json, ApiError> {
        let once = || async {
            if self.fence.as_ref().is_some_and(Fence::is_closed) {
                return Err(ApiError::Fenced);
            }
            let credential = self.credentials.header().await?;
            let mut request = self.http.request(method.clone(), url);
            if let Some((name, value)) = &credential {
                request = request.header(name, value);
            }
            if let Some(by) = self.fence.as_ref().and_then(|f| f.answers_by) {
                let left = by.saturating_duration_since(std::time::Instant::now());
                request = request.timeout(left.min(self.timeout));
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let sent = std::time::Instant::now();
            let response = request.send().await.map_err(|e| {
                crate::metrics::cloud_request(&method, None, sent.elapsed());
                transient(e)
            })?;
            let status = response.status();
            crate::metrics::cloud_request(&method, Some(status.as_u16()), sent.elapsed());
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|seconds| Duration::from_secs(seconds.min(LONGEST_RETRY_AFTER_S)));
            // A body that breaks off is a transient failure even after a success status: the
            // change may or may not have been applied, and the retry is idempotent.
            let bytes = read_capped(response).await?;
            let text = shown(&bytes);
            match status {
                s if s.is_success() => Ok(if bytes.is_empty() {
                    Json::Null
                } else {
                    serde_json::from_slice(&bytes).map_err(|e| ApiError::Transient {
                        message: format!("response is not JSON: {e}"),
                        retry_after: None,
                    })?
                }),
                StatusCode::NOT_FOUND => Err(ApiError::NotFound),
                StatusCode::UNAUTHORIZED => {
                    let used = credential.as_ref().map(|(_, value)| value);
                    let again = self.credentials.refused(used).await;
                    if !again {
                        warn!(%url, "the cloud API refused the credentials; check the token");
                    }
                    Err(ApiError::Unauthorized {
                        message: format!("{status}: {text}"),
                    })
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                    Err(ApiError::Transient {
                        message: format!("{status}: {text}"),
                        retry_after,
                    })
                }
                s if s.is_server_error() => Err(ApiError::Transient {
                    message: format!("{status}: {text}"),
                    retry_after,
                }),
                s => Err(ApiError::Rejected {
                    status: s,
                    body: text,
                }),
            }
        };
        if !retry {
            return once().await;
        }
        once.retry(self.retry)
            .when(ApiError::is_transient)
            .adjust(|error, delay| match (error, delay) {
                (
                    ApiError::Transient {
                        retry_after: Some(wait),
                        ..
                    },
                    Some(_),
                ) => Some(*wait),
                _ => delay,
            })
            .notify(|error, delay| {
                crate::metrics::cloud_retry();
                debug!(%url, %error, ?delay, "retrying cloud call");
            })
            .await
    }

    /// Creates a document; the same key and body always yield the same resource.
    pub async fn create(
        &self,
        account: &str,
        collection: &str,
        doc: &Map<String, Json>,
        idempotency_key: &str,
    ) -> Result<String, ApiError> {
        let url = self.url(account, collection, None);
        let created = self
            .call(Method::POST, &url, Some(doc), Some(idempotency_key))
            .await?;
        created_id(&created)
    }

    /// Creates a document without an idempotency key, sent once: after a transient failure
    /// the caller must look the document up before trying again.
    pub async fn create_unkeyed(
        &self,
        account: &str,
        collection: &str,
        doc: &Map<String, Json>,
    ) -> Result<String, ApiError> {
        let url = self.url(account, collection, None);
        let created = self
            .send(Method::POST, &url, Some(doc), None, false)
            .await?;
        created_id(&created)
    }

    /// The id of the document of a collection whose `external_ref` is `external_ref`, if any.
    pub async fn find(
        &self,
        account: &str,
        collection: &str,
        external_ref: &str,
    ) -> Result<Option<String>, ApiError> {
        let url = reqwest::Url::parse_with_params(
            &self.url(account, collection, None),
            [("external_ref", external_ref), ("limit", "1")],
        )
        .map_err(|e| ApiError::Url {
            message: e.to_string(),
        })?;
        let page = self.call(Method::GET, url.as_str(), None, None).await?;
        Ok(page
            .get("items")
            .and_then(Json::as_array)
            .and_then(|items| items.first())
            .and_then(|doc| doc.get("id"))
            .and_then(Json::as_str)
            .map(str::to_owned))
    }

    pub async fn update(
        &self,
        account: &str,
        collection: &str,
        id: &str,
        doc: &Map<String, Json>,
    ) -> Result<(), ApiError> {
        let url = self.url(account, collection, Some(id));
        self.call(Method::PUT, &url, Some(doc), None)
            .await
            .map(drop)
    }

    /// Deletes a document; one that is already gone counts as deleted.
    pub async fn delete(&self, account: &str, collection: &str, id: &str) -> Result<(), ApiError> {
        let url = self.url(account, collection, Some(id));
        match self.call(Method::DELETE, &url, None, None).await {
            Ok(_) | Err(ApiError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every document of a collection, following pages.
    pub async fn list(&self, account: &str, collection: &str) -> Result<Vec<Json>, ApiError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}?limit=1000", self.url(account, collection, None));
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page = self.call(Method::GET, &url, None, None).await?;
            if let Some(page_items) = page.get("items").and_then(Json::as_array) {
                items.extend(page_items.iter().cloned());
            }
            match page.get("next").and_then(Json::as_str) {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The audit log of an account, where the cloud offers one (cloudsim does); `None` if not.
    pub async fn audit(&self, account: &str) -> Result<Option<Vec<AuditEntry>>, ApiError> {
        let mut entries = Vec::new();
        let mut after = 0i64;
        loop {
            let url = format!(
                "{}/admin/audit?account={account}&after={after}&limit=10000",
                self.base
            );
            let page = match self.call(Method::GET, &url, None, None).await {
                Ok(page) => page,
                Err(ApiError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            let batch: Vec<AuditEntry> = serde_json::from_value(
                page.get("entries").cloned().unwrap_or_default(),
            )
            .map_err(|e| ApiError::Unexpected {
                message: format!("audit log is not in the expected shape: {e}"),
            })?;
            entries.extend(batch);
            match page.get("next").and_then(Json::as_i64) {
                Some(next) => after = next,
                None => return Ok(Some(entries)),
            }
        }
    }
}

/// The id in a create's answer.
fn created_id(created: &Json) -> Result<String, ApiError> {
    created
        .get("id")
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::Unexpected {
            message: format!("create answered without an id: {created}"),
        })
}

/// The largest answer read from the cloud API; a larger one is a failed call (retried), so
/// that a misbehaving API cannot fill the consumer's memory.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The longest `Retry-After` obeyed: an API asking for more is asked again after this long.
const LONGEST_RETRY_AFTER_S: u64 = 60;

/// How much of an answer's body an error message quotes (reasons are stored and shown).
const QUOTED_BYTES: usize = 1024;

/// Reads the answer's body, up to [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transient)? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ApiError::Transient {
                message: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                retry_after: None,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The start of a body, as text, for an error message.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]);
    if bytes.len() > QUOTED_BYTES {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text.into_owned()
    }
}

fn transient(e: reqwest::Error) -> ApiError {
    ApiError::Transient {
        message: e.to_string(),
        retry_after: None,
    }
}
