//! What `tandem status` and the consumer's page show, gathered from the stores (opened as they
//! are, never created or migrated) and, when reachable, the brokers.
//!
//! How far behind an account is comes from two stores: the producer records where each
//! account's newest event landed (partition and offset), the consumer where each account and
//! each partition got to. `lag_events` counts the partition's messages from the consumer's
//! position for the account up to that newest event, plus the events held while the account is
//! parked; `lag_seconds` is how long ago that newest event happened in legacy. Without the
//! producer's store neither is known, and only held events are counted.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tandem_migration::State;

use crate::kafka::PartitionOffsets;

/// Where the status is read from.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    pub consumer: Option<&'a tandem_consumer::Store>,
    pub producer: Option<&'a tandem_producer::Store>,
    pub migration: Option<&'a tandem_migration::Store>,
    /// The consumer group and the topic the consumer's positions are kept under.
    pub group: &'a str,
    pub topic: &'a str,
    /// The brokers' view of the partitions, when they answered.
    pub brokers: Option<Vec<PartitionOffsets>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this was read (epoch millis).
    pub generated_at: i64,
    pub accounts: usize,
    pub by_state: BTreeMap<&'static str, usize>,
    /// Every account, the furthest behind first.
    pub account_list: Vec<AccountStatus>,
    pub partitions: Vec<PartitionStatus>,
    pub producer: Option<ProducerSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountStatus {
    pub account: String,
    /// `current`, `behind`, `parked`, `resuming`, or `waiting` (published, nothing applied
    /// yet); `unknown` when only the producer or the migration store is read.
    pub state: &'static str,
    /// Its migration state, where a migration store is read.
    pub lifecycle: Option<State>,
    pub epoch: Option<i64>,
    pub lag_events: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// When the consumer last applied (or skipped) one of its events (epoch millis).
    pub last_applied_at: Option<i64>,
    pub parked_reason: Option<String>,
    pub held: u64,
    pub dead_letters: u64,
    /// When the producer's newest event for it was acknowledged (epoch millis).
    pub last_published_at: Option<i64>,
    /// When the producer last checked it for deleted rows (epoch millis).
    pub deletes_checked_at: Option<i64>,
    /// Keys published as created whose checkpoint has not landed.
    pub unsettled: u64,
    /// The producer instance holding its lease.
    pub leased_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// The consumer store's position: every lower offset is applied, held or dead-lettered.
    pub position: Option<i64>,
    /// The consumer group's offset committed in Kafka.
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    /// high_watermark − position.
    pub lag: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ProducerSummary {
    pub accounts: usize,
    pub enrolled: usize,
    pub unsettled_keys: u64,
    pub leased: usize,
}

/// Reads the status from `sources`.
pub async fn gather(sources: &Sources<'_>) -> anyhow::Result<Status> {
    let now = tandem_event::now_millis();
    let mut accounts: BTreeMap<String, AccountStatus> = BTreeMap::new();
    let blank = |account: &str| AccountStatus {
        account: account.to_owned(),
        state: "unknown",
        lifecycle: None,
        epoch: None,
        lag_events: None,
        lag_seconds: None,
        last_applied_at: None,
        parked_reason: None,
        held: 0,
        dead_letters: 0,
        last_published_at: None,
        deletes_checked_at: None,
        unsettled: 0,
        leased_by: None,
    };
    // The consumer: per account, its place in each partition; per partition, its position.
    let mut places: HashMap<(String, i32), i64> = HashMap::new();
    let mut positions: HashMap<i32, i64> = HashMap::new();
    if let Some(consumer) = sources.consumer {
        for p in consumer
            .account_progress(sources.group, sources.topic)
            .await?
        {
            let entry = accounts
                .entry(p.account.clone())
                .or_insert_with(|| blank(&p.account));
            entry.state = "current";
            if p.applied_at > 0 {
                entry.last_applied_at = entry.last_applied_at.max(Some(p.applied_at));
            }
            places.insert((p.account, p.partition), p.next_offset);
        }
        positions = consumer.positions(sources.group, sources.topic).await?;
        for (account, reason, held, resuming) in consumer.parked_accounts().await? {
            let entry = accounts
                .entry(account.clone())
                .or_insert_with(|| blank(&account));
            entry.state = if resuming { "resuming" } else { "parked" };
            entry.parked_reason = Some(reason);
            entry.held = u64::try_from(held).unwrap_or(0);
        }
        for (account, n) in consumer.dead_letter_counts().await? {
            accounts
                .entry(account.clone())
                .or_insert_with(|| blank(&account))
                .dead_letters = n;
        }
    }
    let mut producer_summary = None;
    if let Some(producer) = sources.producer {
        let view = producer.accounts_view().await?;
        producer_summary = Some(ProducerSummary {
            accounts: view.len(),
            enrolled: view.iter().filter(|a| a.enrolled).count(),
            unsettled_keys: view.iter().map(|a| a.unsettled).sum(),
            leased: view.iter().filter(|a| a.leased_by.is_some()).count(),
        });
        for a in view {
            let entry = accounts
                .entry(a.account.clone())
                .or_insert_with(|| blank(&a.account));
            entry.epoch = Some(a.epoch);
            entry.unsettled = a.unsettled;
            entry.leased_by = a.leased_by;
            entry.deletes_checked_at = (a.deletes_checked_at > 0).then_some(a.deletes_checked_at);
            let Some(published) = a.published else {
                continue;
            };
            entry.last_published_at = Some(published.published_at);
            if sources.consumer.is_none() {
                continue;
            }
            let place = places
                .get(&(a.account.clone(), published.partition))
                .copied()
                .unwrap_or(0)
                .max(positions.get(&published.partition).copied().unwrap_or(0));
            let behind = u64::try_from(published.offset + 1 - place).unwrap_or(0);
            entry.lag_events = Some(behind + entry.held);
            entry.lag_seconds = Some(if behind + entry.held > 0 {
                (now - published.occurred_at).max(0) as f64 / 1000.0
            } else {
                0.0
            });
            if behind > 0 && matches!(entry.state, "current" | "unknown") {
                entry.state = if entry.last_applied_at.is_some() {
                    "behind"
                } else {
                    "waiting"
                };
            }
        }
    }
    if sources.producer.is_none() {
        for entry in accounts.values_mut() {
            if entry.held > 0 {
                entry.lag_events = Some(entry.held);
            }
        }
    }
    if let Some(migration) = sources.migration {
        for a in migration.accounts().await? {
            accounts
                .entry(a.account.clone())
                .or_insert_with(|| blank(&a.account))
                .lifecycle = Some(a.state);
        }
    }
    let mut by_state = BTreeMap::new();
    for a in accounts.values() {
        *by_state.entry(a.state).or_insert(0) += 1;
    }
    let mut account_list: Vec<AccountStatus> = accounts.into_values().collect();
    account_list.sort_by(|a, b| {
        b.lag_events
            .unwrap_or(0)
            .cmp(&a.lag_events.unwrap_or(0))
            .then(
                b.lag_seconds
                    .unwrap_or(0.0)
                    .total_cmp(&a.lag_seconds.unwrap_or(0.0)),
            )
            .then(a.account.cmp(&b.account))
    });
    Ok(Status {
        generated_at: now,
        accounts: account_list.len(),
        by_state,
        account_list,
        partitions: partitions(&positions, sources.brokers.as_deref()),
        producer: producer_summary,
    })
}

/// The partitions the consumer's store or the brokers know, by number.
fn partitions(
    positions: &HashMap<i32, i64>,
    brokers: Option<&[PartitionOffsets]>,
) -> Vec<PartitionStatus> {
    let mut all: BTreeMap<i32, PartitionStatus> = BTreeMap::new();
    for (&partition, &position) in positions {
        all.insert(
            partition,
            PartitionStatus {
                partition,
                position: Some(position),
                committed: None,
                high_watermark: None,
                lag: None,
            },
        );
    }
    for b in brokers.unwrap_or_default() {
        let entry = all.entry(b.partition).or_insert(PartitionStatus {
            partition: b.partition,
            position: None,
            committed: None,
            high_watermark: None,
            lag: None,
        });
        entry.committed = b.committed;
        entry.high_watermark = Some(b.high_watermark);
        entry.lag = Some((b.high_watermark - entry.position.unwrap_or(0)).max(0));
    }
    all.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_join_the_store_and_the_brokers() {
        let positions = HashMap::from([(0, 10), (1, 5)]);
        let brokers = [
            PartitionOffsets {
                partition: 0,
                high_watermark: 12,
                committed: Some(10),
            },
            PartitionOffsets {
                partition: 2,
                high_watermark: 3,
                committed: None,
            },
        ];
        let joined = partitions(&positions, Some(&brokers));
        assert_eq!(joined.len(), 3);
        assert_eq!(joined[0].lag, Some(2));
        assert_eq!(joined[0].committed, Some(10));
        assert_eq!(joined[1].high_watermark, None);
        assert_eq!(joined[1].position, Some(5));
        // Nothing applied yet: the whole partition is behind.
        assert_eq!(joined[2].lag, Some(3));
    }
}
