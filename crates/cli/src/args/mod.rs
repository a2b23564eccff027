//! The command line: every command's arguments, with their help, environment variables and
//! defaults. What each command does is in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tandem_event::Framing;

mod connect;
mod migration;

pub use connect::{CloudArgs, ConsumerStore, KafkaArgs, ProducerStore, RegistryArgs};

pub use migration::{
    AccountsAction, AccountsArgs, LifecycleArgs, MigrationStore, RouterArgs, SliceAction,
    SliceArgs, StatusArgs,
};

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
    /// Log lines as text, or as one JSON object per line with the event's fields and the
    /// spans it happened in (the cycle, the apply, the cloud call).
    #[arg(long, global = true, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Check that the broker and the store a producer or a consumer uses answer: exit 0 when
    /// both do, 3 when either does not. For container health checks and probes; it reads the
    /// same variables as `produce` and `consume`.
    Health(HealthArgs),
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
    #[arg(long, env = "TANDEM_STORE", hide_env_values = true)]
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
    #[command(flatten)]
    pub http: HttpArgs,
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
    #[arg(
        long,
        env = "TANDEM_CONFLUENT_SCHEMA_ID",
        conflicts_with = "schema_registry"
    )]
    pub confluent_schema_id: Option<u32>,
    #[command(flatten)]
    pub registry: RegistryArgs,
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
    /// How often the differencing check looks for deleted rows (e.g. 30s, 5m); each account's
    /// check falls due between a quarter of this and half, fixed per account, so that
    /// accounts enrolled together are not all checked in the same round; an idle producer
    /// may leave due checks for the other half, and runs them together.
    #[arg(long, env = "TANDEM_DELETE_CHECK_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delete_check_interval: Duration,
    /// How often accounts are looked for in the shared legacy tables, which reads every
    /// table's account column (a new account is enrolled at most this long after its first
    /// row; an account named by a notification is looked for at once).
    #[arg(long, env = "TANDEM_DISCOVER_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub discover_interval: Duration,
    /// Lease on an account's cycles; another instance takes an account over this long after
    /// its holder died.
    #[arg(long, env = "TANDEM_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Serve `POST /v1/accounts/{account}/detections` (JSON lines) on this address: PORT
    /// alone binds to loopback, HOST:PORT (e.g. 0.0.0.0:8080) where given. Callers must send
    /// `Authorization: Bearer` with the token in TANDEM_API_TOKEN (or the file
    /// TANDEM_API_TOKEN_FILE names); bodies are capped at 16 MiB and lines at 1 MiB.
    #[arg(long, env = "TANDEM_PRODUCER_HTTP", value_name = "ADDR", value_parser = crate::observe::access::listen_addr)]
    pub http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub observe: HttpArgs,
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
            discover_interval: self.discover_interval,
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

/// The HTTP port of `produce` and `consume`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz for probes, on this
    /// address: PORT alone binds to loopback, HOST:PORT (e.g. 0.0.0.0:9464) where given. The
    /// consumer serves its live status page at / too; resuming an account from it needs the
    /// token in TANDEM_API_TOKEN (or the file TANDEM_API_TOKEN_FILE names). Off unless given.
    #[arg(long = "http-listen", env = "TANDEM_HTTP_LISTEN", value_name = "ADDR", value_parser = crate::observe::access::listen_addr)]
    pub listen: Option<std::net::SocketAddr>,
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
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A TOML file naming the Avro schema of each Confluent schema id the topic may hold
    /// (`[ids]` then `17 = "change_event.avsc"`, paths relative to the file), for readers
    /// without a schema registry.
    #[arg(long, env = "TANDEM_SCHEMA_IDS", value_name = "FILE")]
    pub schema_ids: Option<PathBuf>,
    /// The consumer group.
    #[arg(long, env = "TANDEM_GROUP", default_value = "tandem-consumer")]
    pub group: String,
    /// Dead-letter topic (default: the topic name + ".dlq").
    #[arg(long, env = "TANDEM_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    #[command(flatten)]
    pub store: ConsumerStore,
    #[command(flatten)]
    pub cloud: CloudArgs,
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
    #[command(flatten)]
    pub http: HttpArgs,
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
    /// Serve HTTPS with a certificate made at start-up for `--tls-name`, signed by a
    /// certificate authority made with it; its PEM is written to `--tls-ca-out`.
    #[arg(env = "TANDEM_CLOUDSIM_TLS", long)]
    pub tls: bool,
    /// Names (DNS names or IP addresses) the generated certificate is valid for.
    #[arg(env = "TANDEM_CLOUDSIM_TLS_NAME", long = "tls-name", value_delimiter = ',', default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub tls_names: Vec<String>,
    /// Where to write the PEM of the generated certificate authority, for clients to trust.
    #[arg(
        env = "TANDEM_CLOUDSIM_TLS_CA_OUT",
        long,
        default_value = "cloudsim-ca.pem"
    )]
    pub tls_ca_out: PathBuf,
    /// Serve HTTPS with this PEM certificate chain instead of a generated one.
    #[arg(env = "TANDEM_CLOUDSIM_TLS_CERT", long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(env = "TANDEM_CLOUDSIM_TLS_KEY", long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require OAuth2 access tokens for this client id, taken at `/oauth/token` with the secret
    /// in TANDEM_CLOUDSIM_CLIENT_SECRET or the file TANDEM_CLOUDSIM_CLIENT_SECRET_FILE names.
    /// A static token in TANDEM_CLOUDSIM_TOKEN(_FILE) also requires credentials.
    #[arg(env = "TANDEM_CLOUDSIM_CLIENT_ID", long)]
    pub client_id: Option<String>,
    /// How long an access token from `/oauth/token` is valid.
    #[arg(env = "TANDEM_CLOUDSIM_TOKEN_TTL", long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
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
    pub registry: RegistryArgs,
    /// A TOML file naming the Avro schema of each Confluent schema id the topic may hold
    /// (`[ids]` then `17 = "change_event.avsc"`, paths relative to the file), for readers
    /// without a schema registry.
    #[arg(long, env = "TANDEM_SCHEMA_IDS", value_name = "FILE")]
    pub schema_ids: Option<PathBuf>,
    #[command(flatten)]
    pub store: ConsumerStore,
    #[command(flatten)]
    pub cloud: CloudArgs,
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
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Only these accounts (repeatable); all accounts of the sources by default.
    #[arg(long)]
    pub account: Vec<String>,
    /// Compare the accounts with this cloud account instead of their target (e.g. a rebuild
    /// made with `tandem replay --into`).
    #[arg(long, requires = "account")]
    pub into: Option<String>,
    /// The consumer's store: when given, parked accounts are reported with their reasons
    /// beside the drift (a parked account's later events wait there, not in the cloud).
    #[arg(long, env = "TANDEM_CONSUMER_STORE", hide_env_values = true)]
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
mod tests;

/// Which part's connections `tandem health` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Producer,
    Consumer,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The part whose broker and store to check; its store comes from TANDEM_PRODUCER_STORE or
    /// TANDEM_CONSUMER_STORE unless --store is given.
    #[arg(long, env = "TANDEM_HEALTH_ROLE", value_enum)]
    pub role: Role,
    /// The store to check instead of the role's.
    #[arg(long, env = "TANDEM_HEALTH_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// How long each check may take.
    #[arg(long, env = "TANDEM_HEALTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}
