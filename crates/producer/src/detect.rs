//! Change detection for one account: the version scan, the differencing check for deletes,
//! restore detection and reconcile, and snapshots.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use tandem_event::{ChangeEvent, Kind};
use tracing::{info, warn};

use crate::config::Table;
use crate::legacy::LegacyRow;
use crate::store::{AccountState, Advance, PART_VERSIONS};
use crate::{now_millis, Producer, Result};

/// The first level compares ranges holding about this many manifest entries (more when a
/// table is so large that this would make more than [`TOP_RANGES`] ranges).
const TOP_RANGE_ROWS: i64 = 1024;
const TOP_RANGES: i64 = 16_384;
/// A differing range is then compared in this many sub-ranges.
const FANOUT: i64 = 32;
/// A differing range holding at most this many rows (both sides together) is listed key by key
/// (keys and versions only).
const LEAF_ROWS: i64 = 256;

/// Why a restore was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSignal {
    /// The database's version is below the high-water mark.
    VersionBelowHighWater { current: i64, high_water: i64 },
    /// A row's version is lower than the version already published for it.
    VersionWentBackwards { table: String, key: String },
    /// The configured database-identity marker changed.
    IdentityChanged { from: String, to: String },
}

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
    /// One cycle of one account, if this instance gets (or holds) the account's lease.
    pub async fn cycle_account(&self, account: &str) -> Result<u64> {
        let ttl = self.options.lease_ttl;
        if !self.store.try_lease(account, &self.owner, ttl).await? {
            return Ok(0);
        }
        let mut state = self.store.account(account).await?;
        let bounds = self.legacy.snapshot_bounds(account).await?;
        let upto = self.max_version(account).await?;
        let identity = self.legacy.identity(account).await?;
        let (signal, suspect) = self
            .restore_signal(account, &state, upto, &identity)
            .await?;
        if let Some(signal) = signal {
            return self.restore(account, state, signal).await;
        }
        if state.identity.is_none() && identity.is_some() {
            state.identity = identity;
            self.store.set_account(account, &state).await?;
        }
        if !state.enrolled {
            let id = format!("enrol-{account}-{}-{upto}", state.epoch);
            let published = self
                .snapshot_leased(account, &mut state, &id, upto, bounds)
                .await?;
            state.enrolled = true;
            self.store.set_account(account, &state).await?;
            return Ok(published);
        }
        let mut published = 0;
        if state.unsettled {
            published += self.settle(account, &state, upto).await?;
        }
        for table in self.legacy.tables() {
            match self.scan(account, &state, table, upto, bounds).await? {
                Ok(n) => published += n,
                Err(signal) => return Ok(published + self.restore(account, state, signal).await?),
            }
        }
        let due = suspect
            || now_millis() - state.deletes_checked_at
                >= self.options.delete_check_interval.as_millis() as i64;
        if due {
            for table in self.legacy.tables() {
                match self.check_deletes(account, &state, table, upto).await? {
                    Ok(n) => published += n,
                    Err(signal) => {
                        return Ok(published + self.restore(account, state, signal).await?)
                    }
                }
                if suspect {
                    // No row went back, so the newest rows were deleted — or the database was
                    // restored to before rows that were only ever created. Either way the
                    // deletes are published; lowering the high-water mark makes sure writes
                    // that reuse versions after such a restore are read.
                    let max = self.legacy.max_version(account, &table.name).await?;
                    let high_water = self.store.high_water(account, &table.name).await?;
                    if max < high_water {
                        let advance = Advance {
                            high_water: Some(max),
                            ..Advance::default()
                        };
                        self.store
                            .advance(account, &table.name, advance, self.lease())
                            .await?;
                    }
                }
            }
            state.deletes_checked_at = now_millis();
            self.store.set_account(account, &state).await?;
        }
        Ok(published)
    }

    /// Deals with keys published as created whose checkpoint did not land (the last holder of
    /// the lease was killed in between). Consumers may have those rows while the manifest
    /// lacks them, so the differencing check would never report them deleted: a row that is
    /// gone now is published as deleted here. A row still there has a version above the
    /// high-water mark (its checkpoint moved nothing), so a version scan publishes it again as
    /// created, and that checkpoint settles it; until then it stays unsettled, because the row
    /// may change past this cycle's bound and be deleted before the next cycle reads it.
    async fn settle(&self, account: &str, state: &AccountState, upto: i64) -> Result<u64> {
        let floor = state.published_in(state.epoch);
        let mut published = 0;
        for table in self.legacy.tables() {
            let unsettled = self.store.unsettled(account, &table.name).await?;
            let Some(since) = unsettled.iter().map(|(_, v)| *v).min() else {
                continue;
            };
            // A row that still exists has a version at least the one published.
            let present: HashSet<String> = self
                .legacy
                .key_versions_in(account, &table.name, &[(since, i64::MAX)])
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .collect();
            let keys: Vec<&str> = unsettled.iter().map(|(k, _)| k.as_str()).collect();
            let known = self
                .store
                .manifest_versions(account, &table.name, &keys)
                .await?;
            let detected_at = now_millis();
            let events: Vec<ChangeEvent> = unsettled
                .iter()
                .filter(|(key, _)| !present.contains(key) && !known.contains_key(key))
                .map(|(key, version)| {
                    self.event(
                        account,
                        Kind::Deleted,
                        (&table.name, key),
                        (state.epoch, upto.max(*version).max(floor)),
                        detected_at,
                    )
                })
                .collect();
            self.publish(&events).await?;
            // Settled: the rows just published as deleted, and those the manifest has (a later
            // checkpoint recorded them, and the differencing check watches them).
            let keys: Vec<String> = unsettled
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| !present.contains(key) || known.contains_key(key))
                .collect();
            self.store.settle(account, &table.name, &keys).await?;
            if !events.is_empty() {
                info!(account, table = %table.name, deleted = events.len(), "published deletes of rows created before a lost checkpoint");
            }
            published += events.len() as u64;
        }
        Ok(published)
    }

    /// The highest version in any table of the account.
    async fn max_version(&self, account: &str) -> Result<i64> {
        let mut upto = 0;
        for table in self.legacy.tables() {
            upto = upto.max(self.legacy.max_version(account, &table.name).await?);
        }
        Ok(upto)
    }

    /// A certain restore signal, or whether one is suspected: without a version counter to
    /// ask, the account's newest version dropping below the high-water mark means either a
    /// restore or deletes of the newest rows, and only the differencing check can tell.
    async fn restore_signal(
        &self,
        account: &str,
        state: &AccountState,
        upto: i64,
        identity: &Option<String>,
    ) -> Result<(Option<RestoreSignal>, bool)> {
        if let (Some(from), Some(to)) = (&state.identity, identity) {
            if from != to {
                let signal = RestoreSignal::IdentityChanged {
                    from: from.clone(),
                    to: to.clone(),
                };
                return Ok((Some(signal), false));
            }
        }
        let mut high_water = 0;
        for table in self.legacy.tables() {
            high_water = high_water.max(self.store.high_water(account, &table.name).await?);
        }
        match self.legacy.version_counter(account).await? {
            Some(current) if current < high_water => Ok((
                Some(RestoreSignal::VersionBelowHighWater {
                    current,
                    high_water,
                }),
                false,
            )),
            Some(_) => Ok((None, false)),
            None => Ok((None, upto < high_water)),
        }
    }

    fn event(
        &self,
        account: &str,
        kind: Kind,
        (table, key): (&str, &str),
        (epoch, version): (i64, i64),
        detected_at: i64,
    ) -> ChangeEvent {
        let mut event = ChangeEvent::new(account, kind, table, key, epoch, version);
        event.occurred_at = detected_at;
        event.detected_at = detected_at;
        event
    }

    fn row_event(
        &self,
        account: &str,
        kind: Kind,
        table: &str,
        row: &LegacyRow,
        epoch: i64,
        detected_at: i64,
    ) -> ChangeEvent {
        let mut event = self.event(
            account,
            kind,
            (table, &row.entity_id),
            (epoch, row.version),
            detected_at,
        );
        event.data = Some(row.data.clone());
        event.occurred_at = row.occurred_at.unwrap_or(detected_at);
        event
    }

    /// Publishes one account's events. Before they go out, the account's published mark is
    /// raised when they go above it, and keys published as created are recorded as unsettled
    /// until their checkpoint.
    async fn publish(&self, events: &[ChangeEvent]) -> Result<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let (account, epoch) = (first.account_id.as_str(), first.epoch);
        let created: Vec<(&str, &str, i64)> = events
            .iter()
            .filter(|e| e.kind == Kind::Created)
            .map(|e| (e.entity_type.as_str(), e.entity_id.as_str(), e.version))
            .collect();
        if !created.is_empty() {
            self.store.unsettle(account, &created).await?;
        }
        let version = events.iter().map(|e| e.version).max().unwrap_or(0);
        let raised = self
            .published
            .lock()
            .ok()
            .and_then(|marks| marks.get(account).copied());
        if raised.is_none_or(|(e, v)| e != epoch || v < version) {
            self.store.raise_published(account, epoch, version).await?;
            if let Ok(mut marks) = self.published.lock() {
                marks.insert(account.to_owned(), (epoch, version));
            }
        }
        self.publisher.publish(events).await?;
        self.stats
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn lease(&self) -> Option<(&str, std::time::Duration)> {
        Some((self.owner.as_str(), self.options.lease_ttl))
    }

    /// The version scan of one table: rows above the high-water mark (and, on PostgreSQL,
    /// above the low-water mark of transactions still open at an earlier read) up to `upto`.
    async fn scan(
        &self,
        account: &str,
        state: &AccountState,
        table: &Table,
        upto: i64,
        bounds: Option<(i64, i64)>,
    ) -> Result<Result<u64, RestoreSignal>> {
        let high_water = self.store.high_water(account, &table.name).await?;
        let mut after = high_water;
        if bounds.is_some() {
            for (_, low_water) in self.store.inflight(account, &table.name).await? {
                after = after.min(low_water);
            }
        }
        let mut published = 0;
        let mut new_high_water = high_water;
        loop {
            let rows = self
                .legacy
                .changes(account, &table.name, (after, upto), self.options.batch_size)
                .await?;
            let Some(last) = rows.last().map(|r| r.version) else {
                break;
            };
            let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
            let known = self
                .store
                .manifest_versions(account, &table.name, &keys)
                .await?;
            let detected_at = now_millis();
            let mut events = Vec::new();
            let mut upserts = Vec::new();
            for row in &rows {
                let kind = match known.get(&row.entity_id) {
                    None => Kind::Created,
                    Some(v) if *v == row.version => continue,
                    Some(v) if *v > row.version => {
                        return Ok(Err(RestoreSignal::VersionWentBackwards {
                            table: table.name.clone(),
                            key: row.entity_id.clone(),
                        }))
                    }
                    Some(_) => Kind::Updated,
                };
                events.push(self.row_event(
                    account,
                    kind,
                    &table.name,
                    row,
                    state.epoch,
                    detected_at,
                ));
                upserts.push((row.entity_id.clone(), row.version));
            }
            self.publish(&events).await?;
            new_high_water = new_high_water.max(last);
            let created = created_keys(&events);
            let advance = Advance {
                upserts: &upserts,
                deletes: &[],
                high_water: Some(new_high_water),
                created: &created,
            };
            self.store
                .advance(account, &table.name, advance, self.lease())
                .await?;
            published += events.len() as u64;
            if !events.is_empty() {
                info!(account, table = %table.name, events = events.len(), "published changes");
            }
            after = last;
            if rows.len() < self.options.batch_size {
                break;
            }
        }
        if let Some((xmin, xmax)) = bounds {
            // Transactions running at this read may still commit versions up to `upto`.
            let open = (xmin < xmax).then_some((xmax, high_water));
            self.store
                .update_inflight(account, &table.name, xmin, open)
                .await?;
        }
        Ok(Ok(published))
    }

    /// Finds deleted rows (tombstone table, or the differencing check) and publishes them.
    async fn check_deletes(
        &self,
        account: &str,
        state: &AccountState,
        table: &Table,
        upto: i64,
    ) -> Result<Result<u64, RestoreSignal>> {
        let detected_at = now_millis();
        let (deleted, late) = if table.tombstones.is_some() {
            (self.tombstone_deletes(account, table).await?, Vec::new())
        } else {
            let found = self.differences(account, &table.name, upto).await?;
            if let Some(key) = found.went_backwards {
                return Ok(Err(RestoreSignal::VersionWentBackwards {
                    table: table.name.clone(),
                    key,
                }));
            }
            (found.deleted, found.late)
        };
        if deleted.is_empty() && late.is_empty() {
            return Ok(Ok(0));
        }
        let keys: Vec<&str> = late.iter().map(|r| r.entity_id.as_str()).collect();
        let known = self
            .store
            .manifest_versions(account, &table.name, &keys)
            .await?;
        let mut events: Vec<ChangeEvent> = late
            .iter()
            .map(|row| {
                let kind = if known.contains_key(&row.entity_id) {
                    Kind::Updated
                } else {
                    Kind::Created
                };
                self.row_event(account, kind, &table.name, row, state.epoch, detected_at)
            })
            .collect();
        // A delete happened after the last version published of its row, and before `upto`.
        let floor = state.published_in(state.epoch);
        events.extend(deleted.iter().map(|(key, version)| {
            self.event(
                account,
                Kind::Deleted,
                (&table.name, key),
                (state.epoch, upto.max(*version).max(floor)),
                detected_at,
            )
        }));
        self.publish(&events).await?;
        let upserts: Vec<(String, i64)> = late
            .iter()
            .map(|r| (r.entity_id.clone(), r.version))
            .collect();
        let deletes: Vec<String> = deleted.iter().map(|(k, _)| k.clone()).collect();
        let created = created_keys(&events);
        let advance = Advance {
            upserts: &upserts,
            deletes: &deletes,
            high_water: None,
            created: &created,
        };
        self.store
            .advance(account, &table.name, advance, self.lease())
            .await?;
        self.stats
            .deletes
            .fetch_add(deletes.len() as u64, Ordering::Relaxed);
        info!(account, table = %table.name, deleted = deletes.len(), late = upserts.len(), "published deletes");
        Ok(Ok(events.len() as u64))
    }

    /// Keys the tombstone table lists since the last check, still in the manifest at an older
    /// version.
    async fn tombstone_deletes(&self, account: &str, table: &Table) -> Result<Vec<(String, i64)>> {
        let mark = format!("{}#tombstones", table.name);
        let after = self.store.high_water(account, &mark).await?;
        let stones = self
            .legacy
            .tombstones(account, &table.name, (after, i64::MAX))
            .await?;
        let Some(last) = stones.iter().map(|(_, v)| *v).max() else {
            return Ok(Vec::new());
        };
        let keys: Vec<&str> = stones.iter().map(|(k, _)| k.as_str()).collect();
        let known = self
            .store
            .manifest_versions(account, &table.name, &keys)
            .await?;
        let deleted = stones
            .into_iter()
            .filter(|(key, version)| known.get(key).is_some_and(|v| v < version))
            .collect();
        // The tombstone mark moves with the deletes it covers (same batch, after the ack):
        // recorded by the caller's advance of the table, and here for the mark itself.
        self.store
            .advance(
                account,
                &mark,
                Advance {
                    high_water: Some(last),
                    ..Advance::default()
                },
                self.lease(),
            )
            .await?;
        Ok(deleted)
    }

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
        let top = upto.max(high_water) + 1;
        let parts = self.store.manifest_parts(account, table).await?;
        stage("manifest parts");
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

    /// A restore was detected: the epoch moves on, `DATABASE_RESTORED` is published, then every
    /// difference between the manifest and the restored tables, in the new epoch. All
    /// checkpoints move in one transaction at the end, so an interrupted reconcile is repeated.
    async fn restore(
        &self,
        account: &str,
        mut state: AccountState,
        signal: RestoreSignal,
    ) -> Result<u64> {
        warn!(account, ?signal, "database restore detected");
        state.epoch += 1;
        let upto = self.max_version(account).await?;
        let detected_at = now_millis();
        let marker = self.event(
            account,
            Kind::DatabaseRestored,
            ("", ""),
            (state.epoch, upto),
            detected_at,
        );
        self.publish(std::slice::from_ref(&marker)).await?;
        let mut published = 1;
        let mut checkpoints = Vec::new();
        for table in self.legacy.tables() {
            let rows = self.legacy.all_rows(account, &table.name).await?;
            // Keys published as created before a lost checkpoint count as published too.
            let mut manifest: HashMap<String, i64> = self
                .store
                .unsettled(account, &table.name)
                .await?
                .into_iter()
                .chain(self.store.manifest_all(account, &table.name).await?)
                .collect();
            let mut rows: Vec<&LegacyRow> = rows.iter().collect();
            rows.sort_by_key(|r| r.version);
            let mut events = Vec::new();
            for row in &rows {
                let kind = match manifest.remove(&row.entity_id) {
                    None => Kind::Created,
                    Some(v) if v == row.version => continue,
                    Some(_) => Kind::Updated,
                };
                let mut event =
                    self.row_event(account, kind, &table.name, row, state.epoch, detected_at);
                // The change is the restore, which the rows do not date: a restored row's own
                // timestamp is from before the backup.
                event.occurred_at = detected_at;
                events.push(event);
            }
            let mut gone: Vec<(String, i64)> = manifest.into_iter().collect();
            gone.sort();
            // An earlier try of this reconcile may have published in the new epoch already.
            let floor = state.published_in(state.epoch);
            events.extend(gone.iter().map(|(key, _)| {
                self.event(
                    account,
                    Kind::Deleted,
                    (&table.name, key),
                    (state.epoch, upto.max(floor)),
                    detected_at,
                )
            }));
            for chunk in events.chunks(self.options.batch_size.max(1)) {
                self.publish(chunk).await?;
            }
            published += events.len() as u64;
            let high_water = rows.last().map(|r| r.version).unwrap_or(0);
            let entries = rows
                .iter()
                .map(|r| (r.entity_id.clone(), r.version))
                .collect();
            checkpoints.push((table.name.clone(), entries, high_water));
        }
        state.identity = self.legacy.identity(account).await?;
        state.enrolled = true;
        self.store.reconcile(account, &state, &checkpoints).await?;
        self.stats.restores.fetch_add(1, Ordering::Relaxed);
        Ok(published)
    }

    /// Records the account's current rows as published, without publishing them: for an
    /// account whose cloud copy is known to match the legacy data (and for benchmarks that
    /// need a large manifest quickly).
    pub async fn adopt(&self, account: &str) -> Result<()> {
        let mut state = self.store.account(account).await?;
        let mut checkpoints = Vec::new();
        for table in self.legacy.tables() {
            let rows = self.legacy.all_rows(account, &table.name).await?;
            let high_water = rows.iter().map(|r| r.version).max().unwrap_or(0);
            let entries = rows.into_iter().map(|r| (r.entity_id, r.version)).collect();
            checkpoints.push((table.name.clone(), entries, high_water));
        }
        state.enrolled = true;
        state.identity = self.legacy.identity(account).await?;
        state.deletes_checked_at = now_millis();
        self.store.reconcile(account, &state, &checkpoints).await
    }

    /// Publishes a snapshot of the account: `SNAPSHOT_BEGIN`, every row, the deletes the
    /// manifest had not seen yet, `SNAPSHOT_END` — all carrying `snapshot_id`.
    pub async fn snapshot(&self, account: &str, snapshot_id: &str) -> Result<u64> {
        let ttl = self.options.lease_ttl;
        if !self.store.try_lease(account, &self.owner, ttl).await? {
            return Err(crate::Error::LostLease(account.to_owned()));
        }
        let mut state = self.store.account(account).await?;
        let bounds = self.legacy.snapshot_bounds(account).await?;
        let upto = self.max_version(account).await?;
        let published = self
            .snapshot_leased(account, &mut state, snapshot_id, upto, bounds)
            .await?;
        state.enrolled = true;
        self.store.set_account(account, &state).await?;
        Ok(published)
    }

    async fn snapshot_leased(
        &self,
        account: &str,
        state: &mut AccountState,
        snapshot_id: &str,
        upto: i64,
        bounds: Option<(i64, i64)>,
    ) -> Result<u64> {
        let detected_at = now_millis();
        let marker = |kind| {
            let mut event = self.event(
                account,
                kind,
                ("", snapshot_id),
                (state.epoch, upto),
                detected_at,
            );
            event.snapshot_id = Some(snapshot_id.to_owned());
            event
        };
        self.publish(&[marker(Kind::SnapshotBegin)]).await?;
        let mut published = 2;
        for table in self.legacy.tables() {
            let high_water = self.store.high_water(account, &table.name).await?;
            let mut seen = HashSet::new();
            // Read to the end, changes made meanwhile included: the consumer removes whatever
            // a snapshot did not send, so it must send every row that exists when it ends.
            let mut after = 0;
            loop {
                let rows = self
                    .legacy
                    .changes(
                        account,
                        &table.name,
                        (after, i64::MAX),
                        self.options.batch_size,
                    )
                    .await?;
                let Some(last) = rows.last().map(|r| r.version) else {
                    break;
                };
                let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
                let known = self
                    .store
                    .manifest_versions(account, &table.name, &keys)
                    .await?;
                let events: Vec<ChangeEvent> = rows
                    .iter()
                    .map(|row| {
                        let kind = if known.contains_key(&row.entity_id) {
                            Kind::Updated
                        } else {
                            Kind::Created
                        };
                        let mut event = self.row_event(
                            account,
                            kind,
                            &table.name,
                            row,
                            state.epoch,
                            detected_at,
                        );
                        event.snapshot_id = Some(snapshot_id.to_owned());
                        event
                    })
                    .collect();
                self.publish(&events).await?;
                let upserts: Vec<(String, i64)> = rows
                    .iter()
                    .map(|r| (r.entity_id.clone(), r.version))
                    .collect();
                seen.extend(upserts.iter().map(|(k, _)| k.clone()));
                let created = created_keys(&events);
                let advance = Advance {
                    upserts: &upserts,
                    deletes: &[],
                    high_water: Some(high_water.max(last)),
                    created: &created,
                };
                self.store
                    .advance(account, &table.name, advance, self.lease())
                    .await?;
                published += events.len() as u64;
                after = last;
                if rows.len() < self.options.batch_size {
                    break;
                }
            }
            // What the manifest holds but the snapshot did not see is gone.
            let gone: Vec<(String, i64)> = self
                .store
                .manifest_all(account, &table.name)
                .await?
                .into_iter()
                .filter(|(k, v)| !seen.contains(k) && *v <= upto)
                .collect();
            if !gone.is_empty() {
                let floor = self.store.account(account).await?.published_in(state.epoch);
                let events: Vec<ChangeEvent> = gone
                    .iter()
                    .map(|(key, version)| {
                        let mut event = self.event(
                            account,
                            Kind::Deleted,
                            (&table.name, key),
                            (state.epoch, upto.max(*version).max(floor)),
                            detected_at,
                        );
                        event.snapshot_id = Some(snapshot_id.to_owned());
                        event
                    })
                    .collect();
                self.publish(&events).await?;
                let deletes: Vec<String> = gone.into_iter().map(|(k, _)| k).collect();
                let advance = Advance {
                    upserts: &[],
                    deletes: &deletes,
                    high_water: None,
                    created: &[],
                };
                self.store
                    .advance(account, &table.name, advance, self.lease())
                    .await?;
                published += events.len() as u64;
            }
            if let Some((xmin, xmax)) = bounds {
                let open = (xmin < xmax).then_some((xmax, high_water));
                self.store
                    .update_inflight(account, &table.name, xmin, open)
                    .await?;
            }
        }
        self.publish(&[marker(Kind::SnapshotEnd)]).await?;
        info!(
            account,
            snapshot_id,
            events = published,
            "published snapshot"
        );
        Ok(published)
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
/// The keys of the events published as created.
fn created_keys(events: &[ChangeEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == Kind::Created)
        .map(|e| e.entity_id.clone())
        .collect()
}

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
