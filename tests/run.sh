#!/usr/bin/env bash
# Tandem's whole test suite: formatting, lints and every test, against a real Kafka-protocol
# broker (Tansu) and the local PostgreSQL. Installs Tansu on first use into a cache that
# survives between runs, installs Chromium and chromedriver from Debian's packages for the
# status page's browser test when they are missing, starts and stops its own broker and its own
# TLS-only PostgreSQL (tests/pg-tls.sh), runs the reliability suite's fast scenarios
# (tests/chaos.sh), and cleans up even when tests fail.
#
#   TANDEM_CACHE   where Tansu and the deployment validators live (default ~/.cache/tandem)
#   TANDEM_TEST_PG PostgreSQL server URL (default postgres://postgres@127.0.0.1:5432)
#
# Set by this script for the tests:
#   TANDEM_TEST_BROKERS         the Tansu broker (127.0.0.1:PORT)
#   TANDEM_TANSU                the Tansu binary, for tests that start a broker of their own
#   TANDEM_TEST_PG_TLS          the TLS-only PostgreSQL's URL (postgres://postgres@localhost:PORT)
#   TANDEM_TEST_PG_TLS_CA       the CA file to verify it with (sslmode=verify-full)
#   TANDEM_TEST_PG_TLS_PASSWORD the password of its role `tandem`
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
tansu_version=0.6.0
tansu=$cache/tansu/bin/tansu
export TANDEM_TEST_PG=${TANDEM_TEST_PG:-postgres://postgres@127.0.0.1:5432}

step() { printf '\n==> %s\n' "$*"; }
# shellcheck source=tests/pg-tls.sh
source "$root/tests/pg-tls.sh"

step "deployment files: Kubernetes manifests and docker-compose.yml against their schemas, the dashboard and alert rules"
bash "$root/tests/validate-deploy.sh"

if ! { [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "$tansu_version"; }; then
  step "installing the Tansu broker $tansu_version into $cache/tansu (first run only, 7-17 minutes)"
  cargo install --locked "tansu@$tansu_version" --features dynostore,libsql --root "$cache/tansu"
fi

# The status page's test drives headless Chromium through chromedriver (Debian's packages).
if ! { command -v chromedriver >/dev/null && command -v chromium >/dev/null; }; then
  step "installing Chromium and chromedriver for the status page's browser test (first run only)"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "cannot install Chromium: the status page's browser test will say so and skip"
  else
    echo "not root or no apt-get: install chromium and chromium-driver, or the status page's browser test skips"
  fi
fi

work=$(mktemp -d)
broker_pid=
cleanup() {
  status=$?
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  # The TLS PostgreSQL and its directory (certificates, data, socket).
  pg_tls_stop
  # Databases a failed test did not get to drop.
  if command -v psql >/dev/null; then
    for db in $(psql "$TANDEM_TEST_PG/postgres" -Atc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'tandem\_test\_%'" 2>/dev/null); do
      psql "$TANDEM_TEST_PG/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/tansu.log" ]; then
    echo "--- last lines of the broker's log ---"
    tail -n 30 "$work/tansu.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "starting Tansu (memory storage) on 127.0.0.1:$port"
"$tansu" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine "memory://tansu/" >"$work/tansu.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$broker_pid" 2>/dev/null; then echo "Tansu exited:"; cat "$work/tansu.log"; exit 1; fi
  sleep 0.1
done
export TANDEM_TEST_BROKERS=127.0.0.1:$port
# Tests that need a broker of their own (behind a TLS proxy) start this binary.
export TANDEM_TANSU=$tansu

step "starting a TLS-only PostgreSQL (throwaway CA, certificate for localhost and 127.0.0.1)"
pg_tls_start

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (the property tests in tests/props included, at proptest's 256 cases each)"
cargo test --workspace --locked

# The reliability suite's fast scenarios (docs/RELIABILITY.md), on a broker of its own; the long
# ones run with `bash tests/chaos.sh --long`.
step "reliability suite: tests/chaos.sh (consumer and producer kills, garbage, cloud 5xx/429/drop)"
bash "$root/tests/chaos.sh"
