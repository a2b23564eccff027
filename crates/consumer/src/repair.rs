//! Repair: drift that `verify` found, fixed from the legacy data. Documents missing from the
//! cloud are created, different ones written again, extra ones (carrying Tandem's external
//! reference) deleted; documents without the reference are never touched. Resources are
//! repaired in the order their references need, and the ID map and mirror follow, so the
//! live consumer carries on from the repaired state.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use tandem_event::Row;

use crate::apply::{document_hash, Engine};
use crate::client::ApiError;
use crate::mapping::{Expr, Mapping, Resource};
use crate::verify::LegacyRows;
use crate::{Error, Result};

/// One repair, done or (with a dry run) to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairAction {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    /// `resource/root key`.
    pub document: String,
    /// The cloud id, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
}

/// What the cloud holds: resource → external reference → (cloud id, document without its id).
type Documents = HashMap<String, BTreeMap<String, (String, Map<String, Json>)>>;

/// Repairs one account's documents in `target` from its legacy rows; with `dry_run`, only
/// says what it would do.
pub async fn repair_account(
    engine: &Engine,
    target: &str,
    legacy: &LegacyRows,
    dry_run: bool,
) -> Result<Vec<RepairAction>> {
    let (mapping, cloud, store) = (engine.mapping(), engine.client(), engine.store());
    let api = |resource: &Resource, key: &str| {
        let (resource, key) = (resource.name.clone(), key.to_owned());
        move |source: ApiError| Error::Api {
            resource,
            root_key: key,
            source,
        }
    };
    let mut actual: Documents = HashMap::new();
    for resource in &mapping.resources {
        let docs = actual.entry(resource.name.clone()).or_default();
        for doc in cloud
            .list(target, &resource.collection)
            .await
            .map_err(api(resource, ""))?
        {
            let Json::Object(mut doc) = doc else { continue };
            let id = doc
                .remove("id")
                .and_then(|id| id.as_str().map(str::to_owned));
            let reference = doc
                .get(&mapping.external_ref_field)
                .and_then(Json::as_str)
                .map(str::to_owned);
            if let (Some(id), Some(reference)) = (id, reference) {
                docs.insert(reference, (id, doc));
            }
        }
    }
    let mut actions = Vec::new();
    let empty = Vec::new();
    for resource in dependency_order(mapping) {
        let roots: Vec<&(String, Row)> = legacy
            .get(&resource.root)
            .unwrap_or(&empty)
            .iter()
            .filter(|(_, row)| resource.applies_to(row))
            .collect();
        let wanted: HashSet<&str> = roots.iter().map(|(k, _)| k.as_str()).collect();
        for (key, row) in roots.iter().copied() {
            let kids = children_of(mapping, resource, key, legacy);
            let desired = mapping.render(resource, key, row, &kids, &mut |target, k| {
                actual
                    .get(target)
                    .and_then(|docs| docs.get(k))
                    .map(|(id, _)| id.clone())
            });
            // A reference to a document the cloud does not have (and could not be repaired):
            // never sent dangling.
            let Ok(desired) = desired else { continue };
            let document = format!("{}/{key}", resource.name);
            let current = actual.get(&resource.name).and_then(|d| d.get(key)).cloned();
            let hash = document_hash(&desired);
            let cloud_id = match current {
                Some((_, ref doc)) if *doc == desired => continue,
                Some((id, _)) => {
                    if !dry_run {
                        cloud
                            .update(target, &resource.collection, &id, &desired)
                            .await
                            .map_err(api(resource, key))?;
                    }
                    actions.push(RepairAction {
                        action: "update",
                        document,
                        cloud_id: Some(id.clone()),
                    });
                    id
                }
                None if dry_run => {
                    actions.push(RepairAction {
                        action: "create",
                        document,
                        cloud_id: None,
                    });
                    continue;
                }
                None => {
                    let former = store.cloud_id(target, &resource.name, key).await?;
                    let idempotency = repair_key(target, &resource.name, key, &hash, former);
                    let id = cloud
                        .create(target, &resource.collection, &desired, &idempotency)
                        .await
                        .map_err(api(resource, key))?;
                    actions.push(RepairAction {
                        action: "create",
                        document,
                        cloud_id: Some(id.clone()),
                    });
                    id
                }
            };
            store
                .set_cloud_id(
                    target,
                    (&resource.name, key),
                    Some(&(cloud_id.clone(), hash)),
                )
                .await?;
            store
                .set_mirror_data(target, (&resource.root, key), row)
                .await?;
            // Later resources refer to it by this id.
            actual
                .entry(resource.name.clone())
                .or_default()
                .insert(key.clone(), (cloud_id, desired));
        }
        let extra: Vec<(String, String)> = actual
            .get(&resource.name)
            .map(|docs| {
                docs.iter()
                    .filter(|(k, _)| !wanted.contains(k.as_str()))
                    .map(|(k, (id, _))| (k.clone(), id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, id) in extra {
            if !dry_run {
                cloud
                    .delete(target, &resource.collection, &id)
                    .await
                    .map_err(api(resource, &key))?;
                store
                    .set_cloud_id(target, (&resource.name, &key), None)
                    .await?;
            }
            actions.push(RepairAction {
                action: "delete",
                document: format!("{}/{key}", resource.name),
                cloud_id: Some(id),
            });
        }
    }
    Ok(actions)
}

/// The resources in an order where every resource comes after those it refers to (the
/// mapping has no cycle of references).
fn dependency_order(mapping: &Mapping) -> Vec<&Resource> {
    fn visit<'a>(mapping: &'a Mapping, resource: &'a Resource, done: &mut Vec<&'a Resource>) {
        if done.iter().any(|r| r.name == resource.name) {
            return;
        }
        for (_, expr) in resource.all_fields() {
            if let Expr::Ref {
                resource: target, ..
            } = expr
            {
                if let Some(target) = mapping.resource(target).filter(|t| t.name != resource.name) {
                    visit(mapping, target, done);
                }
            }
        }
        done.push(resource);
    }
    let mut done = Vec::new();
    for resource in &mapping.resources {
        visit(mapping, resource, &mut done);
    }
    done
}

/// The legacy child rows embedded in `resource`'s document of `key`, per embed.
fn children_of(
    mapping: &Mapping,
    resource: &Resource,
    key: &str,
    legacy: &LegacyRows,
) -> Vec<Vec<(String, Row)>> {
    resource
        .embeds
        .iter()
        .map(|embed| {
            legacy
                .get(&embed.entity)
                .map(|rows| {
                    rows.iter()
                        .filter(|(_, row)| {
                            mapping.parent_key(&embed.entity, row).as_deref() == Some(key)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// The idempotency key of a repair's create: the same for a repair tried again after a crash
/// (same document, same former cloud id), new when the document is lost again later.
fn repair_key(
    target: &str,
    resource: &str,
    key: &str,
    hash: &str,
    former: Option<(String, String)>,
) -> String {
    let mut digest = Sha256::new();
    let former = former.map(|(id, _)| id).unwrap_or_default();
    for part in ["repair", target, resource, key, hash, &former] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    hex::encode(&digest.finalize()[..16])
}
