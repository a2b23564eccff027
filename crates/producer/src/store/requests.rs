//! Snapshots asked for while another instance holds the account's lease, and how far a
//! snapshot under way got.

use super::Store;
use crate::{now_millis, Result};

impl Store {
    /// Asks the instance holding `account`'s lease for a snapshot with this id.
    pub async fn request_snapshot(&self, account: &str, snapshot_id: &str) -> Result<()> {
        self.count(1);
        sqlx::query(
            "INSERT INTO producer_snapshot_requests (account, snapshot_id, requested_at) \
             VALUES ($1, $2, $3) ON CONFLICT (account, snapshot_id) DO NOTHING",
        )
        .bind(account)
        .bind(snapshot_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the snapshot asked for is still waiting to be published.
    pub async fn snapshot_pending(&self, account: &str, snapshot_id: &str) -> Result<bool> {
        self.count(1);
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM producer_snapshot_requests WHERE account = $1 AND snapshot_id = $2",
        )
        .bind(account)
        .bind(snapshot_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The snapshot asked for was published.
    pub async fn snapshot_done(&self, account: &str, snapshot_id: &str) -> Result<()> {
        self.count(1);
        sqlx::query(
            "DELETE FROM producer_snapshot_requests WHERE account = $1 AND snapshot_id = $2",
        )
        .bind(account)
        .bind(snapshot_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How far the account's unfinished snapshot got, if one is under way.
    pub async fn snapshot_progress(&self, account: &str) -> Result<Option<SnapshotProgress>> {
        self.count(1);
        type Columns = (String, i64, i64, Option<i64>, Option<i64>, i64, i64);
        let row: Option<Columns> = sqlx::query_as(
            "SELECT snapshot_id, epoch, upto, bounds_xmin, bounds_xmax, table_index, \
             after_version FROM producer_snapshot_progress WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(snapshot_id, epoch, upto, xmin, xmax, table, after)| SnapshotProgress {
                snapshot_id,
                epoch,
                upto,
                bounds: xmin.zip(xmax),
                table: usize::try_from(table).unwrap_or(0),
                after,
            },
        ))
    }

    /// Records how far the account's snapshot got; called once its chunks up to there were
    /// acknowledged and checkpointed.
    pub async fn set_snapshot_progress(
        &self,
        account: &str,
        progress: &SnapshotProgress,
    ) -> Result<()> {
        self.count(1);
        sqlx::query(
            "INSERT INTO producer_snapshot_progress (account, snapshot_id, epoch, upto, \
             bounds_xmin, bounds_xmax, table_index, after_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account) DO UPDATE SET \
             snapshot_id = excluded.snapshot_id, epoch = excluded.epoch, upto = excluded.upto, \
             bounds_xmin = excluded.bounds_xmin, bounds_xmax = excluded.bounds_xmax, \
             table_index = excluded.table_index, after_version = excluded.after_version",
        )
        .bind(account)
        .bind(&progress.snapshot_id)
        .bind(progress.epoch)
        .bind(progress.upto)
        .bind(progress.bounds.map(|b| b.0))
        .bind(progress.bounds.map(|b| b.1))
        .bind(i64::try_from(progress.table).unwrap_or(i64::MAX))
        .bind(progress.after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the account's snapshot progress: its snapshot ended.
    pub async fn clear_snapshot_progress(&self, account: &str) -> Result<()> {
        self.count(1);
        sqlx::query("DELETE FROM producer_snapshot_progress WHERE account = $1")
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// How far a snapshot under way got: every row of the tables before `table`, and of `table`
/// the rows up to version `after`, were published and acknowledged under `snapshot_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub snapshot_id: String,
    /// The epoch the snapshot was taken in; a restore since makes it void.
    pub epoch: i64,
    /// The highest version when it began: deletes it finds carry at least this.
    pub upto: i64,
    /// The PostgreSQL transactions in flight when it began.
    pub bounds: Option<(i64, i64)>,
    /// The index of the table under way, in the sources' order.
    pub table: usize,
    /// The highest version of that table published so far.
    pub after: i64,
}
