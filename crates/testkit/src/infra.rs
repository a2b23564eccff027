//! The real parts a test runs against: the broker and PostgreSQL the test command started,
//! cloudsim on a loopback port, and names no other test uses.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The Kafka-protocol broker the test command started (`TANDEM_TEST_BROKERS`).
pub fn brokers() -> anyhow::Result<String> {
    std::env::var("TANDEM_TEST_BROKERS").context(
        "TANDEM_TEST_BROKERS is not set: run the tests through tests/run.sh, which starts a broker",
    )
}

/// The PostgreSQL server for tests (`TANDEM_TEST_PG`, default the local server).
pub fn postgres_url() -> String {
    std::env::var("TANDEM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A name no other test in this run (or a parallel run) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh topic with `partitions` partitions and its dead-letter topic (`<topic>.dlq`).
pub async fn topic(brokers: &str, partitions: i32) -> anyhow::Result<String> {
    let topic = unique("tandem-test").replace('_', "-");
    let settings = tandem_producer::TopicSettings::new(partitions);
    tandem_producer::ensure_topic(brokers, &topic, &settings, &[]).await?;
    let dlq = tandem_producer::TopicSettings::new(1);
    tandem_producer::ensure_topic(brokers, &format!("{topic}.dlq"), &dlq, &[]).await?;
    Ok(topic)
}

/// A PostgreSQL database created for one test and dropped by [`PgDatabase::drop`].
#[derive(Debug)]
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let server = postgres_url();
        let name = unique("tandem_test");
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {server}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(PgDatabase {
            url: format!("{server}/{name}"),
            name,
        })
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_url())).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// cloudsim serving on a loopback port, with its data in a temporary directory.
#[derive(Debug)]
pub struct Cloud {
    pub url: String,
    /// Over HTTPS with a generated certificate: the file of the authority that signed it.
    pub ca_file: Option<std::path::PathBuf>,
    stop: CancellationToken,
    faults: std::sync::Arc<tokio::sync::RwLock<tandem_cloudsim::Faults>>,
    task: tokio::task::JoinHandle<Result<(), tandem_cloudsim::Error>>,
    _dir: tempfile::TempDir,
}

impl Cloud {
    pub async fn start(faults: tandem_cloudsim::Faults) -> anyhow::Result<Self> {
        Self::start_with(tandem_cloudsim::Options {
            faults,
            ..Default::default()
        })
        .await
    }

    /// cloudsim with `options`, its database replaced by one in a temporary directory.
    pub async fn start_with(options: tandem_cloudsim::Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let options = tandem_cloudsim::Options {
            database_url: format!("sqlite://{}", dir.path().join("cloud.db").display()),
            ..options
        };
        let server = tandem_cloudsim::CloudSim::bind("127.0.0.1:0".parse()?, options).await?;
        let url = server.base_url();
        let ca_file = match server.ca_pem() {
            Some(pem) => {
                let path = dir.path().join("cloud-ca.pem");
                std::fs::write(&path, pem)?;
                Some(path)
            }
            None => None,
        };
        let faults = server.faults();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(stop.clone()));
        Ok(Cloud {
            url,
            ca_file,
            stop,
            faults,
            task,
            _dir: dir,
        })
    }

    /// Corrupts a document behind the API's back (cloudsim's admin API): its body replaced by
    /// `doc`, or the document removed when `doc` is `None`.
    pub async fn corrupt(
        &self,
        (account, collection, id): (&str, &str, &str),
        doc: Option<&serde_json::Value>,
    ) -> anyhow::Result<()> {
        let url = format!("{}/admin/corrupt/{account}/{collection}/{id}", self.url);
        let client = tandem_consumer::http_client().build()?;
        let request = match doc {
            Some(doc) => client.put(url).json(doc),
            None => client.delete(url),
        };
        request.send().await?.error_for_status()?;
        Ok(())
    }

    /// Replaces the fault settings of the running server.
    pub async fn set_faults(&self, faults: tandem_cloudsim::Faults) {
        *self.faults.write().await = faults;
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// The PostgreSQL server the test command started with TLS only (`TANDEM_TEST_PG_TLS`), its
/// certificate authority and the password of its role `tandem`.
#[derive(Debug, Clone)]
pub struct TlsPostgres {
    /// `postgres://postgres@localhost:<port>`, without a database.
    pub server: String,
    pub ca_file: std::path::PathBuf,
    pub password: String,
}

impl TlsPostgres {
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: run the tests through tests/run.sh, which starts a TLS-only PostgreSQL")
            })
        };
        Ok(TlsPostgres {
            server: var("TANDEM_TEST_PG_TLS")?,
            ca_file: var("TANDEM_TEST_PG_TLS_CA")?.into(),
            password: var("TANDEM_TEST_PG_TLS_PASSWORD")?,
        })
    }

    /// The query string that makes a connection verify the server's certificate and name.
    pub fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca_file.display())
    }

    /// A new database owned by `tandem`; its URL for `tandem` (no password in it: that comes
    /// from PGPASSWORD) over `verify-full`.
    pub async fn create_database(&self) -> anyhow::Result<String> {
        let name = unique("tandem_tls");
        let admin = format!("{}/postgres?{}", self.server, self.verify_full());
        let mut conn = PgConnection::connect(&admin)
            .await
            .with_context(|| format!("cannot reach the TLS PostgreSQL at {}", self.server))?;
        sqlx::query(&format!("CREATE DATABASE {name} OWNER tandem"))
            .execute(&mut conn)
            .await?;
        let host = self
            .server
            .strip_prefix("postgres://postgres@")
            .context("TANDEM_TEST_PG_TLS is not postgres://postgres@host:port")?;
        Ok(format!(
            "postgres://tandem@{host}/{name}?{}",
            self.verify_full()
        ))
    }
}
