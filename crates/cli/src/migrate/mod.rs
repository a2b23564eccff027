//! The migration's gated steps, which need every part at once — the legacy database (freeze),
//! the migration store, the consumer's store, the mapping and the cloud (verify):
//!
//! - [`cutover`]: freeze, wait for a snapshot taken after the freeze to be applied, verify,
//!   and only with zero drift route the account to the cloud;
//! - [`rollback`]: what changed in the cloud since the cutover, then back to legacy;
//! - [`Lifecycle::complete`]: the account is done; the consumer's bookkeeping for it goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tandem_consumer::mapping::Mapping;
use tandem_consumer::CloudClient;
use tandem_migration::{Policy, State};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;

use crate::args::{LifecycleArgs, MigrationStore};

mod cutover;
mod rollback;

pub use cutover::CutoverReport;
pub use rollback::RollbackReport;

/// Everything a gated step needs.
#[derive(Debug)]
pub struct Lifecycle {
    migration: tandem_migration::Store,
    consumer: tandem_consumer::Store,
    legacy: Legacy,
    policy: Policy,
    mapping: Arc<Mapping>,
    cloud: CloudClient,
    group: String,
    wait: Duration,
    /// Who changes the accounts' states, in their history.
    actor: &'static str,
}

impl Lifecycle {
    pub async fn open(
        sources_path: &Path,
        consumer_url: &str,
        migration: &MigrationStore,
        args: &LifecycleArgs,
        actor: &'static str,
    ) -> anyhow::Result<Self> {
        let sources = Sources::load(sources_path)?;
        let mapping = Mapping::load(&args.mapping)?;
        let legacy = Legacy::connect(&sources, sources_path).await?;
        mapping.check_columns(&legacy.columns())?;
        Ok(Lifecycle {
            migration: migration.open_existing().await?,
            consumer: tandem_consumer::Store::open_existing(consumer_url).await?,
            legacy,
            policy: sources.migration.clone(),
            mapping: Arc::new(mapping),
            cloud: args.cloud.client(Duration::from_secs(30), 4).await?,
            group: args.group.clone(),
            wait: args.wait,
            actor,
        })
    }

    pub fn migration(&self) -> &tandem_migration::Store {
        &self.migration
    }

    /// A cut-over account is done: it lives in the cloud for good. The consumer's mirror, ID
    /// map and positions for it are dropped; its history is kept.
    pub async fn complete(&self, account: &str) -> anyhow::Result<()> {
        self.migration
            .transition(
                account,
                &[State::CutOver],
                State::Done,
                self.actor,
                "complete: the account lives in the cloud",
            )
            .await?;
        let target = self.consumer.target_of(account).await?;
        self.consumer
            .reset_target(&target, &[self.group.as_str()])
            .await?;
        Ok(())
    }

    /// Runs the unfreeze statement, if there is one.
    async fn unfreeze(&self, account: &str) -> anyhow::Result<bool> {
        let Some(statement) = &self.policy.unfreeze else {
            return Ok(false);
        };
        self.legacy.execute_for(statement, account).await?;
        self.migration.set_frozen(account, false).await?;
        Ok(true)
    }
}
