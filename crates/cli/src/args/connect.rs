//! How a command reaches what it needs: the producer's and the consumer's stores, and Kafka
//! (brokers, topic, TLS and SASL, librdkafka properties).

use std::path::PathBuf;

use clap::Args;

/// The producer's checkpoint store.
#[derive(Debug, Args)]
pub struct ProducerStore {
    /// The producer's checkpoint store: `sqlite://…` (a path relative to the working
    /// directory) or `postgres://…`.
    #[arg(
        long = "store",
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
