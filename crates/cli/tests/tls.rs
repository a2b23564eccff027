//! Connections as production has them. Kafka over TLS: the producer (topic creation
//! included), the consumer (and its dead-letter producer) and a replay reach a broker only
//! through a TLS listener, trusting the CA they are given. And a full run with every secret:
//! Kafka with SASL, the cloud over HTTPS with OAuth2 tokens that expire and are revoked
//! mid-run, the stores on a TLS-only PostgreSQL checked with `verify-full`, each secret read
//! from a file, none of them in any log.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use sqlx::Connection as _;
use tandem_cloudsim::tls::TlsSource;
use tandem_cloudsim::AuthOptions;
use tandem_consumer::{CloudAccess, CloudAuth, CloudClient};
use tandem_testkit::notes::{expect, pg_notes, short};
use tandem_testkit::{
    brokers, read_until_quiet, seeded_legacy, topic, unique, until_clean, workload, Cloud,
    PgDatabase, ReplayParts, Running, SaslBroker, Seeded, Tandem, TlsBroker, TlsPostgres,
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
    /// How the test itself reaches the cloud.
    access: CloudAccess,
    legacy: tandem_workload::LegacyDb,
    dir: tempfile::TempDir,
    accounts: Vec<String>,
    sources: std::path::PathBuf,
    mapping: std::path::PathBuf,
}

impl Parts {
    async fn new(prefix: &str) -> anyhow::Result<Parts> {
        Self::with_cloud(prefix, Default::default(), |_| CloudAccess::default()).await
    }

    /// With cloudsim run with `options`, which the test reaches as `access` says.
    async fn with_cloud(
        prefix: &str,
        options: tandem_cloudsim::Options,
        access: impl FnOnce(&Cloud) -> CloudAccess,
    ) -> anyhow::Result<Parts> {
        let dir = tempfile::tempdir()?;
        let Seeded {
            legacy,
            accounts,
            sources,
        } = seeded_legacy(dir.path(), prefix, 2).await?;
        let cloud = Cloud::start_with(options).await?;
        let mapping = dir.path().join("mapping.toml");
        std::fs::write(&mapping, tandem_workload::MAPPING)?;
        Ok(Parts {
            topic: unique(&format!("tandem-{prefix}")).replace('_', "-"),
            stores: PgDatabase::create().await?,
            access: access(&cloud),
            cloud,
            legacy,
            dir,
            accounts,
            sources,
            mapping,
        })
    }

    /// A producer run with only `flags` for the connection cannot reach the broker: it exits
    /// `code`, 2 when the broker refused it (settings to fix), 3 when nothing answered.
    fn refused(
        &self,
        brokers: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        code: i32,
    ) -> anyhow::Result<String> {
        let out = tandem()
            .produce(&self.sources, brokers, &self.topic, &self.stores.url)
            .args(["--create-topic", "2", "--once"])
            .args(flags)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(
            out.status.code() == Some(code),
            "exit {:?}: {stderr}",
            out.status
        );
        Ok(stderr)
    }

