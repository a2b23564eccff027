//! One event's work on the cloud: each affected resource rendered from the mirror and sent —
//! created (dependency-first for what it refers to), updated when its document changed, or
//! deleted — with what it changed collected for the event's bookkeeping.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value as Json};
use tandem_event::{ChangeEvent, Row};

use super::{document_hash, idempotency_key, CreateMode, Engine, MAX_DEPENDENCY_DEPTH};
use crate::client::{ApiError, CloudClient};
use crate::mapping::{RenderError, Resource};
use crate::store::{Mapped, MirrorRow, Prefetched, ResourceKey};
use crate::{Error, Result};

/// The state of one event being applied: the changed row laid over the mirror, and the cloud
/// ids learned or dropped so far (written only when the whole event succeeded).
pub(super) struct Session<'a> {
    pub(super) engine: &'a Engine,
    /// The engine's client, fenced when the caller gave a fence.
    pub(super) client: CloudClient,
    pub(super) event: &'a ChangeEvent,
    pub(super) row: MirrorRow,
    pub(super) ids: HashMap<ResourceKey, Option<Mapped>>,
    pub(super) parked: HashMap<ResourceKey, Option<ResourceKey>>,
    /// What the store held about the event's own row when the event began.
    pub(super) prefetched: Prefetched,
}

