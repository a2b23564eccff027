//! How a command reaches what it needs: the producer's and the consumer's stores, and Kafka
//! (brokers, topic, TLS and SASL, librdkafka properties).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

/// The producer's checkpoint store.
#[derive(Debug, Args)]
pub struct ProducerStore {
    /// The producer's checkpoint store: `sqlite://…` (a path relative to the working
    /// directory) or `postgres://…`.
    #[arg(
        long = "store",
        hide_env_values = true,
        env = "TANDEM_PRODUCER_STORE",
        default_value = "sqlite://tandem-producer.db"
    )]
    pub url: String,
}

/// The consumer's store.
#[derive(Debug, Args)]
pub struct ConsumerStore {
    /// The consumer's store: `sqlite://…` (a path relative to the working directory) or
    /// `postgres://…`.
    #[arg(
        long = "store",
        hide_env_values = true,
        global = true,
        env = "TANDEM_CONSUMER_STORE",
        default_value = "sqlite://tandem-consumer.db"
    )]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TANDEM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The change-event topic.
    #[arg(long, env = "TANDEM_TOPIC", default_value = "tandem.changes")]
    pub topic: String,
    /// A librdkafka property passed through unchanged and applied last (repeatable).
    /// In the environment, several properties are separated by `;`.
    #[arg(
        short = 'X',
        long = "kafka",
        env = "TANDEM_KAFKA_PROPERTIES",
        hide_env_values = true,
        value_name = "KEY=VALUE",
        value_delimiter = ';',
        value_parser = kafka_property
    )]
    pub kafka: Vec<(String, String)>,
    /// How to reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl (librdkafka's
    /// `security.protocol`).
    #[arg(long, env = "TANDEM_KAFKA_SECURITY_PROTOCOL", value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"], ignore_case = true)]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. The password comes from
    /// TANDEM_KAFKA_SASL_PASSWORD or the file TANDEM_KAFKA_SASL_PASSWORD_FILE names, never a flag.
    #[arg(long, env = "TANDEM_KAFKA_SASL_MECHANISM", value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], ignore_case = true)]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL username.
    #[arg(long, env = "TANDEM_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// PEM file of the certificate authorities that sign the brokers' certificates (default:
    /// the system's).
    #[arg(long, env = "TANDEM_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by certificate.
    #[arg(long, env = "TANDEM_KAFKA_CERT_FILE", requires = "kafka_key_file")]
    pub kafka_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "TANDEM_KAFKA_KEY_FILE", requires = "kafka_cert_file")]
    pub kafka_key_file: Option<PathBuf>,
}

impl KafkaArgs {
    /// The librdkafka properties every Kafka client of the command is built with: the
    /// connection settings, then `-X` (applied last, so it can override them).
    pub fn properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut properties = Vec::new();
        let mut set = |key: &str, value: String| properties.push((key.to_owned(), value));
        if let Some(protocol) = &self.kafka_security_protocol {
            set("security.protocol", protocol.to_ascii_lowercase());
        }
        if let Some(mechanism) = &self.kafka_sasl_mechanism {
            set("sasl.mechanism", mechanism.to_ascii_uppercase());
        }
        if let Some(username) = &self.kafka_sasl_username {
            set("sasl.username", username.clone());
        }
        if let Some(password) = crate::secret::read("TANDEM_KAFKA_SASL_PASSWORD")? {
            set("sasl.password", password);
        }
        for (key, path) in [
            ("ssl.ca.location", &self.kafka_ca_file),
            ("ssl.certificate.location", &self.kafka_cert_file),
            ("ssl.key.location", &self.kafka_key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(crate::exit::Usage(format!(
                        "{key}: {} is not a readable file",
                        path.display()
                    ))
                    .into());
                }
                set(key, path.display().to_string());
            }
        }
        crate::secret::remember_properties(&self.kafka);
        properties.extend(self.kafka.iter().cloned());
        Ok(properties)
    }
}

