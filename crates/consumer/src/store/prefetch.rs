//! What applying one event will read about its own row, read in one statement: whether the
//! account is parked, the row's mirror image, the ID map entries and waiting references of the resources rooted at it, and
//! the children embedded in them. Only the account's worker writes these while it holds the
//! lease, so they stay true while the event is applied; what else the event needs (rows it
//! refers to, a parent it is embedded in) is read when needed.

use std::collections::HashMap;

use tandem_event::Row;

use super::mirror::{Mapped, MirrorRow, ResourceKey};
use super::Store;
use crate::Result;

/// What [`Store::prefetch`] found, with what it looked for and did not find recorded as absent.
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    /// Why the account is parked, if it is.
    pub parked: Option<String>,
    /// The event's own row: `None` when the mirror has no image of it.
    pub mirror: Option<MirrorRow>,
    /// (resource, root key) → its ID map entry, for every resource looked up.
    pub ids: HashMap<ResourceKey, Option<Mapped>>,
    /// (entity type, parent key) → the live children, for every embed looked up.
    pub children: HashMap<(String, String), Vec<(String, Row)>>,
    /// (resource, root key) → the resources waiting for it, for every resource looked up.
    pub waiting: HashMap<ResourceKey, Vec<ResourceKey>>,
}

impl Store {
    /// Reads, for the row `entity_type`/`entity_id` of `account`: its mirror image; the ID map
    /// entry of each of `resources` (rooted at the row) at the row's key; the references
    /// waiting for them; and the live rows of each of `embeds` whose parent is the row.
    pub async fn prefetch(
        &self,
        account: &str,
        (entity_type, entity_id): (&str, &str),
        resources: &[&str],
        embeds: &[&str],
    ) -> Result<Prefetched> {
        let list = |first: usize, n: usize| {
            (first..first + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = vec![
            "SELECT 'm' AS part, entity_id AS a, parent AS b, data AS c, epoch AS n1, \
             version AS n2 FROM consumer_mirror \
             WHERE account = $1 AND entity_type = $2 AND entity_id = $3"
                .to_owned(),
            "SELECT 'p', parked_reason, NULL, NULL, NULL, NULL FROM consumer_accounts \
             WHERE account = $1"
                .to_owned(),
        ];
        if !resources.is_empty() {
            let names = list(4, resources.len());
            parts.push(format!(
                "SELECT 'i', resource, cloud_id, doc_hash, NULL, NULL FROM consumer_id_map \
                 WHERE account = $1 AND root_key = $3 AND resource IN ({names})"
            ));
            parts.push(format!(
                "SELECT 'w', target, resource, root_key, NULL, NULL FROM consumer_parked \
                 WHERE account = $1 AND target_key = $3 AND target IN ({names})"
            ));
        }
        if !embeds.is_empty() {
            let names = list(4 + resources.len(), embeds.len());
            parts.push(format!(
                "SELECT 'c', entity_type, entity_id, data, NULL, NULL FROM consumer_mirror \
                 WHERE account = $1 AND parent = $3 AND data IS NOT NULL \
                 AND entity_type IN ({names})"
            ));
        }
        let sql = parts.join(" UNION ALL ");
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let mut query = sqlx::query_as::<_, Columns>(&sql)
            .bind(account)
            .bind(entity_type)
            .bind(entity_id);
        for name in resources.iter().chain(embeds) {
            query = query.bind(*name);
        }
        let rows = query.fetch_all(&self.pool).await?;

        let mut found = Prefetched::default();
        for resource in resources {
            let key = ((*resource).to_owned(), entity_id.to_owned());
            found.ids.insert(key.clone(), None);
            found.waiting.insert(key, Vec::new());
        }
        for embed in embeds {
            let key = ((*embed).to_owned(), entity_id.to_owned());
            found.children.insert(key, Vec::new());
        }
        for (part, a, b, c, n1, n2) in rows {
            if part == "p" {
                found.parked = a;
                continue;
            }
            if part == "m" {
                found.mirror = Some(MirrorRow {
                    epoch: n1.unwrap_or(0),
                    version: n2.unwrap_or(0),
                    parent: b,
                    data: c.map(|d| serde_json::from_str(&d)).transpose()?,
                    snapshot_id: None,
                });
                continue;
            }
            let (a, b, c) = (
                a.unwrap_or_default(),
                b.unwrap_or_default(),
                c.unwrap_or_default(),
            );
            let key = (a, entity_id.to_owned());
            match part.as_str() {
                "i" => {
                    found.ids.insert(key, Some((b, c)));
                }
                "w" => found.waiting.entry(key).or_default().push((b, c)),
                "c" => {
                    let data = serde_json::from_str(&c)?;
                    found.children.entry(key).or_default().push((b, data));
                }
                _ => {}
            }
        }
        Ok(found)
    }
}
