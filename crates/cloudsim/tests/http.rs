//! The simulator over real HTTP on loopback.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tandem_cloudsim::{CloudSim, Faults, Options};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Server {
    base: String,
    client: Client,
    shutdown: CancellationToken,
    task: JoinHandle<tandem_cloudsim::Result<()>>,
}

impl Server {
    async fn start(options: Options) -> anyhow::Result<Server> {
        let sim = CloudSim::bind(([127, 0, 0, 1], 0).into(), options).await?;
        let base = sim.base_url();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sim.serve(shutdown.clone()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Server {
            base,
            client,
            shutdown,
            task,
        })
    }

    async fn with_faults(faults: Faults) -> anyhow::Result<Server> {
        Server::start(Options {
            faults,
            ..Options::default()
        })
        .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        // Idle keep-alive connections would otherwise hold up the graceful shutdown.
        drop(self.client);
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.client.post(self.url(path)).json(body).send().await?;
        Ok((response.status(), response.json().await?))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.client.get(self.url(path)).send().await?;
        Ok((response.status(), response.json().await?))
    }

    async fn set_faults(&self, faults: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .put(self.url("/admin/faults"))
            .json(faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// `(op, id, external_ref, idempotency_key)` of every audit entry of `account`.
    async fn audit(&self, account: &str) -> anyhow::Result<Vec<(String, String, Value, Value)>> {
        let (status, body) = self.get(&format!("/admin/audit?account={account}")).await?;
        ensure!(status == StatusCode::OK, "audit: {status} {body}");
        let entries = body["entries"].as_array().context("entries")?;
        Ok(entries
            .iter()
            .map(|e| {
                (
                    e["op"].as_str().unwrap_or_default().to_owned(),
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    e["external_ref"].clone(),
                    e["idempotency_key"].clone(),
                )
            })
            .collect())
    }
}

fn id_of(doc: &Value) -> anyhow::Result<String> {
    Ok(doc["id"]
        .as_str()
        .context("document has no string id")?
        .to_owned())
}

#[tokio::test]
async fn crud_paging_and_audit() -> anyhow::Result<()> {
    let server = Server::start(Options::default()).await?;
    let users = "/v1/accounts/acme/users";

    let (status, created) = server
        .post(users, &json!({"name": "ada", "external_ref": "legacy-1"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let ada = id_of(&created)?;
    assert!(ada.starts_with("users_"), "{ada}");
    assert_eq!(
        created,
        json!({"id": ada, "name": "ada", "external_ref": "legacy-1"})
    );

    let (status, fetched) = server.get(&format!("{users}/{ada}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let response = server
        .client
        .put(server.url(&format!("{users}/{ada}")))
        .json(&json!({"name": "ada lovelace", "id": "ignored"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let replaced: Value = response.json().await?;
    assert_eq!(replaced, json!({"id": ada, "name": "ada lovelace"}));

    let (_, grace) = server
        .post(users, &json!({"name": "grace", "external_ref": "legacy-2"}))
        .await?;
    let grace = id_of(&grace)?;
    assert_ne!(grace, ada);

    let (status, all) = server.get(users).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        all["items"],
        json!([replaced, {"id": grace, "name": "grace", "external_ref": "legacy-2"}])
    );
    assert_eq!(all["next"], Value::Null);

    let (_, first) = server.get(&format!("{users}?limit=1")).await?;
    assert_eq!(first["items"][0]["id"], json!(ada));
    assert_eq!(first["next"], json!(ada));
    let (_, second) = server.get(&format!("{users}?limit=1&after={ada}")).await?;
    assert_eq!(second["items"][0]["id"], json!(grace));
    assert_eq!(second["next"], Value::Null);

    let response = server
        .client
        .delete(server.url(&format!("{users}/{grace}")))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = server.get(&format!("{users}/{grace}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let response = server
        .client
        .delete(server.url(&format!("{users}/{grace}")))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = server
        .client
        .put(server.url(&format!("{users}/{grace}")))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Other accounts and collections are separate.
    let (_, other) = server.get("/v1/accounts/other/users").await?;
    assert_eq!(other["items"], json!([]));
    let (status, _) = server
        .get(&format!("/v1/accounts/acme/groups/{ada}"))
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let audit = server.audit("acme").await?;
    let expected = vec![
        (
            "create".to_owned(),
            ada.clone(),
            json!("legacy-1"),
            Value::Null,
        ),
        ("update".to_owned(), ada.clone(), Value::Null, Value::Null),
        (
            "create".to_owned(),
            grace.clone(),
            json!("legacy-2"),
            Value::Null,
        ),
        (
            "delete".to_owned(),
            grace.clone(),
            json!("legacy-2"),
            Value::Null,
        ),
    ];
    assert_eq!(audit, expected);
    assert!(server.audit("other").await?.is_empty());

    let (_, page) = server.get("/admin/audit?limit=3").await?;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(3));
    let next = page["next"].as_i64().context("next seq")?;
    let (_, rest) = server.get(&format!("/admin/audit?after={next}")).await?;
    assert_eq!(rest["entries"][0]["op"], json!("delete"));
    assert_eq!(rest["entries"][0]["collection"], json!("users"));
    assert!(rest["entries"][0]["at_ms"].as_i64().is_some());
    assert_eq!(rest["next"], Value::Null);

    let (status, health) = server.get("/health").await?;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    server.stop().await
}

#[tokio::test]
async fn idempotent_create_replays_and_conflicts() -> anyhow::Result<()> {
    let server = Server::start(Options::default()).await?;
    let post = |account: &str, key: &str, body: &'static str| {
        server
            .client
            .post(server.url(&format!("/v1/accounts/{account}/users")))
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let first = post("acme", "k1", r#"{"name": "ada", "tags": {"a": 1, "b": 2}}"#).await?;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.text().await?;
    // The same request with its keys in another order is the same request.
    let replay = post("acme", "k1", r#"{"tags": {"b": 2, "a": 1}, "name": "ada"}"#).await?;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.text().await?, first_body);
    // So is the same request with other whitespace and an escaped character.
    let replay = post(
        "acme",
        "k1",
        "{\n\t\"name\":\"\\u0061da\",\"tags\":{ \"a\":1 , \"b\":2 }}",
    )
    .await?;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.text().await?, first_body);

    let conflict = post("acme", "k1", r#"{"name": "grace"}"#).await?;
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = conflict.json().await?;
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("k1")),
        "{error}"
    );

    // Keys are scoped per account.
    let elsewhere = post("other", "k1", r#"{"name": "grace"}"#).await?;
    assert_eq!(elsewhere.status(), StatusCode::CREATED);

    let (_, list) = server.get("/v1/accounts/acme/users").await?;
    let first_doc: Value = serde_json::from_str(&first_body)?;
    assert_eq!(list["items"], json!([first_doc]));
    let audit = server.audit("acme").await?;
    assert_eq!(
        audit,
        vec![(
            "create".to_owned(),
            id_of(&first_doc)?,
            Value::Null,
            json!("k1")
        )]
    );
    server.stop().await
}

#[tokio::test]
async fn file_database_survives_restart() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let options = Options {
        database_url: format!("sqlite://{}", dir.path().join("cloud.db").display()),
        ..Options::default()
    };

    let server = Server::start(options.clone()).await?;
    let (status, doc) = server
        .post("/v1/accounts/acme/users", &json!({"name": "ada"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await?;

    let server = Server::start(options).await?;
    let id = id_of(&doc)?;
    let (status, fetched) = server.get(&format!("/v1/accounts/acme/users/{id}")).await?;
    assert_eq!((status, fetched), (StatusCode::OK, doc));
    let (_, second) = server
        .post("/v1/accounts/acme/users", &json!({"name": "grace"}))
        .await?;
    assert_ne!(id_of(&second)?, id, "ids stay unique across restarts");
    assert_eq!(server.audit("acme").await?.len(), 2);
    server.stop().await
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() -> anyhow::Result<()> {
    let server = Server::with_faults(Faults {
        rate_limit_rate: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    })
    .await?;
    let response = server
        .client
        .post(server.url("/v1/accounts/acme/users"))
        .json(&json!({"name": "ada"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = response
        .headers()
        .get("retry-after")
        .context("Retry-After")?;
    assert_eq!(retry_after.to_str()?, "7");
    // Admin routes are never faulted.
    let (status, _) = server.get("/health").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(server.audit("acme").await?.is_empty());
    server.stop().await
}

#[tokio::test]
async fn error_rate_answers_503_and_applies_nothing() -> anyhow::Result<()> {
    let server = Server::with_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await?;
    let (status, body) = server
        .post("/v1/accounts/acme/users", &json!({"name": "ada"}))
        .await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].is_string());
    let (status, _) = server.get("/v1/accounts/acme/users").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(server.audit("acme").await?.is_empty());
    server.stop().await
}

#[tokio::test]
async fn faults_change_at_run_time() -> anyhow::Result<()> {
    let server = Server::start(Options::default()).await?;
    let users = "/v1/accounts/acme/users";
    assert_eq!(server.get(users).await?.0, StatusCode::OK);

    let set = server.set_faults(&json!({"error_rate": 1.0})).await?;
    assert_eq!(set["error_rate"], json!(1.0));
    assert_eq!(
        set["retry_after_secs"],
        json!(1),
        "missing fields take defaults"
    );
    let (_, current) = server.get("/admin/faults").await?;
    assert_eq!(current, set);
    assert_eq!(server.get(users).await?.0, StatusCode::SERVICE_UNAVAILABLE);

    let response = server
        .client
        .put(server.url("/admin/faults"))
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let cleared = server.set_faults(&json!({})).await?;
    assert_eq!(
        serde_json::from_value::<Faults>(cleared)?,
        Faults::default()
    );
    assert_eq!(server.get(users).await?.0, StatusCode::OK);

    server.set_faults(&json!({"latency_ms": 150})).await?;
    let started = Instant::now();
    assert_eq!(server.get(users).await?.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.stop().await
}

#[tokio::test]
async fn dropped_connection_after_commit_still_applies() -> anyhow::Result<()> {
    let server = Server::with_faults(Faults {
        drop_after_apply_rate: 1.0,
        ..Faults::default()
    })
    .await?;
    let users = "/v1/accounts/acme/users";

    let outcome = async {
        server
            .client
            .post(server.url(users))
            .json(&json!({"name": "ada", "external_ref": "legacy-1"}))
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(outcome.is_err(), "the client must not see a clean response");

    // Reads are not mutations, so they are never dropped.
    let (status, list) = server.get(users).await?;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().context("items")?;
    assert_eq!(items.len(), 1);
    let id = id_of(&items[0])?;

    // A 204 has no body to break; the delete must fail on the client side too.
    let outcome = async {
        server
            .client
            .delete(server.url(&format!("{users}/{id}")))
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(outcome.is_err(), "the client must not see a clean delete");
    let (_, list) = server.get(users).await?;
    assert_eq!(list["items"], json!([]));

    let audit = server.audit("acme").await?;
    let ops: Vec<&str> = audit.iter().map(|(op, ..)| op.as_str()).collect();
    assert_eq!(ops, ["create", "delete"]);
    assert_eq!(audit[0].2, json!("legacy-1"));
    server.stop().await
}

#[tokio::test]
async fn rejected_account_gets_422_only_for_itself() -> anyhow::Result<()> {
    let server = Server::with_faults(Faults {
        reject_accounts: vec!["bad".to_owned()],
        ..Faults::default()
    })
    .await?;
    let (status, body) = server
        .post("/v1/accounts/bad/users", &json!({"name": "x"}))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("bad")),
        "{body}"
    );
    // Reads still work: what the account holds can be looked at.
    assert_eq!(
        server.get("/v1/accounts/bad/users").await?.0,
        StatusCode::OK
    );

    let (status, _) = server
        .post("/v1/accounts/good/users", &json!({"name": "x"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert!(server.audit("bad").await?.is_empty());
    server.stop().await
}

#[tokio::test]
async fn invalid_names_and_bodies_are_400() -> anyhow::Result<()> {
    let server = Server::start(Options::default()).await?;
    for path in [
        "/v1/accounts/acme/Users",
        "/v1/accounts/acme/us.ers",
        "/v1/accounts/acme/a%20b",
        "/v1/accounts/ac$me/users",
    ] {
        let (status, body) = server.post(path, &json!({"name": "x"})).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body["error"].is_string(), "{path}: {body}");
        assert_eq!(server.get(path).await?.0, StatusCode::BAD_REQUEST, "{path}");
    }

    for body in ["[1, 2]", "\"text\"", "42", "{not json", ""] {
        let response = server
            .client
            .post(server.url("/v1/accounts/acme/users"))
            .body(body)
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let error: Value = response.json().await?;
        assert!(error["error"].is_string(), "{error}");
    }

    let (_, doc) = server
        .post("/v1/accounts/acme/users", &json!({"name": "ada"}))
        .await?;
    let response = server
        .client
        .put(server.url(&format!("/v1/accounts/acme/users/{}", id_of(&doc)?)))
        .json(&json!(["not", "an", "object"]))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, _) = server.get("/v1/accounts/acme/users?after=groups_1").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(server.audit("acme").await?.len(), 1);
    server.stop().await
}

#[tokio::test]
async fn concurrent_writes_all_succeed() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let server = Server::start(Options {
        database_url: format!("sqlite://{}", dir.path().join("cloud.db").display()),
        ..Options::default()
    })
    .await?;
    let requests = (0..64).map(|n| {
        let client = server.client.clone();
        let url = server.url("/v1/accounts/acme/users");
        async move {
            let created = client
                .post(&url)
                .header("Idempotency-Key", format!("k{}", n % 32))
                .json(&json!({"n": n % 32}))
                .send()
                .await?;
            let listed = client.get(&url).send().await?;
            anyhow::Ok((created.status(), listed.status()))
        }
    });
    for outcome in futures::future::join_all(requests).await {
        assert_eq!(outcome?, (StatusCode::CREATED, StatusCode::OK));
    }
    let (_, list) = server.get("/v1/accounts/acme/users").await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(32));
    assert_eq!(server.audit("acme").await?.len(), 32);
    server.stop().await
}
