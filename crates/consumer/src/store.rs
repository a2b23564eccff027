//! The consumer's store (SQLite or PostgreSQL, chosen by URL): ID map, source mirror and
//! applied partition positions.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use tandem_event::{now_millis, Row};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// The latest image of one legacy row; `data` is `None` once the row was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRow {
    pub epoch: i64,
    pub version: i64,
    pub parent: Option<String>,
    pub data: Option<Row>,
    /// Set when the row came in a snapshot.
    pub snapshot_id: Option<String>,
}

/// Where an event sits in Kafka, recorded with its bookkeeping: the account's next offset in
/// the partition, and the partition's position — every offset below `watermark` is durable
/// (applied, held or dead-lettered). Both only ever move forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The offset after this event's: where its account continues in this partition.
    pub next_offset: i64,
    /// The lowest offset of the partition not yet durable, as far as this member knows; 0
    /// when it no longer owns the partition (nothing is recorded for the partition then).
    pub watermark: i64,
}

/// (resource, root key): what the ID map is keyed by within an account.
pub type ResourceKey = (String, String);
/// (cloud id, hash of the document last written).
pub type Mapped = (String, String);

/// Everything one event changes in the store, written in one transaction.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// (entity_type, entity_id, row)
    pub mirror: Vec<(String, String, MirrorRow)>,
    /// (resource, root_key) → Some((cloud id, document hash)), or None when deleted.
    pub ids: Vec<(ResourceKey, Option<Mapped>)>,
    /// Resources now waiting for the resource they refer to (`Some`), or no longer (`None`).
    pub parked: Vec<(ResourceKey, Option<ResourceKey>)>,
    /// Rows a snapshot re-sent at a version already applied: (entity_type, entity_id,
    /// snapshot id).
    pub seen: Vec<(String, String, String)>,
    pub position: Option<Position>,
    /// The lease the event was applied under: the commit fails with [`Error::LeaseLost`]
    /// unless it is still held.
    pub lease: Option<LeaseId>,
}

/// One worker run's name in a consumer group's account leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseId {
    pub group: String,
    pub owner: String,
}

/// What became of a request for an account's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Held on without a break: nobody else can have applied the account's events meanwhile.
    Renewed,
    /// Taken afresh: other workers may have applied its events since this one last held it.
    Taken,
    /// Another worker holds it.
    Elsewhere,
}

fn with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

