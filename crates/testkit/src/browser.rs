//! Headless Chromium driven over WebDriver (the system's `chromedriver`), for tests of the
//! consumer's status page: load it, read what it shows, click, take a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::process::Running;

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session: [`Browser::close`] closes the browser; the driver stops when it is
/// dropped.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Running,
}

/// The first of `names` found on the PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts headless Chromium; `Ok(None)`, with the reason on stderr, when Chromium or
    /// chromedriver is not installed (`tests/run.sh` installs both).
    pub async fn start() -> anyhow::Result<Option<Browser>> {
        let (Some(chromium), Some(driver)) = (
            on_path(&["chromium", "chromium-browser", "google-chrome"]),
            on_path(&["chromedriver"]),
        ) else {
            eprintln!(
                "skipped: Chromium and chromedriver are not installed (Debian: apt-get install \
                 chromium chromium-driver; tests/run.sh installs them)"
            );
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Running::spawn(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let http = tandem_consumer::http_client().build()?;
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("chromedriver did not answer on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--window-size=1280,1000"],
                    },
                }},
            }))
            .send()
            .await?
            .json()
            .await?;
        let Some(session) = answer["value"]["sessionId"].as_str() else {
            bail!("chromedriver did not open a session: {answer}");
        };
        Ok(Some(Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
        }))
    }

    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let answer: Value = self
            .http
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        if answer["value"]["error"].is_string() {
            bail!("WebDriver {path}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("/url", json!({ "url": url })).await.map(drop)
    }

    /// Runs `script` (a function body; `return` gives its value) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.call("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits up to `timeout` until `script` returns something truthy, which it returns.
    pub async fn until(
        &self,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let value = self.eval(script).await?;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                bail!("the page did not show {what} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the first element `css` selects, as a user would.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let found = self
            .call("/element", json!({ "using": "css selector", "value": css }))
            .await
            .with_context(|| format!("no element {css}"))?;
        let Some(id) = found[ELEMENT].as_str() else {
            bail!("no element {css}: {found}");
        };
        self.call(&format!("/element/{id}/click"), json!({}))
            .await
            .map(drop)
    }

    /// Ends the session, which closes the browser; the driver stops when this is dropped.
    pub async fn close(self) -> anyhow::Result<()> {
        self.http.delete(&self.session).send().await?;
        Ok(())
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let answer: Value = self
            .http
            .get(format!("{}/screenshot", self.session))
            .send()
            .await?
            .json()
            .await?;
        let Some(png) = answer["value"].as_str() else {
            bail!("no screenshot: {answer}");
        };
        std::fs::write(path, base64::engine::general_purpose::STANDARD.decode(png)?)?;
        Ok(())
    }
}
