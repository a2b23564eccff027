//! The command line: every command's arguments, with their help, environment variables and
//! defaults. What each command does is in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tandem_event::Framing;

/// Tandem keeps customers' accounts on the cloud platform in step with their legacy data, over
/// Kafka change streams.
#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    propagate_version = true,
    after_help = crate::exit::HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on the embedded default and verify the result.
    ///
    /// Starts an in-process Kafka broker (librdkafka's mock cluster), a SQLite legacy database
    /// with a workload changing it across many accounts, cloudsim on a loopback port, the producer
    /// and the consumer; prints progress every second, then verifies the cloud against the legacy
    /// data. The mock broker keeps little data (it trims old log segments), so the workload is
    /// kept small: about --rate × --duration changes. Use --brokers for a real Kafka.
    Demo(DemoArgs),
    /// Detect changes in legacy databases and publish them to Kafka.
    Produce(ProduceArgs),
    /// Apply change events from Kafka to the cloud API.
    Consume(ConsumeArgs),
    /// Run cloudsim, the stand-in cloud platform.
    Cloudsim(CloudsimArgs),
    /// Compare the cloud with what the legacy data says through the mapping.
    Verify(VerifyArgs),
    /// Rebuild an account from the topic: its events read again and applied into a target
    /// (a new cloud account), then verified against the legacy data.
    ///
    /// Reads only the account's partition and drops other accounts' messages by their key
    /// before decoding. Interrupted (Ctrl-C, a kill), the same command carries on where it
    /// got to, creating nothing twice; --restart starts over.
    Replay(ReplayArgs),
    /// Publish a snapshot of one account: SNAPSHOT_BEGIN, every row, SNAPSHOT_END.
    Snapshot(SnapshotArgs),
    /// Publish detections handed in as JSON lines (one per line; see the README).
    Publish(PublishArgs),
    /// Benchmarks that print figures.
    Bench(crate::bench::BenchArgs),
    /// See parked accounts and references, resume accounts parked by a failing event, and move
    /// one account through its migration (enroll, pause, resume, history).
    Accounts(AccountsArgs),
    /// Slices: accounts chosen by a query or a list, enrolled and watched together.
    Slice(SliceArgs),
    /// Answer `GET /v1/route/{account}`: where each account's users go (legacy or cloud), for
    /// a front-end router to ask on every login; and migrate-now.
    Router(RouterArgs),
    /// The migration: every account's state, the counts per state, and the way out once every
    /// enrolled account is done.
    Status(StatusArgs),
    /// Create the demo's legacy database (if missing) and keep changing it, as `demo` does;
    /// for running the parts as separate processes (docker-compose).
    Workload(WorkloadArgs),
}

#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The demo legacy SQLite file (created with its schema and triggers when missing).
    #[arg(long, env = "TANDEM_LEGACY_FILE", default_value = "legacy.db")]
    pub legacy: PathBuf,
    /// Accounts to seed and change.
    #[arg(env = "TANDEM_WORKLOAD_ACCOUNTS", long, default_value_t = 20)]
    pub accounts: usize,
    /// Changes per second across all accounts.
    #[arg(env = "TANDEM_WORKLOAD_RATE", long, default_value_t = 10)]
    pub rate: u32,
    /// Stop after this long (e.g. 5m); runs until interrupted when absent.
    #[arg(env = "TANDEM_WORKLOAD_DURATION", long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the workload's random choices.
    #[arg(env = "TANDEM_WORKLOAD_SEED", long, default_value_t = 7)]
    pub seed: u64,
}

/// A librdkafka property, `key=value`.
/// A count that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a count: {e}")),
    }
}

/// An account lease of the consumer: at least a second.
fn lease_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("{s} is too short: a lease must last at least 1s"));
    }
    Ok(ttl)
}

/// How long a topic keeps events: `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

fn retention(s: &str) -> Result<Retention, String> {
    if s.eq_ignore_ascii_case("forever") {
        return Ok(Retention(None));
    }
    humantime::parse_duration(s)
        .map(|d| Retention(Some(d)))
        .map_err(|e| format!("{s:?}: {e} (give `forever` or a duration such as 90d)"))
}

