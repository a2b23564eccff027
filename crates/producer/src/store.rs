//! The producer's checkpoint store (SQLite or PostgreSQL, chosen by URL): epochs, high-water
//! marks, the manifest of keys seen, in-flight markers and per-account leases. Checkpoints are
//! written only after Kafka acknowledged what they stand for.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::{now_millis, Error, Result};

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    queries: Arc<AtomicU64>,
}

/// What the store knows of one account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    pub epoch: i64,
    /// The enrolment snapshot was published completely.
    pub enrolled: bool,
    /// The database-identity marker as last seen.
    pub identity: Option<String>,
    /// When the differencing check last ran (epoch millis).
    pub deletes_checked_at: i64,
    /// (epoch, version): the highest version published in that epoch, checkpointed or not.
    pub published: (i64, i64),
    /// Keys were published as created and their checkpoint did not land (see
    /// [`Store::unsettled`]).
    pub unsettled: bool,
}

impl AccountState {
    /// The highest version published in `epoch` (0 if none is known): a delete must carry at
    /// least this, or consumers may order it before a version of its row they have seen.
    pub fn published_in(&self, epoch: i64) -> i64 {
        if self.published.0 == epoch {
            self.published.1
        } else {
            0
        }
    }
}

/// What one published batch changes in a table's checkpoint.
#[derive(Debug, Default)]
pub struct Advance<'a> {
    /// Keys published as created or updated, with their versions.
    pub upserts: &'a [(String, i64)],
    /// Keys published as deleted.
    pub deletes: &'a [String],
    /// The new high-water mark, if it moves.
    pub high_water: Option<i64>,
    /// Keys published as created in this batch: their checkpoint settles them.
    pub created: &'a [String],
}

/// Width, in versions, of the parts the manifest is counted in (`producer_manifest_parts`;
/// the migration that creates that table uses the same number).
pub const PART_VERSIONS: i64 = 1024;

/// Ranges given to one statement at most.
pub(crate) const RANGES_PER_STATEMENT: usize = 2048;

