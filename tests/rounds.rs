//! Rounds over many accounts against a real legacy database (SQLite) and the real broker:
//! quiet accounts told apart and checked for deletes all at once, idle rounds that read
//! nothing, and accounts with only new rows cycled together.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::ensure;
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::notes::{expect, short, Notes};
use tandem_testkit::{brokers, topic, Reader};

/// Accounts `{prefix}-NN` with notes 1 to 3 each in a SQLite legacy database, a producer over
/// them with `options` (its broker, topic and store filled in here), and a reader of its topic.
struct Rig {
    notes: Notes,
    accounts: Vec<String>,
    producer: Producer,
    reader: Reader,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(
        prefix: &str,
        count: usize,
        options: tandem_producer::Options,
    ) -> anyhow::Result<Rig> {
        let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
        let topic = topic(&brokers, 1).await?;
        let notes = Notes::create(dir.path()).await?;
        let accounts: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:02}")).collect();
        for account in &accounts {
            notes.insert(account, 1..=3).await?;
        }
        let origin = Path::new("sources.toml");
        let producer = Producer::connect(
            &Sources::parse(&notes.sources("", ""), origin)?,
            origin,
            tandem_producer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                store_url: format!("sqlite://{}", dir.path().join("producer.db").display()),
                ..options
            },
        )
        .await?;
        let reader = Reader::new(&brokers, &topic)?;
        Ok(Rig {
            notes,
            accounts,
            producer,
            reader,
            _dir: dir,
        })
    }

    /// The next `n` events on the topic, as "account kind table/key@epoch", sorted.
    async fn events(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut events: Vec<String> = self
            .reader
            .take(n)
            .await?
            .iter()
            .map(|(key, e)| format!("{key} {}", short(e)))
            .collect();
        events.sort();
        Ok(events)
    }

    /// (legacy, store) statements so far.
    fn statements(&self) -> (u64, u64) {
        (
            self.producer.legacy().queries(),
            self.producer.store().queries(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_skips_quiet_accounts_and_still_finds_every_change() -> anyhow::Result<()> {
    let rig = Rig::start(
        "quiet",
        40,
        tandem_producer::Options {
            // Not due during the test: a round finds deletes only where a newest row went.
            delete_check_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await?;
    let round = |expected: usize| {
        let rig = &rig;
        async move {
            let published = rig.producer.cycle().await? as usize;
            ensure!(
                published == expected,
                "published {published}, not {expected}"
            );
            rig.events(published).await
        }
    };
    let notes = &rig.notes;
    // Enrolment: every account's snapshot, then a round with each account's first
    // differencing check, which finds nothing.
    round(40 * 5).await?;
    round(0).await?;

    // A round over 40 quiet accounts: looking for accounts and their highest versions in the
    // legacy database, their states and marks in the store; no account's own cycle runs.
    let before = rig.statements();
    round(0).await?;
    let after = rig.statements();
    ensure!(
        (after.0 - before.0, after.1 - before.1) == (2, 2),
        "an idle round over 40 accounts took {} legacy and {} store statements",
        after.0 - before.0,
        after.1 - before.1
    );

    // A change in one account is found, and only there.
    notes.update("quiet-17", 2).await?;
    ensure!(round(1).await? == expect(&["quiet-17 U notes/2@0"]));
    // Another account's newest row deleted: its highest version fell below the mark, so the
    // account is not quiet, and its cycle checks for deletes at once.
    notes.delete("quiet-05", [3]).await?;
    ensure!(round(1).await? == expect(&["quiet-05 D notes/3@0"]));
    // Quiet again.
    let before = rig.statements();
    round(0).await?;
    let after = rig.statements();
    ensure!((after.0 - before.0, after.1 - before.1) == (2, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_accounts_are_checked_for_deletes_together_and_idle_rounds_read_nothing(
) -> anyhow::Result<()> {
    // Each account's check falls due between a quarter of this and half after its last one:
    // the idle rounds below run within the first quarter.
    let check = Duration::from_secs(3);
    let rig = Rig::start(
        "check",
        40,
        tandem_producer::Options {
            delete_check_interval: check,
            interval: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await?;
    let (producer, notes) = (&rig.producer, &rig.notes);
    let events = |n: usize| rig.events(n);
    ensure!(producer.cycle().await? == 40 * 5);
    events(40 * 5).await?;
    tokio::time::sleep(check).await;
    ensure!(producer.cycle().await? == 0);

    // Every account's check is due: one statement per 500 accounts reads their checksums,
    // one reads the manifest's, one records them checked — not a check per account.
    tokio::time::sleep(check).await;
    let before = rig.statements();
    ensure!(producer.cycle().await? == 0);
    let after = rig.statements();
    ensure!(
        (after.0 - before.0, after.1 - before.1) == (3, 4),
        "the checks of 40 quiet accounts took {} legacy and {} store statements",
        after.0 - before.0,
        after.1 - before.1
    );

    // A row deleted that was not the newest: the account's highest version did not move, so
    // only its checksum tells; its own cycle then finds the delete.
    notes.delete("check-12", [1]).await?;
    tokio::time::sleep(check).await;
    ensure!(producer.cycle().await? == 1);
    ensure!(events(1).await? == expect(&["check-12 D notes/1@0"]));

    // Running, with nothing committed anywhere, rounds read nothing; a change is still found.
    let stop = tokio_util::sync::CancellationToken::new();
    let watched = async {
        let before = rig.statements();
        let idle_before = producer
            .stats()
            .idle_rounds
            .load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let idle = producer
            .stats()
            .idle_rounds
            .load(std::sync::atomic::Ordering::Relaxed)
            - idle_before;
        let after = rig.statements();
        ensure!(idle >= 3, "only {idle} rounds in 600 ms read nothing");
        ensure!(
            after.1 - before.1 <= 12,
            "{} store statements in 600 ms of idle rounds",
            after.1 - before.1
        );
        notes.update("check-30", 2).await?;
        ensure!(events(1).await? == expect(&["check-30 U notes/2@0"]));
        Ok::<_, anyhow::Error>(())
    };
    let watch = async {
        let result = watched.await;
        stop.cancel();
        result
    };
    let (ran, watched) = tokio::join!(producer.run(stop.clone()), watch);
    stop.cancel();
    watched?;
    ran?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_with_only_new_rows_go_out_together_and_their_checkpoints_hold(
) -> anyhow::Result<()> {
    // Checks fall due only at the end of the test: an account whose check is due gets its
    // own cycle.
    let check = Duration::from_secs(3);
    let rig = Rig::start(
        "together",
        30,
        tandem_producer::Options {
            delete_check_interval: check,
            ..Default::default()
        },
    )
    .await?;
    let (producer, notes, accounts) = (&rig.producer, &rig.notes, &rig.accounts);
    let events = |n: usize| rig.events(n);
    ensure!(producer.cycle().await? == 30 * 5);
    events(30 * 5).await?;
    ensure!(producer.cycle().await? == 0);

    // Twenty accounts change: a row updated in each, a row added in every other one. Their
    // cycles are only version scans, so all go out together.
    let mut expected = Vec::new();
    for (i, account) in accounts.iter().take(20).enumerate() {
        notes.update(account, 2).await?;
        expected.push(format!("{account} U notes/2@0"));
        if i % 2 == 0 {
            notes.insert(account, 4..=4).await?;
            expected.push(format!("{account} C notes/4@0"));
        }
    }
    expected.sort();
    let together = |p: &Producer| p.stats().together.load(Ordering::Relaxed);
    let before = together(producer);
    ensure!(producer.cycle().await? == 30);
    ensure!(events(30).await? == expected);
    ensure!(
        together(producer) - before == 20,
        "{} accounts were cycled together, not 20",
        together(producer) - before
    );
    // Their checkpoints moved: nothing is published again.
    ensure!(producer.cycle().await? == 0);
    // A deleted row that was not the newest, found when the checks fall due: the manifest
    // the accounts' checkpoints wrote tells every other account apart as unchanged by its
    // checksums, and this one as changed.
    // In another, a row is also updated: the account is plain, goes out with others, and its
    // check, done together afterwards, finds its sums changed: its own cycle finds the delete.
    notes.delete("together-04", [1]).await?;
    tokio::time::sleep(check).await;
    notes.delete("together-05", [1]).await?;
    notes.update("together-05", 2).await?;
    let before = together(producer);
    ensure!(producer.cycle().await? == 3);
    ensure!(
        events(3).await?
            == expect(&[
                "together-04 D notes/1@0",
                "together-05 D notes/1@0",
                "together-05 U notes/2@0"
            ])
    );
    ensure!(together(producer) - before == 1);
    ensure!(producer.cycle().await? == 0);
    Ok(())
}
