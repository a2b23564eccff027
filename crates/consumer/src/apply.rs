//! Applying one event: render the affected cloud documents through the mapping, send the
//! idempotent API calls, then record mirror, ID map and position in one transaction.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use tandem_event::{ChangeEvent, Kind, Row};

use crate::client::{ApiError, CloudClient, Fence};
use crate::mapping::{Mapping, RenderError, Resource};
use crate::store::{Bookkeeping, LeaseId, Mapped, MirrorRow, Position, ResourceKey, Store};
use crate::{Error, Result};

/// References are created dependency-first up to this depth; deeper chains mean a bad mapping.
const MAX_DEPENDENCY_DEPTH: usize = 8;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are in the cloud and its bookkeeping is committed.
    Applied,
    /// It was already applied (a re-delivery or an older version), or it carries nothing to
    /// apply; only the position moved.
    Skipped,
}

/// How a resource is created so that a retry never creates it twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CreateMode {
    /// Every create carries a deterministic `Idempotency-Key`; retries are safe.
    #[default]
    IdempotencyKey,
    /// For APIs without idempotency keys: look the resource up by its external reference
    /// first, and send a create once; after a failure the next try looks it up again.
    Lookup,
}

impl std::str::FromStr for CreateMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "idempotency-key" => Ok(CreateMode::IdempotencyKey),
            "lookup" => Ok(CreateMode::Lookup),
            other => Err(format!(
                "unknown create mode {other:?}: expected idempotency-key or lookup"
            )),
        }
    }
}

/// Applies events to the cloud through the mapping.
#[derive(Debug, Clone)]
pub struct Engine {
    mapping: std::sync::Arc<Mapping>,
    store: Store,
    client: CloudClient,
    create_mode: CreateMode,
}

