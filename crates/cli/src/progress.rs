//! Progress of long work: a bar with rate and ETA on a terminal, a line every 5 s elsewhere
//! (a log file, CI).

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    /// What the numbers count, at the start of each line.
    what: &'static str,
    bar: Option<ProgressBar>,
    last_line: Cell<Instant>,
}

/// Whether progress shows as a bar: standard error is a terminal.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        let bar = on_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg} ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            what,
            bar,
            last_line: Cell::new(Instant::now()),
        }
    }

    /// `done` of `total` (0: not known, only the count and rate show), with a word on what is
    /// under way.
    pub fn update(&self, done: u64, total: u64, message: &str) {
        match &self.bar {
            Some(bar) if total == 0 => {
                if bar.length().is_some() {
                    bar.unset_length();
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {pos} {msg} ({per_sec})",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                }
                bar.set_position(done);
                bar.set_message(message.to_owned());
            }
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done.min(total));
                bar.set_message(message.to_owned());
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                if total == 0 {
                    eprintln!("{}: {done}: {message}", self.what);
                } else {
                    eprintln!("{}: {done} of {total}: {message}", self.what);
                }
            }
            None => {}
        }
    }

    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