    /// The producer (creating the topic) and the consumer, connecting with `flags` and
    /// `env`, until the cloud equals the legacy data.
    async fn pipeline(
        &self,
        brokers: &str,
        flags: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<(Running, Running)> {
        self.pipeline_on(brokers, (&self.stores.url, &self.stores.url), flags, env)
            .await
    }

    /// [`Parts::pipeline`] with the producer's and the consumer's stores at these URLs.
    async fn pipeline_on(
        &self,
        brokers: &str,
        (producer_store, consumer_store): (&str, &str),
        flags: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<(Running, Running)> {
        let mut producer = tandem().produce(&self.sources, brokers, &self.topic, producer_store);
        producer.args(["--create-topic", "2"]).args(flags);
        let mut consumer = tandem().consume(
            &self.mapping,
            (brokers, &self.topic),
            consumer_store,
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
        self.until_clean().await?;
        Ok(running)
    }

    /// A replay of the first account into `into`, reading from `brokers` with `store`.
    fn replay(&self, brokers: &str, store: &str, into: &str) -> std::process::Command {
        let parts = ReplayParts {
            sources: &self.sources,
            mapping: &self.mapping,
            brokers,
            topic: &self.topic,
            store,
            cloud: &self.cloud.url,
        };
        tandem().replay(&self.accounts[0], into, parts)
    }

    /// Waits until the cloud equals the legacy data.
    async fn until_clean(&self) -> anyhow::Result<()> {
        let client =
            CloudClient::connect(&self.cloud.url, &self.access, Duration::from_secs(10), 8)?;
        let drift = until_clean(
            &self.sources,
            &client,
            &self.accounts,
            Duration::from_secs(90),
        )
        .await?;
        ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_and_a_replay_run_over_tls() -> anyhow::Result<()> {
    let broker = TlsBroker::start().await?;
    let parts = Parts::new("tls").await?;
    let Parts {
        stores, accounts, ..
    } = &parts;
    let ca = broker.ca_file.display().to_string();
    let tls = ["--kafka-security-protocol", "ssl", "--kafka-ca-file", &ca];
    // TLS without the test's CA: the broker's certificate is not trusted, nothing connects.
    let untrusted = parts.refused(
        &broker.brokers,
        &["--kafka-security-protocol", "ssl"],
        &[],
        2,
    )?;
    ensure!(untrusted.contains("refused the connection"), "{untrusted}");
    let _running = parts.pipeline(&broker.brokers, &tls, &[]).await?;

    // A replay reads the topic over TLS too.
    let into = format!("{}-copy", accounts[0]);
    let out = parts
        .replay(&broker.brokers, &stores.url, &into)
        .args(tls)
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
    parts.refused(&broker.brokers, &[], &[], 3)?;
    // A wrong password stops the producer at once with the reason, rather than retrying.
    let started = std::time::Instant::now();
    let wrong = parts.refused(
        &broker.brokers,
        &sasl,
        &[("TANDEM_KAFKA_SASL_PASSWORD", "not-the-password")],
        2,
    )?;
    ensure!(
        wrong.contains("refused the connection") && started.elapsed() < Duration::from_secs(25),
        "{wrong}"
    );
    let secret_env = [("TANDEM_KAFKA_SASL_PASSWORD_FILE", secret.as_os_str())];
    let _running = parts.pipeline(&broker.brokers, &sasl, &secret_env).await?;
    for log in ["producer.log", "consumer.log"] {
        let text = std::fs::read_to_string(parts.dir.path().join(log)).unwrap_or_default();
        ensure!(!text.is_empty(), "{log} is empty");
        ensure!(!text.contains(password), "{log} shows the password");
    }
    Ok(())
}

/// An HTTPS client of the test's own that trusts cloudsim's generated CA.
fn https_client(cloud: &Cloud) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(cloud.ca_file.as_ref().context("cloudsim made no CA")?)?;
    Ok(tandem_consumer::http_client()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca)?)
        .build()?)
}

/// A `tandem` command's exit code and everything it printed.
fn run(command: &mut std::process::Command) -> anyhow::Result<(Option<i32>, String)> {
    let out = command.output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

/// A full run as production has it, every secret read from a file: Kafka with SASL/SCRAM,
/// the cloud over HTTPS with OAuth2 client credentials whose tokens last 3 s and are all
/// revoked while changes flow, and both stores on a TLS-only PostgreSQL reached with
/// `verify-full` as a role with a password. Then `verify` (with OAuth2, and with a static
/// token in an API-key header) and a replay over the same connections. No secret appears in
/// any log, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_over_tls_with_credentials_keeps_every_secret_out_of_its_logs(
) -> anyhow::Result<()> {
    let broker = SaslBroker::start().await?;
    let pg = TlsPostgres::from_env()?;
    let client_secret = unique("client-secret");
    let static_token = unique("static-token");
    let options = tandem_cloudsim::Options {
        tls: Some(TlsSource::Generated {
            names: vec!["127.0.0.1".into(), "localhost".into()],
        }),
        auth: Some(AuthOptions {
            client: Some(("tandem".into(), client_secret.clone())),
            token_ttl: Duration::from_secs(3),
            static_token: Some(static_token.clone()),
        }),
        ..Default::default()
    };
    let parts = Parts::with_cloud("secrets", options, |cloud| CloudAccess {
        ca_file: cloud.ca_file.clone(),
        identity: None,
        auth: CloudAuth::Token {
            header: None,
            token: static_token.clone(),
        },
    })
    .await?;
    let dir = parts.dir.path();
    let write = |name: &str, value: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        Ok(path)
    };
    let ca = parts.cloud.ca_file.clone().context("cloudsim made no CA")?;
    let oauth: Vec<(&str, OsString)> = vec![
        (
            "TANDEM_KAFKA_SASL_PASSWORD_FILE",
            write("kafka-password", &broker.password)?.into(),
        ),
        ("TANDEM_CLOUD_CA_FILE", ca.clone().into()),
        (
            "TANDEM_CLOUD_TOKEN_URL",
            format!("{}/oauth/token", parts.cloud.url).into(),
        ),
        ("TANDEM_CLOUD_CLIENT_ID", "tandem".into()),
        (
            "TANDEM_CLOUD_CLIENT_SECRET_FILE",
            write("client-secret", &client_secret)?.into(),
        ),
        (
            "PGPASSWORD_FILE",
            write("pg-password", &pg.password)?.into(),
        ),
        ("TANDEM_LOG", "debug".into()),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> =
        oauth.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let sasl = [
        "--kafka-security-protocol",
        "sasl_plaintext",
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-256",
        "--kafka-sasl-username",
        &broker.username,
    ];
    let stores = (pg.create_database().await?, pg.create_database().await?);

    // Without the cloud's CA the consumer cannot take a token, and says so at once.
    let mut untrusting = tandem().consume(
        &parts.mapping,
        (&broker.brokers, &parts.topic),
        &stores.1,
        &parts.cloud.url,
        &dir.join("refused.log"),
    );
    untrusting
        .args(sasl)
        .envs(env.iter().copied())
        .env_remove("TANDEM_CLOUD_CA_FILE");
    let (code, _) = run(&mut untrusting)?;
    let refused = std::fs::read_to_string(dir.join("refused.log"))?;
    ensure!(
        code == Some(3) && refused.contains("cannot authenticate to the cloud API"),
        "{code:?} {refused}"
    );

    let _running = parts
        .pipeline_on(&broker.brokers, (&stores.0, &stores.1), &sasl, &env)
        .await?;
    // Changes flow for 8 s; tokens expire every 3 s, and at 3 s every token is revoked.
    let changes = workload(&parts.legacy, &parts.accounts, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admin = https_client(&parts.cloud)?;
    admin
        .post(format!("{}/admin/tokens/revoke", parts.cloud.url))
        .send()
        .await?
        .error_for_status()?;
    ensure!(changes.await?? > 0, "the workload changed nothing");
    parts.until_clean().await?;
    let tokens: serde_json::Value = admin
        .get(format!("{}/admin/tokens", parts.cloud.url))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        tokens["issued"].as_u64() >= Some(3) && tokens["refused"].as_u64() >= Some(1),
        "tokens were not refreshed and taken again after a 401: {tokens}"
    );

    // verify over HTTPS: with OAuth2, with the static token in an API-key header, and refused
    // with a wrong token.
    let verify = |extra_env: &[(&str, &std::ffi::OsStr)], flags: &[&str]| {
        let mut command = tandem().command();
        command
            .arg("verify")
            .arg("--sources")
            .arg(&parts.sources)
            .arg("--mapping")
            .arg(&parts.mapping)
            .args(["--cloud-url", &parts.cloud.url])
            .args(flags)
            .envs(extra_env.iter().copied());
        command
    };
    let mut logs = Vec::new();
    let (code, out) = run(&mut verify(&env, &[]))?;
    ensure!(code == Some(0), "verify with OAuth2: {code:?} {out}");
    logs.push(out);
    let token_file = write("static-token", &static_token)?;
    let with_token = [
        ("TANDEM_CLOUD_CA_FILE", ca.as_os_str()),
        ("TANDEM_CLOUD_TOKEN_FILE", token_file.as_os_str()),
        ("TANDEM_LOG", std::ffi::OsStr::new("debug")),
    ];
    let (code, out) = run(&mut verify(
        &with_token,
        &["--cloud-api-key-header", "X-Api-Key"],
    ))?;
    ensure!(code == Some(0), "verify with an API key: {code:?} {out}");
    logs.push(out);
    let wrong = [
        ("TANDEM_CLOUD_CA_FILE", ca.as_os_str()),
        ("TANDEM_CLOUD_TOKEN", std::ffi::OsStr::new("not-the-token")),
    ];
    let (code, out) = run(&mut verify(&wrong, &[]))?;
    ensure!(
        code == Some(3) && out.contains("401"),
        "verify with a wrong token: {code:?} {out}"
    );

    // A replay over SASL, HTTPS with OAuth2 and the TLS store.
    let into = format!("{}-copy", parts.accounts[0]);
    let mut replay = parts.replay(&broker.brokers, &stores.1, &into);
    replay.args(sasl).envs(env.iter().copied());
    let (code, out) = run(&mut replay)?;
    ensure!(
        code == Some(0) && out.contains(r#""drift":{"missing":0,"extra":0,"different":0}"#),
        "replay: {code:?} {out}"
    );
    logs.push(out);

    for log in ["producer.log", "consumer.log", "refused.log"] {
        logs.push(std::fs::read_to_string(dir.join(log))?);
    }
    ensure!(logs.iter().all(|log| !log.is_empty()), "a log is empty");
    for (name, secret) in [
        ("the Kafka password", broker.password.as_str()),
        ("the OAuth2 client secret", client_secret.as_str()),
        ("the static token", static_token.as_str()),
        ("the database password", pg.password.as_str()),
    ] {
        ensure!(
            logs.iter().all(|log| !log.contains(secret)),
            "{name} appears in a log"
        );
    }
    Ok(())
}

/// A legacy PostgreSQL reached over TLS with `verify-full`, its password from a file: the
/// producer reads it and publishes; without the CA, or without TLS, it cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_database_is_read_over_verify_full_tls() -> anyhow::Result<()> {
    let pg = TlsPostgres::from_env()?;
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let dir = tempfile::tempdir()?;
    let url = pg.create_database().await?;
    let with_password = url.replacen(
        "postgres://tandem@",
        &format!("postgres://tandem:{}@", pg.password),
        1,
    );
    pg_notes(&with_password).await?.close().await?;
    let password = dir.path().join("pg-password");
    std::fs::write(&password, &pg.password)?;
    let produce = |legacy: &str| -> anyhow::Result<(Option<i32>, String)> {
        let sources = dir.path().join("sources.toml");
        std::fs::write(
            &sources,
            format!(
                "[legacy]\nurl = \"{legacy}\"\naccount_column = \"account_id\"\n\
                 [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n"
            ),
        )?;
        let store = format!("sqlite://{}", dir.path().join("producer.db").display());
        run(tandem()
            .command()
            .args([
                "produce",
                "--once",
                "--brokers",
                &brokers,
                "--topic",
                &topic,
            ])
            .arg("--sources")
            .arg(&sources)
            .args(["--store", &store])
            .env("PGPASSWORD_FILE", &password)
            .env("TANDEM_LOG", "warn"))
    };
    let untrusted = url.replace(&format!("&sslrootcert={}", pg.ca_file.display()), "");
    let (code, out) = produce(&untrusted)?;
    ensure!(code == Some(3), "without the CA: {code:?} {out}");
    let (code, out) = produce(&url.replace("sslmode=verify-full", "sslmode=disable"))?;
    ensure!(
        code == Some(3) && out.contains("no encryption"),
        "without TLS: {code:?} {out}"
    );
    ensure!(
        !out.contains(&pg.password),
        "the password is in the output: {out}"
    );
    let (code, out) = produce(&url)?;
    ensure!(code == Some(0), "over verify-full: {code:?} {out}");
    let events: Vec<String> = read_until_quiet(&brokers, &topic, Duration::from_secs(3))
        .await?
        .iter()
        .map(|(_, event)| short(event))
        .collect();
    ensure!(
        events == expect(&["BEGIN", "C notes/1@0", "END"]),
        "{events:?}"
    );
    Ok(())
}