fn kafka_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// The producer's checkpoint store.
#[derive(Debug, Args)]
pub struct ProducerStore {
    /// The producer's checkpoint store: `sqlite://…` (a path relative to the working
    /// directory) or `postgres://…`.
    #[arg(
        long = "store",
        env = "TANDEM_PRODUCER_STORE",
        default_value = "sqlite://tandem-producer.db"
    )]
    pub url: String,
}

/// The consumer's store.
#[derive(Debug, Args)]
pub struct ConsumerStore {
    /// The consumer's store: `sqlite://…` (a path relative to the working directory) or
    /// `postgres://…`.
    #[arg(
        long = "store",
        global = true,
        env = "TANDEM_CONSUMER_STORE",
        default_value = "sqlite://tandem-consumer.db"
    )]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TANDEM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The change-event topic.
    #[arg(long, env = "TANDEM_TOPIC", default_value = "tandem.changes")]
    pub topic: String,
    /// A librdkafka property passed through unchanged and applied last (repeatable).
    /// In the environment, several properties are separated by `;`.
    #[arg(
        short = 'X',
        long = "kafka",
        env = "TANDEM_KAFKA_PROPERTIES",
        value_name = "KEY=VALUE",
        value_delimiter = ';',
        value_parser = kafka_property
    )]
    pub kafka: Vec<(String, String)>,
    /// How to reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl (librdkafka's
    /// `security.protocol`).
    #[arg(long, env = "TANDEM_KAFKA_SECURITY_PROTOCOL", value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"], ignore_case = true)]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. The password comes from
    /// TANDEM_KAFKA_SASL_PASSWORD or the file TANDEM_KAFKA_SASL_PASSWORD_FILE names, never a flag.
    #[arg(long, env = "TANDEM_KAFKA_SASL_MECHANISM", value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], ignore_case = true)]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL username.
    #[arg(long, env = "TANDEM_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// PEM file of the certificate authorities that sign the brokers' certificates (default:
    /// the system's).
    #[arg(long, env = "TANDEM_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by certificate.
    #[arg(long, env = "TANDEM_KAFKA_CERT_FILE", requires = "kafka_key_file")]
    pub kafka_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "TANDEM_KAFKA_KEY_FILE", requires = "kafka_cert_file")]
    pub kafka_key_file: Option<PathBuf>,
}

