//! The arguments of the migration's commands: `accounts`, `slice`, `router` and `status`, and
//! the migration store every part is given.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{CloudArgs, ConsumerStore};

#[derive(Debug, Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    pub action: AccountsAction,
    #[command(flatten)]
    pub store: ConsumerStore,
    #[command(flatten)]
    pub migration: MigrationStore,
    /// The sources file: the legacy data a cutover freezes and verifies.
    #[arg(
        long,
        global = true,
        env = "TANDEM_SOURCES",
        default_value = "sources.toml"
    )]
    pub sources: PathBuf,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// What a cutover, a rollback and a completion need besides the stores.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// The mapping file, for the verify a cutover runs.
    #[arg(
        long,
        global = true,
        env = "TANDEM_MAPPING",
        default_value = "mapping.toml"
    )]
    pub mapping: PathBuf,
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// The live consumer group: `complete` drops its positions for the account.
    #[arg(
        long,
        global = true,
        env = "TANDEM_GROUP",
        default_value = "tandem-consumer"
    )]
    pub group: String,
    /// How long a cutover waits for the producer and the consumer to bring the cloud up to the
    /// freeze before it gives up (and unfreezes).
    #[arg(env = "TANDEM_CUTOVER_WAIT", long, global = true, default_value = "2m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// The migration store, shared by the producer, the consumer, the router and these commands.
#[derive(Debug, Args)]
pub struct MigrationStore {
    /// The migration store: each account's state and history, and the slices (`sqlite://…`
    /// or `postgres://…`). The producer, the consumer and the router are given the same one.
    #[arg(
        id = "migration_store",
        long = "migration-store",
        global = true,
        env = "TANDEM_MIGRATION_STORE",
        hide_env_values = true
    )]
    pub url: Option<String>,
}

impl MigrationStore {
    /// The store, which must exist: made by `tandem produce --migration-store` or a slice.
    pub async fn open_existing(&self) -> anyhow::Result<tandem_migration::Store> {
        let url = self.url()?;
        Ok(tandem_migration::Store::open_existing(url).await?)
    }

    /// The store, created when missing (a slice may be defined before the producer runs).
    pub async fn open(&self) -> anyhow::Result<tandem_migration::Store> {
        Ok(tandem_migration::Store::open(self.url()?).await?)
    }

    fn url(&self) -> anyhow::Result<&str> {
        self.url.as_deref().ok_or_else(|| {
            crate::exit::Usage(
                "this needs the migration store: --migration-store or TANDEM_MIGRATION_STORE"
                    .into(),
            )
            .into()
        })
    }
}

#[derive(Debug, Args)]
pub struct SliceArgs {
    #[command(subcommand)]
    pub action: SliceAction,
    #[command(flatten)]
    pub migration: MigrationStore,
    /// The sources file: the legacy database a slice's query runs against.
    #[arg(
        long,
        global = true,
        env = "TANDEM_SOURCES",
        default_value = "sources.toml"
    )]
    pub sources: PathBuf,
    /// The consumer's store: the rows backfilled so far, and what a cutover checks.
    #[arg(
        long = "store",
        hide_env_values = true,
        global = true,
        env = "TANDEM_CONSUMER_STORE",
        default_value = "sqlite://tandem-consumer.db"
    )]
    pub consumer_store: String,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

