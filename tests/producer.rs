//! The producer against real legacy databases (PostgreSQL with typed columns and composite keys;
//! one SQLite database per account) and the real broker: the exact event sequence per account.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use sqlx::{Connection, PgConnection};
use tandem_event::{ChangeEvent, Kind, Value};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::{brokers, read_events, topic, PgDatabase};

/// (kind, table, key) of an account's events; snapshot markers as (kind, "", "").
fn summary(events: &[(String, ChangeEvent)], account: &str) -> Vec<(Kind, String, String)> {
    events
        .iter()
        .filter(|(key, _)| key == account)
        .map(|(_, e)| match e.kind {
            Kind::SnapshotBegin | Kind::SnapshotEnd => (e.kind, String::new(), String::new()),
            kind => (kind, e.entity_type.clone(), e.entity_id.clone()),
        })
        .collect()
}

fn kinds(list: &[(Kind, &str, &str)]) -> Vec<(Kind, String, String)> {
    list.iter()
        .map(|(k, t, id)| (*k, t.to_string(), id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_legacy_with_typed_columns_and_composite_keys() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let legacy_db = PgDatabase::create().await?;
    let store = PgDatabase::create().await?;
    let mut legacy = PgConnection::connect(&legacy_db.url).await?;
    for statement in [
        "CREATE SEQUENCE legacy_version",
        "CREATE FUNCTION stamp() RETURNS trigger AS $$ BEGIN \
         NEW.row_version := nextval('legacy_version'); RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TABLE invoices (tenant TEXT NOT NULL, id BIGINT NOT NULL, amount NUMERIC(12,2), \
         paid BOOLEAN, issued_at TIMESTAMPTZ, weight DOUBLE PRECISION, qty INTEGER, note TEXT, \
         row_version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, id))",
        "CREATE TABLE invoice_lines (tenant TEXT NOT NULL, invoice_id BIGINT NOT NULL, \
         line_no INTEGER NOT NULL, text TEXT, row_version BIGINT NOT NULL DEFAULT 0, \
         PRIMARY KEY (tenant, invoice_id, line_no))",
        "CREATE TRIGGER invoices_stamp BEFORE INSERT OR UPDATE ON invoices \
         FOR EACH ROW EXECUTE FUNCTION stamp()",
        "CREATE TRIGGER lines_stamp BEFORE INSERT OR UPDATE ON invoice_lines \
         FOR EACH ROW EXECUTE FUNCTION stamp()",
        "INSERT INTO invoices (tenant, id, amount, paid, issued_at, weight, qty, note) VALUES \
         ('t1', 1, 1250.50, true, '2026-11-22 10:00:00+00', 0.25, 3, NULL), \
         ('t1', 2, 0.10, false, NULL, NULL, NULL, 'second'), \
         ('t2', 1, 99.99, true, NULL, NULL, NULL, NULL)",
        "INSERT INTO invoice_lines (tenant, invoice_id, line_no, text) VALUES \
         ('t1', 1, 1, 'rent'), ('t1', 1, 2, 'water|gas')",
    ] {
        sqlx::query(statement).execute(&mut legacy).await?;
    }
    let sources = format!(
        r#"
        [legacy]
        url = "{}"
        account_column = "tenant"
        [[tables]]
        name = "invoices"
        key = ["id"]
        version_column = "row_version"
        [[tables]]
        name = "invoice_lines"
        key = ["invoice_id", "line_no"]
        version_column = "row_version"
        "#,
        legacy_db.url
    );
    let origin = Path::new("sources.toml");
    let producer = Producer::connect(
        &Sources::parse(&sources, origin)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            store_url: store.url.clone(),
            ..Default::default()
        },
    )
    .await?;
    // Enrolment: each account's first cycle is a snapshot.
    ensure!(producer.cycle().await? == 9);
    ensure!(
        producer.cycle().await? == 0,
        "an idle cycle publishes nothing"
    );

    sqlx::query("UPDATE invoices SET paid = true WHERE tenant = 't1' AND id = 2")
        .execute(&mut legacy)
        .await?;
    sqlx::query("INSERT INTO invoices (tenant, id, amount) VALUES ('t2', 5, 1)")
        .execute(&mut legacy)
        .await?;
    ensure!(producer.cycle().await? == 2);

    let events = read_events(&brokers, &topic, 11, Duration::from_secs(30)).await?;
    ensure!(
        summary(&events, "t1")
            == kinds(&[
                (Kind::SnapshotBegin, "", ""),
                (Kind::Created, "invoices", "1"),
                (Kind::Created, "invoices", "2"),
                (Kind::Created, "invoice_lines", "1|1"),
                (Kind::Created, "invoice_lines", "1|2"),
                (Kind::SnapshotEnd, "", ""),
                (Kind::Updated, "invoices", "2"),
            ]),
        "t1: {:?}",
        summary(&events, "t1")
    );
    ensure!(
        summary(&events, "t2")
            == kinds(&[
                (Kind::SnapshotBegin, "", ""),
                (Kind::Created, "invoices", "1"),
                (Kind::SnapshotEnd, "", ""),
                (Kind::Created, "invoices", "5")
            ]),
        "t2: {:?}",
        summary(&events, "t2")
    );
    let first = &events
        .iter()
        .find(|(k, e)| k == "t1" && e.entity_id == "1" && e.entity_type == "invoices")
        .ok_or_else(|| anyhow::anyhow!("no invoice 1"))?
        .1;
    let data = first.data.clone().unwrap_or_default();
    ensure!(
        data["amount"] == Value::String("1250.50".into()),
        "{data:?}"
    );
    ensure!(data["paid"] == Value::Boolean(true));
    ensure!(matches!(&data["issued_at"], Value::String(s) if s.starts_with("2026-11-22 10:00:00")));
    ensure!(data["weight"] == Value::Double(0.25));
    ensure!(data["qty"] == Value::Long(3));
    ensure!(data["note"] == Value::Null);
    ensure!(first.epoch == 0 && first.version > 0);
    // Versions only grow within an account's stream, and ids are the deterministic ones.
    for (_, e) in &events {
        ensure!(
            e.event_id
                == tandem_event::event_id(
                    &e.account_id,
                    &e.entity_type,
                    &e.entity_id,
                    e.epoch,
                    e.version,
                    e.kind
                )
        );
    }

    drop(producer);
    legacy.close().await?;
    legacy_db.drop().await?;
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sqlite_database_per_account() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let dir = tempfile::tempdir()?;
    let mut urls = Vec::new();
    for (account, rows) in [("north", 2), ("south", 1)] {
        let path = dir.path().join(format!("{account}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut db = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query("CREATE TABLE items (sku TEXT PRIMARY KEY, name TEXT, v INTEGER NOT NULL)")
            .execute(&mut db)
            .await?;
        for i in 1..=rows {
            sqlx::query("INSERT INTO items VALUES ($1, $2, $3)")
                .bind(format!("sku-{i}"))
                .bind(format!("item {i}"))
                .bind(i64::from(i) * 10)
                .execute(&mut db)
                .await?;
        }
        urls.push(format!("{account} = \"sqlite://{}\"", path.display()));
    }
    let sources = format!(
        "[legacy.databases]\n{}\n[[tables]]\nname = \"items\"\nkey = [\"sku\"]\nversion_column = \"v\"\n",
        urls.join("\n")
    );
    let origin = Path::new("sources.toml");
    let producer = Producer::connect(
        &Sources::parse(&sources, origin)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            store_url: format!("sqlite://{}", dir.path().join("producer.db").display()),
            ..Default::default()
        },
    )
    .await?;
    ensure!(producer.cycle().await? == 7);
    let events = read_events(&brokers, &topic, 7, Duration::from_secs(30)).await?;
    ensure!(
        summary(&events, "north")
            == kinds(&[
                (Kind::SnapshotBegin, "", ""),
                (Kind::Created, "items", "sku-1"),
                (Kind::Created, "items", "sku-2"),
                (Kind::SnapshotEnd, "", "")
            ])
    );
    ensure!(
        summary(&events, "south")
            == kinds(&[
                (Kind::SnapshotBegin, "", ""),
                (Kind::Created, "items", "sku-1"),
                (Kind::SnapshotEnd, "", "")
            ])
    );
    ensure!(events.iter().all(|(key, e)| *key == e.account_id));
    Ok(())
}

/// The topic is created to be replayed: kept forever and never compacted, as the broker then
/// reports; asking again finds it and reports it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_created_to_be_replayed() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let name = tandem_testkit::unique("tandem-retention").replace('_', "-");
    let settings = tandem_producer::TopicSettings::new(3);
    let first = tandem_producer::ensure_topic(&brokers, &name, &settings, &[]).await?;
    let configs =
        |report: &tandem_producer::TopicReport| -> Vec<(String, String)> { report.configs.clone() };
    ensure!(first.created, "{first}");
    let want = vec![
        ("retention.ms".to_owned(), "-1".to_owned()),
        ("cleanup.policy".to_owned(), "delete".to_owned()),
    ];
    ensure!(configs(&first) == want, "{first}");
    ensure!(first.replay_warning().is_none(), "{first}");
    let again = tandem_producer::ensure_topic(&brokers, &name, &settings, &[]).await?;
    ensure!(!again.created && configs(&again) == want, "{again}");
    Ok(())
}