impl KafkaArgs {
    /// The librdkafka properties every Kafka client of the command is built with: the
    /// connection settings, then `-X` (applied last, so it can override them).
    pub fn properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut properties = Vec::new();
        let mut set = |key: &str, value: String| properties.push((key.to_owned(), value));
        if let Some(protocol) = &self.kafka_security_protocol {
            set("security.protocol", protocol.to_ascii_lowercase());
        }
        if let Some(mechanism) = &self.kafka_sasl_mechanism {
            set("sasl.mechanism", mechanism.to_ascii_uppercase());
        }
        if let Some(username) = &self.kafka_sasl_username {
            set("sasl.username", username.clone());
        }
        if let Some(password) = crate::secret::read("TANDEM_KAFKA_SASL_PASSWORD")? {
            set("sasl.password", password);
        }
        for (key, path) in [
            ("ssl.ca.location", &self.kafka_ca_file),
            ("ssl.certificate.location", &self.kafka_cert_file),
            ("ssl.key.location", &self.kafka_key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(crate::exit::Usage(format!(
                        "{key}: {} is not a readable file",
                        path.display()
                    ))
                    .into());
                }
                set(key, path.display().to_string());
            }
        }
        properties.extend(self.kafka.iter().cloned());
        Ok(properties)
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of accounts in the legacy database.
    #[arg(long, env = "TANDEM_DEMO_ACCOUNTS", default_value_t = 20)]
    pub accounts: usize,
    /// How long the workload runs, in seconds.
    #[arg(long, env = "TANDEM_DEMO_DURATION", default_value_t = 20)]
    pub duration: u64,
    /// Legacy changes per second across all accounts.
    #[arg(long, env = "TANDEM_DEMO_RATE", default_value_t = 100)]
    pub rate: u32,
    /// Use this Kafka instead of the in-process mock broker.
    #[arg(long, env = "TANDEM_DEMO_BROKERS")]
    pub brokers: Option<String>,
    /// Store for the producer and consumer (`sqlite://…` or `postgres://…`); SQLite files in
    /// the demo directory by default.
    #[arg(long, env = "TANDEM_STORE")]
    pub store: Option<String>,
    /// Partitions of the demo topic.
    #[arg(env = "TANDEM_DEMO_PARTITIONS", long, default_value_t = 4)]
    pub partitions: i32,
    /// Keep the demo's databases in this directory instead of a temporary one.
    #[arg(env = "TANDEM_DEMO_DIR", long)]
    pub dir: Option<PathBuf>,
    /// Seed of the workload's random choices.
    #[arg(env = "TANDEM_DEMO_SEED", long, default_value_t = 7)]
    pub seed: u64,
    /// Accounts whose legacy data is restored from a backup during the run (backup taken a
    /// third of the way in, restored two thirds of the way in).
    #[arg(env = "TANDEM_DEMO_RESTORES", long, default_value_t = 2)]
    pub restores: usize,
    /// End with one JSON line on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The sources file: legacy database(s) and tables to watch.
    #[arg(long, env = "TANDEM_SOURCES", default_value = "sources.toml")]
    pub sources: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: ProducerStore,
    /// Pause between detection cycles (e.g. 200ms, 5s).
    #[arg(long, env = "TANDEM_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Rows read and published per batch.
    #[arg(long, env = "TANDEM_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// Accounts detected at the same time.
    #[arg(long, env = "TANDEM_PRODUCER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Write Confluent-framed messages with this registered schema id instead of Avro
    /// single-object encoding.
    #[arg(long, env = "TANDEM_CONFLUENT_SCHEMA_ID")]
    pub confluent_schema_id: Option<u32>,
    /// Create the topic (and its dead-letter topic) with this many partitions if missing, and
    /// report the topic's retention either way.
    #[arg(env = "TANDEM_CREATE_TOPIC", long)]
    pub create_topic: Option<i32>,
    /// With --create-topic: replicas of each partition.
    #[arg(long, env = "TANDEM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// With --create-topic: how long events are kept, `forever` (the default: any account can
    /// be replayed from its first event) or a duration such as `90d`.
    #[arg(long, env = "TANDEM_RETENTION", default_value = "forever", value_parser = retention)]
    pub retention: Retention,
    /// With --create-topic: replicas that must have a write before it is acknowledged.
    #[arg(long, env = "TANDEM_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
    /// Run one cycle and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub migration: MigrationStore,
    /// How often the differencing check looks for deleted rows (e.g. 30s, 5m).
    #[arg(long, env = "TANDEM_DELETE_CHECK_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delete_check_interval: Duration,
    /// Lease on an account's cycles; another instance takes an account over this long after
    /// its holder died.
    #[arg(long, env = "TANDEM_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Serve `POST /v1/accounts/{account}/detections` (JSON lines) on this address.
    #[arg(long, env = "TANDEM_PRODUCER_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT, how long the cycle under way may take to finish the batch it is
    /// sending and stop (a snapshot under way is left unfinished and starts again next time).
    #[arg(long, env = "TANDEM_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
}

