//! The differencing check's side in the legacy database: checksums, counts and keys over
//! version ranges, many ranges to a statement.

use std::collections::HashMap;

use tandem_event::{canonical_key, Value};

use crate::store::{ranges_cte, RANGES_PER_STATEMENT};
use crate::{Error, Result};

use super::{long, quote, Bind, Legacy, LegacyRow, PARALLEL_READS};

impl Legacy {
    /// Per `[lo, hi)` range, in order, a checksum of the versions of the rows of `table` for
    /// `account` in it: the sum of (version + 1), so that a row deleted, added, or at another
    /// version changes it (one aggregate per range). The ranges are split over
    /// [`PARALLEL_READS`] statements on as many connections, each reading its own slice of
    /// the version index.
    pub async fn range_checksums(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<i64>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let per_statement = ranges
            .len()
            .div_ceil(PARALLEL_READS)
            .clamp(1, RANGES_PER_STATEMENT);
        let statements = ranges.chunks(per_statement).map(|chunk| {
            let sql = format!(
                "{} SELECT CAST(r.tandem_lo AS BIGINT) AS lo, \
                 (SELECT CAST(COALESCE(SUM({version} + 1), 0) AS BIGINT) FROM {} \
                 WHERE {version} >= r.tandem_lo AND {version} < r.tandem_hi{filter}) AS total \
                 FROM tandem_ranges r",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                quote(table)
            );
            let binds = &binds;
            async move { db.query(&sql, binds).await }
        });
        let found: HashMap<i64, i64> = futures::future::try_join_all(statements)
            .await?
            .iter()
            .flatten()
            .map(|row| (long(row, "lo"), long(row, "total")))
            .collect();
        Ok(ranges
            .iter()
            .map(|(lo, _)| found.get(lo).copied().unwrap_or(0))
            .collect())
    }

    /// Per `[lo, hi)` range, in order: how many rows of `table` for `account` have a version
    /// in it, and the sum of those versions. One statement per few
    /// thousand ranges.
    pub async fn range_summaries(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<(i64, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let from = format!(
            "FROM {} WHERE {version} >= r.tandem_lo AND {version} < r.tandem_hi{filter}",
            quote(table)
        );
        let total = format!("(SELECT CAST(COALESCE(SUM({version}), 0) AS BIGINT) {from})");
        let mut out = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT CAST(r.tandem_lo AS BIGINT) AS lo, (SELECT COUNT(*) {from}) AS n, \
                 {total} AS total FROM tandem_ranges r",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
            );
            let found: HashMap<i64, (i64, i64)> = db
                .query(&sql, &binds)
                .await?
                .iter()
                .map(|row| (long(row, "lo"), (long(row, "n"), long(row, "total"))))
                .collect();
            out.extend(
                chunk
                    .iter()
                    .map(|(lo, _)| found.get(lo).copied().unwrap_or_default()),
            );
        }
        Ok(out)
    }

    /// Keys and versions (no other columns) of the rows with a version in any of the
    /// `[lo, hi)` ranges.
    pub async fn key_versions_in(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<(String, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT {} FROM tandem_ranges r JOIN {} ON {version} >= r.tandem_lo \
                 AND {version} < r.tandem_hi WHERE 1 = 1{filter}",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                info.key_version_list(),
                quote(table)
            );
            for row in db.query(&sql, &binds).await? {
                let row = info.legacy_row(row)?;
                out.push((row.entity_id, row.version));
            }
        }
        Ok(out)
    }

    /// Rows of `table` for `account` with a version in any of the `[lo, hi)` ranges.
    pub async fn rows_in(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<LegacyRow>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT {} FROM tandem_ranges r JOIN {} ON {version} >= r.tandem_lo \
                 AND {version} < r.tandem_hi WHERE 1 = 1{filter}",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                info.select_list,
                quote(table)
            );
            for row in db.query(&sql, &binds).await? {
                out.push(info.legacy_row(row)?);
            }
        }
        Ok(out)
    }

    /// Keys listed in the table's tombstone table with a version in `(after, upto]`, with
    /// those versions.
    pub async fn tombstones(
        &self,
        account: &str,
        table: &str,
        (after, upto): (i64, i64),
    ) -> Result<Vec<(String, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let Some(tomb) = &info.config.tombstones else {
            return Ok(Vec::new());
        };
        let version = quote(&tomb.version_column);
        let keys = info
            .config
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let (filter, binds) = db.account_clause(account, 3);
        let sql = format!(
            "SELECT {keys}, {version} AS tandem_version FROM {} \
             WHERE {version} > $1 AND {version} <= $2{filter} ORDER BY {version}",
            quote(&tomb.table)
        );
        let mut all = vec![Bind::Int(after), Bind::Int(upto)];
        all.extend(binds);
        db.query(&sql, &all)
            .await?
            .into_iter()
            .map(|row| {
                let parts: Vec<Value> = info
                    .config
                    .key
                    .iter()
                    .map(|k| row.get(k).cloned().unwrap_or(Value::Null))
                    .collect();
                match row.get("tandem_version") {
                    Some(Value::Long(v)) => Ok((canonical_key(&parts), *v)),
                    other => Err(Error::BadValue {
                        table: tomb.table.clone(),
                        column: tomb.version_column.clone(),
                        message: format!("expected an integer version, found {other:?}"),
                    }),
                }
            })
            .collect()
    }
}