/// A librdkafka property, `key=value`.
fn kafka_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// The cloud API: its URL, the TLS settings to reach it and the credentials it asks for.
/// Secrets come from the environment only: TANDEM_CLOUD_TOKEN or TANDEM_CLOUD_CLIENT_SECRET,
/// or the files TANDEM_CLOUD_TOKEN_FILE or TANDEM_CLOUD_CLIENT_SECRET_FILE name.
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// Base URL of the cloud API (`https://…` or `http://…`).
    #[arg(
        id = "cloud_url",
        value_name = "URL",
        long = "cloud-url",
        global = true,
        env = "TANDEM_CLOUD_URL",
        default_value = "http://127.0.0.1:8080",
        hide_env_values = true
    )]
    pub url: String,
    /// PEM file of certificate authorities to trust for the cloud API, besides the system's.
    #[arg(
        id = "cloud_ca_file",
        value_name = "FILE",
        long = "cloud-ca-file",
        global = true,
        env = "TANDEM_CLOUD_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for APIs that authenticate clients by certificate.
    #[arg(
        id = "cloud_cert_file",
        value_name = "FILE",
        long = "cloud-cert-file",
        global = true,
        env = "TANDEM_CLOUD_CERT_FILE",
        requires = "cloud_key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        id = "cloud_key_file",
        value_name = "FILE",
        long = "cloud-key-file",
        global = true,
        env = "TANDEM_CLOUD_KEY_FILE",
        requires = "cloud_cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Send the static token (TANDEM_CLOUD_TOKEN) in this header, e.g. `X-Api-Key`, instead of
    /// `Authorization: Bearer`.
    #[arg(
        id = "cloud_api_key_header",
        value_name = "HEADER",
        long = "cloud-api-key-header",
        global = true,
        env = "TANDEM_CLOUD_API_KEY_HEADER"
    )]
    pub api_key_header: Option<String>,
    /// OAuth2 token endpoint: take access tokens with the client credentials grant
    /// (TANDEM_CLOUD_CLIENT_ID and the secret TANDEM_CLOUD_CLIENT_SECRET).
    #[arg(
        id = "cloud_token_url",
        value_name = "URL",
        long = "cloud-token-url",
        global = true,
        env = "TANDEM_CLOUD_TOKEN_URL",
        requires = "cloud_client_id"
    )]
    pub token_url: Option<String>,
    /// OAuth2 client id.
    #[arg(
        id = "cloud_client_id",
        value_name = "ID",
        long = "cloud-client-id",
        global = true,
        env = "TANDEM_CLOUD_CLIENT_ID"
    )]
    pub client_id: Option<String>,
    /// OAuth2 scopes to ask for, separated by spaces.
    #[arg(
        id = "cloud_scope",
        value_name = "SCOPES",
        long = "cloud-scope",
        global = true,
        env = "TANDEM_CLOUD_SCOPE"
    )]
    pub scope: Option<String>,
}

