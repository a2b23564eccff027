//! `tandem bench status`: how long `tandem status --json` takes to answer over stores that
//! hold --accounts accounts (SQLite consumer, producer and migration stores, filled as a long
//! migration leaves them), run as a user runs it: a new process each time.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde::Serialize;
use tandem_migration::State;

#[derive(Debug, Serialize)]
struct Figures {
    accounts: usize,
    runs: usize,
    /// Wall time of one `tandem status --json`, process start to exit.
    median_ms: f64,
    max_ms: f64,
    /// The answer's size.
    json_bytes: usize,
}

const GROUP: &str = "bench-group";
const TOPIC: &str = "bench.changes";
const PARTITIONS: i64 = 8;

pub async fn run(accounts: usize, runs: usize, json: bool) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir()?;
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let (consumer, producer, migration) =
        (url("consumer.db"), url("producer.db"), url("migration.db"));
    // Made and migrated as the processes make them, then filled.
    drop(tandem_consumer::Store::open(&consumer).await?);
    drop(tandem_producer::Store::open(&producer).await?);
    let names: Vec<String> = (0..accounts).map(|i| format!("account-{i:05}")).collect();
    let census: Vec<(String, State)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), State::ALL[i % State::ALL.len()]))
        .collect();
    tandem_migration::Store::open(&migration)
        .await?
        .census(&census, "bench")
        .await?;
    fill(&consumer, &producer, &names).await?;

    let exe = std::env::current_exe().context("cannot find the tandem binary")?;
    let mut times = Vec::with_capacity(runs);
    let mut json_bytes = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let output = std::process::Command::new(&exe)
            .args([
                "status",
                "--json",
                "--offline",
                "--group",
                GROUP,
                "--topic",
                TOPIC,
            ])
            .args(["--consumer-store", &consumer, "--producer-store", &producer])
            .args(["--migration-store", &migration])
            .env("TANDEM_LOG", "warn")
            .output()?;
        times.push(started.elapsed());
        ensure!(
            output.status.success(),
            "tandem status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        ensure!(
            status["accounts"] == accounts,
            "tandem status listed {} accounts of {accounts}",
            status["accounts"]
        );
        json_bytes = output.stdout.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let figures = Figures {
        accounts,
        runs: times.len(),
        median_ms: ms(times[times.len() / 2]),
        max_ms: ms(times[times.len() - 1]),
        json_bytes,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "tandem status --json over {} accounts: median {:.0} ms, max {:.0} ms of {} runs ({} bytes)",
            figures.accounts, figures.median_ms, figures.max_ms, figures.runs, figures.json_bytes
        );
    }
    Ok(0)
}

/// Every account applied somewhere in its partition, published further along for one in
/// ten (behind), one in a thousand parked with held events and a dead letter, and a few
/// unsettled keys.
async fn fill(consumer: &str, producer: &str, names: &[String]) -> anyhow::Result<()> {
    let now = tandem_event::now_millis();
    let pool = tandem_sql::open(consumer).await?;
    let mut tx = pool.begin().await?;
    for (i, name) in names.iter().enumerate() {
        let (partition, offset) = (i as i64 % PARTITIONS, i as i64 * 3);
        sqlx::query(
            "INSERT INTO consumer_account_offsets \
             (consumer_group, topic, partition_id, account, next_offset, applied_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(GROUP)
        .bind(TOPIC)
        .bind(partition)
        .bind(name)
        .bind(offset + 1)
        .bind(now - 1_000)
        .execute(&mut *tx)
        .await?;
        if i % 1000 == 7 {
            sqlx::query("INSERT INTO consumer_accounts (account, parked_reason) VALUES ($1, $2)")
                .bind(name)
                .bind("rejected with 422 Unprocessable Entity: bench")
                .execute(&mut *tx)
                .await?;
            for seq in 0..5i64 {
                sqlx::query(
                    "INSERT INTO consumer_held (account, seq, payload) VALUES ($1, $2, $3)",
                )
                .bind(name)
                .bind(seq)
                .bind("00")
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO consumer_dead_letters \
                 (topic, partition_id, source_offset, account, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(TOPIC)
            .bind(partition)
            .bind(offset)
            .bind(name)
            .bind("rejected with 422 Unprocessable Entity: bench")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    for partition in 0..PARTITIONS {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition_id, next_offset) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(GROUP)
        .bind(TOPIC)
        .bind(partition)
        .bind(1)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    pool.close().await;

    let pool = tandem_sql::open(producer).await?;
    let mut tx = pool.begin().await?;
    for (i, name) in names.iter().enumerate() {
        let (partition, offset) = (i as i64 % PARTITIONS, i as i64 * 3);
        let ahead = if i % 10 == 0 { 2 } else { 0 };
        sqlx::query(
            "INSERT INTO producer_accounts (account, epoch, enrolled, deletes_checked_at) \
             VALUES ($1, $2, 1, $3)",
        )
        .bind(name)
        .bind(i as i64 % 3)
        .bind(now - 10_000)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO producer_published \
             (account, partition_id, last_offset, occurred_at, published_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(partition)
        .bind(offset + ahead)
        .bind(now - 2_000)
        .bind(now - 1_500)
        .execute(&mut *tx)
        .await?;
        if i % 500 == 3 {
            sqlx::query(
                "INSERT INTO producer_unsettled (account, entity_type, entity_id, version) \
                 VALUES ($1, 'contacts', '1', 1)",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    pool.close().await;
    Ok(())
}
