//! What the pipeline benches run against, started by the bench itself on loopback: a Tansu
//! broker (or the brokers given), cloudsim in a process of its own, and the figures every
//! bench reports about Tandem's own process (CPU seconds, peak RSS).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

/// One pipeline bench's surroundings: its directory, its broker and topic, where its stores
/// go, and how it speaks (progress lines on stderr, unless it prints one JSON line).
pub(super) struct Bench {
    pub name: &'static str,
    pub dir: tempfile::TempDir,
    pub broker: Broker,
    pub topic: String,
    /// Unique to this run: in topic and group names.
    pub suffix: String,
    rig: super::RigArgs,
}

impl Bench {
    /// A directory, the broker, and a topic of `partitions` partitions (with its dead-letter
    /// topic).
    pub async fn start(
        name: &'static str,
        rig: super::RigArgs,
        partitions: i32,
    ) -> anyhow::Result<Bench> {
        let dir = tempfile::tempdir()?;
        let broker = Broker::start(rig.brokers.clone(), dir.path()).await?;
        let suffix = format!("{}-{}", std::process::id(), tandem_event::now_millis());
        let topic = format!("bench-{name}-{suffix}");
        broker.topic(&topic, partitions).await?;
        Ok(Bench {
            name,
            dir,
            broker,
            topic,
            suffix,
            rig,
        })
    }

    pub fn say(&self, line: impl std::fmt::Display) {
        if !self.rig.json {
            eprintln!("bench {}: {line}", self.name);
        }
    }

    /// The store URL given, or a SQLite file `file` in the bench's directory.
    pub fn store_url(&self, file: &str) -> String {
        self.rig
            .store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.path().join(file).display()))
    }

    pub fn store_kind(&self) -> &'static str {
        match &self.rig.store {
            Some(url) if url.starts_with("postgres") => "postgres",
            Some(_) => "other",
            None => "sqlite",
        }
    }

    /// Prints the bench's figures: one JSON line with `--json`, else pretty.
    pub fn print(&self, out: &serde_json::Value) -> anyhow::Result<()> {
        if self.rig.json {
            println!("{out}");
        } else {
            println!("{}", serde_json::to_string_pretty(out)?);
        }
        Ok(())
    }
}

/// A Kafka-protocol broker for one bench: the brokers given, or Tansu started on a free
/// loopback port with memory storage and stopped when this is dropped.
pub(super) struct Broker {
    pub brokers: String,
    child: Option<Child>,
}

/// Where the Tansu broker is: `TANDEM_TANSU`, where the test command installs it, or `PATH`.
fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TANDEM_TANSU") {
        return Ok(path.into());
    }
    let cached = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/tandem/tansu/bin/tansu"))
        .filter(|path| path.is_file());
    if let Some(path) = cached {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.is_file())
    });
    on_path.ok_or_else(|| {
        anyhow::anyhow!(
            "this bench starts a Tansu broker and cannot find one: set TANDEM_TANSU to its \
             binary, put `tansu` on PATH (the test command `bash tests/run.sh` installs it into \
             ~/.cache/tandem/tansu), or give --brokers"
        )
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    pub async fn start(given: Option<String>, dir: &Path) -> anyhow::Result<Broker> {
        if let Some(brokers) = given {
            return Ok(Broker {
                brokers,
                child: None,
            });
        }
        let binary = tansu_binary()?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let broker = Broker {
            brokers: format!("127.0.0.1:{port}"),
            child: Some(child),
        };
        wait_for_port(port, "the Tansu broker").await?;
        Ok(broker)
    }

    /// Creates the topic (and its dead-letter topic) with `partitions` partitions.
    pub async fn topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let settings = tandem_producer::TopicSettings::new(partitions);
        tandem_producer::ensure_topic(&self.brokers, topic, &settings, &[]).await?;
        let dlq = tandem_producer::TopicSettings::new(1);
        tandem_producer::ensure_topic(&self.brokers, &format!("{topic}.dlq"), &dlq, &[]).await?;
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            anyhow::bail!("{what} did not listen on 127.0.0.1:{port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// cloudsim in a process of its own (this binary's `tandem cloudsim`), so that its CPU is not
/// counted as Tandem's; stopped when dropped.
pub(super) struct Cloud {
    pub url: String,
    child: Child,
}

impl Cloud {
    pub async fn start(dir: &Path, name: &str) -> anyhow::Result<Cloud> {
        let port = free_port()?;
        let database = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["cloudsim", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", &database])
            .env_remove("TANDEM_CLOUDSIM_TOKEN")
            .env_remove("TANDEM_CLOUDSIM_CLIENT_SECRET")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start cloudsim")?;
        let cloud = Cloud {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        wait_for_port(port, "cloudsim").await?;
        Ok(cloud)
    }

    /// CPU seconds cloudsim has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(&format!("/proc/{}/stat", self.child.id())).unwrap_or(0.0)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second in `/proc/<pid>/stat`: Linux's `USER_HZ`, 100 on every
/// architecture it reports to user space with.
const USER_HZ: f64 = 100.0;

/// User and system CPU seconds of the process whose `/proc/<pid>/stat` this is.
fn process_cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// What Tandem's own process used: CPU seconds over a stretch, and its peak RSS so far.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Usage {
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
}

/// A stretch of Tandem's work whose CPU is counted.
pub(super) struct Stretch {
    cpu_at_start: f64,
}

impl Stretch {
    pub fn start() -> Stretch {
        Stretch {
            cpu_at_start: process_cpu_seconds("/proc/self/stat").unwrap_or(0.0),
        }
    }

    pub fn usage(&self) -> Usage {
        let cpu = process_cpu_seconds("/proc/self/stat").unwrap_or(0.0);
        Usage {
            cpu_s: round3(cpu - self.cpu_at_start),
            peak_rss_mb: round3(peak_rss_kb() as f64 / 1024.0),
        }
    }
}

/// The process's peak resident set, in KiB (`VmHWM`).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A change to contact `id` of `account`, at `version`, with the demo mapping's columns.
pub(super) fn contact(
    account: &str,
    kind: tandem_event::Kind,
    id: usize,
    version: i64,
    last_name: String,
    email: String,
) -> tandem_event::ChangeEvent {
    use tandem_event::Value;
    let mut event =
        tandem_event::ChangeEvent::new(account, kind, "contacts", &id.to_string(), 0, version);
    event.data = Some(
        [
            ("id".to_owned(), Value::Long(id as i64)),
            ("first_name".to_owned(), Value::String(format!("First{id}"))),
            ("last_name".to_owned(), Value::String(last_name)),
            ("email".to_owned(), Value::String(email)),
        ]
        .into(),
    );
    event
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let stretch = Stretch::start();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = stretch.usage();
        assert!(usage.cpu_s >= 0.0);
        assert!(usage.peak_rss_mb > 1.0, "{usage:?}");
        assert!(process_cpu_seconds("/proc/self/stat").is_some_and(|cpu| cpu > 0.0));
    }
}
