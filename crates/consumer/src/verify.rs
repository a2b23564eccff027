//! `verify`: derive the desired cloud documents from legacy rows through the mapping and compare
//! them with what the cloud holds — missing, extra and different documents per account — and
//! count duplicate creates in the cloud's audit log.
//!
//! Documents are paired by (collection, external ref), and references in the desired documents
//! are resolved through the cloud's own documents, so the verdict does not depend on the
//! consumer's store.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value as Json};
use tandem_event::Row;

use crate::client::{ApiError, CloudClient};
use crate::mapping::Mapping;

/// Legacy rows of one account: entity type → (entity id, row).
pub type LegacyRows = BTreeMap<String, Vec<(String, Row)>>;

/// The verdict for one account. Each list names `resource/root_key`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AccountDrift {
    pub account: String,
    /// The cloud account compared, when it is not the account of the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<String>,
    /// Root keys created again while their resource still existed, per the audit log.
    pub duplicates: Vec<String>,
    /// Documents without Tandem's reference (`collection/id`): not Tandem's, left out of the
    /// verdict; a rollback reports them as created in the cloud.
    #[serde(skip)]
    pub foreign: Vec<String>,
}

impl AccountDrift {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.different.is_empty()
            && self.duplicates.is_empty()
    }
}

/// Documents that differ from what the legacy data says, counted.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
}

/// Totals over accounts, as `verify --json` and the demo report them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub drift: Drift,
    pub duplicates: usize,
}

impl AccountDrift {
    /// This account's documents out of step, counted.
    pub fn counts(&self) -> Drift {
        Drift {
            missing: self.missing.len(),
            extra: self.extra.len(),
            different: self.different.len(),
        }
    }
}

impl Totals {
    pub fn of(accounts: &[AccountDrift]) -> Totals {
        accounts.iter().fold(Totals::default(), |t, a| Totals {
            drift: Drift {
                missing: t.drift.missing + a.missing.len(),
                extra: t.drift.extra + a.extra.len(),
                different: t.drift.different + a.different.len(),
            },
            duplicates: t.duplicates + a.duplicates.len(),
        })
    }
}

/// Compares one account's legacy rows (through the mapping) with the cloud account it is
/// applied to, `target` (usually the account of the same id).
pub async fn verify_account(
    mapping: &Mapping,
    (account, target): (&str, &str),
    legacy: &LegacyRows,
    cloud: &CloudClient,
) -> Result<AccountDrift, ApiError> {
    verify_account_with(mapping, (account, target), legacy, cloud, None).await
}

/// Cloud ids by (resource, root key): how references are resolved when given to
/// [`verify_account_with`] instead of through the cloud's documents.
pub type IdMap = HashMap<(String, String), String>;

/// As [`verify_account`]; with `ids`, references in the desired documents are resolved through
/// them (the ids Tandem wrote) rather than through the cloud's documents, so a document
/// deleted in the cloud does not make the documents that refer to it differ.
pub async fn verify_account_with(
    mapping: &Mapping,
    (account, target): (&str, &str),
    legacy: &LegacyRows,
    cloud: &CloudClient,
    ids: Option<&IdMap>,
) -> Result<AccountDrift, ApiError> {
    let ref_field = &mapping.external_ref_field;
    // resource → external ref → cloud document
    let mut actual: HashMap<&str, BTreeMap<String, Map<String, Json>>> = HashMap::new();
    let mut drift = AccountDrift {
        account: account.to_owned(),
        target: (target != account).then(|| target.to_owned()),
        ..AccountDrift::default()
    };
    for resource in &mapping.resources {
        let docs = actual.entry(&resource.name).or_default();
        for doc in cloud.list(target, &resource.collection).await? {
            let Json::Object(doc) = doc else { continue };
            // A document without Tandem's reference is not Tandem's: left out of the verdict,
            // as it is never touched.
            match doc.get(ref_field).and_then(Json::as_str) {
                Some(key) => {
                    docs.insert(key.to_owned(), doc.clone());
                }
                None => drift.foreign.push(format!(
                    "{}/{}",
                    resource.collection,
                    doc.get("id").and_then(Json::as_str).unwrap_or("?")
                )),
            }
        }
    }
    let empty = Vec::new();
    for resource in &mapping.resources {
        let roots: Vec<&(String, Row)> = legacy
            .get(&resource.root)
            .unwrap_or(&empty)
            .iter()
            .filter(|(_, row)| resource.applies_to(row))
            .collect();
        let children: Vec<HashMap<String, Vec<(String, Row)>>> = resource
            .embeds
            .iter()
            .map(|embed| {
                let mut by_parent: HashMap<String, Vec<(String, Row)>> = HashMap::new();
                for (id, row) in legacy.get(&embed.entity).unwrap_or(&empty) {
                    if let Some(parent) = mapping.parent_key(&embed.entity, row) {
                        by_parent
                            .entry(parent)
                            .or_default()
                            .push((id.clone(), row.clone()));
                    }
                }
                by_parent
            })
            .collect();
        let docs = &actual[resource.name.as_str()];
        for (key, row) in roots.iter().copied() {
            let kids: Vec<Vec<(String, Row)>> = children
                .iter()
                .map(|by_parent| by_parent.get(key).cloned().unwrap_or_default())
                .collect();
            let label = format!("{}/{key}", resource.name);
            let Some(cloud_doc) = docs.get(key) else {
                drift.missing.push(label);
                continue;
            };
            let desired = mapping.render(resource, key, row, &kids, &mut |target, k| {
                if let Some(ids) = ids {
                    return Some(
                        ids.get(&(target.to_owned(), k.to_owned()))
                            .cloned()
                            .unwrap_or_else(|| format!("<no {target} {k} written>")),
                    );
                }
                Some(
                    actual
                        .get(target)
                        .and_then(|d| d.get(k))
                        .and_then(|d| d.get("id"))
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("<no {target} {k} in the cloud>")),
                )
            });
            let mut cloud_doc = cloud_doc.clone();
            cloud_doc.remove("id");
            if desired.ok() != Some(cloud_doc) {
                drift.different.push(label);
            }
        }
        let wanted: std::collections::HashSet<&String> = roots.iter().map(|(k, _)| k).collect();
        drift.extra.extend(
            docs.keys()
                .filter(|k| !wanted.contains(k))
                .map(|k| format!("{}/{k}", resource.name)),
        );
    }
    if let Some(entries) = cloud.audit(target).await? {
        // A duplicate is a create while a resource of the same root key is still there; a
        // root deleted and created again in the legacy data is created again, legitimately.
        let mut live: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut duplicates: BTreeMap<(String, String), usize> = BTreeMap::new();
        for entry in &entries {
            let Some(key) = &entry.external_ref else {
                continue;
            };
            let id = (entry.collection.clone(), key.clone());
            let count = live.entry(id.clone()).or_default();
            match entry.op.as_str() {
                "create" => {
                    if *count > 0 {
                        *duplicates.entry(id).or_default() += 1;
                    }
                    *count += 1;
                }
                // A document removed behind the API (cloudsim's admin API) is gone too.
                "delete" | "admin-delete" => *count = count.saturating_sub(1),
                _ => {}
            }
        }
        drift.duplicates = duplicates
            .into_iter()
            .map(|((collection, key), n)| format!("{collection}/{key} +{n}"))
            .collect();
    }
    Ok(drift)
}
