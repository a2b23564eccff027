//! cloudsim as a SaaS API is reached: over HTTPS with a certificate it generates, with OAuth2
//! client credentials or a static token required on `/v1`, and with the schema registry's
//! subset that the Confluent framing needs.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tandem_cloudsim::tls::TlsSource;
use tandem_cloudsim::{AuthOptions, CloudSim, Options};
use tokio_util::sync::CancellationToken;

const FORM: &str = "application/x-www-form-urlencoded";

/// cloudsim on HTTPS requiring credentials, and a client trusting its CA.
async fn start(token_ttl: Duration) -> anyhow::Result<(String, Client, CancellationToken)> {
    let options = Options {
        tls: Some(TlsSource::Generated {
            names: vec!["localhost".into(), "127.0.0.1".into()],
        }),
        auth: Some(AuthOptions {
            client: Some(("tandem".into(), "s3cret id&secret".into())),
            token_ttl,
            static_token: Some("static-token".into()),
        }),
        ..Default::default()
    };
    let sim = CloudSim::bind(([127, 0, 0, 1], 0).into(), options).await?;
    let base = sim.base_url();
    let ca = sim
        .ca_pem()
        .context("a generated certificate has its CA")?
        .to_owned();
    let stop = CancellationToken::new();
    tokio::spawn(sim.serve(stop.clone()));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes())?)
        .timeout(Duration::from_secs(10))
        .build()?;
    Ok((base, client, stop))
}

#[tokio::test]
async fn v1_requires_a_token_that_expires() -> anyhow::Result<()> {
    let (base, client, stop) = start(Duration::from_secs(1)).await?;
    ensure!(base.starts_with("https://"), "{base}");
    let list = format!("{base}/v1/accounts/a/contacts");
    let status = client.get(&list).send().await?.status();
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "without a token: {status}"
    );
    ensure!(client
        .get(format!("{base}/health"))
        .send()
        .await?
        .status()
        .is_success());

    // The client authenticates with HTTP Basic (form-encoded id and secret) or in the form.
    let wrong = client
        .post(format!("{base}/oauth/token"))
        .basic_auth("tandem", Some("wrong"))
        .header("Content-Type", FORM)
        .body("grant_type=client_credentials")
        .send()
        .await?;
    ensure!(wrong.status() == StatusCode::UNAUTHORIZED);
    let token: Value = client
        .post(format!("{base}/oauth/token"))
        .basic_auth("tandem", Some("s3cret+id%26secret"))
        .header("Content-Type", FORM)
        .body("grant_type=client_credentials")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let access = token["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned();
    ensure!(token["expires_in"] == json!(1) && token["token_type"] == json!("Bearer"));
    let form: Value = client
        .post(format!("{base}/oauth/token"))
        .header("Content-Type", FORM)
        .body("grant_type=client_credentials&client_id=tandem&client_secret=s3cret+id%26secret")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(form["access_token"].is_string());

    let status = client
        .get(&list)
        .bearer_auth(&access)
        .send()
        .await?
        .status();
    ensure!(status == StatusCode::OK, "with a token: {status}");
    let status = client
        .get(&list)
        .header("X-Api-Key", "static-token")
        .send()
        .await?
        .status();
    ensure!(status == StatusCode::OK, "with the static token: {status}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = client
        .get(&list)
        .bearer_auth(&access)
        .send()
        .await?
        .status();
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "an expired token: {status}"
    );
    let counts: Value = client
        .get(format!("{base}/admin/tokens"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        counts["issued"] == json!(2) && counts["refused"] == json!(2),
        "{counts}"
    );
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn the_schema_registry_answers_one_id_per_schema() -> anyhow::Result<()> {
    let (base, client, stop) = start(Duration::from_secs(60)).await?;
    let register = |subject: &str, schema: &str| {
        let request = client
            .post(format!("{base}/subjects/{subject}/versions"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(json!({ "schema": schema }).to_string());
        async move {
            let response = request.send().await?.error_for_status()?;
            anyhow::Ok(response.json::<Value>().await?["id"].clone())
        }
    };
    let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
    let a_spaced =
        r#"{ "type": "record", "name": "A", "fields": [ {"name": "x", "type": "int"} ] }"#;
    let b = r#"{"type":"record","name":"B","fields":[]}"#;
    let first = register("t-value", a).await?;
    ensure!(first == json!(1), "{first}");
    ensure!(register("other-value", a_spaced).await? == first);
    ensure!(register("t-value", b).await? == json!(2));
    let found: Value = client
        .get(format!("{base}/schemas/ids/1"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(found["schema"] == json!(a), "{found}");
    let missing = client.get(format!("{base}/schemas/ids/3")).send().await?;
    ensure!(missing.status() == StatusCode::NOT_FOUND);
    ensure!(missing.json::<Value>().await?["error_code"] == json!(40403));
    let subjects: Value = client
        .get(format!("{base}/subjects"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(subjects == json!(["other-value", "t-value"]), "{subjects}");
    stop.cancel();
    Ok(())
}