impl ProduceArgs {
    pub fn options(&self) -> anyhow::Result<tandem_producer::Options> {
        Ok(tandem_producer::Options {
            brokers: self.kafka.brokers.clone(),
            topic: self.kafka.topic.clone(),
            store_url: self.store.url.clone(),
            interval: self.interval,
            batch_size: self.batch_size.max(1),
            concurrency: self.concurrency.max(1),
            framing: match self.confluent_schema_id {
                Some(schema_id) => Framing::Confluent { schema_id },
                None => Framing::SingleObject,
            },
            kafka: self.kafka.properties()?,
            delete_check_interval: self.delete_check_interval,
            lease_ttl: self.lease_ttl,
            grace: self.grace,
            migration_url: self.migration.url.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The account to snapshot.
    #[arg(long)]
    pub account: String,
    /// An id for the snapshot (default: generated from the account and the time).
    #[arg(long)]
    pub snapshot_id: Option<String>,
    /// When a running producer holds the account, how long to wait for it to publish the
    /// snapshot before giving up waiting (the request stays).
    #[arg(env = "TANDEM_SNAPSHOT_WAIT", long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub produce: ProduceArgs,
}

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
    /// Base URL of the cloud API.
    #[arg(
        long,
        global = true,
        env = "TANDEM_CLOUD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub cloud_url: String,
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
        env = "TANDEM_MIGRATION_STORE"
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
    /// The migration's accounts and states (for now the only status there is, shown with or
    /// without this flag).
    #[arg(long = "migration")]
    pub migration_view: bool,
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

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// JSON-lines file of detections; standard input when absent or "-".
    pub file: Option<PathBuf>,
    /// The account of lines that do not name one.
    #[arg(long)]
    pub account: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: ProducerStore,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The mapping file: which cloud resources legacy rows become.
    #[arg(long, env = "TANDEM_MAPPING", default_value = "mapping.toml")]
    pub mapping: PathBuf,
    /// A sources file to check the mapping's tables and columns against at start-up.
    #[arg(long, env = "TANDEM_SOURCES")]
    pub sources: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group.
    #[arg(long, env = "TANDEM_GROUP", default_value = "tandem-consumer")]
    pub group: String,
    /// Dead-letter topic (default: the topic name + ".dlq").
    #[arg(long, env = "TANDEM_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    #[command(flatten)]
    pub store: ConsumerStore,
    /// Base URL of the cloud API.
    #[arg(
        long,
        env = "TANDEM_CLOUD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub cloud_url: String,
    /// Timeout of one cloud API request.
    #[arg(long, env = "TANDEM_CLOUD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cloud_timeout: Duration,
    /// Tries per cloud API call before the event is retried later.
    #[arg(long, env = "TANDEM_CLOUD_ATTEMPTS", default_value_t = 8)]
    pub cloud_attempts: usize,
    /// How creates are made safe to retry: `idempotency-key` (a deterministic
    /// Idempotency-Key header on every create) or `lookup` (for APIs without idempotency
    /// keys: find the resource by its external reference first, send each create once).
    #[arg(long, env = "TANDEM_CREATE_MODE", default_value = "idempotency-key")]
    pub create_mode: tandem_consumer::CreateMode,
    /// Accounts applied at the same time; each account's events stay strictly in order.
    #[arg(long, env = "TANDEM_CONSUMER_CONCURRENCY", default_value_t = 32, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Events read from Kafka but not yet applied, at most; at the bound, fetching pauses
    /// until some are done (memory stays bounded however far behind the consumer is).
    #[arg(long, env = "TANDEM_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = at_least_one)]
    pub max_in_flight: usize,
    /// Lease on an account while a member applies its events, renewed as it goes: members of
    /// one group never apply an account at once, and after a member dies its accounts wait
    /// this long before another member takes them (at least 1s).
    #[arg(long = "lease-ttl", env = "TANDEM_CONSUMER_LEASE_TTL", default_value = "10s", value_parser = lease_ttl)]
    pub lease_ttl: Duration,
    /// On SIGTERM/SIGINT, how long the events being applied may take to finish; after that
    /// the consumer exits without recording them (they are applied again on restart).
    #[arg(long, env = "TANDEM_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    #[command(flatten)]
    pub migration: MigrationStore,
}

#[derive(Debug, Args)]
pub struct CloudsimArgs {
    /// Address to listen on.
    #[arg(long, env = "TANDEM_CLOUDSIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Where cloudsim keeps its data (`sqlite://…`).
    #[arg(
        long,
        env = "TANDEM_CLOUDSIM_DATABASE",
        default_value = "sqlite://cloudsim.db"
    )]
    pub database: String,
    /// Fraction of requests answered 503.
    #[arg(env = "TANDEM_CLOUDSIM_ERROR_RATE", long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(env = "TANDEM_CLOUDSIM_RATE_LIMIT_RATE", long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// Seconds in the Retry-After header of a 429.
    #[arg(env = "TANDEM_CLOUDSIM_RETRY_AFTER_SECS", long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Milliseconds added to every request.
    #[arg(env = "TANDEM_CLOUDSIM_LATENCY_MS", long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Up to this many more milliseconds, at random.
    #[arg(env = "TANDEM_CLOUDSIM_LATENCY_JITTER_MS", long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Fraction of changes applied, then answered by dropping the connection.
    #[arg(
        env = "TANDEM_CLOUDSIM_DROP_AFTER_APPLY_RATE",
        long,
        default_value_t = 0.0
    )]
    pub drop_after_apply_rate: f64,
    /// Accounts whose every change is rejected with 422, as failed validation would be; reads
    /// still work (repeatable).
    #[arg(env = "TANDEM_CLOUDSIM_REJECT_ACCOUNTS", long, value_delimiter = ',')]
    pub reject_account: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The legacy account to replay.
    #[arg(long)]
    pub account: String,
    /// The cloud account to rebuild it into; it should start empty.
    #[arg(long)]
    pub into: String,
    /// Where to start: `earliest` (the first event the topic holds), `snapshot` (the
    /// account's latest snapshot complete in the topic) or an RFC 3339 time.
    #[arg(long, default_value = "earliest", value_parser = replay_from)]
    pub from: ReplayStart,
    /// Forget what an earlier run of this replay applied and start over.
    #[arg(long)]
    pub restart: bool,
    /// Rebuild the account's live target in place (--into is the account's target): for a
    /// lost or damaged consumer store, or a damaged cloud account. The live consumer of
    /// --group stops applying the account meanwhile; cloud documents are found again by
    /// their external reference, so their ids do not change; documents the rebuilt state no
    /// longer has are deleted. Its events that arrive meanwhile are applied after it.
    #[arg(long)]
    pub in_place: bool,
    /// With --in-place: the live consumer group.
    #[arg(long, env = "TANDEM_GROUP", default_value = "tandem-consumer")]
    pub group: String,
    /// With --in-place: how long the rebuild's hold on the account lasts without renewal.
    #[arg(long, env = "TANDEM_CONSUMER_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// The partition holding the account, when Tandem cannot tell (a producer with another
    /// partitioner than the default).
    #[arg(long)]
    pub partition: Option<i32>,
    /// End with one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "TANDEM_SOURCES", default_value = "sources.toml")]
    pub sources: PathBuf,
    #[arg(long, env = "TANDEM_MAPPING", default_value = "mapping.toml")]
    pub mapping: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: ConsumerStore,
    /// Base URL of the cloud API.
    #[arg(
        long,
        env = "TANDEM_CLOUD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub cloud_url: String,
    /// Timeout of one cloud API request.
    #[arg(long, env = "TANDEM_CLOUD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cloud_timeout: Duration,
    /// Tries per cloud API call.
    #[arg(long, env = "TANDEM_CLOUD_ATTEMPTS", default_value_t = 8)]
    pub cloud_attempts: usize,
}