impl Store {
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // With the write-ahead log, a commit survives a crash of the process
                        // without waiting for the disk; only a power loss can take back the
                        // last commits, and what they recorded is repeated idempotently.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&with_create(url))
            .await
            .map_err(|source| Error::Connect {
                what: "consumer store",
                url: url.to_owned(),
                source,
            })?;
        let mut migrator = sqlx::migrate!();
        // The producer may keep its tables in the same database, with migrations of its own.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Store { pool })
    }

    /// Opens a store that `tandem consume` made, creating and migrating nothing: for commands
    /// that look at it or leave requests in it. A wrong URL is an error, not a new empty store.
    pub async fn open_existing(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let missing = |reason: String| Error::StoreMissing {
            url: url.to_owned(),
            reason,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|e| {
                let relative = if url.starts_with("sqlite:") {
                    " (a sqlite:// path is relative to the working directory)"
                } else {
                    ""
                };
                missing(format!("{e}{relative}"))
            })?;
        let probe = sqlx::query("SELECT 1 FROM consumer_accounts LIMIT 1")
            .fetch_optional(&pool)
            .await;
        match probe {
            Ok(_) => {}
            // SQLite says "no such table", PostgreSQL "undefined table" (42P01).
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("42P01")
                    || e.message().contains("no such table") =>
            {
                return Err(missing(
                    "it holds no consumer tables; has `tandem consume` run against it?".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Store { pool })
    }

    pub async fn mirror(
        &self,
        account: &str,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Option<MirrorRow>> {
        let row: Option<(i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT epoch, version, parent, data FROM consumer_mirror \
             WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
        )
        .bind(account)
        .bind(entity_type)
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(epoch, version, parent, data)| {
            Ok(MirrorRow {
                epoch,
                version,
                parent,
                data: data.map(|d| serde_json::from_str(&d)).transpose()?,
                snapshot_id: None,
            })
        })
        .transpose()
    }

    /// Live child rows of `entity_type` whose parent key is `parent`.
    pub async fn children(
        &self,
        account: &str,
        entity_type: &str,
        parent: &str,
    ) -> Result<Vec<(String, Row)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT entity_id, data FROM consumer_mirror \
             WHERE account = $1 AND entity_type = $2 AND parent = $3 AND data IS NOT NULL",
        )
        .bind(account)
        .bind(entity_type)
        .bind(parent)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, data)| Ok((id, serde_json::from_str(&data)?)))
            .collect()
    }

    /// The cloud id and document hash recorded for a resource.
    pub async fn cloud_id(
        &self,
        account: &str,
        resource: &str,
        root_key: &str,
    ) -> Result<Option<Mapped>> {
        Ok(sqlx::query_as(
            "SELECT cloud_id, doc_hash FROM consumer_id_map \
             WHERE account = $1 AND resource = $2 AND root_key = $3",
        )
        .bind(account)
        .bind(resource)
        .bind(root_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Why the account is parked, if it is.
    pub async fn parked_reason(&self, account: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT parked_reason FROM consumer_accounts WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(r,)| r))
    }

    /// Keeps a message of a parked account (parking it with `reason` first, if given), and
    /// records the partition position, in one transaction.
    pub async fn hold(
        &self,
        account: &str,
        payload: &[u8],
        reason: Option<&str>,
        position: Position,
        lease: Option<&LeaseId>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = lease {
            check_lease(&mut tx, account, lease).await?;
        }
        if let Some(reason) = reason {
            sqlx::query(
                "INSERT INTO consumer_accounts (account, parked_reason, resume_requested) \
                 VALUES ($1, $2, 0) ON CONFLICT (account) DO UPDATE SET \
                 parked_reason = excluded.parked_reason, resume_requested = 0",
            )
            .bind(account)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        let hex = hex::encode(payload);
        sqlx::query(
            "INSERT INTO consumer_held (account, seq, payload) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM consumer_held WHERE account = $1",
        )
        .bind(account)
        .bind(hex)
        .execute(&mut *tx)
        .await?;
        write_position(&mut tx, account, &position).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Asks the consumer to apply a parked account's held events again.
    pub async fn request_resume(&self, account: &str) -> Result<bool> {
        let changed =
            sqlx::query("UPDATE consumer_accounts SET resume_requested = 1 WHERE account = $1")
                .bind(account)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(changed == 1)
    }

    /// Asks the consumer to apply every parked account's held events again; the accounts
    /// asked for (those not asked for already).
    pub async fn request_resume_all(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE consumer_accounts SET resume_requested = 1 WHERE resume_requested = 0 \
             RETURNING account",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut accounts: Vec<String> = rows.into_iter().map(|(a,)| a).collect();
        accounts.sort();
        Ok(accounts)
    }

    /// Parked accounts an operator asked to resume.
    pub async fn resume_requested(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT account FROM consumer_accounts WHERE resume_requested = 1 ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    /// The held messages of an account, oldest first: (seq, original bytes).
    pub async fn held(&self, account: &str) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, payload FROM consumer_held WHERE account = $1 ORDER BY seq",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(seq, text)| {
                let bytes = hex::decode(&text).map_err(|e| Error::CorruptStore {
                    what: format!("held message {seq} of account {account} is not hex: {e}"),
                })?;
                Ok((seq, bytes))
            })
            .collect()
    }

    /// Forgets a held message that was applied (or dead-lettered for good).
    pub async fn release(&self, account: &str, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM consumer_held WHERE account = $1 AND seq = $2")
            .bind(account)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Parks the account again (a held message failed again), clearing the resume request.
    pub async fn repark(&self, account: &str, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE consumer_accounts SET parked_reason = $2, resume_requested = 0 WHERE account = $1",
        )
        .bind(account)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Unparks the account once nothing is held for it any more.
    pub async fn unpark(&self, account: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM consumer_accounts WHERE account = $1 \
             AND NOT EXISTS (SELECT 1 FROM consumer_held WHERE account = $1)",
        )
        .bind(account)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Parked accounts: (account, reason, held messages, resume requested).
    pub async fn parked_accounts(&self) -> Result<Vec<(String, String, i64, bool)>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT a.account, a.parked_reason, \
             (SELECT COUNT(*) FROM consumer_held h WHERE h.account = a.account), a.resume_requested \
             FROM consumer_accounts a ORDER BY a.account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, r, n, q)| (a, r, n, q != 0))
            .collect())
    }

    /// Live rows of an account that the snapshot `snapshot_id` did not send:
    /// (entity_type, entity_id, epoch, version). With `end`, the position of the snapshot's
    /// end in the log, only rows written before it: a row written by a later event is in the
    /// mirror when old events are read again (a consumer moved to a new group) and must stay.
    pub async fn unseen(
        &self,
        account: &str,
        snapshot_id: &str,
        end: Option<&Position>,
    ) -> Result<Vec<(String, String, i64, i64)>> {
        const UNSEEN: &str = "SELECT entity_type, entity_id, epoch, version FROM consumer_mirror \
             WHERE account = $1 AND data IS NOT NULL \
             AND (snapshot_id IS NULL OR snapshot_id <> $2)";
        const ORDER: &str = " ORDER BY entity_type, entity_id";
        let rows = match end {
            None => {
                sqlx::query_as(&format!("{UNSEEN}{ORDER}"))
                    .bind(account)
                    .bind(snapshot_id)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(end) => {
                // Rows written from elsewhere (another topic or partition, or a held event
                // applied on resume, which has no position) count as written before.
                sqlx::query_as(&format!(
                    "{UNSEEN} AND (log_offset IS NULL OR log_topic <> $3 OR log_partition <> $4 \
                     OR log_offset < $5){ORDER}"
                ))
                .bind(account)
                .bind(snapshot_id)
                .bind(&end.topic)
                .bind(i64::from(end.partition))
                .bind(end.next_offset - 1)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Resources waiting for `(target, target_key)` to be created.
    pub async fn waiting_on(
        &self,
        account: &str,
        target: &str,
        target_key: &str,
    ) -> Result<Vec<ResourceKey>> {
        Ok(sqlx::query_as(
            "SELECT resource, root_key FROM consumer_parked \
             WHERE account = $1 AND target = $2 AND target_key = $3",
        )
        .bind(account)
        .bind(target)
        .bind(target_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every parked resource of every account: (account, resource, root key, waiting for).
    pub async fn parked(&self) -> Result<Vec<(String, String, String, String)>> {
        let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT account, resource, root_key, target, target_key FROM consumer_parked \
             ORDER BY account, resource, root_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, r, k, t, tk)| (a, r, k, format!("{t}/{tk}")))
            .collect())
    }

    /// Records that `member` of `group` holds `assigned` partitions, now; forgets members not
    /// seen for ten minutes. Returns how many members were seen since `live_since_ms`
    /// (this one included).
    pub async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        assigned: usize,
        live_since_ms: i64,
    ) -> Result<usize> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO consumer_members (consumer_group, member, assigned, seen_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, member) DO UPDATE SET \
             assigned = excluded.assigned, seen_at_ms = excluded.seen_at_ms",
        )
        .bind(group)
        .bind(member)
        .bind(i64::try_from(assigned).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND seen_at_ms < $2")
            .bind(group)
            .bind(now - 600_000)
            .execute(&mut *tx)
            .await?;
        let (live,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM consumer_members WHERE consumer_group = $1 AND seen_at_ms >= $2",
        )
        .bind(group)
        .bind(live_since_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Forgets `member` of `group` (it stopped cleanly).
    pub async fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND member = $2")
            .bind(group)
            .bind(member)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every recorded position of a group's partitions of `topic`: partition → next offset.
    pub async fn positions(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<std::collections::HashMap<i32, i64>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition_id, next_offset FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(p, o)| Some((i32::try_from(p).ok()?, o)))
            .collect())
    }

    /// The next offset to apply for a partition, if one was ever recorded.
    pub async fn position(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(o,)| o))
    }

    /// The next offset to apply for `account` in a partition, if one was ever recorded.
    pub async fn account_position(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        account: &str,
    ) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM consumer_account_offsets \
             WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3 AND account = $4",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(o,)| o))
    }

    /// Takes or renews `account`'s lease for `lease.owner` until `ttl` from now.
    pub async fn try_lease(
        &self,
        lease: &LeaseId,
        account: &str,
        ttl: std::time::Duration,
    ) -> Result<Grant> {
        let now = now_millis();
        // A renewal keeps `taken_at`; a take sets it to now.
        let taken_at: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO consumer_account_leases \
             (consumer_group, account, owner, expires_at, taken_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer_group, account) DO UPDATE SET \
             owner = excluded.owner, expires_at = excluded.expires_at, \
             taken_at = CASE WHEN consumer_account_leases.owner = excluded.owner \
             AND consumer_account_leases.expires_at >= excluded.taken_at \
             THEN consumer_account_leases.taken_at ELSE excluded.taken_at END \
             WHERE consumer_account_leases.owner = excluded.owner \
             OR consumer_account_leases.expires_at < excluded.taken_at \
             RETURNING taken_at",
        )
        .bind(&lease.group)
        .bind(account)
        .bind(&lease.owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match taken_at {
            None => Grant::Elsewhere,
            Some((at,)) if at == now => Grant::Taken,
            Some(_) => Grant::Renewed,
        })
    }

    /// Gives `account`'s lease up, if `lease.owner` still holds it.
    pub async fn release_lease(&self, lease: &LeaseId, account: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM consumer_account_leases \
             WHERE consumer_group = $1 AND account = $2 AND owner = $3",
        )
        .bind(&lease.group)
        .bind(account)
        .bind(&lease.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes an event's bookkeeping and its positions in one transaction.
    pub async fn commit(&self, account: &str, book: &Bookkeeping) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = &book.lease {
            check_lease(&mut tx, account, lease).await?;
        }
        for (entity_type, entity_id, row) in &book.mirror {
            let data = row.data.as_ref().map(serde_json::to_string).transpose()?;
            let at = book.position.as_ref();
            sqlx::query(
                "INSERT INTO consumer_mirror \
                 (account, entity_type, entity_id, epoch, version, parent, data, snapshot_id, \
                 log_topic, log_partition, log_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (account, entity_type, entity_id) DO UPDATE SET \
                 epoch = excluded.epoch, version = excluded.version, \
                 parent = excluded.parent, data = excluded.data, \
                 snapshot_id = COALESCE(excluded.snapshot_id, consumer_mirror.snapshot_id), \
                 log_topic = excluded.log_topic, log_partition = excluded.log_partition, \
                 log_offset = excluded.log_offset \
                 WHERE consumer_mirror.epoch < excluded.epoch OR \
                 (consumer_mirror.epoch = excluded.epoch AND consumer_mirror.version <= excluded.version)",
            )
            .bind(account)
            .bind(entity_type)
            .bind(entity_id)
            .bind(row.epoch)
            .bind(row.version)
            .bind(row.parent.clone())
            .bind(data)
            .bind(row.snapshot_id.clone())
            .bind(at.map(|p| p.topic.clone()))
            .bind(at.map(|p| i64::from(p.partition)))
            .bind(at.map(|p| p.next_offset - 1))
            .execute(&mut *tx)
            .await?;
        }
        for (entity_type, entity_id, snapshot_id) in &book.seen {
            sqlx::query(
                "UPDATE consumer_mirror SET snapshot_id = $4 \
                 WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
            )
            .bind(account)
            .bind(entity_type)
            .bind(entity_id)
            .bind(snapshot_id)
            .execute(&mut *tx)
            .await?;
        }
        for ((resource, root_key), id) in &book.ids {
            match id {
                Some((cloud_id, hash)) => {
                    sqlx::query(
                        "INSERT INTO consumer_id_map \
                         (account, resource, root_key, cloud_id, doc_hash) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (account, resource, root_key) DO UPDATE SET \
                         cloud_id = excluded.cloud_id, doc_hash = excluded.doc_hash",
                    )
                    .bind(account)
                    .bind(resource)
                    .bind(root_key)
                    .bind(cloud_id)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "DELETE FROM consumer_id_map \
                         WHERE account = $1 AND resource = $2 AND root_key = $3",
                    )
                    .bind(account)
                    .bind(resource)
                    .bind(root_key)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        for ((resource, root_key), waiting) in &book.parked {
            sqlx::query(
                "DELETE FROM consumer_parked WHERE account = $1 AND resource = $2 AND root_key = $3",
            )
            .bind(account)
            .bind(resource)
            .bind(root_key)
            .execute(&mut *tx)
            .await?;
            if let Some((target, target_key)) = waiting {
                sqlx::query(
                    "INSERT INTO consumer_parked (account, resource, root_key, target, target_key) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(account)
                .bind(resource)
                .bind(root_key)
                .bind(target)
                .bind(target_key)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(p) = &book.position {
            write_position(&mut tx, account, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Fails with [`Error::LeaseLost`] unless `lease` still holds `account`. The check locks the
/// lease's row until the transaction ends, so a take by another worker waits for this commit
/// and then reads positions that include it.
async fn check_lease(conn: &mut sqlx::AnyConnection, account: &str, lease: &LeaseId) -> Result<()> {
    let held = sqlx::query(
        "UPDATE consumer_account_leases SET owner = owner \
         WHERE consumer_group = $1 AND account = $2 AND owner = $3",
    )
    .bind(&lease.group)
    .bind(account)
    .bind(&lease.owner)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if held == 1 {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            account: account.to_owned(),
        })
    }
}

async fn write_position(conn: &mut sqlx::AnyConnection, account: &str, p: &Position) -> Result<()> {
    if !account.is_empty() {
        sqlx::query(
            "INSERT INTO consumer_account_offsets \
             (consumer_group, topic, partition_id, account, next_offset) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer_group, topic, partition_id, account) \
             DO UPDATE SET next_offset = excluded.next_offset \
             WHERE consumer_account_offsets.next_offset < excluded.next_offset",
        )
        .bind(&p.group)
        .bind(&p.topic)
        .bind(i64::from(p.partition))
        .bind(account)
        .bind(p.next_offset)
        .execute(&mut *conn)
        .await?;
    }
    if p.watermark > 0 {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition_id, next_offset) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, topic, partition_id) \
             DO UPDATE SET next_offset = excluded.next_offset \
             WHERE consumer_offsets.next_offset < excluded.next_offset",
        )
        .bind(&p.group)
        .bind(&p.topic)
        .bind(i64::from(p.partition))
        .bind(p.watermark)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::CorruptStore {
            what: format!("a stored row image is not valid JSON: {e}"),
        }
    }
}
