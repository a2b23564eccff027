//! The differencing check: the manifest compared with the table by version range, narrowing
//! down only the ranges that differ.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use crate::legacy::LegacyRow;
use crate::store::PART_VERSIONS;
use crate::{Producer, Result};

/// The first level compares ranges holding about this many manifest entries (more when a
/// table is so large that this would make more than [`TOP_RANGES`] ranges).
const TOP_RANGE_ROWS: i64 = 1024;
const TOP_RANGES: i64 = 16_384;
/// A differing range is then compared in this many sub-ranges.
const FANOUT: i64 = 32;
/// A differing range holding at most this many rows (both sides together) is listed key by key
/// (keys and versions only).
const LEAF_ROWS: i64 = 256;

/// What the differencing check found in one table.
#[derive(Debug, Default)]
pub struct Differences {
    /// Keys in the manifest that are gone from the table, with their last published version.
    pub deleted: Vec<(String, i64)>,
    /// Rows at or below the high-water mark that the manifest does not have at their version:
    /// changes committed late by transactions that were still open when their range was read.
    pub late: Vec<LegacyRow>,
    pub went_backwards: Option<String>,
}

impl Producer {
    /// The differencing check: compares the manifest with the table by version range, splitting
    /// only the ranges that differ, down to ranges small enough to list key by key. The first
    /// level compares counts: the manifest's side comes from counts kept with every
    /// checkpoint, the table's side is one statement of index range counts. Deeper levels
    /// compare count and sum of versions per bucket, all differing ranges of a level in one
    /// statement per side. Its cost follows the number of differences plus one pass over the
    /// table's version index — never a read of every row.
    pub async fn differences(&self, account: &str, table: &str, upto: i64) -> Result<Differences> {
        let started = std::time::Instant::now();
        let mut stages = Vec::new();
        let mut stage = |name: &'static str| stages.push((name, started.elapsed()));
        let high_water = self.store.high_water(account, table).await?;
        let parts = self.store.manifest_parts(account, table).await?;
        stage("manifest parts");
        // Everything the manifest holds is compared, also entries above the cycle's bound and
        // the high-water mark: the mark is lowered to the table's newest version when the
        // newest rows were deleted, and a row deleted just after this check looked at it is
        // published above the lowered mark, with nothing in the legacy database above it.
        let manifest_top = parts
            .last_key_value()
            .map_or(0, |(part, _)| (part + 1) * PART_VERSIONS - 1);
        let top = upto.max(high_water).max(manifest_top) + 1;
        let ranges = top_ranges(&parts, top);
        let bounds: Vec<(i64, i64)> = ranges.iter().map(|r| (r.lo, r.hi)).collect();
        let checksums = self.legacy.range_checksums(account, table, &bounds).await?;
        stage("range checksums");
        // How many rows a differing range holds is known on the manifest's side only; a range
        // is listed at once when that is small, else compared in sub-ranges first.
        let mut pending: Vec<(i64, i64, i64)> = ranges
            .iter()
            .zip(&checksums)
            .filter(|(range, legacy)| range.checksum != **legacy)
            .map(|(range, _)| {
                let rows = if range.entries <= LEAF_ROWS / 2 {
                    0
                } else {
                    i64::MAX
                };
                (range.lo, range.hi, rows)
            })
            .collect();
        let mut leaves: Vec<(i64, i64)> = Vec::new();
        while !pending.is_empty() {
            let (small, large): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|&(lo, hi, rows)| rows <= LEAF_ROWS || hi - lo <= 1);
            leaves.extend(small.into_iter().map(|(lo, hi, _)| (lo, hi)));
            let subs: Vec<(i64, i64)> = large
                .into_iter()
                .flat_map(|(lo, hi, _)| {
                    let width = (hi - lo + FANOUT - 1) / FANOUT;
                    (lo..hi)
                        .step_by(width as usize)
                        .map(move |sub| (sub, (sub + width).min(hi)))
                })
                .collect();
            if subs.is_empty() {
                break;
            }
            let legacy = self.legacy.range_summaries(account, table, &subs).await?;
            let manifest = self.store.manifest_summaries(account, table, &subs).await?;
            pending = subs
                .into_iter()
                .zip(legacy.into_iter().zip(manifest))
                .filter(|(_, (l, m))| l != m)
                .map(|((lo, hi), (l, m))| (lo, hi, l.0 + m.0))
                .collect();
        }
        stage("sub-ranges");
        let legacy_keys = self.legacy.key_versions_in(account, table, &leaves).await?;
        let manifest_rows: HashMap<String, i64> = self
            .store
            .manifest_in(account, table, &leaves)
            .await?
            .into_iter()
            .collect();
        let present: HashSet<(&str, i64)> = legacy_keys
            .iter()
            .map(|(key, version)| (key.as_str(), *version))
            .collect();
        let manifest_only: HashMap<String, i64> = manifest_rows
            .iter()
            .filter(|(key, version)| !present.contains(&(key.as_str(), **version)))
            .map(|(key, version)| (key.clone(), *version))
            .collect();
        let unknown = |key: &str, version: i64| manifest_rows.get(key) != Some(&version);
        // Whole rows only for what the manifest does not have at its version (rare).
        let mut versions: Vec<(i64, i64)> = legacy_keys
            .iter()
            .filter(|(key, version)| unknown(key, *version))
            .map(|(_, version)| (*version, version + 1))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let legacy_only: Vec<LegacyRow> = if versions.is_empty() {
            Vec::new()
        } else {
            self.legacy
                .rows_in(account, table, &versions)
                .await?
                .into_iter()
                .filter(|r| unknown(&r.entity_id, r.version))
                .collect()
        };
        stage("leaves");
        tracing::debug!(
            account,
            table,
            ranges = bounds.len(),
            leaves = leaves.len(),
            ?stages,
            "differencing check"
        );
        let mut found = Differences::default();
        if manifest_only.is_empty() && legacy_only.is_empty() {
            return Ok(found);
        }
        // Rows changed after this cycle's bound are not deletes, just not compared yet.
        let newer: HashSet<String> = self
            .legacy
            .changes(account, table, (upto, i64::MAX), usize::MAX)
            .await?
            .into_iter()
            .map(|r| r.entity_id)
            .collect();
        // Below this version every row was published: one the manifest does not have at its
        // version came back from an older state of the database. Above it (PostgreSQL only),
        // transactions that were open at an earlier read may have committed late.
        let mut settled = high_water;
        if self.legacy.is_postgres(account)? {
            for (_, low_water) in self.store.inflight(account, table).await? {
                settled = settled.min(low_water);
            }
        }
        if let Some(row) = legacy_only.iter().find(|r| r.version <= settled) {
            warn!(account, table, key = %row.entity_id, version = row.version, "a row is back at an old version");
            found.went_backwards = Some(row.entity_id.clone());
            return Ok(found);
        }
        let legacy_keys: HashSet<&str> = legacy_only.iter().map(|r| r.entity_id.as_str()).collect();
        for (key, version) in &manifest_only {
            if !legacy_keys.contains(key.as_str()) && !newer.contains(key) {
                found.deleted.push((key.clone(), *version));
            }
        }
        found.deleted.sort();
        found.late = legacy_only;
        Ok(found)
    }

    /// A full key scan: every key of the table against every manifest entry. What the
    /// differencing check avoids; kept for comparison in the benchmark.
    pub async fn full_scan_deletes(&self, account: &str, table: &str) -> Result<Vec<String>> {
        let present: HashSet<String> = self
            .legacy
            .key_versions(account, table)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let mut deleted: Vec<String> = self
            .store
            .manifest_all(account, table)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !present.contains(k))
            .collect();
        deleted.sort();
        Ok(deleted)
    }
}