/// `WITH tandem_ranges (tandem_lo, tandem_hi, tandem_width) AS (VALUES ...)`: a list of
/// version ranges to join with, written as integer literals (no user text). Shared by the
/// producer's store and its legacy reader.
pub(crate) fn ranges_cte(ranges: impl Iterator<Item = (i64, i64, i64)>) -> String {
    let values = ranges
        .map(|(lo, hi, width)| format!("({lo}, {hi}, {})", width.max(1)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("WITH tandem_ranges (tandem_lo, tandem_hi, tandem_width) AS (VALUES {values})")
}

async fn settle(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    keys: &[&str],
) -> Result<()> {
    for chunk in keys.chunks(500) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "DELETE FROM producer_unsettled \
             WHERE account = $1 AND entity_type = $2 AND entity_id IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).bind(account).bind(table);
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn versions_of(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    keys: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut known = HashMap::new();
    for chunk in keys.chunks(500) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT entity_id, version FROM producer_manifest \
             WHERE account = $1 AND entity_type = $2 AND entity_id IN ({placeholders})"
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql)
            .bind(account)
            .bind(table);
        for key in chunk {
            query = query.bind(*key);
        }
        known.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(known)
}

async fn set_account(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    state: &AccountState,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO producer_accounts (account, epoch, enrolled, identity, deletes_checked_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO UPDATE SET \
         epoch = excluded.epoch, enrolled = excluded.enrolled, identity = excluded.identity, \
         deletes_checked_at = excluded.deletes_checked_at",
    )
    .bind(account)
    .bind(state.epoch)
    .bind(i64::from(state.enrolled))
    .bind(state.identity.clone())
    .bind(state.deletes_checked_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn set_high_water(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    high_water: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO producer_high_water (account, entity_type, high_water) \
         VALUES ($1, $2, $3) ON CONFLICT (account, entity_type) \
         DO UPDATE SET high_water = excluded.high_water",
    )
    .bind(account)
    .bind(table)
    .bind(high_water)
    .execute(conn)
    .await?;
    Ok(())
}

/// A URL that sqlx opens as a database to create when missing.
fn with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// (count, sum of versions) — the summary the differencing check compares.
pub type Summary = (i64, i64);

/// A table's checkpoint after a reconcile: (table, manifest entries (key, version), high water).
pub type TableCheckpoint = (String, Vec<(String, i64)>, i64);

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
                what: "producer store",
                url: url.to_owned(),
                source,
            })?;
        let mut migrator = sqlx::migrate!();
        // The consumer may keep its tables in the same database, with migrations of its own.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Store {
            pool,
            queries: Arc::default(),
        })
    }

    /// Statements issued so far (for benchmarks).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    pub async fn account(&self, account: &str) -> Result<AccountState> {
        self.count(1);
        type Columns = (i64, i64, Option<String>, i64, i64, i64, i64);
        let row: Option<Columns> = sqlx::query_as(
            "SELECT epoch, enrolled, identity, deletes_checked_at, published_epoch, \
             published_max, CASE WHEN EXISTS (SELECT 1 FROM producer_unsettled u \
             WHERE u.account = a.account) THEN 1 ELSE 0 END \
             FROM producer_accounts a WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(
                |(
                    epoch,
                    enrolled,
                    identity,
                    deletes_checked_at,
                    published_epoch,
                    published_max,
                    unsettled,
                )| {
                    AccountState {
                        epoch,
                        enrolled: enrolled != 0,
                        identity,
                        deletes_checked_at,
                        published: (published_epoch, published_max),
                        unsettled: unsettled != 0,
                    }
                },
            )
            .unwrap_or_default())
    }

    /// Records that versions up to `version` of `epoch` are about to be published: the mark
    /// only rises within an epoch, and a later epoch starts it afresh.
    pub async fn raise_published(&self, account: &str, epoch: i64, version: i64) -> Result<()> {
        self.count(1);
        sqlx::query(
            "INSERT INTO producer_accounts (account, epoch, published_epoch, published_max) \
             VALUES ($1, $2, $2, $3) ON CONFLICT (account) DO UPDATE SET \
             published_max = CASE WHEN producer_accounts.published_epoch = $2 \
             AND producer_accounts.published_max > $3 \
             THEN producer_accounts.published_max ELSE $3 END, published_epoch = $2 \
             WHERE producer_accounts.published_epoch <= $2",
        )
        .bind(account)
        .bind(epoch)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records keys about to be published as created: (table, key, version).
    pub async fn unsettle(&self, account: &str, created: &[(&str, &str, i64)]) -> Result<()> {
        for chunk in created.chunks(200) {
            self.count(1);
            let values = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO producer_unsettled (account, entity_type, entity_id, version) \
                 VALUES {values} ON CONFLICT (account, entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version"
            );
            let mut query = sqlx::query(&sql).bind(account);
            for (table, key, version) in chunk {
                query = query.bind(*table).bind(*key).bind(*version);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Keys of `table` published as created whose checkpoint did not land, with the version
    /// published.
    pub async fn unsettled(&self, account: &str, table: &str) -> Result<Vec<(String, i64)>> {
        self.keys_and_versions("producer_unsettled", account, table)
            .await
    }

    /// (key, version) of every row of `relation` (a store table, not user text) for a table.
    async fn keys_and_versions(
        &self,
        relation: &'static str,
        account: &str,
        table: &str,
    ) -> Result<Vec<(String, i64)>> {
        self.count(1);
        Ok(sqlx::query_as(&format!(
            "SELECT entity_id, version FROM {relation} WHERE account = $1 AND entity_type = $2"
        ))
        .bind(account)
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets unsettled keys of `table`: their rows were dealt with.
    pub async fn settle(&self, account: &str, table: &str, keys: &[String]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.count(keys.len().div_ceil(500) as u64);
        settle(&mut conn, account, table, &keys).await
    }

    pub async fn set_account(&self, account: &str, state: &AccountState) -> Result<()> {
        self.count(1);
        let mut conn = self.pool.acquire().await?;
        set_account(&mut conn, account, state).await?;
        Ok(())
    }

    pub async fn high_water(&self, account: &str, table: &str) -> Result<i64> {
        self.count(1);
        let hw: Option<(i64,)> = sqlx::query_as(
            "SELECT high_water FROM producer_high_water WHERE account = $1 AND entity_type = $2",
        )
        .bind(account)
        .bind(table)
        .fetch_optional(&self.pool)
        .await?;
        Ok(hw.map(|(v,)| v).unwrap_or(0))
    }

    /// The manifest's versions of those of `keys` it holds.
    pub async fn manifest_versions(
        &self,
        account: &str,
        table: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, i64>> {
        self.count(keys.len().div_ceil(500) as u64);
        let mut conn = self.pool.acquire().await?;
        versions_of(&mut conn, account, table, keys).await
    }

    /// Per part of [`PART_VERSIONS`] versions (part = version / width): how many manifest
    /// entries and their [checksum](crate::legacy::Legacy::range_checksums), as kept up to date
    /// by every checkpoint.
    pub async fn manifest_parts(
        &self,
        account: &str,
        table: &str,
    ) -> Result<BTreeMap<i64, (i64, i64)>> {
        self.count(1);
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT part, entries, checksum FROM producer_manifest_parts \
             WHERE account = $1 AND entity_type = $2 AND entries <> 0",
        )
        .bind(account)
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(p, n, c)| (p, (n, c))).collect())
    }

    /// Per `[lo, hi)` range, in order: (count, sum of versions) of the manifest entries with a
    /// version in it — summarised exactly as [`crate::legacy::Legacy::range_summaries`]
    /// summarises the table.
    pub async fn manifest_summaries(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<Summary>> {
        let from = "FROM producer_manifest WHERE account = $1 AND entity_type = $2 \
                    AND version >= r.tandem_lo AND version < r.tandem_hi";
        let mut out = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            self.count(1);
            let sql = format!(
                "{} SELECT CAST(r.tandem_lo AS BIGINT), (SELECT COUNT(*) {from}), \
                 (SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) {from}) FROM tandem_ranges r",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1)))
            );
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&sql)
                .bind(account)
                .bind(table)
                .fetch_all(&self.pool)
                .await?;
            let found: HashMap<i64, Summary> = rows
                .into_iter()
                .map(|(lo, n, sum)| (lo, (n, sum)))
                .collect();
            out.extend(
                chunk
                    .iter()
                    .map(|(lo, _)| found.get(lo).copied().unwrap_or_default()),
            );
        }
        Ok(out)
    }

    /// Manifest entries with a version in any of the `[lo, hi)` ranges.
    pub async fn manifest_in(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            self.count(1);
            let sql = format!(
                "{} SELECT m.entity_id, m.version FROM tandem_ranges r JOIN producer_manifest m \
                 ON m.account = $1 AND m.entity_type = $2 AND m.version >= r.tandem_lo \
                 AND m.version < r.tandem_hi",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1)))
            );
            out.extend(
                sqlx::query_as::<_, (String, i64)>(&sql)
                    .bind(account)
                    .bind(table)
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Every manifest entry of a table.
    pub async fn manifest_all(&self, account: &str, table: &str) -> Result<Vec<(String, i64)>> {
        self.keys_and_versions("producer_manifest", account, table)
            .await
    }

    /// Records a published batch in one transaction. With `owner`, the account's lease must
    /// still be held by it (and is extended), so an instance that lost its lease cannot move a
    /// checkpoint another instance now owns.
    pub async fn advance(
        &self,
        account: &str,
        table: &str,
        change: Advance<'_>,
        lease: Option<(&str, Duration)>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let mut statements = 1;
        if let Some((owner, ttl)) = lease {
            statements += 1;
            let held = sqlx::query(
                "UPDATE producer_leases SET expires_at = $3 WHERE account = $1 AND owner = $2",
            )
            .bind(account)
            .bind(owner)
            .bind(now_millis() + ttl.as_millis() as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                return Err(Error::LostLease(account.to_owned()));
            }
        }
        sqlx::query(
            "INSERT INTO producer_accounts (account, epoch) VALUES ($1, 0) \
             ON CONFLICT (account) DO NOTHING",
        )
        .bind(account)
        .execute(&mut *tx)
        .await?;
        let keys: Vec<&str> = change
            .upserts
            .iter()
            .map(|(key, _)| key.as_str())
            .chain(change.deletes.iter().map(String::as_str))
            .collect();
        statements += keys.len().div_ceil(500) as u64;
        let mut known = versions_of(&mut tx, account, table, &keys).await?;
        // (entries, checksum) changes per part.
        let mut parts: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        let mut change_part = |version: i64, sign: i64| {
            let part = parts.entry(version / PART_VERSIONS).or_default();
            part.0 += sign;
            part.1 += sign * (version + 1);
        };
        for (key, version) in change.upserts {
            if let Some(old) = known.insert(key.clone(), *version) {
                change_part(old, -1);
            }
            change_part(*version, 1);
        }
        for key in change.deletes {
            if let Some(old) = known.remove(key) {
                change_part(old, -1);
            }
        }
        let deltas: Vec<(i64, (i64, i64))> =
            parts.into_iter().filter(|(_, d)| *d != (0, 0)).collect();
        for chunk in deltas.chunks(200) {
            statements += 1;
            // Integers only, written as literals: one statement for the whole batch.
            let values = chunk
                .iter()
                .map(|(part, (entries, checksum))| {
                    format!("($1, $2, {part}, {entries}, {checksum})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            sqlx::query(&format!(
                "INSERT INTO producer_manifest_parts (account, entity_type, part, entries, checksum) \
                 VALUES {values} ON CONFLICT (account, entity_type, part) \
                 DO UPDATE SET entries = producer_manifest_parts.entries + excluded.entries, \
                 checksum = producer_manifest_parts.checksum + excluded.checksum"
            ))
            .bind(account)
            .bind(table)
            .execute(&mut *tx)
            .await?;
        }
        for (key, version) in change.upserts {
            statements += 1;
            sqlx::query(
                "INSERT INTO producer_manifest (account, entity_type, entity_id, version) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account, entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version",
            )
            .bind(account)
            .bind(table)
            .bind(key)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        for key in change.deletes {
            statements += 1;
            sqlx::query(
                "DELETE FROM producer_manifest \
                 WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
            )
            .bind(account)
            .bind(table)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(high_water) = change.high_water {
            statements += 1;
            set_high_water(&mut tx, account, table, high_water).await?;
        }
        let created: Vec<&str> = change.created.iter().map(String::as_str).collect();
        statements += created.len().div_ceil(500) as u64;
        settle(&mut tx, account, table, &created).await?;
        tx.commit().await?;
        self.count(statements);
        Ok(())
    }

    /// After a restore: the account's new state and, per table, the manifest and high-water
    /// mark that now describe the restored database — in one transaction, so a producer stopped
    /// half-way through a reconcile detects the restore again and repeats it.
    pub async fn reconcile(
        &self,
        account: &str,
        state: &AccountState,
        tables: &[TableCheckpoint],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let mut statements = 1;
        set_account(&mut tx, account, state).await?;
        for (table, entries, high_water) in tables {
            statements += 6 + entries.len() as u64;
            for sql in [
                "DELETE FROM producer_manifest WHERE account = $1 AND entity_type = $2",
                "DELETE FROM producer_manifest_parts WHERE account = $1 AND entity_type = $2",
                "DELETE FROM producer_inflight WHERE account = $1 AND entity_type = $2",
                "DELETE FROM producer_unsettled WHERE account = $1 AND entity_type = $2",
            ] {
                sqlx::query(sql)
                    .bind(account)
                    .bind(table)
                    .execute(&mut *tx)
                    .await?;
            }
            for (key, version) in entries {
                sqlx::query(
                    "INSERT INTO producer_manifest (account, entity_type, entity_id, version) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(account)
                .bind(table)
                .bind(key)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(&format!(
                "INSERT INTO producer_manifest_parts (account, entity_type, part, entries, checksum) \
                 SELECT account, entity_type, version / {PART_VERSIONS}, COUNT(*), SUM(version + 1) \
                 FROM producer_manifest WHERE account = $1 AND entity_type = $2 \
                 GROUP BY account, entity_type, version / {PART_VERSIONS}"
            ))
            .bind(account)
            .bind(table)
            .execute(&mut *tx)
            .await?;
            set_high_water(&mut tx, account, table, *high_water).await?;
        }
        tx.commit().await?;
        self.count(statements);
        Ok(())
    }

    /// Low-water marks of transactions that may still commit below the high-water mark.
    pub async fn inflight(&self, account: &str, table: &str) -> Result<Vec<(i64, i64)>> {
        self.count(1);
        Ok(sqlx::query_as(
            "SELECT next_txid, low_water FROM producer_inflight WHERE account = $1 AND entity_type = $2",
        )
        .bind(account)
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets markers whose transactions all ended (`xmax <= xmin`) and adds a new one.
    pub async fn update_inflight(
        &self,
        account: &str,
        table: &str,
        xmin: i64,
        add: Option<(i64, i64)>,
    ) -> Result<()> {
        self.count(2);
        sqlx::query(
            "DELETE FROM producer_inflight WHERE account = $1 AND entity_type = $2 AND next_txid <= $3",
        )
        .bind(account)
        .bind(table)
        .bind(xmin)
        .execute(&self.pool)
        .await?;
        if let Some((xmax, low_water)) = add {
            sqlx::query(
                "INSERT INTO producer_inflight (account, entity_type, next_txid, low_water) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account, entity_type, next_txid) \
                 DO UPDATE SET low_water = CASE WHEN excluded.low_water < producer_inflight.low_water \
                 THEN excluded.low_water ELSE producer_inflight.low_water END",
            )
            .bind(account)
            .bind(table)
            .bind(xmax)
            .bind(low_water)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Takes or renews the account's lease; false while another live owner holds it.
    pub async fn try_lease(&self, account: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.count(1);
        let now = now_millis();
        let taken = sqlx::query(
            "INSERT INTO producer_leases (account, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at \
             WHERE producer_leases.owner = excluded.owner OR producer_leases.expires_at < $4",
        )
        .bind(account)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives the lease up, so another instance need not wait for it to expire.
    pub async fn release(&self, account: &str, owner: &str) -> Result<()> {
        self.count(1);
        sqlx::query("DELETE FROM producer_leases WHERE account = $1 AND owner = $2")
            .bind(account)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
