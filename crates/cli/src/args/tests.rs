//! The command line as a whole: well formed, and a variable for every setting.

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
const PER_RUN: [&str; 24] = [
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
    // `tandem status`: which stores and brokers one look reads (the stores fall back to
    // TANDEM_CONSUMER_STORE and TANDEM_PRODUCER_STORE, read by the command), and what it prints.
    "consumer-store",
    "producer-store",
    "offline",
    "broker-timeout",
    "limit",
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

/// A variable that may hold a URL with a password, or librdkafka properties with one, is not
/// shown by `--help`.
#[test]
fn help_hides_the_values_of_variables_that_may_hold_secrets() {
    let mut shown = Vec::new();
    for (path, arg) in flags() {
        let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            continue;
        };
        let may_hold_secret = env.ends_with("_STORE")
            || env.ends_with("_URL") && !env.ends_with("TOKEN_URL")
            || env == "TANDEM_KAFKA_PROPERTIES"
            || env == "TANDEM_SCHEMA_REGISTRY";
        if may_hold_secret && !arg.is_hide_env_values_set() {
            shown.push(format!(
                "{path} --{} ({env})",
                arg.get_long().unwrap_or_default()
            ));
        }
    }
    shown.dedup();
    assert!(
        shown.is_empty(),
        "--help shows the values of:\n{}",
        shown.join("\n")
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
