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

impl Progress {
    pub fn new(what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
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

    /// `done` of `total`, with a word on what is under way.
    pub fn update(&self, done: u64, total: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done.min(total));
                bar.set_message(message.to_owned());
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                eprintln!("{}: {done} of {total}: {message}", self.what);
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