/// One range of the first level: `[lo, hi)` with the manifest's entries and checksum in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopRange {
    lo: i64,
    hi: i64,
    entries: i64,
    checksum: i64,
}

/// The first level's ranges over `[0, top)`, cut at part boundaries so each range's manifest
/// summary is exact, each holding about [`TOP_RANGE_ROWS`] entries. Ranges with no entries are
/// merged into their neighbours; the last one ends at `top`.
fn top_ranges(parts: &BTreeMap<i64, (i64, i64)>, top: i64) -> Vec<TopRange> {
    let total: i64 = parts.values().map(|p| p.0).sum();
    let target = TOP_RANGE_ROWS.max(total / TOP_RANGES);
    let mut ranges = Vec::new();
    let mut range = TopRange {
        lo: 0,
        hi: 0,
        entries: 0,
        checksum: 0,
    };
    for (&part, &(entries, checksum)) in parts.range(..(top + PART_VERSIONS - 1) / PART_VERSIONS) {
        range.entries += entries;
        range.checksum += checksum;
        range.hi = (part + 1) * PART_VERSIONS;
        if range.entries >= target && range.hi < top {
            ranges.push(range);
            range = TopRange {
                lo: range.hi,
                hi: 0,
                entries: 0,
                checksum: 0,
            };
        }
    }
    if range.lo < top {
        range.hi = top;
        ranges.push(range);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ranges_cover_everything_below_top_and_sum_exactly() {
        // 3,000 entries at versions 0..3000 (parts 0, 1, 2), the table's top at 5,000.
        let parts = BTreeMap::from([(0, (1024, 10)), (1, (1024, 20)), (2, (952, 30))]);
        let ranges: Vec<(i64, i64, i64, i64)> = top_ranges(&parts, 5_000)
            .into_iter()
            .map(|r| (r.lo, r.hi, r.entries, r.checksum))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0, 1024, 1024, 10),
                (1024, 2048, 1024, 20),
                (2048, 5_000, 952, 30)
            ]
        );
        // No manifest at all: one range over everything.
        let empty = top_ranges(&BTreeMap::new(), 10);
        assert_eq!((empty.len(), empty[0].lo, empty[0].hi), (1, 0, 10));
        // Sparse parts are merged until a range holds enough entries.
        let sparse: BTreeMap<i64, (i64, i64)> = (0..100).map(|p| (p * 10, (100, 1))).collect();
        let top = 1_000 * PART_VERSIONS;
        let ranges = top_ranges(&sparse, top);
        assert!(ranges.windows(2).all(|w| w[0].hi == w[1].lo));
        assert_eq!(ranges.iter().map(|r| r.entries).sum::<i64>(), 10_000);
        assert_eq!(ranges.iter().map(|r| r.checksum).sum::<i64>(), 100);
        assert!(ranges
            .iter()
            .all(|r| r.entries >= TOP_RANGE_ROWS || r.hi == top));
    }
}
