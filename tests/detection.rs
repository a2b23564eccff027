//! Change detection against real legacy databases (SQLite and PostgreSQL) and the real broker:
//! transactions that commit late, snapshots, handed-in detections, producers sharing accounts
//! and notifications. Deletes and restores have files of their own.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use sqlx::{Connection, PgConnection};
use tandem_event::Kind;
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::notes::{
    cycle, detection_producer as producer, expect, pg_notes, short, Notes, A,
};
use tandem_testkit::{brokers, topic, PgDatabase, Reader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_across_cycles_is_not_missed() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let mut setup = pg_notes(&db.url).await?;
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\n\
         [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        db.url
    );
    let producer = producer(&sources, &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["BEGIN", "C notes/1@0", "END"]));

    // A long transaction stamps its row early (version 2) and stays open ...
    let mut long = PgConnection::connect(&db.url).await?;
    sqlx::query("BEGIN").execute(&mut long).await?;
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 2, 'slow')")
        .execute(&mut long)
        .await?;
    // ... while others commit versions 3 and 4, seen by two cycles.
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 3, 'quick')")
        .execute(&mut setup)
        .await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/3@0"]));
    sqlx::query("UPDATE notes SET body = 'again' WHERE id = 1")
        .execute(&mut setup)
        .await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/1@0"]));
    // The long transaction commits version 2, below what was published already.
    sqlx::query("COMMIT").execute(&mut long).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/2@0"]));
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    long.close().await?;
    setup.close().await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_wraps_every_row_in_markers() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    let enrol = reader
        .take(producer.cycle_account(A).await? as usize)
        .await?;
    ensure!(
        enrol.iter().map(|(_, e)| short(e)).collect::<Vec<_>>()
            == expect(&["BEGIN", "C notes/1@0", "C notes/2@0", "C notes/3@0", "END"])
    );
    ensure!(enrol.iter().all(|(_, e)| e
        .snapshot_id
        .as_deref()
        .is_some_and(|id| id.starts_with("enrol-"))));

    notes.update(A, 2).await?;
    notes.delete(A, [3]).await?;
    let tandem_producer::Snapshot::Published(published) = producer.snapshot(A, "snap-1").await?
    else {
        anyhow::bail!("the snapshot was asked of another instance");
    };
    let published = published as usize;
    let events = reader.take(published).await?;
    let shorts: Vec<String> = events.iter().map(|(_, e)| short(e)).collect();
    ensure!(
        shorts == expect(&["BEGIN", "U notes/1@0", "U notes/2@0", "D notes/3@0", "END"]),
        "{shorts:?}"
    );
    ensure!(events
        .iter()
        .all(|(_, e)| e.snapshot_id.as_deref() == Some("snap-1")));
    ensure!(
        cycle(&producer, &reader, A).await?.is_empty(),
        "the snapshot moved the checkpoint"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_handed_in_over_http_with_bad_lines_mixed_in() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let store =
        tandem_producer::Store::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await?;
    let publisher =
        tandem_producer::Publisher::connect(&brokers, &topic, tandem_event::Codec::default(), &[])
            .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let outbox = tandem_producer::Outbox::new(store, publisher);
    let (addr, server) =
        tandem_producer::ingest::serve("127.0.0.1:0".parse()?, outbox, stop.clone()).await?;
    let body = [
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":10,"data":{"name":"Ada","balance":"12.50"}}"#,
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"2","version":"eleven","data":{}}"#,
        r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":12,"data":{"name":"Ada L."},"occurred_at":1790000000000}"#,
        r#"{"kind":"DELETED","entity_type":"contacts","version":13}"#,
        r#"{"kind":"DATABASE_RESTORED","version":9}"#,
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":9,"data":{"name":"Ada"}}"#,
    ]
    .join("\n");
    let response = tandem_consumer::http_client()
        .build()?
        .post(format!("http://{addr}/v1/accounts/{A}/detections"))
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == 400);
    let answer: serde_json::Value = response.json().await?;
    ensure!(answer["accepted"] == 4, "{answer}");
    let rejected: Vec<(i64, String)> = answer["rejected"]
        .as_array()
        .context("rejected list")?
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().unwrap_or(0),
                r["field"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ensure!(
        rejected == [(2, "version".to_owned()), (4, "entity_id".to_owned())],
        "{rejected:?}"
    );

    let reader = Reader::new(&brokers, &topic)?;
    let events = reader.take(4).await?;
    let shorts: Vec<String> = events.iter().map(|(_, e)| short(e)).collect();
    ensure!(
        shorts
            == expect(&[
                "C contacts/1@0",
                "U contacts/1@0",
                "RESTORED@1",
                "C contacts/1@1"
            ]),
        "{shorts:?}"
    );
    let first = &events[0].1;
    ensure!(first.event_id == tandem_event::event_id(A, "contacts", "1", 0, 10, Kind::Created));
    ensure!(
        first.data.as_ref().and_then(|d| d.get("balance"))
            == Some(&tandem_event::Value::String("12.50".into()))
    );
    ensure!(events[1].1.occurred_at == 1_790_000_000_000);
    stop.cancel();
    server.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_share_accounts_without_publishing_twice_and_take_over() -> anyhow::Result<()>
{
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 2).await?;
    let store = PgDatabase::create().await?;
    let notes = Notes::create(dir.path()).await?;
    let accounts: Vec<String> = (1..=12).map(|i| format!("a{i:02}")).collect();
    for account in &accounts {
        notes.insert(account, 1..=4).await?;
    }
    let origin = Path::new("sources.toml");
    let sources = Sources::parse(&notes.sources("", ""), origin)?;
    let options = tandem_producer::Options {
        brokers: brokers.clone(),
        topic: topic.clone(),
        store_url: store.url.clone(),
        lease_ttl: Duration::from_secs(6),
        delete_check_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let first = Producer::connect(&sources, origin, options.clone()).await?;
    let second = Producer::connect(&sources, origin, options).await?;

    // Both cycle every account at the same time: each account is enrolled exactly once.
    let (a, b) = tokio::join!(first.cycle(), second.cycle());
    let (a, b) = (a?, b?);
    ensure!(a + b == 12 * 6, "published {a} + {b}");
    ensure!(a > 0 && b > 0, "both instances got accounts: {a} and {b}");

    // The first instance dies holding its leases; the second takes its accounts over once
    // they expire, and nothing is published twice or missed.
    drop(first);
    for account in &accounts {
        notes.update(account, 1).await?;
    }
    let before_expiry = second.cycle().await?;
    ensure!(
        before_expiry == b / 6,
        "only its own accounts before expiry: {before_expiry}"
    );
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let after_expiry = second.cycle().await?;
    ensure!(
        before_expiry + after_expiry == 12,
        "{before_expiry} + {after_expiry}"
    );

    let reader = Reader::new(&brokers, &topic)?;
    let events = reader.take(72 + 12).await?;
    let mut ids: Vec<&str> = events.iter().map(|(_, e)| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    ensure!(ids.len() == 84, "an event was published twice");
    let updates: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.kind == Kind::Updated)
        .collect();
    let mut updated: Vec<&str> = updates.iter().map(|(key, _)| key.as_str()).collect();
    updated.sort();
    ensure!(updated == accounts.iter().map(String::as_str).collect::<Vec<_>>());
    ensure!(updates.iter().all(|(_, e)| short(e) == "U notes/1@0"));
    drop(second);
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_the_detector_before_its_interval() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let mut pg = pg_notes(&db.url).await?;
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\nnotify_channel = \"notes_changed\"\n\
         [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        db.url
    );
    let origin = Path::new("sources.toml");
    let producer = std::sync::Arc::new(
        Producer::connect(
            &Sources::parse(&sources, origin)?,
            origin,
            tandem_producer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                store_url: format!("sqlite://{}", dir.path().join("p.db").display()),
                // Without a wake-up, the next cycle would be an hour away.
                interval: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .await?,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let (producer, stop) = (producer.clone(), stop.clone());
        async move { producer.run(stop).await }
    });
    let reader = Reader::new(&brokers, &topic)?;
    let enrol: Vec<String> = reader
        .take(3)
        .await?
        .iter()
        .map(|(_, e)| short(e))
        .collect();
    ensure!(enrol == expect(&["BEGIN", "C notes/1@0", "END"]));
    // The listener may still be connecting: notify until the change shows up (each take waits
    // up to 30 s; the interval is an hour).
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 2, 'second')")
        .execute(&mut pg)
        .await?;
    let mut woken = None;
    for _ in 0..20 {
        sqlx::query("NOTIFY notes_changed, 'acme'")
            .execute(&mut pg)
            .await?;
        if let Ok(Ok(events)) = tokio::time::timeout(Duration::from_secs(1), reader.take(1)).await {
            woken = Some(short(&events[0].1));
            break;
        }
    }
    ensure!(woken.as_deref() == Some("C notes/2@0"), "{woken:?}");

    // Notifications sent while the listener was connecting may still wake a cycle: let them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A payload wakes only the account it names: globex's row is published, acme's waits ...
    for statement in [
        "INSERT INTO notes (account_id, id, body) VALUES ('acme', 3, 'third')",
        "INSERT INTO notes (account_id, id, body) VALUES ('globex', 1, 'first')",
        "NOTIFY notes_changed, 'globex'",
    ] {
        sqlx::query(statement).execute(&mut pg).await?;
    }
    let globex: Vec<(String, String)> = reader
        .take(3)
        .await?
        .iter()
        .map(|(key, e)| (key.clone(), short(e)))
        .collect();
    let want: Vec<(String, String)> = expect(&["BEGIN", "C notes/1@0", "END"])
        .into_iter()
        .map(|e| ("globex".to_owned(), e))
        .collect();
    ensure!(globex == want, "{globex:?}");
    let early = tokio::time::timeout(Duration::from_secs(2), reader.take(1)).await;
    ensure!(
        early.is_err(),
        "acme was woken by globex's notification: {early:?}"
    );
    // ... until an empty payload wakes every account.
    sqlx::query("NOTIFY notes_changed").execute(&mut pg).await?;
    let acme = reader.take(1).await?;
    ensure!(
        acme[0].0 == "acme" && short(&acme[0].1) == "C notes/3@0",
        "{acme:?}"
    );
    stop.cancel();
    run.await??;
    pg.close().await?;
    db.drop().await
}