impl Session<'_> {
    fn account(&self) -> &str {
        &self.event.account_id
    }

    /// Creates a resource the ID map does not know, without ever creating it twice.
    async fn create(
        &self,
        resource: &Resource,
        root_key: &str,
        root_at: (i64, i64),
        doc: &Map<String, Json>,
    ) -> std::result::Result<String, ApiError> {
        let (client, account) = (&self.client, self.account());
        tracing::debug!(account, resource = %resource.name, root_key, ?root_at, "creating");
        match self.engine.create_mode {
            CreateMode::IdempotencyKey => {
                let key = idempotency_key(account, &resource.name, root_key, root_at);
                client
                    .create(account, &resource.collection, doc, &key)
                    .await
            }
            CreateMode::Lookup => {
                let field = &self.engine.mapping.external_ref_field;
                let external_ref = doc.get(field).and_then(Json::as_str).unwrap_or(root_key);
                match client
                    .find(account, &resource.collection, external_ref)
                    .await?
                {
                    // Created by an earlier try whose answer was lost: bring it up to date.
                    Some(id) => {
                        client
                            .update(account, &resource.collection, &id, doc)
                            .await?;
                        Ok(id)
                    }
                    None => {
                        client
                            .create_unkeyed(account, &resource.collection, doc)
                            .await
                    }
                }
            }
        }
    }

    /// A legacy row as of this event, with its (epoch, version): the changed row itself, else
    /// the mirror's image.
    async fn row(&self, entity_type: &str, entity_id: &str) -> Result<Option<(Row, (i64, i64))>> {
        if entity_type == self.event.entity_type && entity_id == self.event.entity_id {
            let at = (self.row.epoch, self.row.version);
            return Ok(self.row.data.clone().map(|data| (data, at)));
        }
        let stored = self
            .engine
            .store
            .mirror(self.account(), entity_type, entity_id)
            .await?;
        Ok(stored.and_then(|m| m.data.map(|data| (data, (m.epoch, m.version)))))
    }

    /// Children of `entity_type` under `parent`, as of this event.
    async fn children(&self, entity_type: &str, parent: &str) -> Result<Vec<(String, Row)>> {
        let key = (entity_type.to_owned(), parent.to_owned());
        let mut children = match self.prefetched.children.get(&key) {
            Some(children) => children.clone(),
            None => {
                self.engine
                    .store
                    .children(self.account(), entity_type, parent)
                    .await?
            }
        };
        if entity_type == self.event.entity_type {
            children.retain(|(id, _)| *id != self.event.entity_id);
            if let (Some(data), Some(p)) = (&self.row.data, &self.row.parent) {
                if p == parent {
                    children.push((self.event.entity_id.clone(), data.clone()));
                }
            }
        }
        Ok(children)
    }

    async fn cloud_id(&self, resource: &str, root_key: &str) -> Result<Option<Mapped>> {
        let key = (resource.to_owned(), root_key.to_owned());
        if let Some(known) = self.ids.get(&key).or_else(|| self.prefetched.ids.get(&key)) {
            return Ok(known.clone());
        }
        self.engine
            .store
            .cloud_id(self.account(), resource, root_key)
            .await
    }

    /// Brings the cloud document of `resource` for `root_key` up to date with the legacy rows,
    /// creating resources it refers to first when their rows are known but not yet created.
    pub(super) fn ensure<'s>(
        &'s mut self,
        resource: &'s Resource,
        root_key: &'s str,
        depth: usize,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 's>> {
        Box::pin(async move {
            let Some((root, root_at)) = self.row(&resource.root, root_key).await? else {
                // The root row is unknown or deleted: nothing to bring up to date.
                return Ok(());
            };
            if !resource.applies_to(&root) {
                // The row does not (or no longer) satisfy the resource's condition.
                return self.delete(resource, root_key).await;
            }
            let mut children = Vec::new();
            for embed in &resource.embeds {
                children.push(self.children(&embed.entity, root_key).await?);
            }
            let doc = loop {
                // Resolve references against what is known so far.
                let mut refs: HashMap<(String, String), Option<String>> = HashMap::new();
                for (_, expr) in resource.all_fields() {
                    if let crate::mapping::Expr::Ref {
                        resource: target,
                        column,
                    } = expr
                    {
                        let rows =
                            std::iter::once(&root).chain(children.iter().flatten().map(|(_, r)| r));
                        for row in rows {
                            if let Some(value) =
                                row.get(column).filter(|v| **v != tandem_event::Value::Null)
                            {
                                let key = tandem_event::canonical_key(std::slice::from_ref(value));
                                let id = self.cloud_id(target, &key).await?.map(|(id, _)| id);
                                refs.insert((target.clone(), key), id);
                            }
                        }
                    }
                }
                let rendered = self.engine.mapping.render(
                    resource,
                    root_key,
                    &root,
                    &children,
                    &mut |r, k| refs.get(&(r.to_owned(), k.to_owned())).cloned().flatten(),
                );
                match rendered {
                    Ok(doc) => break doc,
                    Err(RenderError::Unresolved {
                        resource: target,
                        key,
                    }) => {
                        let dependency = self.engine.mapping.resource(&target);
                        let Some(dep) = dependency.filter(|_| depth < MAX_DEPENDENCY_DEPTH) else {
                            return Err(Error::Unresolved {
                                resource: resource.name.clone(),
                                root_key: root_key.to_owned(),
                                target,
                                key,
                            });
                        };
                        if self.row(&dep.root, &key).await?.is_some() {
                            // Its row is known: create it first, then render again — unless
                            // it is itself waiting for something.
                            self.ensure(dep, &key, depth + 1).await?;
                            if self.cloud_id(&target, &key).await?.is_some() {
                                continue;
                            }
                        }
                        // Its row has not arrived yet (it changed after the cycle that
                        // published this one read its table): wait for it rather than send a
                        // dangling reference.
                        tracing::info!(
                            account = %self.account(),
                            resource = %resource.name,
                            root_key,
                            waiting_for = %format!("{target}/{key}"),
                            "parked until the resource it refers to arrives"
                        );
                        self.parked.insert(
                            (resource.name.clone(), root_key.to_owned()),
                            Some((target, key)),
                        );
                        return Ok(());
                    }
                    Err(e @ RenderError::Coerce { .. }) => {
                        return Err(Error::Render {
                            resource: resource.name.clone(),
                            root_key: root_key.to_owned(),
                            source: e,
                        })
                    }
                }
            };
            let hash = document_hash(&doc);
            let account = self.account().to_owned();
            let map_key = (resource.name.clone(), root_key.to_owned());
            match self.cloud_id(&resource.name, root_key).await? {
                Some((_, old_hash)) if old_hash == hash => {}
                Some((id, _)) => {
                    self.client
                        .update(&account, &resource.collection, &id, &doc)
                        .await
                        .map_err(|e| api_error(resource, root_key, e))?;
                    self.ids.insert(map_key, Some((id, hash)));
                }
                None => {
                    let id = self
                        .create(resource, root_key, root_at, &doc)
                        .await
                        .map_err(|e| api_error(resource, root_key, e))?;
                    self.ids.insert(map_key.clone(), Some((id, hash)));
                    // Resources that waited for this one can be created now.
                    let mut waiting = match self.prefetched.waiting.get(&map_key) {
                        Some(waiting) => waiting.clone(),
                        None => {
                            self.engine
                                .store
                                .waiting_on(&account, &resource.name, root_key)
                                .await?
                        }
                    };
                    waiting.extend(
                        self.parked
                            .iter()
                            .filter(|(_, target)| target.as_ref() == Some(&map_key))
                            .map(|(waiter, _)| waiter.clone()),
                    );
                    for (name, key) in waiting {
                        if let Some(waiter) = self.engine.mapping.resource(&name) {
                            self.ensure(waiter, &key, depth + 1).await?;
                        }
                    }
                }
            }
            self.parked
                .insert((resource.name.clone(), root_key.to_owned()), None);
            Ok(())
        })
    }

    pub(super) async fn delete(&mut self, resource: &Resource, root_key: &str) -> Result<()> {
        if let Some((id, _)) = self.cloud_id(&resource.name, root_key).await? {
            let account = self.account().to_owned();
            self.client
                .delete(&account, &resource.collection, &id)
                .await
                .map_err(|e| api_error(resource, root_key, e))?;
            self.ids
                .insert((resource.name.clone(), root_key.to_owned()), None);
        }
        self.parked
            .insert((resource.name.clone(), root_key.to_owned()), None);
        Ok(())
    }
}

fn api_error(resource: &Resource, root_key: &str, source: ApiError) -> Error {
    Error::Api {
        resource: resource.name.clone(),
        root_key: root_key.to_owned(),
        source,
    }
}
