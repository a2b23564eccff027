//! The `tandem` command: the demo, the producer, the consumer, cloudsim and verify, wired
//! from flags and config files. `main.rs` only parses arguments and maps errors to exit codes.

pub mod args;
pub mod bench;
pub mod commands;
pub mod demo;
pub mod exit;
mod kafka;
pub mod migrate;
pub mod observe;
mod progress;
pub mod secret;
mod signal;
pub mod verify;

pub use signal::shutdown_on_signal;
