//! The manifest: every key published per table with its version, summarised in parts of
//! [`PART_VERSIONS`] versions for the differencing check, and the high-water marks. One
//! transaction per acknowledged batch moves them ([`Store::advance`]); a reconcile after a
//! restore rewrites them ([`Store::reconcile`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::unsettled::settle;
use super::{placeholders, set_account, AccountState, Store};
use crate::{Error, Result};

/// What one published batch changes in a table's checkpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct Advance<'a> {
    /// Keys published as created or updated, with their versions.
    pub upserts: &'a [(String, i64)],
    /// Keys published as deleted.
    pub deletes: &'a [String],
    /// The new high-water mark, if it moves.
    pub high_water: Option<i64>,
    /// Keys published as created in this batch: their checkpoint settles them.
    pub created: &'a [String],
    /// The table's tombstone mark, when the batch published the deletes a tombstone table
    /// listed up to it: it moves with them, so a stop before the checkpoint reads them again.
    pub tombstone_mark: Option<i64>,
}

/// Width, in versions, of the parts the manifest is counted in (`producer_manifest_parts`;
/// the migration that creates that table uses the same number).
pub const PART_VERSIONS: i64 = 1024;

/// Manifest rows written or deleted by one statement at most (two parameters each).
const ROWS_PER_STATEMENT: usize = 500;

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

pub(super) async fn versions_of(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    keys: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut known = HashMap::new();
    for chunk in keys.chunks(500) {
        let placeholders = placeholders(3, chunk.len());
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

/// Where a table's tombstone mark is kept, beside the high-water marks of tables.
pub(crate) fn tombstone_mark_key(table: &str) -> String {
    format!("{table}#tombstones")
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

/// (count, sum of versions) — the summary the differencing check compares.
pub type Summary = (i64, i64);

/// A table's checkpoint after a reconcile: (table, manifest entries (key, version), high water).
pub type TableCheckpoint = (String, Vec<(String, i64)>, i64);

impl Store {
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
        // Read before the transaction: a SQLite store has one connection.
        let lease = match lease {
            Some((owner, ttl)) => Some((owner, self.now_millis().await? + ttl.as_millis() as i64)),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        let mut statements = 1;
        if let Some((owner, expires_at)) = lease {
            statements += 1;
            if !renew_lease(&mut tx, account, owner, expires_at).await? {
                return Err(Error::LostLease(account.to_owned()));
            }
        }
        statements += advance_in(&mut tx, account, table, change).await?;
        tx.commit().await?;
        self.count(statements);
        Ok(())
    }

    /// Records the published batches of many accounts in one transaction, each account under
    /// its lease as [`Store::advance`] does. An account whose lease was lost is left out, and
    /// returned: nothing of it moves.
    pub async fn advance_together(
        &self,
        batches: &[(&str, &str, Advance<'_>)],
        (owner, ttl): (&str, Duration),
    ) -> Result<Vec<String>> {
        let expires_at = self.now_millis().await? + ttl.as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        let mut statements = 1;
        let mut lost: Vec<String> = Vec::new();
        let mut held: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (account, table, change) in batches {
            if lost.iter().any(|a| a == account) {
                continue;
            }
            if !held.contains(account) {
                statements += 1;
                if !renew_lease(&mut tx, account, owner, expires_at).await? {
                    lost.push((*account).to_owned());
                    continue;
                }
                held.insert(account);
            }
            statements += advance_in(&mut tx, account, table, *change).await?;
        }
        tx.commit().await?;
        self.count(statements);
        Ok(lost)
    }
}

/// Extends the account's lease to `expires_at` (the store's clock) if `owner` still holds it;
/// whether it does.
async fn renew_lease(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    owner: &str,
    expires_at: i64,
) -> Result<bool> {
    let held =
        sqlx::query("UPDATE producer_leases SET expires_at = $3 WHERE account = $1 AND owner = $2")
            .bind(account)
            .bind(owner)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(held > 0)
}

/// One table's part of a checkpoint, written on `tx`; the statements it took.
async fn advance_in(
    tx: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    change: Advance<'_>,
) -> Result<u64> {
    let mut statements = 1;
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
    let mut known = versions_of(&mut *tx, account, table, &keys).await?;
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
    let deltas: Vec<(i64, (i64, i64))> = parts.into_iter().filter(|(_, d)| *d != (0, 0)).collect();
    for chunk in deltas.chunks(200) {
        statements += 1;
        // Integers only, written as literals: one statement for the whole batch.
        let values = chunk
            .iter()
            .map(|(part, (entries, checksum))| format!("($1, $2, {part}, {entries}, {checksum})"))
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
    // The last version of each key upserted (a key twice in one statement is an error in
    // PostgreSQL), then the deletes, each as multi-row statements.
    let upserts: BTreeMap<&str, i64> = change
        .upserts
        .iter()
        .map(|(key, version)| (key.as_str(), *version))
        .collect();
    let upserts: Vec<(&str, i64)> = upserts.into_iter().collect();
    for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
        statements += 1;
        let values = (0..chunk.len())
            .map(|i| format!("($1, $2, ${}, ${})", 2 * i + 3, 2 * i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO producer_manifest (account, entity_type, entity_id, version) \
                 VALUES {values} ON CONFLICT (account, entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version"
        );
        let mut query = sqlx::query(&sql).bind(account).bind(table);
        for (key, version) in chunk {
            query = query.bind(*key).bind(*version);
        }
        query.execute(&mut *tx).await?;
    }
    let deletes: Vec<&str> = change.deletes.iter().map(String::as_str).collect();
    for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
        statements += 1;
        let sql = format!(
            "DELETE FROM producer_manifest \
                 WHERE account = $1 AND entity_type = $2 AND entity_id IN ({})",
            placeholders(3, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(account).bind(table);
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *tx).await?;
    }
    if let Some(high_water) = change.high_water {
        statements += 1;
        set_high_water(&mut *tx, account, table, high_water).await?;
    }
    if let Some(mark) = change.tombstone_mark {
        statements += 1;
        set_high_water(&mut *tx, account, &tombstone_mark_key(table), mark).await?;
    }
    let created: Vec<&str> = change.created.iter().map(String::as_str).collect();
    statements += created.len().div_ceil(500) as u64;
    settle(&mut *tx, account, table, &created).await?;
    Ok(statements)
}

impl Store {
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
}
