//! Tandem's HTTP ports refuse what they should: a state-changing request without the API token
//! (401), a body over the cap (413), and bad input answered with a 4xx that names the problem —
//! for a malformed detection, the line and the field. Real `tandem` processes, Tansu,
//! PostgreSQL and cloudsim.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use reqwest::StatusCode;
use serde_json::Value;
use tandem_testkit::{brokers, seeded_legacy, topic, Cloud, PgDatabase, Running, Seeded, Tandem};

const TOKEN: &str = "access-test-token-0123456789";

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// POSTs `body` to `url` with `token` as the bearer token (none when `None`) once the port
/// answers; returns the status and the answer's JSON (`Null` when it is not JSON).
async fn post(
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body> + Clone,
) -> anyhow::Result<(StatusCode, Value)> {
    let client = tandem_consumer::http_client().build()?;
    let started = Instant::now();
    loop {
        let mut request = client.post(url).body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(answer) => {
                let status = answer.status();
                let text = answer.text().await?;
                return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            Err(e) if e.is_connect() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context(format!("POST {url}")),
        }
    }
}

/// Sends the head of a POST declaring a body of `length` bytes, then only its first bytes, and
/// returns what the port answers.
fn status_of_declared_body(port: u16, path: &str, length: usize) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {length}\r\n\r\n"
    )?;
    stream.write_all(&[b'{'; 4096])?;
    // The head and the JSON error, until the error's end or the connection's.
    let (mut answer, mut chunk) = (Vec::new(), [0; 4096]);
    while !answer.ends_with(b"}") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producers_detections_port_needs_the_token_caps_bodies_and_names_bad_lines(
) -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    let Seeded { sources, .. } = seeded_legacy(dir.path(), "guarded", 1).await?;

    // Without a token configured, the port that takes detections is not opened at all.
    let refused = tandem()
        .produce(&sources, &brokers, &topic, &store.url)
        .args(["--http", &free_port()?.to_string(), "--once"])
        .env_remove("TANDEM_API_TOKEN")
        .stderr(std::process::Stdio::piped())
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(2) && said.contains("TANDEM_API_TOKEN"),
        "started without a token: {:?} {said}",
        refused.status
    );

    // A port alone binds to loopback.
    let port = free_port()?;
    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &brokers, &topic, &store.url)
            .args(["--http", &port.to_string()])
            .env("TANDEM_API_TOKEN", TOKEN),
    )?;
    let url = format!("http://127.0.0.1:{port}/v1/accounts/acme/detections");
    let good = r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":10,"data":{"name":"Ada"}}"#;

    let (status, answer) = post(&url, None, good).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status} {answer}");
    ensure!(error_of(&answer).contains("Bearer"), "{answer}");
    let (status, answer) = post(&url, Some("not-the-token-0123456789"), good).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status} {answer}");
    ensure!(error_of(&answer).contains("wrong"), "{answer}");

    // A body of 17 MiB, over the cap: refused as soon as its length is known, before it is
    // sent. (Sent by hand: an HTTP client would be still sending when the answer comes.)
    let answer = status_of_declared_body(port, "/v1/accounts/acme/detections", 17 << 20)?;
    ensure!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    ensure!(answer.contains("at most 16777216"), "{answer}");

    // Malformed lines: each named by its line and field; the good one is taken.
    let body = [
        good,
        r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":-3,"data":{}}"#,
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"2","version":11,"data":{"tags":[1,2]}}"#,
        "{ not json",
    ]
    .join("\n");
    let (status, answer) = post(&url, Some(TOKEN), body).await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status} {answer}");
    ensure!(answer["accepted"] == 1, "{answer}");
    let named: Vec<(u64, &str)> = answer["rejected"]
        .as_array()
        .context("the rejections")?
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        named == [(2, "version"), (3, "data.tags"), (4, "(line)")],
        "{answer}"
    );
    // A line over 1 MiB is refused by its number, without being parsed.
    let long = format!(
        r#"{{"kind":"CREATED","entity_type":"contacts","entity_id":"3","version":12,"data":{{"note":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let (status, answer) = post(&url, Some(TOKEN), format!("{good}\n{long}")).await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status}");
    ensure!(answer["rejected"][0]["line"] == 2, "{answer}");
    ensure!(answer["rejected"][0]["field"] == "(line)", "{answer}");
    // An account id that is no account id, in the path.
    let long_account = "a".repeat(300);
    let bad_url = format!("http://127.0.0.1:{port}/v1/accounts/{long_account}/detections");
    let (status, answer) = post(&bad_url, Some(TOKEN), good).await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status} {answer}");
    ensure!(error_of(&answer).contains("account"), "{answer}");
    // A body that is not text.
    let (status, _) = post(&url, Some(TOKEN), vec![0xffu8, 0xfe, 0x00]).await?;
    ensure!(status.is_client_error(), "{status}");

    // And the right token with good lines is taken.
    let (status, answer) = post(&url, Some(TOKEN), good).await?;
    ensure!(status == StatusCode::OK, "{status} {answer}");
    ensure!(answer["accepted"] == 1, "{answer}");
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_resume_needs_the_token_and_reads_stay_open() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;

    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let _consumer = Running::spawn(
        tandem()
            .consume(
                &mapping,
                (&brokers, &topic),
                &store.url,
                &cloud.url,
                &dir.path().join("consumer.log"),
            )
            .args(["--http-listen", &port.to_string()])
            .env("TANDEM_API_TOKEN_FILE", &token_file),
    )?;
    let resume = format!("{base}/v1/accounts/acme/resume");
    let (status, answer) = post(&resume, None, "").await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status} {answer}");
    let (status, answer) = post(&resume, Some("Bearer-but-wrong-0123456"), "").await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status} {answer}");
    let (status, _) = post(&resume, Some(TOKEN), vec![b'x'; 64 * 1024]).await?;
    ensure!(status == StatusCode::PAYLOAD_TOO_LARGE, "{status}");
    // With the token: an account that is not parked is named as such, not a server error.
    let (status, answer) = post(&resume, Some(TOKEN), "").await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status} {answer}");
    ensure!(error_of(&answer).contains("not parked"), "{answer}");

    // Reads need no token.
    let page = tandem_consumer::http_client()
        .build()?
        .get(format!("{base}/v1/status"))
        .send()
        .await?;
    ensure!(page.status() == StatusCode::OK, "{}", page.status());
    cloud.stop().await?;
    store.drop().await
}
