//! Group commit: the bookkeeping of events applied at the same time by different workers is
//! written in one transaction. Each book still commits whole or not at all, and only under
//! its lease; the batch shares the transaction's begin and commit, and each partition's and
//! account's position is written once, at the highest offset the batch reached.
//!
//! A book waits for no one: the committer takes whatever books are queued when it is free,
//! so a lone event is committed at once and a busy consumer commits many per transaction.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::batch;
use super::leases::LeaseId;
use super::mirror::Bookkeeping;
use super::Store;
use crate::{Error, Result};

/// At most this many books share one transaction.
const MAX_BATCH: usize = 128;

/// One book waiting to be committed, with where its caller waits for the outcome.
struct Queued {
    account: String,
    book: Bookkeeping,
    done: oneshot::Sender<Result<()>>,
}

/// The sending side of the committer task; the task ends when every [`Store`] holding it
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Committer {
    /// Starts the committer task on the current Tokio runtime.
    pub(super) fn start(pool: sqlx::AnyPool) -> Self {
        let (queue, mut books) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while books.recv_many(&mut batch, MAX_BATCH).await > 0 {
                commit_batch(&pool, std::mem::take(&mut batch)).await;
            }
        });
        Committer { queue }
    }
}

impl Store {
    /// Writes an event's bookkeeping and its positions in one transaction, shared with the
    /// books other workers commit at the same time. Fails with [`Error::LeaseLost`], writing
    /// nothing of this book, unless its lease is still held.
    pub async fn commit(&self, account: &str, book: Bookkeeping) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let queued = Queued {
            account: account.to_owned(),
            book,
            done,
        };
        if self.committer.queue.send(queued).is_err() {
            return Err(Error::Store(sqlx::Error::PoolClosed));
        }
        outcome
            .await
            .unwrap_or(Err(Error::Store(sqlx::Error::PoolClosed)))
    }
}

/// Commits `batch` in one transaction and tells each caller its outcome.
async fn commit_batch(pool: &sqlx::AnyPool, batch: Vec<Queued>) {
    let mut outcomes: Vec<Option<Error>> = Vec::with_capacity(batch.len());
    let written = write_batch(pool, &batch, &mut outcomes).await;
    for (i, queued) in batch.into_iter().enumerate() {
        let outcome = match (&written, outcomes.get_mut(i).and_then(Option::take)) {
            (_, Some(own)) => Err(own),
            (Ok(()), None) => Ok(()),
            // The transaction failed: every book in it is lost, and said so.
            (Err(e), None) => Err(Error::Store(sqlx::Error::Io(std::io::Error::other(
                format!("the store's transaction failed: {e}"),
            )))),
        };
        // A caller that stopped waiting learns nothing; its book is committed or not as above.
        let _ = queued.done.send(outcome);
    }
}

/// Writes the books whose lease still holds, recording in `outcomes` (one per book) why a
/// book was left out.
async fn write_batch(
    pool: &sqlx::AnyPool,
    batch: &[Queued],
    outcomes: &mut Vec<Option<Error>>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let leases: Vec<(&str, &LeaseId)> = batch
        .iter()
        .filter_map(|q| Some((q.account.as_str(), q.book.lease.as_ref()?)))
        .collect();
    let held = batch::held(&mut tx, &leases).await?;
    let mut written: Vec<&Queued> = Vec::with_capacity(batch.len());
    for queued in batch {
        let lost = queued.book.lease.as_ref().filter(|lease| {
            let key = (
                lease.group.clone(),
                queued.account.clone(),
                lease.owner.clone(),
            );
            !held.contains(&key)
        });
        match lost {
            Some(_) => outcomes.push(Some(Error::LeaseLost {
                account: queued.account.clone(),
            })),
            None => {
                outcomes.push(None);
                written.push(queued);
            }
        }
    }
    let mut mirror = Vec::new();
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    let mut parked = Vec::new();
    let mut partitions: HashMap<(&str, &str, i32), i64> = HashMap::new();
    let mut accounts: HashMap<(&str, &str, i32, &str), i64> = HashMap::new();
    for Queued { account, book, .. } in written {
        let account = account.as_str();
        for (entity_type, entity_id, row) in &book.mirror {
            mirror.push((
                account,
                entity_type.as_str(),
                entity_id.as_str(),
                row,
                book.position.as_ref(),
            ));
        }
        for (entity_type, entity_id, snapshot_id) in &book.seen {
            seen.push((
                account,
                entity_type.as_str(),
                entity_id.as_str(),
                snapshot_id.as_str(),
            ));
        }
        ids.extend(book.ids.iter().map(|(key, id)| (account, key, id)));
        parked.extend(
            book.parked
                .iter()
                .map(|(key, target)| (account, key, target)),
        );
        if let Some(p) = &book.position {
            let partition = (p.group.as_str(), p.topic.as_str(), p.partition);
            if p.watermark > 0 {
                let at = partitions.entry(partition).or_default();
                *at = (*at).max(p.watermark);
            }
            if !account.is_empty() {
                let key = (partition.0, partition.1, partition.2, account);
                let at = accounts.entry(key).or_default();
                *at = (*at).max(p.next_offset);
            }
        }
    }
    batch::mirror(&mut tx, mirror).await?;
    batch::seen(&mut tx, seen).await?;
    batch::ids(&mut tx, ids).await?;
    batch::parked(&mut tx, parked).await?;
    batch::positions(&mut tx, accounts, partitions).await?;
    tx.commit().await?;
    Ok(())
}