/// The deterministic `Idempotency-Key` of a create: the same for every retry of one creation,
/// different once the root row was deleted and created again (a later version, or epoch).
pub fn idempotency_key(
    account: &str,
    resource: &str,
    root_key: &str,
    (epoch, root_version): (i64, i64),
) -> String {
    let mut hash = Sha256::new();
    for part in [account, resource, root_key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(epoch.to_be_bytes());
    hash.update(root_version.to_be_bytes());
    hex(&hash.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn document_hash(doc: &Map<String, Json>) -> String {
    // serde_json's map keeps keys sorted, so equal documents serialize equally.
    let text = serde_json::to_string(doc).unwrap_or_default();
    hex(&Sha256::digest(text.as_bytes())[..16])
}

/// The state of one event being applied: the changed row laid over the mirror, and the cloud
/// ids learned or dropped so far (written only when the whole event succeeded).
struct Session<'a> {
    engine: &'a Engine,
    /// The engine's client, fenced when the caller gave a fence.
    client: CloudClient,
    event: &'a ChangeEvent,
    row: MirrorRow,
    ids: HashMap<ResourceKey, Option<Mapped>>,
    parked: HashMap<ResourceKey, Option<ResourceKey>>,
}

impl Engine {
    pub fn new(mapping: std::sync::Arc<Mapping>, store: Store, client: CloudClient) -> Self {
        Engine {
            mapping,
            store,
            client,
            create_mode: CreateMode::default(),
        }
    }

    pub fn with_create_mode(self, create_mode: CreateMode) -> Self {
        Engine {
            create_mode,
            ..self
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies `event`, recording `position` with its bookkeeping.
    pub async fn apply(&self, event: &ChangeEvent, position: Option<Position>) -> Result<Outcome> {
        self.apply_fenced(event, position, &self.client, None).await
    }

    /// Applies `event` while `fence` is open and `lease` holds the account: once the fence
    /// closes, no further cloud call is sent, and once the lease is lost, the bookkeeping is
    /// not committed; either way the event fails with [`crate::Error::is_fenced`]. Calls
    /// already made are idempotent, so whoever applies the event next repeats them safely.
    pub async fn apply_until(
        &self,
        event: &ChangeEvent,
        position: Option<Position>,
        fence: &Fence,
        lease: &LeaseId,
    ) -> Result<Outcome> {
        let client = self.client.fenced(fence.clone());
        self.apply_fenced(event, position, &client, Some(lease))
            .await
    }

    async fn apply_fenced(
        &self,
        event: &ChangeEvent,
        position: Option<Position>,
        client: &CloudClient,
        lease: Option<&LeaseId>,
    ) -> Result<Outcome> {
        let account = &event.account_id;
        match event.kind {
            Kind::Created | Kind::Updated | Kind::Deleted => {
                self.apply_row(event, position, client, lease).await
            }
            // The events after a restore carry the new epoch, which orders them after
            // everything before it; nothing else changes.
            Kind::DatabaseRestored | Kind::SnapshotBegin => {
                self.skip(account, position, lease).await
            }
            Kind::SnapshotEnd => {
                // Mark and sweep: a live row the snapshot did not send is gone.
                let snapshot = event.snapshot_id.as_deref().unwrap_or(&event.entity_id);
                for (entity_type, entity_id, epoch, version) in self
                    .store
                    .unseen(account, snapshot, position.as_ref())
                    .await?
                {
                    let gone = ChangeEvent::new(
                        account,
                        Kind::Deleted,
                        &entity_type,
                        &entity_id,
                        epoch.max(event.epoch),
                        version.max(event.version),
                    );
                    self.apply_row(&gone, None, client, lease).await?;
                }
                self.skip(account, position, lease).await
            }
        }
    }

    async fn apply_row(
        &self,
        event: &ChangeEvent,
        position: Option<Position>,
        client: &CloudClient,
        lease: Option<&LeaseId>,
    ) -> Result<Outcome> {
        let account = &event.account_id;
        let data = match event.kind {
            Kind::Created | Kind::Updated => event.data.clone(),
            _ => None,
        };
        let old = self
            .store
            .mirror(account, &event.entity_type, &event.entity_id)
            .await?;
        if let Some(old) = &old {
            // A delete carries the newest version the producer saw, which can be the deleted
            // row's own last version: on a tie, a delete of a live row still applies.
            let tie_delete = event.kind == Kind::Deleted && old.data.is_some();
            let at = (old.epoch, old.version);
            if at > (event.epoch, event.version)
                || (at == (event.epoch, event.version) && !tie_delete)
            {
                if let (Some(snapshot), Some(_)) = (&event.snapshot_id, &old.data) {
                    let book = Bookkeeping {
                        seen: vec![(
                            event.entity_type.clone(),
                            event.entity_id.clone(),
                            snapshot.clone(),
                        )],
                        position,
                        lease: lease.cloned(),
                        ..Bookkeeping::default()
                    };
                    self.store.commit(account, &book).await?;
                    return Ok(Outcome::Skipped);
                }
                return self.skip(account, position, lease).await;
            }
        }
        let parent = data
            .as_ref()
            .and_then(|row| self.mapping.parent_key(&event.entity_type, row));
        let mut session = Session {
            engine: self,
            client: client.clone(),
            event,
            row: MirrorRow {
                epoch: event.epoch,
                version: event.version,
                parent: parent.clone(),
                data,
                snapshot_id: event.snapshot_id.clone(),
            },
            ids: HashMap::new(),
            parked: HashMap::new(),
        };
        let deleted = session.row.data.is_none();
        for resource in self.mapping.rooted_at(&event.entity_type) {
            if deleted {
                session.delete(resource, &event.entity_id).await?;
            } else {
                session.ensure(resource, &event.entity_id, 0).await?;
            }
        }
        if let Some((resource, _)) = self.mapping.embedding(&event.entity_type) {
            let old_parent = old.and_then(|o| o.parent);
            let mut parents: Vec<String> = parent.into_iter().chain(old_parent).collect();
            parents.dedup();
            for parent in parents {
                session.ensure(resource, &parent, 0).await?;
            }
        }
        let book = Bookkeeping {
            mirror: vec![(
                event.entity_type.clone(),
                event.entity_id.clone(),
                session.row,
            )],
            ids: session.ids.into_iter().collect(),
            parked: session.parked.into_iter().collect(),
            seen: Vec::new(),
            position,
            lease: lease.cloned(),
        };
        self.store.commit(account, &book).await?;
        Ok(Outcome::Applied)
    }

    /// Records only a position: for a message that was dead-lettered instead of applied.
    pub async fn skip_position(&self, position: Position) -> Result<()> {
        self.skip("", Some(position), None).await.map(drop)
    }

    async fn skip(
        &self,
        account: &str,
        position: Option<Position>,
        lease: Option<&LeaseId>,
    ) -> Result<Outcome> {
        if position.is_some() {
            let book = Bookkeeping {
                position,
                lease: lease.cloned(),
                ..Bookkeeping::default()
            };
            self.store.commit(account, &book).await?;
        }
        Ok(Outcome::Skipped)
    }
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
        let mut children = self
            .engine
            .store
            .children(self.account(), entity_type, parent)
            .await?;
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
        if let Some(known) = self.ids.get(&key) {
            return Ok(known.clone());
        }
        self.engine
            .store
            .cloud_id(self.account(), resource, root_key)
            .await
    }

    /// Brings the cloud document of `resource` for `root_key` up to date with the legacy rows,
    /// creating resources it refers to first when their rows are known but not yet created.
    fn ensure<'s>(
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
                    let mut waiting = self
                        .engine
                        .store
                        .waiting_on(&account, &resource.name, root_key)
                        .await?;
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

    async fn delete(&mut self, resource: &Resource, root_key: &str) -> Result<()> {
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
