//! Kafka over TLS: the producer (topic creation included), the consumer (and its dead-letter
//! producer) and a replay reach a broker only through a TLS listener, trusting the CA they are
//! given; without it they cannot connect.

use std::time::Duration;

use anyhow::ensure;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    seeded_legacy, unique, until_clean, Cloud, PgDatabase, Running, SaslBroker, Seeded, Tandem,
    TlsBroker,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The parts a test needs around its broker: a topic name, stores, cloudsim and two seeded
/// accounts with the demo's sources and mapping.
struct Parts {
    topic: String,
    stores: PgDatabase,
    cloud: Cloud,
    dir: tempfile::TempDir,
    accounts: Vec<String>,
    sources: std::path::PathBuf,
    mapping: std::path::PathBuf,
}

impl Parts {
    async fn new(prefix: &str) -> anyhow::Result<Parts> {
        let dir = tempfile::tempdir()?;
        let Seeded {
            accounts, sources, ..
        } = seeded_legacy(dir.path(), prefix, 2).await?;
        let mapping = dir.path().join("mapping.toml");
        std::fs::write(&mapping, tandem_workload::MAPPING)?;
        Ok(Parts {
            topic: unique(&format!("tandem-{prefix}")).replace('_', "-"),
            stores: PgDatabase::create().await?,
            cloud: Cloud::start(Default::default()).await?,
            dir,
            accounts,
            sources,
            mapping,
        })
    }

    /// A producer run with only `flags` for the connection exits 3: it cannot reach the broker.
    fn refused(&self, brokers: &str, flags: &[&str]) -> anyhow::Result<()> {
        let out = tandem()
            .produce(&self.sources, brokers, &self.topic, &self.stores.url)
            .args(["--create-topic", "2", "--once"])
            .args(flags)
            .stderr(std::process::Stdio::piped())
            .output()?;
        ensure!(
            out.status.code() == Some(3),
            "exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The producer (creating the topic) and the consumer, connecting with `flags` and
    /// `env`, until the cloud equals the legacy data.
    async fn pipeline(
        &self,
        brokers: &str,
        flags: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> anyhow::Result<(Running, Running)> {
        let mut producer = tandem().produce(&self.sources, brokers, &self.topic, &self.stores.url);
        producer.args(["--create-topic", "2"]).args(flags);
        let mut consumer = tandem().consume(
            &self.mapping,
            (brokers, &self.topic),
            &self.stores.url,
            &self.cloud.url,
            &self.dir.path().join("consumer.log"),
        );
        consumer.args(flags);
        for command in [&mut producer, &mut consumer] {
            command.env("TANDEM_LOG", "info");
            for (name, value) in env {
                command.env(name, value);
            }
        }
        let running = (
            Running::spawn(&mut producer)?,
            Running::spawn(&mut consumer)?,
        );
        let client = CloudClient::new(&self.cloud.url, Duration::from_secs(10), 8);
        let drift = until_clean(
            &self.sources,
            &client,
            &self.accounts,
            Duration::from_secs(90),
        )
        .await?;
        ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
        Ok(running)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_and_a_replay_run_over_tls() -> anyhow::Result<()> {
    let broker = TlsBroker::start().await?;
    let parts = Parts::new("tls").await?;
    let Parts {
        topic,
        stores,
        cloud,
        accounts,
        sources,
        mapping,
        ..
    } = &parts;
    let ca = broker.ca_file.display().to_string();
    let tls = ["--kafka-security-protocol", "ssl", "--kafka-ca-file", &ca];
    // TLS without the test's CA: the broker's certificate is not trusted, nothing connects.
    parts.refused(&broker.brokers, &["--kafka-security-protocol", "ssl"])?;
    let _running = parts.pipeline(&broker.brokers, &tls, &[]).await?;

    // A replay reads the topic over TLS too.
    let into = format!("{}-copy", accounts[0]);
    let out = tandem()
        .command()
        .args([
            "replay",
            "--account",
            &accounts[0],
            "--into",
            &into,
            "--json",
        ])
        .arg("--sources")
        .arg(sources)
        .arg("--mapping")
        .arg(mapping)
        .args([
            "--brokers",
            &broker.brokers,
            "--topic",
            topic,
            "--store",
            &stores.url,
        ])
        .args(["--cloud-url", &cloud.url])
        .args(tls)
        .env("TANDEM_LOG", "warn")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?;
    ensure!(
        out.status.success()
            && report["drift"] == serde_json::json!({"missing": 0, "extra": 0, "different": 0})
            && report["events"].as_u64() > Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// SASL: against a broker that requires SCRAM-SHA-256, the producer and consumer authenticate,
/// the password read from the file TANDEM_KAFKA_SASL_PASSWORD_FILE names; without SASL they
/// are refused. The password appears in no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_authenticates_with_sasl() -> anyhow::Result<()> {
    let broker = SaslBroker::start().await?;
    let parts = Parts::new("sasl").await?;
    let password = broker.password.as_str();
    let secret = parts.dir.path().join("kafka-password");
    std::fs::write(&secret, format!("{password}\n"))?;
    let sasl = [
        "--kafka-security-protocol",
        "sasl_plaintext",
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-256",
        "--kafka-sasl-username",
        &broker.username,
    ];
    parts.refused(&broker.brokers, &[])?;
    let secret_env = [("TANDEM_KAFKA_SASL_PASSWORD_FILE", secret.as_path())];
    let _running = parts.pipeline(&broker.brokers, &sasl, &secret_env).await?;
    for log in ["producer.log", "consumer.log"] {
        let text = std::fs::read_to_string(parts.dir.path().join(log)).unwrap_or_default();
        ensure!(!text.is_empty(), "{log} is empty");
        ensure!(!text.contains(password), "{log} shows the password");
    }
    Ok(())
}
