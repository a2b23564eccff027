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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_and_a_replay_run_over_tls() -> anyhow::Result<()> {
    let broker = TlsBroker::start().await?;
    let topic = unique("tandem-tls").replace('_', "-");
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        accounts, sources, ..
    } = seeded_legacy(dir.path(), "tls", 2).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let ca = broker.ca_file.display().to_string();
    let tls = ["--kafka-security-protocol", "ssl", "--kafka-ca-file", &ca];

    // TLS without the test's CA: the broker's certificate is not trusted, nothing connects.
    let refused = tandem()
        .produce(&sources, &broker.brokers, &topic, &stores.url)
        .args([
            "--create-topic",
            "2",
            "--once",
            "--kafka-security-protocol",
            "ssl",
        ])
        .stderr(std::process::Stdio::piped())
        .output()?;
    ensure!(
        refused.status.code() == Some(3),
        "exit {:?}: {}",
        refused.status,
        String::from_utf8_lossy(&refused.stderr)
    );

    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &broker.brokers, &topic, &stores.url)
            .args(["--create-topic", "2"])
            .args(tls),
    )?;
    let _consumer = Running::spawn(
        tandem()
            .consume(
                &mapping,
                (&broker.brokers, &topic),
                &stores.url,
                &cloud.url,
                &dir.path().join("consumer.log"),
            )
            .args(tls),
    )?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(90)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");

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
        .arg(&sources)
        .arg("--mapping")
        .arg(&mapping)
        .args([
            "--brokers",
            &broker.brokers,
            "--topic",
            &topic,
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
    let topic = unique("tandem-sasl").replace('_', "-");
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        accounts, sources, ..
    } = seeded_legacy(dir.path(), "sasl", 2).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let password = broker.password.as_str();
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, format!("{password}\n"))?;
    let sasl = [
        "--kafka-security-protocol",
        "sasl_plaintext",
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-256",
        "--kafka-sasl-username",
        &broker.username,
    ];

    let refused = tandem()
        .produce(&sources, &broker.brokers, &topic, &stores.url)
        .args(["--create-topic", "2", "--once"])
        .stderr(std::process::Stdio::piped())
        .output()?;
    ensure!(
        refused.status.code() == Some(3),
        "exit {:?}: {}",
        refused.status,
        String::from_utf8_lossy(&refused.stderr)
    );

    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &broker.brokers, &topic, &stores.url)
            .args(["--create-topic", "2"])
            .args(sasl)
            .env("TANDEM_KAFKA_SASL_PASSWORD_FILE", &secret)
            .env("TANDEM_LOG", "info"),
    )?;
    let _consumer = Running::spawn(
        tandem()
            .consume(
                &mapping,
                (&broker.brokers, &topic),
                &stores.url,
                &cloud.url,
                &dir.path().join("consumer.log"),
            )
            .args(sasl)
            .env("TANDEM_KAFKA_SASL_PASSWORD_FILE", &secret)
            .env("TANDEM_LOG", "info"),
    )?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(90)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    for log in ["producer.log", "consumer.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
        ensure!(!text.is_empty(), "{log} is empty");
        ensure!(!text.contains(password), "{log} shows the password");
    }
    Ok(())
}
