//! Which Avro schema a Confluent-framed message was written with: ids known up front (a map
//! of ids to schema files) or asked of a schema registry (Confluent's REST API,
//! `GET /schemas/ids/{id}`), learned once and kept. The producer registers its schema with
//! the same client (`POST /subjects/<topic>-value/versions`).

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use tandem_event::{ChangeEvent, Codec};
use tracing::{info, warn};

/// The schemas a reader knows by Confluent id.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    /// Ids known up front, with the schema each stands for.
    pub ids: Vec<(u32, String)>,
    /// A registry asked for any other id.
    pub registry: Option<SchemaRegistry>,
}

/// A client of a schema registry's REST API.
#[derive(Clone)]
pub struct SchemaRegistry {
    http: reqwest::Client,
    base: String,
    basic: Option<(String, String)>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.base)
            .field("user", &self.basic.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {base}: {source}")]
    Http {
        base: String,
        source: reqwest::Error,
    },
    #[error("schema registry at {base} answered {status}: {body}")]
    Status {
        base: String,
        status: StatusCode,
        body: String,
    },
}

impl SchemaRegistry {
    /// The registry at `base`, with HTTP Basic credentials where it needs them (an API key
    /// and secret, on managed registries).
    pub fn new(base: &str, http: reqwest::Client, basic: Option<(String, String)>) -> Self {
        SchemaRegistry {
            http,
            base: base.trim_end_matches('/').to_owned(),
            basic,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Option<Json>, RegistryError> {
        let request = match &self.basic {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        let failed = |source| RegistryError::Http {
            base: self.base.clone(),
            source,
        };
        let response = request
            .header(
                "Accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            )
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        match status {
            s if s.is_success() => Ok(serde_json::from_str(&body).ok()),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(RegistryError::Status {
                base: self.base.clone(),
                status,
                body,
            }),
        }
    }

    /// The schema registered with `id`; `None` when the registry has none.
    pub async fn lookup(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let answer = self
            .send(self.http.get(format!("{}/schemas/ids/{id}", self.base)))
            .await?;
        Ok(answer.and_then(|a| a.get("schema")?.as_str().map(str::to_owned)))
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let request = self
            .http
            .post(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(json!({ "schema": schema }).to_string());
        let answer = self.send(request).await?;
        answer
            .as_ref()
            .and_then(|a| a.get("id")?.as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Status {
                base: self.base.clone(),
                status: StatusCode::OK,
                body: format!("no schema id in the answer to a registration: {answer:?}"),
            })
    }
}

/// Decodes messages in any framing, asking the registry for Confluent schema ids it has not
/// seen.
#[derive(Debug)]
pub(crate) struct Decoder {
    codec: Codec,
    registry: Option<SchemaRegistry>,
}

impl Decoder {
    pub(crate) fn new(schemas: &Schemas) -> crate::Result<Self> {
        let codec = Codec::default();
        for (id, text) in &schemas.ids {
            codec
                .learn_confluent_schema(*id, text)
                .map_err(|e| crate::Error::Option {
                    option: "schema ids",
                    message: format!("schema id {id}: {e}"),
                })?;
        }
        Ok(Decoder {
            codec,
            registry: schemas.registry.clone(),
        })
    }

    /// The event in `bytes`. An unknown schema id is asked of the registry, again and again
    /// while it cannot answer or refuses (an outage or wrong registry credentials make the
    /// partition wait rather than dead-letter events); an id the registry does not have is
    /// an error.
    pub(crate) async fn decode(&self, bytes: &[u8]) -> tandem_event::Result<ChangeEvent> {
        match (self.codec.decode(bytes), &self.registry) {
            (Err(tandem_event::Error::UnknownSchemaId { id }), Some(registry)) => {
                let lookup = || registry.lookup(id);
                let found = lookup
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(100))
                            .with_max_delay(Duration::from_secs(30))
                            .without_max_times(),
                    )
                    .notify(|error, delay| warn!(%error, ?delay, id, "cannot look the schema id up; trying again"))
                    .await;
                match found {
                    Ok(Some(schema)) => {
                        self.codec.learn_confluent_schema(id, &schema)?;
                        info!(id, "learned a schema id from the registry");
                        self.codec.decode(bytes)
                    }
                    Ok(None) | Err(_) => Err(tandem_event::Error::UnknownSchemaId { id }),
                }
            }
            (decoded, _) => decoded,
        }
    }
}
