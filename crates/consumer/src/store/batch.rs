//! The statements of one group commit: each kind of write for every book of the batch in one
//! multi-row statement, instead of one statement per book.
//!
//! A statement never names one key twice (PostgreSQL refuses an upsert that would change a row
//! twice): the writes are split into layers in which every key is unique, the n-th write of a
//! key going into layer n, and the layers run in order — as if each write were its own
//! statement.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use sqlx::AnyConnection;

use super::leases::LeaseId;
use super::mirror::{Mapped, MirrorRow, ResourceKey};
use super::positions::Position;
use crate::Result;

/// A value bound to a statement.
#[derive(Debug, Clone)]
enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

/// Rows of values written as `($1, $2, …), (…)` with their parameters, in order.
struct Values {
    sql: String,
    params: Vec<Param>,
}

impl Values {
    fn of(rows: impl IntoIterator<Item = Vec<Param>>) -> Values {
        let mut values = Values {
            sql: String::new(),
            params: Vec::new(),
        };
        for row in rows {
            if !values.sql.is_empty() {
                values.sql.push_str(", ");
            }
            values.sql.push('(');
            for (i, param) in row.into_iter().enumerate() {
                if i > 0 {
                    values.sql.push_str(", ");
                }
                values.params.push(param);
                values.sql.push_str(&format!("${}", values.params.len()));
            }
            values.sql.push(')');
        }
        values
    }

    async fn execute(self, conn: &mut AnyConnection, statement: &str) -> Result<u64> {
        let sql = statement.replace("{values}", &self.sql);
        let mut query = sqlx::query(&sql);
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        Ok(query.execute(&mut *conn).await?.rows_affected())
    }

    async fn fetch(
        self,
        conn: &mut AnyConnection,
        statement: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let sql = statement.replace("{values}", &self.sql);
        let mut query = sqlx::query_as(&sql);
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        Ok(query.fetch_all(&mut *conn).await?)
    }
}

fn text(s: &str) -> Param {
    Param::Text(Some(s.to_owned()))
}

/// `items` split into layers in which no key repeats; a key's writes keep their order.
fn layers<T, K: Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut layers: Vec<Vec<T>> = Vec::new();
    for item in items {
        let n = seen.entry(key(&item)).or_default();
        if layers.len() <= *n {
            layers.push(Vec::new());
        }
        layers[*n].push(item);
        *n += 1;
    }
    layers
}

/// At most this many rows in one statement (SQLite binds up to 32,766 parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// Which of `leases` (account, lease) are still held, checked in one statement that locks
/// their rows until the transaction ends (see [`super::leases`]).
pub(super) async fn held(
    conn: &mut AnyConnection,
    leases: &[(&str, &LeaseId)],
) -> Result<HashSet<(String, String, String)>> {
    let mut held = HashSet::new();
    for chunk in leases.chunks(ROWS_PER_STATEMENT) {
        let values =
            Values::of(chunk.iter().map(|(account, lease)| {
                vec![text(&lease.group), text(account), text(&lease.owner)]
            }));
        let rows = values
            .fetch(
                conn,
                "UPDATE consumer_account_leases SET owner = owner \
                 WHERE (consumer_group, account, owner) IN (VALUES {values}) \
                 RETURNING consumer_group, account, owner",
            )
            .await?;
        held.extend(rows);
    }
    Ok(held)
}

/// One mirror row to write: (account, entity_type, entity_id, row, where its event sits).
pub(super) type MirrorWrite<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a MirrorRow,
    Option<&'a Position>,
);