impl CloudArgs {
    /// How to reach the cloud API, with the secrets read from the environment.
    pub fn access(&self) -> anyhow::Result<tandem_consumer::CloudAccess> {
        use tandem_consumer::CloudAuth;
        let usage = |message: String| -> anyhow::Error { crate::exit::Usage(message).into() };
        for path in [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
        {
            if !path.is_file() {
                return Err(usage(format!("{} is not a readable file", path.display())));
            }
        }
        let token = crate::secret::read("TANDEM_CLOUD_TOKEN")?;
        let client_secret = crate::secret::read("TANDEM_CLOUD_CLIENT_SECRET")?;
        let auth = match (&self.token_url, token, client_secret) {
            (Some(_), Some(_), _) => {
                return Err(usage(
                    "give a static token (TANDEM_CLOUD_TOKEN) or OAuth2 client credentials (--cloud-token-url), not both".into(),
                ))
            }
            (Some(token_url), None, Some(client_secret)) => CloudAuth::ClientCredentials {
                token_url: token_url.clone(),
                client_id: self.client_id.clone().unwrap_or_default(),
                client_secret,
                scope: self.scope.clone(),
            },
            (Some(_), None, None) => {
                return Err(usage(
                    "--cloud-token-url needs the client secret in TANDEM_CLOUD_CLIENT_SECRET or TANDEM_CLOUD_CLIENT_SECRET_FILE".into(),
                ))
            }
            (None, Some(token), _) => CloudAuth::Token {
                header: self.api_key_header.clone(),
                token,
            },
            (None, None, Some(_)) => {
                return Err(usage(
                    "TANDEM_CLOUD_CLIENT_SECRET is set but --cloud-token-url is not".into(),
                ))
            }
            (None, None, None) => CloudAuth::None,
        };
        Ok(tandem_consumer::CloudAccess {
            ca_file: self.ca_file.clone(),
            identity: self.cert_file.clone().zip(self.key_file.clone()),
            auth,
        })
    }

    /// A client of the cloud API with these settings; `attempts` caps the tries of one call.
    /// Credentials that need a token are tried at once, so a wrong secret stops the command
    /// before it starts work.
    pub async fn client(
        &self,
        timeout: std::time::Duration,
        attempts: usize,
    ) -> anyhow::Result<tandem_consumer::CloudClient> {
        let client =
            tandem_consumer::CloudClient::connect(&self.url, &self.access()?, timeout, attempts)
                .map_err(|e| crate::exit::Usage(format!("cloud API settings: {e}")))?;
        client
            .check_credentials()
            .await
            .with_context(|| format!("cannot authenticate to the cloud API at {}", self.url))?;
        Ok(client)
    }
}

/// A schema registry (Confluent's REST API): the producer registers its schema there under
/// `<topic>-value` and frames messages with the id it gets; readers look up ids they do not
/// know. Its password comes from TANDEM_SCHEMA_REGISTRY_PASSWORD or the file
/// TANDEM_SCHEMA_REGISTRY_PASSWORD_FILE names.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Schema registry URL; with it the producer writes Confluent-framed messages.
    #[arg(
        long,
        env = "TANDEM_SCHEMA_REGISTRY",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub schema_registry: Option<String>,
    /// Username for the registry (an API key on managed registries).
    #[arg(long, env = "TANDEM_SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// PEM file of certificate authorities to trust for the registry, besides the system's.
    #[arg(long, env = "TANDEM_SCHEMA_REGISTRY_CA_FILE", value_name = "FILE")]
    pub schema_registry_ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// A client of the registry, when one is given.
    pub fn registry(&self) -> anyhow::Result<Option<tandem_consumer::schemas::SchemaRegistry>> {
        let Some(url) = &self.schema_registry else {
            return Ok(None);
        };
        let password = crate::secret::read("TANDEM_SCHEMA_REGISTRY_PASSWORD")?;
        let basic = match (&self.schema_registry_username, password) {
            (Some(user), password) => Some((user.clone(), password.unwrap_or_default())),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(crate::exit::Usage(
                    "TANDEM_SCHEMA_REGISTRY_PASSWORD needs --schema-registry-username".into(),
                )
                .into())
            }
        };
        let mut builder =
            tandem_consumer::http_client().timeout(std::time::Duration::from_secs(30));
        if let Some(path) = &self.schema_registry_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| crate::exit::Usage(format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| crate::exit::Usage(format!("{}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(Some(tandem_consumer::schemas::SchemaRegistry::new(
            url,
            builder.build()?,
            basic,
        )))
    }

    /// What a reader knows of Confluent schema ids: the registry, and the map file `ids`
    /// (TOML: an `[ids]` table of schema id = Avro schema file, relative to the map file).
    pub fn schemas(&self, ids: Option<&Path>) -> anyhow::Result<tandem_consumer::schemas::Schemas> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct IdMap {
            ids: std::collections::BTreeMap<String, PathBuf>,
        }
        let mut known = Vec::new();
        if let Some(path) = ids {
            let usage =
                |message: String| crate::exit::Usage(format!("{}: {message}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
            let map: IdMap = toml::from_str(&text).map_err(|e| usage(e.to_string()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            for (id, file) in map.ids {
                let id: u32 = id
                    .parse()
                    .map_err(|_| usage(format!("{id:?} is not a schema id (a number)")))?;
                let file = dir.join(file);
                let schema = std::fs::read_to_string(&file)
                    .map_err(|e| usage(format!("schema id {id}: {}: {e}", file.display())))?;
                known.push((id, schema));
            }
        }
        Ok(tandem_consumer::schemas::Schemas {
            ids: known,
            registry: self.registry()?,
        })
    }
}
