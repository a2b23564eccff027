//! How Tandem reaches the cloud API: TLS (a private certificate authority, a client
//! certificate) and credentials, as SaaS APIs ask for them — a static token sent as a bearer
//! token or in an API-key header, or OAuth2 client credentials, where the token is fetched,
//! cached, fetched again shortly before it expires and at once when the API answers 401.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, EndpointNotSet, EndpointSet, Scope, TokenResponse, TokenUrl};
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::client::ApiError;

/// Everything needed to connect to the cloud API beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct CloudAccess {
    /// PEM file of the certificate authorities to trust, in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for APIs that authenticate clients by
    /// certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub auth: CloudAuth,
}

/// How Tandem proves who it is to the cloud API.
#[derive(Clone, Default)]
pub enum CloudAuth {
    #[default]
    None,
    /// A static token: `Authorization: Bearer <token>`, or the token alone in `header`.
    Token {
        header: Option<String>,
        token: String,
    },
    /// The OAuth2 client credentials grant against `token_url`.
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
}

impl fmt::Debug for CloudAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudAuth::None => f.write_str("None"),
            CloudAuth::Token { header, .. } => f
                .debug_struct("Token")
                .field("header", header)
                .field("token", &"***")
                .finish(),
            CloudAuth::ClientCredentials {
                token_url,
                client_id,
                scope,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"***")
                .field("scope", scope)
                .finish(),
        }
    }
}

/// Why the settings to reach the cloud API cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable PEM {what}: {source}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("invalid credentials setting: {0}")]
    Invalid(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A reqwest client builder whose TLS uses the ring provider, as every HTTP client of Tandem
/// does.
pub fn http_client() -> reqwest::ClientBuilder {
    // Installing a process-wide provider fails only when one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

impl CloudAccess {
    /// An HTTP client with this access's TLS settings.
    pub(crate) fn client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, AccessError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| AccessError::Read {
                path: path.clone(),
                source,
            })
        };
        let mut builder = builder;
        if let Some(path) = &self.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(path)?).map_err(|source| {
                AccessError::Pem {
                    path: path.clone(),
                    what: "certificate bundle",
                    source,
                }
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|source| AccessError::Pem {
                    path: cert.clone(),
                    what: "client certificate and key",
                    source,
                })?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(AccessError::Client)
    }
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The credential each request carries, kept fresh.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    kind: Kind,
}

#[derive(Debug, Default)]
enum Kind {
    #[default]
    None,
    Static(HeaderName, HeaderValue),
    OAuth {
        client: Box<TokenClient>,
        scope: Option<String>,
        http: reqwest::Client,
        cached: Mutex<Option<Cached>>,
    },
}

#[derive(Debug, Clone)]
struct Cached {
    value: HeaderValue,
    refresh_at: Option<Instant>,
}

impl Credentials {
    pub(crate) fn new(auth: &CloudAuth, http: &reqwest::Client) -> Result<Self, AccessError> {
        let kind = match auth {
            CloudAuth::None => Kind::None,
            CloudAuth::Token { header, token } => {
                let (name, value) = match header {
                    Some(name) => (
                        HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                            AccessError::Invalid(format!("header name {name:?}: {e}"))
                        })?,
                        token.clone(),
                    ),
                    None => (AUTHORIZATION, format!("Bearer {token}")),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    AccessError::Invalid("the token has characters a header cannot carry".into())
                })?;
                value.set_sensitive(true);
                Kind::Static(name, value)
            }
            CloudAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let token_url = TokenUrl::new(token_url.clone())
                    .map_err(|e| AccessError::Invalid(format!("token URL {token_url:?}: {e}")))?;
                let client = BasicClient::new(ClientId::new(client_id.clone()))
                    .set_client_secret(ClientSecret::new(client_secret.clone()))
                    .set_token_uri(token_url);
                Kind::OAuth {
                    client: Box::new(client),
                    scope: scope.clone(),
                    http: http.clone(),
                    cached: Mutex::new(None),
                }
            }
        };
        Ok(Credentials { kind })
    }

    /// The header a request carries, fetching a token first when there is none or it is about
    /// to expire.
    pub(crate) async fn header(&self) -> Result<Option<(HeaderName, HeaderValue)>, ApiError> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Static(name, value) => Ok(Some((name.clone(), value.clone()))),
            Kind::OAuth {
                client,
                scope,
                http,
                cached,
            } => {
                let mut cached = cached.lock().await;
                let fresh = cached
                    .as_ref()
                    .is_some_and(|c| c.refresh_at.is_none_or(|at| Instant::now() < at));
                if !fresh {
                    *cached = Some(fetch(client, scope.as_deref(), http).await?);
                }
                Ok(cached.as_ref().map(|c| (AUTHORIZATION, c.value.clone())))
            }
        }
    }

    /// The API refused `used`: a token from the token endpoint is dropped, so the next
    /// request takes a new one. Says whether trying again can help.
    pub(crate) async fn refused(&self, used: Option<&HeaderValue>) -> bool {
        match &self.kind {
            Kind::OAuth { cached, .. } => {
                let mut cached = cached.lock().await;
                if cached.as_ref().map(|c| &c.value) == used {
                    info!("the cloud API refused the access token; taking a new one");
                    *cached = None;
                }
                true
            }
            Kind::None | Kind::Static(..) => false,
        }
    }
}

/// A token from the token endpoint, to be refreshed once four fifths of its lifetime are
/// over (at the latest a minute before it expires).
async fn fetch(
    client: &TokenClient,
    scope: Option<&str>,
    http: &reqwest::Client,
) -> Result<Cached, ApiError> {
    // Each request's future owns its client: a borrowed one would not be Send for every
    // lifetime, as the worker tasks need.
    let send = |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move { send_token_request(&http, request).await }
    };
    let mut exchange = client.exchange_client_credentials();
    if let Some(scope) = scope {
        exchange = exchange.add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_owned())));
    }
    let token = exchange.request_async(&send).await.map_err(|e| {
        let message = match &e {
            oauth2::RequestTokenError::ServerResponse(answer) => {
                format!("the token endpoint refused: {answer}")
            }
            other => format!("cannot take an access token: {other}"),
        };
        ApiError::Unauthorized { message }
    })?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.access_token().secret()))
        .map_err(|_| ApiError::Unauthorized {
            message: "the token endpoint answered a token a header cannot carry".into(),
        })?;
    value.set_sensitive(true);
    let refresh_at = token.expires_in().map(|lifetime| {
        let early = (lifetime / 5).min(Duration::from_secs(60));
        Instant::now() + lifetime.saturating_sub(early)
    });
    debug!(expires_in = ?token.expires_in(), "took an access token");
    Ok(Cached { value, refresh_at })
}

/// Sends one token request with Tandem's HTTP client.
async fn send_token_request(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let request = reqwest::Request::try_from(request)?;
    let response = http.execute(request).await?;
    let mut answer = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    // Status and headers came from a valid response, so the builder holds valid parts.
    Ok(answer.body(body).unwrap_or_default())
}