/// Upserts mirror rows, never over a newer `(epoch, version)`.
pub(super) async fn mirror(conn: &mut AnyConnection, rows: Vec<MirrorWrite<'_>>) -> Result<()> {
    for layer in layers(rows, |(a, t, k, _, _)| (*a, *t, *k)) {
        for chunk in layer.chunks(ROWS_PER_STATEMENT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (account, entity_type, entity_id, row, at) in chunk {
                let data = row.data.as_ref().map(serde_json::to_string).transpose()?;
                rows.push(vec![
                    text(account),
                    text(entity_type),
                    text(entity_id),
                    Param::Int(Some(row.epoch)),
                    Param::Int(Some(row.version)),
                    Param::Text(row.parent.clone()),
                    Param::Text(data),
                    Param::Text(row.snapshot_id.clone()),
                    Param::Text(at.map(|p| p.topic.clone())),
                    Param::Int(at.map(|p| i64::from(p.partition))),
                    Param::Int(at.map(|p| p.next_offset - 1)),
                ]);
            }
            Values::of(rows)
                .execute(
                    conn,
                    "INSERT INTO consumer_mirror \
                     (account, entity_type, entity_id, epoch, version, parent, data, snapshot_id, \
                     log_topic, log_partition, log_offset) VALUES {values} \
                     ON CONFLICT (account, entity_type, entity_id) DO UPDATE SET \
                     epoch = excluded.epoch, version = excluded.version, \
                     parent = excluded.parent, data = excluded.data, \
                     snapshot_id = COALESCE(excluded.snapshot_id, consumer_mirror.snapshot_id), \
                     log_topic = excluded.log_topic, log_partition = excluded.log_partition, \
                     log_offset = excluded.log_offset \
                     WHERE consumer_mirror.epoch < excluded.epoch OR \
                     (consumer_mirror.epoch = excluded.epoch AND \
                     consumer_mirror.version <= excluded.version)",
                )
                .await?;
        }
    }
    Ok(())
}

