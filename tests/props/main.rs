//! Property tests of everything in Tandem that parses input: the event decoder, the mapping and
//! sources files and the template language, JSON-lines detections, composite keys, timestamps,
//! and cloudsim's request hashing.
//!
//! Every property runs through [`check`]:
//! - by default `PROPTEST_CASES` cases (proptest's default, 256), as `cargo test` does in the
//!   test command;
//! - with `TANDEM_PROPTEST_SECONDS=N`, round after round of cases until N seconds have passed
//!   (`bash tests/props.sh --long`), printing the count of cases it ran;
//! - with `TANDEM_PROPTEST_SEED=<64 hex digits>`, the round a failure named, again.
//!
//! A failure names its seed and the smallest input proptest shrank it to. Inputs that once
//! failed are kept as plain tests next to their property (`regressions` in each module).

mod cloudsim;
mod event;
mod ingest;
mod mapping;
mod sources;

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestError, TestRng, TestRunner};

/// Checks `test` on values of `strategy`; panics with the seed and the shrunk input on failure.
pub fn check<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("TANDEM_PROPTEST_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let replay = std::env::var("TANDEM_PROPTEST_SEED").ok();
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let seed: [u8; 32] = match &replay {
            Some(hex) => parse_seed(hex),
            None => rand::random(),
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config.clone(), rng);
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => panic!(
                "property {name} failed: {reason}\nsmallest failing input: {input:#?}\n\
                 run it again with TANDEM_PROPTEST_SEED={}",
                hex(&seed)
            ),
            Err(TestError::Abort(reason)) => {
                panic!("property {name} gave up: {reason} (seed {})", hex(&seed))
            }
        }
        cases += u64::from(config.cases);
        if replay.is_some() || budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    if budget.is_some() {
        println!(
            "property {name}: {cases} cases in {:.0} s, no failure",
            started.elapsed().as_secs_f64()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_seed(text: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    let text = text.trim();
    assert!(
        text.len() == 64 && text.is_ascii(),
        "TANDEM_PROPTEST_SEED must be 64 hex digits, as a failure prints it"
    );
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .unwrap_or_else(|_| panic!("TANDEM_PROPTEST_SEED {text:?} is not hex"));
    }
    seed
}
