//! `tandem bench detector`: what detection costs on one large account — idle cycles at two
//! table sizes, finding deletes with the differencing check against a full key scan, and
//! picking up updates. Prints figures; asserts nothing about time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rand::seq::IteratorRandom;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use tandem_producer::config::Sources;
use tandem_producer::Producer;

const ACCOUNT: &str = "bench";

/// One measured operation: wall time and statements issued to each database.
#[derive(Debug, Clone, Copy)]
struct Cost {
    ms: f64,
    legacy_queries: u64,
    store_queries: u64,
}

impl Cost {
    fn json(&self) -> serde_json::Value {
        json!({
            "ms": (self.ms * 100.0).round() / 100.0,
            "legacy_queries": self.legacy_queries,
            "store_queries": self.store_queries,
        })
    }
}

async fn measure<T>(
    producer: &Producer,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Cost, T)> {
    let (legacy, store) = (producer.legacy().queries(), producer.store().queries());
    let started = Instant::now();
    let out = work.await?;
    Ok((
        Cost {
            ms: started.elapsed().as_secs_f64() * 1000.0,
            legacy_queries: producer.legacy().queries() - legacy,
            store_queries: producer.store().queries() - store,
        },
        out,
    ))
}

struct Table {
    pool: SqlitePool,
    next_version: i64,
    rows: i64,
}

impl Table {
    async fn create(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE items (account_id TEXT NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL, \
             row_version INTEGER NOT NULL, PRIMARY KEY (account_id, id))",
        )
        .execute(&pool)
        .await?;
        sqlx::query("CREATE INDEX items_by_version ON items (account_id, row_version)")
            .execute(&pool)
            .await?;
        Ok(Table {
            pool,
            next_version: 1,
            rows: 0,
        })
    }

    /// Grows the table to `rows` rows, each insert taking the next version.
    async fn grow_to(&mut self, rows: i64) -> anyhow::Result<()> {
        let (first, offset) = (self.rows + 1, self.next_version - (self.rows + 1));
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
             INSERT INTO items SELECT $3, i, 'item ' || i, i + $4 FROM n",
        )
        .bind(first)
        .bind(rows)
        .bind(ACCOUNT)
        .bind(offset)
        .execute(&self.pool)
        .await?;
        self.next_version += rows - self.rows;
        self.rows = rows;
        // Settle the write-ahead log into the database file, as a legacy database at rest.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn sample(&self, n: usize) -> Vec<i64> {
        (1..=self.rows).choose_multiple(&mut rand::rng(), n)
    }

    async fn delete(&self, ids: &[i64]) -> anyhow::Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM items WHERE account_id = $1 AND id = $2")
                .bind(ACCOUNT)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn update(&mut self, ids: &[i64]) -> anyhow::Result<()> {
        for id in ids {
            sqlx::query("UPDATE items SET name = name || '!', row_version = $3 WHERE account_id = $1 AND id = $2")
                .bind(ACCOUNT)
                .bind(id)
                .bind(self.next_version)
                .execute(&self.pool)
                .await?;
            self.next_version += 1;
        }
        Ok(())
    }
}

async fn idle(producer: &Producer, cycles: usize) -> anyhow::Result<Cost> {
    let mut costs = Vec::new();
    for _ in 0..cycles.max(1) {
        let (cost, published) = measure(producer, async {
            Ok(producer.cycle_account(ACCOUNT).await?)
        })
        .await?;
        ensure!(published == 0, "an idle cycle published {published} events");
        costs.push(cost);
    }
    Ok(median(costs))
}

fn median(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    costs[costs.len() / 2]
}

pub(super) async fn run(rows: i64, cycles: usize, json: bool) -> anyhow::Result<i32> {
    let small = 10_000.min(rows);
    let dir = tempfile::tempdir()?;
    let mut table = Table::create(&dir.path().join("legacy.db")).await?;
    let mock = rdkafka::mocking::MockCluster::new(1).context("cannot start the mock broker")?;
    mock.create_topic("bench", 1, 1)?;
    let sources_text = format!(
        "[legacy]\nurl = \"sqlite://{}\"\naccount_column = \"account_id\"\n\
         [[tables]]\nname = \"items\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        dir.path().join("legacy.db").display()
    );
    let origin = Path::new("bench-sources.toml");
    let producer = Producer::connect(
        &Sources::parse(&sources_text, origin)?,
        origin,
        tandem_producer::Options {
            brokers: mock.bootstrap_servers(),
            topic: "bench".into(),
            store_url: format!("sqlite://{}", dir.path().join("producer.db").display()),
            delete_check_interval: Duration::from_secs(24 * 3600),
            ..Default::default()
        },
    )
    .await?;
    let say = |line: &str| eprintln!("tandem bench: {line}");

    say(&format!("{small} rows"));
    table.grow_to(small).await?;
    producer.adopt(ACCOUNT).await?;
    let idle_small = idle(&producer, cycles).await?;

    say(&format!(
        "{rows} rows (building and recording the manifest takes a while)"
    ));
    table.grow_to(rows).await?;
    producer.adopt(ACCOUNT).await?;
    let idle_large = idle(&producer, cycles).await?;

    say("10 deletes");
    let mut deleted = table.sample(10);
    table.delete(&deleted).await?;
    deleted.sort();
    let mut expected: Vec<String> = deleted.iter().map(|id| id.to_string()).collect();
    expected.sort();
    let upto = table.next_version;
    // Each way is timed several times and the median kept: a check runs periodically, so its
    // steady state is what matters (the first run also pays for reading the index from disk).
    // The differencing runs come first: a full scan leaves the process with a million rows'
    // worth of memory to give back, which slows whatever runs right after it.
    let runs = cycles.max(1);
    let mut differencing = Vec::new();
    for _ in 0..runs {
        let (cost, found) = measure(&producer, async {
            Ok(producer.differences(ACCOUNT, "items", upto).await?)
        })
        .await?;
        let mut found_keys: Vec<String> = found.deleted.iter().map(|(k, _)| k.clone()).collect();
        found_keys.sort();
        ensure!(
            found_keys == expected,
            "the differencing check found {found_keys:?}, not {expected:?}"
        );
        differencing.push(cost);
    }
    let mut full_scan = Vec::new();
    for _ in 0..runs {
        let (cost, scanned) = measure(&producer, async {
            Ok(producer.full_scan_deletes(ACCOUNT, "items").await?)
        })
        .await?;
        ensure!(scanned == expected, "the full scan found {scanned:?}");
        full_scan.push(cost);
    }
    let (differencing, full_scan) = (median(differencing), median(full_scan));

    say("100 updates");
    let updated: Vec<i64> = table
        .sample(200)
        .into_iter()
        .filter(|id| !deleted.contains(id))
        .take(100)
        .collect();
    table.update(&updated).await?;
    let (updates, published) = measure(&producer, async {
        Ok(producer.cycle_account(ACCOUNT).await?)
    })
    .await?;
    ensure!(
        published == 100,
        "the cycle published {published} events, not 100"
    );

    let speedup = full_scan.ms / differencing.ms.max(0.001);
    let report = json!({
        "rows": rows,
        "idle_cycle": {
            format!("rows_{small}"): idle_small.json(),
            format!("rows_{rows}"): idle_large.json(),
        },
        "find_10_deletes": {
            "differencing": differencing.json(),
            "full_key_scan": full_scan.json(),
            "time_ratio": (speedup * 10.0).round() / 10.0,
        },
        "pick_up_100_updates": updates.json(),
    });
    if json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(0)
}
