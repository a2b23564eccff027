//! The `tandem` binary run as users run it, as child processes of a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::ensure;

/// The `tandem` binary (a test passes `env!("CARGO_BIN_EXE_tandem")`).
#[derive(Debug, Clone)]
pub struct Tandem {
    bin: PathBuf,
}

impl Tandem {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Tandem { bin: bin.into() }
    }

    pub fn command(&self) -> Command {
        Command::new(&self.bin)
    }

    /// `tandem produce` with test timings (50 ms cycles, 1 s leases and delete checks; a flag
    /// given on top wins), logging warnings to `producer.log` beside the sources file.
    pub fn produce(&self, sources: &Path, brokers: &str, topic: &str, store: &str) -> Command {
        let mut command = self.command();
        command
            .args(["produce", "--sources"])
            .arg(sources)
            .args(["--brokers", brokers, "--topic", topic, "--store", store])
            // Through the environment, so a test can still give any of them as a flag.
            .env("TANDEM_INTERVAL", "50ms")
            .env("TANDEM_LEASE_TTL", "1s")
            .env("TANDEM_DELETE_CHECK_INTERVAL", "1s")
            .env("TANDEM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_to(&sources.with_file_name("producer.log")));
        command
    }

    /// `tandem consume` as a member of group `<topic>-group` with a 6 s session, logging
    /// warnings to `log`.
    pub fn consume(
        &self,
        mapping: &Path,
        (brokers, topic): (&str, &str),
        store: &str,
        cloud: &str,
        log: &Path,
    ) -> Command {
        let mut command = self.command();
        command
            .arg("consume")
            .arg("--mapping")
            .arg(mapping)
            .args(["--brokers", brokers, "--topic", topic, "--store", store])
            .args(["--cloud-url", cloud, "--group", &format!("{topic}-group")])
            .args(["--kafka", "session.timeout.ms=6000"])
            .env("TANDEM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_to(log));
        command
    }
}

/// What a replay reads and where it applies: the sources and mapping files, the broker and
/// topic, the consumer's store and the cloud.
#[derive(Debug, Clone, Copy)]
pub struct ReplayParts<'a> {
    pub sources: &'a Path,
    pub mapping: &'a Path,
    pub brokers: &'a str,
    pub topic: &'a str,
    pub store: &'a str,
    pub cloud: &'a str,
}

impl Tandem {
    /// `tandem replay --account ACCOUNT --into INTO --json` over `parts`, logging warnings.
    pub fn replay(&self, account: &str, into: &str, parts: ReplayParts<'_>) -> Command {
        let mut command = self.command();
        command
            .args(["replay", "--account", account, "--into", into, "--json"])
            .arg("--sources")
            .arg(parts.sources)
            .arg("--mapping")
            .arg(parts.mapping)
            .args(["--brokers", parts.brokers, "--topic", parts.topic])
            .args(["--store", parts.store, "--cloud-url", parts.cloud])
            .env("TANDEM_LOG", "warn");
        command
    }
}

/// Appends a child's output to `path` (nowhere if it cannot be opened).
pub fn log_to(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A child process killed when dropped, so a test that fails early leaves nothing running.
#[derive(Debug)]
pub struct Running(Child);

impl Running {
    pub fn spawn(command: &mut Command) -> anyhow::Result<Running> {
        Ok(Running(command.spawn()?))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // An exited and reaped child is not signalled again.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Asks a child to stop as an operator would.
pub fn sigterm(child: &Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    Ok(())
}