/// Marks mirror rows a snapshot sent again: (account, entity_type, entity_id, snapshot id).
pub(super) async fn seen(
    conn: &mut AnyConnection,
    rows: Vec<(&str, &str, &str, &str)>,
) -> Result<()> {
    // Rare (a snapshot re-sending rows applied already) and cheap: one statement each.
    for (account, entity_type, entity_id, snapshot_id) in rows {
        sqlx::query(
            "UPDATE consumer_mirror SET snapshot_id = $4 \
             WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
        )
        .bind(account)
        .bind(entity_type)
        .bind(entity_id)
        .bind(snapshot_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Writes ID map entries: `Some` upserts, `None` deletes.
pub(super) async fn ids(
    conn: &mut AnyConnection,
    entries: Vec<(&str, &ResourceKey, &Option<Mapped>)>,
) -> Result<()> {
    for layer in layers(entries, |(a, k, _)| (*a, *k)) {
        let (set, gone): (Vec<_>, Vec<_>) = layer.into_iter().partition(|(_, _, id)| id.is_some());
        for chunk in set.chunks(ROWS_PER_STATEMENT) {
            let rows = chunk
                .iter()
                .filter_map(|(account, (resource, root_key), id)| {
                    let (cloud_id, hash) = id.as_ref()?;
                    Some(vec![
                        text(account),
                        text(resource),
                        text(root_key),
                        text(cloud_id),
                        text(hash),
                    ])
                });
            Values::of(rows)
                .execute(
                    conn,
                    "INSERT INTO consumer_id_map (account, resource, root_key, cloud_id, doc_hash) \
                     VALUES {values} ON CONFLICT (account, resource, root_key) DO UPDATE SET \
                     cloud_id = excluded.cloud_id, doc_hash = excluded.doc_hash",
                )
                .await?;
        }
        for chunk in gone.chunks(ROWS_PER_STATEMENT) {
            let rows = chunk.iter().map(|(account, (resource, root_key), _)| {
                vec![text(account), text(resource), text(root_key)]
            });
            Values::of(rows)
                .execute(
                    conn,
                    "DELETE FROM consumer_id_map \
                     WHERE (account, resource, root_key) IN (VALUES {values})",
                )
                .await?;
        }
    }
    Ok(())
}

/// Resources waiting for the resource they refer to (`Some`), or no longer (`None`).
pub(super) async fn parked(
    conn: &mut AnyConnection,
    entries: Vec<(&str, &ResourceKey, &Option<ResourceKey>)>,
) -> Result<()> {
    for layer in layers(entries, |(a, k, _)| (*a, *k)) {
        for chunk in layer.chunks(ROWS_PER_STATEMENT) {
            let keys = chunk.iter().map(|(account, (resource, root_key), _)| {
                vec![text(account), text(resource), text(root_key)]
            });
            Values::of(keys)
                .execute(
                    conn,
                    "DELETE FROM consumer_parked \
                     WHERE (account, resource, root_key) IN (VALUES {values})",
                )
                .await?;
            let waiting: Vec<Vec<Param>> = chunk
                .iter()
                .filter_map(|(account, (resource, root_key), target)| {
                    let (target, target_key) = target.as_ref()?;
                    Some(vec![
                        text(account),
                        text(resource),
                        text(root_key),
                        text(target),
                        text(target_key),
                    ])
                })
                .collect();
            if !waiting.is_empty() {
                Values::of(waiting)
                    .execute(
                        conn,
                        "INSERT INTO consumer_parked \
                         (account, resource, root_key, target, target_key) VALUES {values}",
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Moves positions forward: each account's next offset in a partition, keyed by (group,
/// topic, partition, account), and each partition's watermark, keyed by (group, topic,
/// partition). Each key appears once.
pub(super) async fn positions(
    conn: &mut AnyConnection,
    accounts: HashMap<(&str, &str, i32, &str), i64>,
    partitions: HashMap<(&str, &str, i32), i64>,
) -> Result<()> {
    let accounts: Vec<_> = accounts.into_iter().collect();
    let now = tandem_event::now_millis();
    for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|((group, topic, partition, account), next)| {
                vec![
                    text(group),
                    text(topic),
                    Param::Int(Some(i64::from(*partition))),
                    text(account),
                    Param::Int(Some(*next)),
                    Param::Int(Some(now)),
                ]
            });
        Values::of(rows)
            .execute(
                conn,
                "INSERT INTO consumer_account_offsets \
                 (consumer_group, topic, partition_id, account, next_offset, applied_at) \
                 VALUES {values} \
                 ON CONFLICT (consumer_group, topic, partition_id, account) \
                 DO UPDATE SET next_offset = excluded.next_offset, \
                 applied_at = excluded.applied_at \
                 WHERE consumer_account_offsets.next_offset < excluded.next_offset",
            )
            .await?;
    }
    let partitions: Vec<_> = partitions.into_iter().collect();
    for chunk in partitions.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|((group, topic, partition), watermark)| {
            vec![
                text(group),
                text(topic),
                Param::Int(Some(i64::from(*partition))),
                Param::Int(Some(*watermark)),
            ]
        });
        Values::of(rows)
            .execute(
                conn,
                "INSERT INTO consumer_offsets (consumer_group, topic, partition_id, next_offset) \
                 VALUES {values} ON CONFLICT (consumer_group, topic, partition_id) \
                 DO UPDATE SET next_offset = excluded.next_offset \
                 WHERE consumer_offsets.next_offset < excluded.next_offset",
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_goes_into_a_later_layer() {
        let writes = vec![("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)];
        let split = layers(writes, |(key, _)| *key);
        assert_eq!(
            split,
            vec![
                vec![("a", 1), ("b", 2), ("c", 4)],
                vec![("a", 3), ("b", 6)],
                vec![("a", 5)],
            ]
        );
    }

    #[test]
    fn values_number_their_parameters_in_order() {
        let values = Values::of([
            vec![text("x"), Param::Int(Some(1))],
            vec![text("y"), Param::Int(None)],
        ]);
        assert_eq!(values.sql, "($1, $2), ($3, $4)");
        assert_eq!(values.params.len(), 4);
    }
}
