//! Applying one event: render the affected cloud documents through the mapping, send the
//! idempotent API calls, then record mirror, ID map and position in one transaction.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use tandem_event::{ChangeEvent, Kind};

use crate::client::{CloudClient, Fence};
use crate::mapping::Mapping;
use crate::store::{Bookkeeping, LeaseId, MirrorRow, Position, Store};
use crate::Result;

mod session;

use session::Session;

/// References are created dependency-first up to this depth; deeper chains mean a bad mapping.
pub(super) const MAX_DEPENDENCY_DEPTH: usize = 8;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are in the cloud and its bookkeeping is committed.
    Applied,
    /// It was already applied (a re-delivery or an older version), or it carries nothing to
    /// apply; only the position moved.
    Skipped,
    /// The account is parked: nothing was sent or recorded, and the caller keeps the event
    /// (only from [`Engine::apply_unless_parked`]).
    Parked,
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
    hex::encode(&hash.finalize()[..16])
}

pub(crate) fn document_hash(doc: &Map<String, Json>) -> String {
    // serde_json's map keeps keys sorted, so equal documents serialize equally.
    let text = serde_json::to_string(doc).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
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

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub fn client(&self) -> &CloudClient {
        &self.client
    }

    /// Applies `event`, recording `position` with its bookkeeping.
    pub async fn apply(&self, event: &ChangeEvent, position: Option<Position>) -> Result<Outcome> {
        self.apply_fenced(event, position, &self.client, None, false)
            .await
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
        self.apply_fenced(event, position, &client, Some(lease), false)
            .await
    }

    /// As [`Engine::apply_until`], unless the account is parked: then nothing is done and
    /// the outcome is [`Outcome::Parked`]. For a row, whether it is parked comes with the
    /// reads of the row itself, in one statement.
    pub async fn apply_unless_parked(
        &self,
        event: &ChangeEvent,
        position: Option<Position>,
        fence: &Fence,
        lease: &LeaseId,
    ) -> Result<Outcome> {
        let client = self.client.fenced(fence.clone());
        self.apply_fenced(event, position, &client, Some(lease), true)
            .await
    }

    async fn apply_fenced(
        &self,
        event: &ChangeEvent,
        position: Option<Position>,
        client: &CloudClient,
        lease: Option<&LeaseId>,
        unless_parked: bool,
    ) -> Result<Outcome> {
        let account = &event.account_id;
        let row = matches!(event.kind, Kind::Created | Kind::Updated | Kind::Deleted);
        if unless_parked && !row && self.store.parked_reason(account).await?.is_some() {
            return Ok(Outcome::Parked);
        }
        match event.kind {
            Kind::Created | Kind::Updated | Kind::Deleted => {
                self.apply_row(event, position, client, lease, unless_parked)
                    .await
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
                    self.apply_row(&gone, None, client, lease, false).await?;
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
        unless_parked: bool,
    ) -> Result<Outcome> {
        let account = &event.account_id;
        let data = match event.kind {
            Kind::Created | Kind::Updated => event.data.clone(),
            _ => None,
        };
        let rooted: Vec<&crate::mapping::Resource> =
            self.mapping.rooted_at(&event.entity_type).collect();
        let names: Vec<&str> = rooted.iter().map(|r| r.name.as_str()).collect();
        let mut embeds: Vec<&str> = rooted
            .iter()
            .flat_map(|r| r.embeds.iter().map(|e| e.entity.as_str()))
            .collect();
        embeds.dedup();
        let prefetched = self
            .store
            .prefetch(
                account,
                (&event.entity_type, &event.entity_id),
                &names,
                &embeds,
            )
            .await?;
        if unless_parked && prefetched.parked.is_some() {
            return Ok(Outcome::Parked);
        }
        let old = prefetched.mirror.clone();
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
                    self.store.commit(account, book).await?;
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
            prefetched,
        };
        let deleted = session.row.data.is_none();
        for resource in rooted {
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
        self.store.commit(account, book).await?;
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
            self.store.commit(account, book).await?;
        }
        Ok(Outcome::Skipped)
    }
}