#[derive(Debug, Subcommand)]
pub enum SliceAction {
    /// Define a slice by a SQL query over the legacy database that returns account ids (run
    /// once, now; its members are kept), or by a list.
    Create {
        name: String,
        /// A query returning account ids in its first column, e.g. `SELECT id FROM accounts
        /// WHERE region = 'eu' AND plan = 'small'`.
        #[arg(
            long,
            required_unless_present = "accounts",
            conflicts_with = "accounts"
        )]
        query: Option<String>,
        /// The accounts, comma-separated.
        #[arg(long, value_delimiter = ',')]
        accounts: Vec<String>,
    },
    /// Every slice with its size and how it was chosen.
    List,
    /// Enrol the slice's pending accounts: each is snapshotted, then follows every change.
    Enroll { name: String },
    /// The slice's accounts per state, rows backfilled of the total, the drift its last
    /// verify found; with --watch, a progress bar until every account is live.
    Status {
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Show progress until no account of the slice is syncing.
        #[arg(long)]
        watch: bool,
    },
    /// Run the slice's query again and show the accounts it would add; --apply adds them.
    Reevaluate {
        name: String,
        #[arg(long)]
        apply: bool,
    },
    /// Cut the slice's live accounts over, one by one, each gated as `tandem accounts cutover`.
    Cutover {
        name: String,
        /// One JSON object, with every account's report and next_steps.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    #[command(flatten)]
    pub migration: MigrationStore,
    /// Address to listen on.
    #[arg(long, env = "TANDEM_ROUTER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// How often the accounts' states are read again: a cutover reaches the answers within
    /// this long.
    #[arg(long, env = "TANDEM_ROUTER_REFRESH", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub migration: MigrationStore,
    /// The consumer's store: accounts applied, parked and dead-lettered, and partitions'
    /// positions (default: TANDEM_CONSUMER_STORE, when set).
    #[arg(long = "consumer-store")]
    pub consumer_store: Option<String>,
    /// The producer's store: where each account's newest event landed (with the consumer's
    /// store, how far behind each account is), epochs, delete checks, unsettled keys, leases
    /// (default: TANDEM_PRODUCER_STORE, when set).
    #[arg(long = "producer-store")]
    pub producer_store: Option<String>,
    /// The consumer group whose positions are shown.
    #[arg(long, env = "TANDEM_GROUP", default_value = "tandem-consumer")]
    pub group: String,
    #[command(flatten)]
    pub kafka: super::KafkaArgs,
    /// Do not ask the brokers for high watermarks and committed offsets.
    #[arg(long)]
    pub offline: bool,
    /// How long to wait for the brokers before showing the status without them.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub broker_timeout: std::time::Duration,
    /// Only the migration's accounts and states, and what to do next.
    #[arg(long = "migration")]
    pub migration_view: bool,
    /// Accounts listed in the text output, furthest behind first (--json lists every one).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Parked accounts (with why and how many events they hold) and resources waiting for a
    /// reference.
    Status,
    /// Apply ACCOUNT's events to the cloud account TARGET from now on (TARGET = ACCOUNT: the
    /// default again). Rebuild TARGET first (`tandem replay --into`), then run the same replay
    /// again after the switch: what arrived in between is applied, the rest is skipped.
    Target {
        /// The legacy account.
        account: String,
        /// The cloud account it is applied to.
        target: String,
    },
    /// Accounts applied to another cloud account than their own.
    Targets,
    /// Apply parked accounts' held events again, each starting with the one that failed; the
    /// running consumer does it within a second.
    Resume {
        /// The accounts to resume.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        accounts: Vec<String>,
        /// Resume every parked account.
        #[arg(long)]
        all: bool,
    },
    /// Enrol accounts: their snapshot is published and applied, then they follow every change.
    Enroll {
        #[arg(required = true)]
        accounts: Vec<String>,
    },
    /// Pause accounts: their changes are still detected and published, but the consumer holds
    /// them until `tandem accounts resume`.
    Pause {
        #[arg(required = true)]
        accounts: Vec<String>,
    },
    /// An account's migration state and every change of it: who, when and why.
    History { account: String },
    /// Cut accounts over, each gated: the freeze statement runs in legacy, a snapshot taken
    /// after it must be applied, and only with zero drift is the account routed to the cloud
    /// (and no longer followed); otherwise the drift is named and the account unfrozen.
    Cutover {
        #[arg(required = true)]
        accounts: Vec<String>,
        /// One JSON line per account, with next_steps.
        #[arg(long)]
        json: bool,
    },
    /// Route a cut-over account back to legacy. First lists what changed in the cloud since
    /// the cutover (created, changed, deleted), which going back loses; --yes goes ahead.
    Rollback {
        account: String,
        /// Go back although the changes listed are lost.
        #[arg(long)]
        yes: bool,
        /// One JSON line, with next_steps.
        #[arg(long)]
        json: bool,
    },
    /// The accounts are done: they stay in the cloud. The consumer's mirror, ID map and
    /// positions for them are dropped; their history is kept.
    Complete {
        #[arg(required = true)]
        accounts: Vec<String>,
    },
}