/// Where a replay starts, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStart(pub tandem_consumer::replay::ReplayFrom);

fn replay_from(s: &str) -> Result<ReplayStart, String> {
    use tandem_consumer::replay::ReplayFrom;
    Ok(ReplayStart(match s {
        "earliest" => ReplayFrom::Earliest,
        "snapshot" => ReplayFrom::Snapshot,
        time => ReplayFrom::Time(
            humantime::parse_rfc3339_weak(time)
                .map_err(|e| format!("{s:?}: give earliest, snapshot or an RFC 3339 time ({e})"))?,
        ),
    }))
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long, env = "TANDEM_SOURCES", default_value = "sources.toml")]
    pub sources: PathBuf,
    #[arg(long, env = "TANDEM_MAPPING", default_value = "mapping.toml")]
    pub mapping: PathBuf,
    /// Base URL of the cloud API.
    #[arg(
        long,
        env = "TANDEM_CLOUD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub cloud_url: String,
    /// Only these accounts (repeatable); all accounts of the sources by default.
    #[arg(long)]
    pub account: Vec<String>,
    /// Compare the accounts with this cloud account instead of their target (e.g. a rebuild
    /// made with `tandem replay --into`).
    #[arg(long, requires = "account")]
    pub into: Option<String>,
    /// The consumer's store: when given, parked accounts are reported with their reasons
    /// beside the drift (a parked account's later events wait there, not in the cloud).
    #[arg(long, env = "TANDEM_CONSUMER_STORE")]
    pub store: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List the keys of the documents out of step, not only their counts.
    #[arg(long)]
    pub keys: bool,
    /// Fix the drift from the legacy data: create what is missing, write again what is
    /// different, delete what is extra — only documents with Tandem's external reference;
    /// the ID map and mirror follow. Needs --store. Then verifies again.
    #[arg(long, requires = "store")]
    pub repair: bool,
    /// With --repair: list what would be repaired, change nothing.
    #[arg(long, requires = "repair")]
    pub dry_run: bool,
    /// With the migration store, each account's verdict is kept there: `tandem slice status`
    /// shows the drift of the last verify.
    #[command(flatten)]
    pub migration: MigrationStore,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn consume_error(args: &[&str]) -> String {
        let mut argv = vec!["tandem", "consume"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(_) => "accepted".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    /// Every flag of every command, with the command it belongs to.
    fn flags() -> Vec<(String, clap::Arg)> {
        fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if !arg.is_positional() && id != "help" && id != "version" {
                    out.push((path.to_owned(), arg.clone()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        let mut out = Vec::new();
        walk(&command, "tandem", &mut out);
        out
    }

    /// Flags that say what one run does or prints — the operands and switches of a single
    /// command, not settings of a deployment — have no variable: one left in the environment
    /// would silently change every later run (`TANDEM_YES`, `TANDEM_REPAIR`).
    const PER_RUN: [&str; 19] = [
        "account",
        "accounts",
        "into",
        "from",
        "partition",
        "query",
        "snapshot-id",
        "json",
        "keys",
        "yes",
        "dry-run",
        "apply",
        "watch",
        "once",
        "restart",
        "in-place",
        "all",
        "repair",
        "migration",
    ];

    #[test]
    fn every_flag_has_an_environment_variable_of_its_own() {
        let mut missing = Vec::new();
        let mut meanings: std::collections::BTreeMap<String, (String, String, Vec<String>)> =
            Default::default();
        let mut clashes = Vec::new();
        for (path, arg) in flags() {
            let long = arg.get_long().unwrap_or_default().to_owned();
            // `tandem bench` is the benchmark harness, run by hand with its figures' flags.
            let per_run = PER_RUN.contains(&long.as_str()) && arg.get_env().is_none();
            if per_run || path.starts_with("tandem bench") {
                continue;
            }
            let Some(env) = arg.get_env() else {
                missing.push(format!("{path} --{long}"));
                continue;
            };
            let env = env.to_string_lossy().into_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            // One variable, one meaning: the same flag everywhere, with the same default
            // where both have one (an optional flag is the same setting, not given).
            match meanings.get(&env) {
                Some((first, seen_long, seen_defaults))
                    if *seen_long != long
                        || (!defaults.is_empty()
                            && !seen_defaults.is_empty()
                            && *seen_defaults != defaults) =>
                {
                    clashes.push(format!(
                        "{env}: {first} --{seen_long} {seen_defaults:?} and {path} --{long} {defaults:?}"
                    ));
                }
                Some(_) => {}
                None => {
                    meanings.insert(env, (path, long, defaults));
                }
            }
        }
        missing.dedup();
        clashes.dedup();
        assert!(
            missing.is_empty() && clashes.is_empty(),
            "flags without an environment variable:\n{}\nvariables with two meanings:\n{}",
            missing.join("\n"),
            clashes.join("\n")
        );
    }

    #[test]
    fn every_command_line_is_well_formed() {
        // Clap checks names, flags and defaults of every command only when it is built.
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_consumer_lease_under_a_second_is_refused_with_the_reason() {
        let message = consume_error(&["--lease-ttl", "500ms"]);
        assert!(
            message.contains("--lease-ttl") && message.contains("at least 1s"),
            "{message}"
        );
        assert_eq!(consume_error(&["--lease-ttl", "2s"]), "accepted");
    }

    #[test]
    fn zero_concurrency_or_in_flight_events_are_refused() {
        for flag in ["--concurrency", "--max-in-flight"] {
            let message = consume_error(&[flag, "0"]);
            assert!(
                message.contains(flag) && message.contains("at least 1"),
                "{message}"
            );
        }
    }
}
