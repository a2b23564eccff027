#!/usr/bin/env bash
# Tandem's reliability suite: the whole pipeline run as users run it (`tandem cloudsim`,
# `tandem workload`, `tandem produce`, `tandem consume`, against a real Tansu broker and
# PostgreSQL), one fault injected per scenario during a busy workload, then left to settle
# and measured with `tandem verify --json` and `tandem status --json`.
#
#   bash tests/chaos.sh [--long] [--out FILE] [--keep] [--no-build] [scenario…]
#   bash tests/chaos.sh --list             the scenarios, fast then long
#   bash tests/chaos.sh --table FILE       FILE's results as docs/RELIABILITY.md's table
#
# Without scenario names it runs the fast scenarios, and with --long the long ones too;
# --long also makes the fast ones harder (20 kills instead of 5, a longer workload). A
# scenario named on the command line runs whether it is long or not. `restores` runs every
# database-restore shape; `restores/SHAPE` runs one.
#
# Each scenario prints one JSON line on stdout (progress goes to stderr); --out appends the
# lines to FILE as well:
#   {"scenario":…,"events":N,"faults":K,"lost":0,"duplicates":0,"drift":0,"recovery_s":…,
#    "pass":true,"detail":{…}}
# What each field measures is in docs/RELIABILITY.md. The exit code is 0 when every
# scenario passed, 1 when one failed, 2 for a usage error.
#
# Everything started is stopped and every database created is dropped on the way out, also
# when a scenario fails or the suite is interrupted. Logs are kept (the path is printed) when
# a scenario failed, or with --keep.
#
#   TANDEM_BIN         the tandem binary (default: target/debug/tandem, built with cargo first
#                      unless --no-build)
#   TANDEM_GARBAGE_BIN the garbage scenario's writer (default: target/debug/tandem-garbage,
#                      built with cargo first unless --no-build)
#   TANDEM_CACHE       where Tansu lives (default ~/.cache/tandem, as tests/run.sh installs it)
#   TANDEM_TANSU       the Tansu binary (default $TANDEM_CACHE/tansu/bin/tansu)
#   TANDEM_TEST_PG     PostgreSQL server URL (default postgres://postgres@127.0.0.1:5432)
#   CHAOS_ACCOUNTS     legacy accounts (20)          CHAOS_RATE       changes a second (40)
#   CHAOS_PARTITIONS   topic partitions (4)          CHAOS_SEED       the workload's seed (7)
#   CHAOS_SETTLE_TIMEOUT  seconds to wait for zero drift after the faults (300)
#   CHAOS_STABLE_S     seconds between the first clean verify and the final one (5)
#   CHAOS_PRODUCER_ARGS   flags for every `tandem produce`
#                      (--interval 200ms --lease-ttl 5s --delete-check-interval 5s)
#   CHAOS_CONSUMER_ARGS   more flags for every `tandem consume` (e.g. --create-mode lookup)
#   CHAOS_SESSION_MS   the consumers' session.timeout.ms (6000, as the tests use)
#   CHAOS_GARBAGE      garbage messages in `garbage` (10000)
#   CHAOS_SKEW_MS      the clock offset in `clock-skew` (5000)
#
# Needs bash 4.4+, python3 (tests/chaos.py: the standard library only), psql, and for
# store-pg-restart the PostgreSQL server programs under /usr/lib/postgresql/*/bin (run as the
# postgres OS user when the suite runs as root), like tests/pg-tls.sh.
set -euo pipefail

start_dir=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
invocation="bash tests/chaos.sh${*:+ $*}"

fast_scenarios=(consumer-kill producer-kill garbage cloud-5xx cloud-429 cloud-drop)
long_scenarios=(broker-stop broker-restart store-pg-restart legacy-unreachable group restores
  cloud-stall clock-skew)
restore_shapes=(account-rows whole-database version-counter identity-marker)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

long=0 out='' keep=0 build=1 chosen=()
while [ $# -gt 0 ]; do
  case $1 in
    --long) long=1 ;;
    --out) out=${2:?--out needs a file}; shift ;;
    --out=*) out=${1#--out=} ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --list)
      printf 'fast: %s\n' "${fast_scenarios[*]}"
      printf 'long: %s\n' "${long_scenarios[*]}"
      printf 'restores/%s\n' "${restore_shapes[@]}"
      exit 0 ;;
    --table)
      file=${2:?--table needs a file}
      case $file in /*) ;; *) file=$start_dir/$file ;; esac
      exec python3 "$root/tests/chaos.py" table "$file" ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "tests/chaos.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) chosen+=("$1") ;;
  esac
  shift
done
if [ -n "$out" ]; then
  case $out in /*) ;; *) out=$start_dir/$out ;; esac
fi

if [ ${#chosen[@]} -eq 0 ]; then
  chosen=("${fast_scenarios[@]}")
  if [ "$long" -eq 1 ]; then chosen+=("${long_scenarios[@]}"); fi
fi
scenarios=()
for s in "${chosen[@]}"; do
  case $s in
    restores) for shape in "${restore_shapes[@]}"; do scenarios+=("restores/$shape"); done ;;
    restores/*)
      if [[ " ${restore_shapes[*]} " != *" ${s#restores/} "* ]]; then
        echo "tests/chaos.sh: no restore shape ${s#restores/} (${restore_shapes[*]})" >&2; exit 2
      fi
      scenarios+=("$s") ;;
    *)
      if [[ " ${fast_scenarios[*]} ${long_scenarios[*]} " != *" $s "* ]]; then
        echo "tests/chaos.sh: no scenario $s (--list names them)" >&2; exit 2
      fi
      scenarios+=("$s") ;;
  esac
done

# --- settings --------------------------------------------------------------------------------

cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
tansu_version=0.6.0
tansu=${TANDEM_TANSU:-$cache/tansu/bin/tansu}
pg=${TANDEM_TEST_PG:-postgres://postgres@127.0.0.1:5432}
pg=${pg%/}
tandem=${TANDEM_BIN:-}
ACCOUNTS=${CHAOS_ACCOUNTS:-20}
RATE=${CHAOS_RATE:-40}
PARTITIONS=${CHAOS_PARTITIONS:-4}
SEED=${CHAOS_SEED:-7}
SETTLE_TIMEOUT=${CHAOS_SETTLE_TIMEOUT:-300}
STABLE_S=${CHAOS_STABLE_S:-5}
SESSION_MS=${CHAOS_SESSION_MS:-6000}
GARBAGE=${CHAOS_GARBAGE:-10000}
SKEW_MS=${CHAOS_SKEW_MS:-5000}
read -ra producer_args <<<"${CHAOS_PRODUCER_ARGS:---interval 200ms --lease-ttl 5s --delete-check-interval 5s}"
read -ra consumer_args <<<"${CHAOS_CONSUMER_ARGS:-}"
# How long a stopped process may take before it is killed.
STOP_GRACE_S=15

# Whatever TANDEM_… settings the caller's environment holds must not reach the processes the
# suite starts (a TANDEM_CLOUD_TOKEN, a TANDEM_TOPIC…): each is given what it needs as flags.
while read -r variable; do unset "$variable"; done < <(compgen -e | grep '^TANDEM_' || true)

if ! [[ $pg =~ ^postgres(ql)?://([^@/]*@)?([^:/]+)(:([0-9]+))?$ ]]; then
  echo "tests/chaos.sh: TANDEM_TEST_PG must be postgres://[user@]host[:port], got $pg" >&2
  exit 2
fi
pg_userinfo=${BASH_REMATCH[2]} pg_host=${BASH_REMATCH[3]} pg_port=${BASH_REMATCH[5]:-5432}

# --- helpers ---------------------------------------------------------------------------------

scenario=
say() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${scenario:-chaos}" "$*" >&2; }
die() { say "error: $*"; exit 3; }
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
py() { python3 "$root/tests/chaos.py" "$@"; }
# Runs a command in DIR (for Tansu, whose SQLite storage path is relative).
in_dir() { local dir=$1; shift; cd "$dir" && exec "$@"; }

# Every process the suite starts carries this in its environment, so that a last sweep can
# tell its own processes from others that took over a recorded pid.
work=$(mktemp -d /tmp/tandem-chaos.XXXXXX)
export TANDEM_CHAOS_RUN=$work
pidfile=$work/pids

# The processes of the current shell, by role (consumer-0, producer-1, cloudsim, broker…):
# pid, command (for restarts), log. Roles in `watched` are restarted when they
# exit, as Kubernetes would restart a crashed container; `restarts` counts those restarts.
declare -A role_pid=() role_cmd=() role_log=() role_down=()
watched=()
restarts=0

launch() { # launch ROLE LOG COMMAND…
  local role=$1 log=$2
  shift 2
  role_cmd[$role]=$(printf '%q ' "$@")
  role_log[$role]=$log
  "$@" </dev/null >>"$log" 2>&1 &
  role_pid[$role]=$!
  printf '%s %s\n' "$!" "$role" >>"$pidfile"
}

relaunch() { # relaunch ROLE: the same command again, appending to the same log
  local role=$1
  eval "launch \"\$role\" \"\${role_log[\$role]}\" ${role_cmd[$role]}"
}

alive() { local pid=${role_pid[$1]:-}; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

watch_role() { watched+=("$1"); }
unwatch_role() {
  local role=$1 kept=() r
  for r in "${watched[@]}"; do if [ "$r" != "$role" ]; then kept+=("$r"); fi; done
  watched=("${kept[@]}")
}

# Restarts watched roles that exited (a second after they were found gone).
tick() {
  local role rc now
  now=$(now_ms)
  for role in "${watched[@]}"; do
    if alive "$role"; then continue; fi
    if [ -z "${role_down[$role]:-}" ]; then
      rc=0
      wait "${role_pid[$role]}" 2>/dev/null || rc=$?
      say "$role exited with code $rc (last log line: $(tail -n 1 "${role_log[$role]}" 2>/dev/null | cut -c1-200)); restarting it"
      role_down[$role]=$now
    elif [ $((now - ${role_down[$role]})) -ge 1000 ]; then
      unset "role_down[$role]"
      restarts=$((restarts + 1))
      relaunch "$role"
    fi
  done
}

# Waits until the time T (epoch ms), keeping watched roles running.
until_ms() {
  local until=$1 left
  while :; do
    tick
    left=$((until - $(now_ms)))
    if [ "$left" -le 0 ]; then return 0; fi
    if [ "$left" -gt 250 ]; then left=250; fi
    sleep "$(printf '0.%03d' "$left")"
  done
}
pause_ms() { until_ms $(($(now_ms) + $1)); }
# Waits until SECONDS into the workload.
at_s() { until_ms $((load_started + $1 * 1000)); }

kill_role() { # kill_role ROLE: SIGKILL, reaped (relaunch ROLE starts it again)
  local pid=${role_pid[$1]:-}
  if [ -z "$pid" ]; then return 0; fi
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "role_pid[$1]"
}

# Stops every role of this shell: SIGCONT (a frozen one must see the rest), SIGTERM, up to
# STOP_GRACE_S seconds, then SIGKILL.
stop_all() {
  local role pid deadline busy
  watched=()
  for role in "${!role_pid[@]}"; do
    pid=${role_pid[$role]}
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$(($(now_ms) + STOP_GRACE_S * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    busy=0
    for role in "${!role_pid[@]}"; do
      if kill -0 "${role_pid[$role]}" 2>/dev/null; then busy=1; fi
    done
    if [ "$busy" -eq 0 ]; then break; fi
    sleep 0.2
  done
  for role in "${!role_pid[@]}"; do
    pid=${role_pid[$role]}
    if kill -0 "$pid" 2>/dev/null; then
      say "$role did not stop within $STOP_GRACE_S s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  role_pid=()
}

# Kills what a pid file names that is still running and is this run's (a scenario that was
# itself killed leaves its processes behind).
sweep() {
  local file pid role
  for file in "$@"; do
    [ -f "$file" ] || continue
    while read -r pid role; do
      if kill -0 "$pid" 2>/dev/null &&
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "TANDEM_CHAOS_RUN=$work"; then
        say "stopping $role (pid $pid), left behind"
        kill -CONT "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$file"
  done
}

wait_port() { # wait_port PORT PID [SECONDS]: until 127.0.0.1:PORT takes connections
  local port=$1 pid=$2 i
  for i in $(seq 1 $((${3:-30} * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

drop_database() { # drop_database SERVER NAME
  psql -X "$1/postgres" -qc "DROP DATABASE IF EXISTS \"$2\" WITH (FORCE)" >/dev/null 2>&1 || true
}

# --- the broker ------------------------------------------------------------------------------

start_tansu() { # start_tansu ROLE DIR PORT STORAGE-URL: as tests/run.sh starts it
  local role=$1 dir=$2 port=$3 storage=$4
  mkdir -p "$dir"
  launch "$role" "$dir/tansu.log" in_dir "$dir" "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage"
  if ! wait_port "$port" "${role_pid[$role]}" 30; then
    die "Tansu did not listen on 127.0.0.1:$port: $(tail -n 20 "$dir/tansu.log")"
  fi
}

# --- a private PostgreSQL (store-pg-restart) -------------------------------------------------
# As tests/pg-tls.sh's, without TLS: the system's server programs, run as the postgres OS
# user when the suite runs as root; trusted over TCP on 127.0.0.1 and its own socket directory.

private_pg_dir='' private_pg_bin='' private_pg_url=''

as_postgres() { # as_postgres DIR COMMAND…: run in DIR, as the postgres OS user when root
  local dir=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$dir" && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}
private_pg_as() { as_postgres "$private_pg_dir" "$@"; }
# The newest server programs' directory, as tests/pg-tls.sh finds it.
# shellcheck disable=SC2012
postgres_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }

private_pg_start() {
  local port i
  private_pg_bin=$(postgres_bin)
  if [ -z "$private_pg_bin" ] || [ ! -x "$private_pg_bin/initdb" ]; then
    die "no PostgreSQL server programs under /usr/lib/postgresql/*/bin"
  fi
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root, but there is no postgres OS user to run PostgreSQL as"
  fi
  private_pg_dir=$(mktemp -d /tmp/tandem-chaos-pg.XXXXXX)
  echo "$private_pg_dir" >>"$work/pgdirs"
  chmod 0755 "$private_pg_dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$private_pg_dir"; fi
  private_pg_as "$private_pg_bin/initdb" -D "$private_pg_dir/data" -U postgres -A trust \
    --no-sync --no-instructions -E UTF8 --locale=C >"$sc_dir/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 20 "$sc_dir/initdb.log")"
  port=$(py port)
  private_pg_as tee -a "$private_pg_dir/data/postgresql.conf" >/dev/null <<EOF

# tests/chaos.sh's store server
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$private_pg_dir'
fsync = off
shared_buffers = 16MB
EOF
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' |
    private_pg_as tee "$private_pg_dir/data/pg_hba.conf" >/dev/null
  private_pg_ctl start
  private_pg_url=postgres://postgres@127.0.0.1:$port
  for i in $(seq 1 100); do
    if "$private_pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then break; fi
    if [ "$i" -eq 100 ]; then die "the private PostgreSQL does not take connections on $port"; fi
    sleep 0.1
  done
  say "private PostgreSQL on 127.0.0.1:$port ($private_pg_dir)"
}

private_pg_ctl() { # private_pg_ctl start | stop MODE
  if [ "$1" = start ]; then
    private_pg_as "$private_pg_bin/pg_ctl" -D "$private_pg_dir/data" -l "$private_pg_dir/server.log" \
      -w -t 60 start >/dev/null || die "the private PostgreSQL did not start: $(tail -n 20 "$private_pg_dir/server.log")"
  else
    private_pg_as "$private_pg_bin/pg_ctl" -D "$private_pg_dir/data" -m "$2" -w -t 60 stop >/dev/null ||
      die "the private PostgreSQL did not stop"
  fi
}

pg_dir_stop() { # pg_dir_stop DIR: stops the server of a private data directory, removes it
  local dir=$1 bin pid
  [ -d "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    bin=$(postgres_bin)
    if ! as_postgres "$dir" "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
      pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = postgres ]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  if [ -f "$dir/server.log" ] && [ -n "${sc_dir:-}" ]; then
    cp "$dir/server.log" "$sc_dir/postgres.log" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

# --- a scenario's parts ----------------------------------------------------------------------
# Each scenario runs in a subshell of its own (scenario_main), with these variables:
#   sc_dir   its directory (logs, legacy database, cloudsim's database, verify reports)
#   brokers topic group store cloud_url producer_sources verify_sources legacy_kind
#   load_started load_ended   the workload's start and end (epoch ms)
#   fault_end                 when the last fault ended (epoch ms)
#   faults events             faults injected, legacy rows the workload changed

sc_dbs=()

create_database() { # create_database SERVER NAME
  psql -X "$1/postgres" -qc "CREATE DATABASE \"$2\"" >/dev/null || die "cannot create database $2 on $1"
  if [ "$1" = "$pg" ]; then echo "$2" >>"$work/databases"; fi
  sc_dbs+=("$1 $2")
}

db_name() { # db_name PURPOSE: unique to this run and scenario
  local slug=${scenario//[^a-z0-9]/_}
  echo "tandem_chaos_${slug}_$$_$1"
}

use_store() { # use_store [SERVER]: the producer's and the consumer's stores, one new database
  local server=${1:-$pg} name
  name=$(db_name store)
  create_database "$server" "$name"
  store=$server/$name
}

# The demo's legacy SQLite database, seeded by `tandem workload` (no change made yet).
use_sqlite_legacy() {
  legacy_kind=sqlite
  sed "s|sqlite://legacy.db|sqlite://$sc_dir/legacy.db|" "$root/deploy/demo/sources.toml" >"$sc_dir/sources.toml"
  producer_sources=$sc_dir/sources.toml verify_sources=$sc_dir/sources.toml
  env TANDEM_LOG=warn "$tandem" workload --legacy "$sc_dir/legacy.db" --accounts "$ACCOUNTS" \
    --duration 0s --seed "$SEED" >>"$sc_dir/workload.log" 2>&1 ||
    die "cannot seed the legacy database: $(tail -n 5 "$sc_dir/workload.log")"
}

# The same legacy data on PostgreSQL (tests/chaos.py pg-legacy-sql), which the producer reaches
# through a TCP proxy the scenario can cut; verify reaches it directly.
use_pg_legacy() {
  local name url
  legacy_kind=postgres
  name=$(db_name legacy)
  create_database "$pg" "$name"
  legacy_direct_url=$pg/$name
  py pg-legacy-sql | psql -X -q -v ON_ERROR_STOP=1 "$legacy_direct_url" >>"$sc_dir/legacy.log" 2>&1 ||
    die "cannot create the PostgreSQL legacy schema: $(tail -n 5 "$sc_dir/legacy.log")"
  psql -X -q -v ON_ERROR_STOP=1 "$legacy_direct_url" >>"$sc_dir/legacy.log" 2>&1 \
    -c "SELECT seed(format('acct-%s', lpad(i::text, 4, '0'))) FROM generate_series(1, $ACCOUNTS) i" ||
    die "cannot seed the PostgreSQL legacy database"
  proxy_port=$(py port)
  launch proxy "$sc_dir/proxy.log" python3 "$root/tests/chaos.py" proxy "$proxy_port" "$pg_host" "$pg_port"
  wait_port "$proxy_port" "${role_pid[proxy]}" 10 || die "the legacy proxy did not start"
  url=postgres://${pg_userinfo}127.0.0.1:$proxy_port/$name
  sed "s|sqlite://legacy.db|$url|" "$root/deploy/demo/sources.toml" >"$sc_dir/sources-proxy.toml"
  sed "s|sqlite://legacy.db|$legacy_direct_url|" "$root/deploy/demo/sources.toml" >"$sc_dir/sources.toml"
  producer_sources=$sc_dir/sources-proxy.toml verify_sources=$sc_dir/sources.toml
}

start_cloudsim() {
  local port
  port=$(py port)
  cloud_url=http://127.0.0.1:$port
  # Debug lines of its fault injection: what `faults` counts for the cloud scenarios.
  launch cloudsim "$sc_dir/cloudsim.log" env TANDEM_LOG=info,tandem_cloudsim::faults=debug \
    "$tandem" cloudsim --listen "127.0.0.1:$port" --database "sqlite://$sc_dir/cloud.db"
  py wait-http "$cloud_url/health" 30 || die "cloudsim did not start: $(tail -n 5 "$sc_dir/cloudsim.log")"
}

set_faults() { # set_faults JSON: cloudsim's faults from now on (PUT /admin/faults)
  py http PUT "$cloud_url/admin/faults" "$1" >/dev/null || die "cannot set cloudsim's faults"
  say "cloudsim faults: $1"
}

injected() { # injected PATTERN: cloudsim's fault-injection log lines matching PATTERN
  grep -c -- "$1" "$sc_dir/cloudsim.log" || true
}

# Creates the topic (and its .dlq) and publishes every account's enrolment snapshot, so that
# consumers find the topic when they start.
enroll() {
  say "topic $topic ($PARTITIONS partitions); enrolling $ACCOUNTS accounts (produce --once)"
  env TANDEM_LOG=warn timeout 300 "$tandem" produce --sources "$producer_sources" \
    --brokers "$brokers" --topic "$topic" --store "$store" "${producer_args[@]}" \
    --create-topic "$PARTITIONS" --once >>"$sc_dir/enroll.log" 2>&1 ||
    die "produce --once failed: $(tail -n 5 "$sc_dir/enroll.log")"
}

# The usual parts: stores in a new database on the shared server, the SQLite legacy data,
# cloudsim, the topic and the enrolment.
standard_setup() {
  use_store
  use_sqlite_legacy
  start_cloudsim
  enroll
}

split_env() { # what start_producer/start_consumer take: VAR=value… then flags
  envs=() rest=()
  while [ $# -gt 0 ] && [[ $1 =~ ^[A-Z_]+= ]]; do envs+=("$1"); shift; done
  rest=("$@")
}

start_producer() { # start_producer N [VAR=value…] [flag…]
  local n=$1 envs rest
  shift
  split_env "$@"
  launch "producer-$n" "$sc_dir/producer-$n.log" env TANDEM_LOG=warn "${envs[@]}" \
    "$tandem" produce --sources "$producer_sources" --brokers "$brokers" --topic "$topic" \
    --store "$store" "${producer_args[@]}" "${rest[@]}"
  watch_role "producer-$n"
}

start_consumer() { # start_consumer N [VAR=value…] [flag…]: a member of the scenario's group
  local n=$1 envs rest
  shift
  split_env "$@"
  launch "consumer-$n" "$sc_dir/consumer-$n.log" \
    env TANDEM_LOG=warn,tandem_consumer::run=info "${envs[@]}" \
    "$tandem" consume --mapping "$sc_dir/mapping.toml" --brokers "$brokers" --topic "$topic" \
    --store "$store" --cloud-url "$cloud_url" --group "$group" \
    --kafka "session.timeout.ms=$SESSION_MS" "${consumer_args[@]}" "${rest[@]}"
  watch_role "consumer-$n"
}

start_workload() { # start_workload SECONDS: about RATE changes a second across the accounts
  local secs=$1
  if [ "$legacy_kind" = postgres ]; then
    launch workload "$sc_dir/workload.log" psql -X -At -v ON_ERROR_STOP=1 "$legacy_direct_url" \
      -c "CALL legacy_workload($ACCOUNTS, $RATE, $secs)"
  else
    launch workload "$sc_dir/workload.log" env TANDEM_LOG=warn "$tandem" workload \
      --legacy "$sc_dir/legacy.db" --accounts "$ACCOUNTS" --rate "$RATE" --duration "${secs}s" \
      --seed "$SEED"
  fi
  load_started=$(now_ms) load_seconds=$secs
  say "workload: about $RATE changes a second for $secs s"
}

wait_workload() { # sets load_ended and events (legacy rows changed)
  local rc=0 count
  while alive workload; do pause_ms 200; done
  wait "${role_pid[workload]}" 2>/dev/null || rc=$?
  load_ended=$(now_ms)
  unset "role_pid[workload]"
  if [ "$rc" -ne 0 ]; then die "the workload failed (exit $rc): $(tail -n 5 "$sc_dir/workload.log")"; fi
  if [ "$legacy_kind" = postgres ]; then
    count=$(grep -E '^[0-9]+$' "$sc_dir/workload.log" | tail -n 1 || true)
  else
    count=$(sed -n 's/^made \([0-9]*\) changes$/\1/p' "$sc_dir/workload.log" | tail -n 1)
  fi
  events=${count:-0}
  say "workload done: $events rows changed"
}

# Kills ROLE with SIGKILL N times, spread over the workload, each time starting it again at
# once (a crash and its restart); fault_end is the last restart.
kill_repeatedly() { # kill_repeatedly ROLE N
  local role=$1 n=$2 spacing i at
  spacing=$((load_seconds * 1000 / (n + 1)))
  for i in $(seq 1 "$n"); do
    at=$((spacing * i + RANDOM % (spacing / 2 + 1) - spacing / 4))
    until_ms $((load_started + at))
    kill_role "$role"
    relaunch "$role"
    faults=$((faults + 1)) fault_end=$(now_ms)
    say "killed $role with SIGKILL and started it again ($faults of $n)"
  done
}

run_verify() { # run_verify FILE: tandem verify --json (exit 1 on drift; FILE holds its report)
  env TANDEM_LOG=warn "$tandem" verify --sources "$verify_sources" --mapping "$sc_dir/mapping.toml" \
    --cloud-url "$cloud_url" --store "$store" --json >"$1" 2>>"$sc_dir/verify.log" || true
}

# Settles and measures: verifies every 2 s until no document is out of step (recovery_s is
# from max(last fault ended, workload stopped) to the end of that verify), waits STABLE_S,
# verifies once more (the figures), reads the consumer's dead letters, and writes the JSON line.
finish() { # finish FAULT-DESCRIPTION [tests/chaos.py result flags…]
  local fault=$1 quiet deadline settled=0 recovery=
  shift
  quiet=$((fault_end > load_ended ? fault_end : load_ended))
  deadline=$((quiet + SETTLE_TIMEOUT * 1000))
  say "settling: verifying until the cloud matches the legacy data (at most $SETTLE_TIMEOUT s)"
  while :; do
    run_verify "$sc_dir/verify-settle.json"
    if py drift-zero "$sc_dir/verify-settle.json"; then
      settled=1 recovery=$(($(now_ms) - quiet))
      break
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then break; fi
    pause_ms 2000
  done
  if [ "$settled" -eq 1 ]; then
    say "no drift $((recovery / 1000)) s after the load and the faults ended; verifying again in $STABLE_S s"
    pause_ms $((STABLE_S * 1000))
  else
    say "still drifting after $SETTLE_TIMEOUT s: $(head -c 300 "$sc_dir/verify-settle.json")"
  fi
  run_verify "$sc_dir/verify.json"
  env TANDEM_LOG=warn "$tandem" status --consumer-store "$store" --group "$group" --topic "$topic" \
    --offline --json >"$sc_dir/status.json" 2>>"$sc_dir/status.log" || true
  local args=(--scenario "$scenario" --fault "$fault" --events "$events" --faults "$faults"
    --verify "$sc_dir/verify.json" --status "$sc_dir/status.json" --settled "$settled"
    --restarts "$restarts" --command "$invocation")
  if [ -n "$recovery" ]; then args+=(--recovery-ms "$recovery"); fi
  if py result "${args[@]}" "$@" >>"$sc_dir/results.jsonl"; then
    say "passed"
  else
    say "FAILED: $(tail -n 1 "$sc_dir/results.jsonl")"
    scenario_failed=1
  fi
}

# A scenario the product cannot run yet: its JSON line says why, and it fails.
unsupported() { # unsupported FAULT-DESCRIPTION WHY
  py result --scenario "$scenario" --fault "$1" --verify "$sc_dir/no-verify.json" \
    --unsupported "$2" --command "$invocation" >>"$sc_dir/results.jsonl" || true
  say "NOT SUPPORTED: $2"
  scenario_failed=1
}

account_names() { local i; for i in $(seq 1 "$ACCOUNTS"); do printf 'acct-%04d\n' "$i"; done; }
pick() { if [ "$long" -eq 1 ]; then echo "$1"; else echo "$2"; fi; } # pick IF-LONG OTHERWISE

# --- the scenarios ---------------------------------------------------------------------------

scenario_consumer_kill() {
  local kills secs
  kills=$(pick 20 5) secs=$(pick 60 20)
  standard_setup
  start_consumer 0
  start_producer 0
  start_workload "$secs"
  kill_repeatedly consumer-0 "$kills"
  wait_workload
  finish "the consumer (one member) killed with SIGKILL and restarted at once, x$kills during load" \
    --min-faults "$kills"
}

scenario_producer_kill() {
  local kills secs
  kills=$(pick 20 5) secs=$(pick 60 20)
  standard_setup
  start_consumer 0
  start_producer 0
  start_workload "$secs"
  kill_repeatedly producer-0 "$kills"
  wait_workload
  finish "the producer killed with SIGKILL and restarted at once, x$kills during load" \
    --min-faults "$kills"
}

# Messages that are no change event, appended to the topic's partitions with the accounts'
# keys while changes flow: each must be dead-lettered, and the changes around it applied.
# No tandem command writes raw bytes to a topic: crates/testkit's tandem-garbage does, through
# rdkafka, with the accounts' keys so each lands in its account's partition.
scenario_garbage() {
  local secs rc=0 sent
  secs=$(pick 60 20)
  standard_setup
  start_consumer 0
  start_producer 0
  start_workload "$secs"
  [ -x "$garbage_bin" ] || die "no tandem-garbage at $garbage_bin (cargo build -p tandem-testkit)"
  # shellcheck disable=SC2046
  launch garbage "$sc_dir/garbage.log" "$garbage_bin" "$brokers" "$topic" "$GARBAGE" \
    $((secs - 2)) $(account_names)
  while alive garbage; do pause_ms 200; done
  wait "${role_pid[garbage]}" 2>/dev/null || rc=$?
  unset "role_pid[garbage]"
  sent=$(sed -n 's/^sent \([0-9]*\)$/\1/p' "$sc_dir/garbage.log" | tail -n 1)
  faults=${sent:-0} fault_end=$(now_ms)
  if [ "$rc" -ne 0 ]; then say "sending garbage failed: $(tail -n 3 "$sc_dir/garbage.log")"; fi
  wait_workload
  finish "$GARBAGE messages that are no change event (text, an unknown Avro fingerprint, an unknown Confluent schema id, empty, random bytes), keyed by account, mixed into the topic during load" \
    --min-faults "$GARBAGE" --expect-dead-letters "$GARBAGE"
}

# Two members (as crates/cli/tests/faults.rs runs them) against a cloud with FAULTS during the
# whole load; the faults are lifted when the load ends.
cloud_fault() { # cloud_fault FAULTS-JSON LOG-PATTERN DESCRIPTION
  local secs
  secs=$(pick 60 20)
  standard_setup
  set_faults "$1"
  start_consumer 0
  start_consumer 1
  start_producer 0
  start_workload "$secs"
  wait_workload
  set_faults '{}'
  fault_end=$(now_ms)
  faults=$(injected "$2")
  finish "$3"
}

scenario_cloud_5xx() {
  cloud_fault '{"error_rate":0.2}' "fault injection: 503" \
    "cloudsim answers 20% of requests 503 during load"
}

scenario_cloud_429() {
  cloud_fault '{"rate_limit_rate":0.2,"retry_after_secs":1}' "fault injection: 429" \
    "cloudsim answers 20% of requests 429 with Retry-After: 1 during load"
}

scenario_cloud_drop() {
  cloud_fault '{"drop_after_apply_rate":0.2}' "fault injection: breaking the connection" \
    "cloudsim applies 20% of changes, then drops the connection instead of answering, during load"
}

# The broker frozen (SIGSTOP) for 30 s: sessions expire, sends and fetches wait.
scenario_broker_stop() {
  local pre=10 stop=30 port
  port=$(py port)
  start_tansu broker "$sc_dir/tansu" "$port" memory://tansu/
  brokers=127.0.0.1:$port
  standard_setup
  start_consumer 0
  start_producer 0
  start_workload $((pre + stop))
  at_s "$pre"
  kill -STOP "${role_pid[broker]}"
  faults=1
  say "Tansu frozen (SIGSTOP) for $stop s"
  at_s $((pre + stop))
  kill -CONT "${role_pid[broker]}"
  fault_end=$(now_ms)
  say "Tansu goes on (SIGCONT)"
  wait_workload
  finish "Tansu (memory storage) frozen with SIGSTOP for $stop s during load, then SIGCONT"
}

# The broker with persistent (SQLite) storage killed and started again on the same port.
scenario_broker_restart() {
  local n=3 down=5 secs=45 port i
  port=$(py port)
  start_tansu broker "$sc_dir/tansu" "$port" sqlite://tansu.db
  brokers=127.0.0.1:$port
  standard_setup
  start_consumer 0
  start_producer 0
  start_workload "$secs"
  for i in $(seq 1 "$n"); do
    at_s $((secs * i / (n + 1)))
    kill_role broker
    say "Tansu killed with SIGKILL; down for $down s"
    pause_ms $((down * 1000))
    relaunch broker
    wait_port "$port" "${role_pid[broker]}" 60 || die "Tansu did not start again: $(tail -n 20 "$sc_dir/tansu/tansu.log")"
    faults=$((faults + 1)) fault_end=$(now_ms)
    say "Tansu started again ($faults of $n)"
  done
  wait_workload
  finish "Tansu (SQLite storage) killed with SIGKILL and started again on the same port after $down s, x$n during load" \
    --min-faults "$n"
}

# The stores' PostgreSQL restarted cleanly, then crashed and down for 10 s. A producer or
# consumer that stops on a store error is started again by the suite (counted in restarts).
scenario_store_pg_restart() {
  local down=10 secs=40
  private_pg_start
  use_store "$private_pg_url"
  use_sqlite_legacy
  start_cloudsim
  enroll
  start_consumer 0
  start_consumer 1
  start_producer 0
  start_workload "$secs"
  at_s 10
  say "the stores' PostgreSQL: pg_ctl restart -m fast"
  private_pg_ctl stop fast
  private_pg_ctl start
  faults=1
  at_s 22
  say "the stores' PostgreSQL: crashed (-m immediate), down for $down s"
  private_pg_ctl stop immediate
  pause_ms $((down * 1000))
  private_pg_ctl start
  faults=2 fault_end=$(now_ms)
  wait_workload
  finish "the PostgreSQL holding the producer's and the consumer's stores restarted with -m fast, then crashed (-m immediate) and down for $down s, during load" \
    --min-faults 2
}

# The legacy database out of the producer's reach for 30 s, twice: connections refused (the
# proxy gone), then connections hanging (the proxy frozen). The legacy product keeps writing.
scenario_legacy_unreachable() {
  local outage=30
  use_store
  use_pg_legacy
  start_cloudsim
  enroll
  start_consumer 0
  start_producer 0
  start_workload $((10 + outage + 10 + outage))
  at_s 10
  kill_role proxy
  faults=1
  say "the producer's way to the legacy database cut (connections refused) for $outage s"
  at_s $((10 + outage))
  relaunch proxy
  wait_port "$proxy_port" "${role_pid[proxy]}" 10 || die "the legacy proxy did not start again"
  say "the legacy database reachable again"
  at_s $((10 + outage + 10))
  kill -STOP "${role_pid[proxy]}"
  faults=2
  say "the producer's way to the legacy database frozen (connections hang) for $outage s"
  at_s $((10 + outage + 10 + outage))
  kill -CONT "${role_pid[proxy]}"
  fault_end=$(now_ms)
  say "the legacy database reachable again"
  wait_workload
  finish "the producer's way to the legacy PostgreSQL cut for $outage s, twice, during load: connections refused (proxy killed), then hanging (proxy frozen with SIGSTOP)" \
    --min-faults 2
}

# Three members of one group; a random one killed with SIGKILL and replaced by a new member,
# again and again; half-way a fourth member joins, three quarters of the way one leaves with
# SIGTERM. Nothing helps the group afterwards: it must heal by itself (the watchdog).
scenario_group() {
  local kills=20 secs=60 spacing i victim i_victim next=3 members=(0 1 2) pid
  standard_setup
  start_consumer 0
  start_consumer 1
  start_consumer 2
  start_producer 0
  start_workload "$secs"
  spacing=$((secs * 1000 / (kills + 1)))
  for i in $(seq 1 "$kills"); do
    until_ms $((load_started + spacing * i))
    if [ "$i" -eq $((kills / 2)) ]; then
      start_consumer "$next"
      say "consumer-$next joins the group"
      members+=("$next") next=$((next + 1))
    fi
    if [ "$i" -eq $((kills * 3 / 4)) ]; then
      victim=${members[0]} members=("${members[@]:1}")
      unwatch_role "consumer-$victim"
      pid=${role_pid[consumer-$victim]}
      kill -TERM "$pid" 2>/dev/null || true
      say "consumer-$victim leaves the group (SIGTERM)"
    fi
    i_victim=$((RANDOM % ${#members[@]}))
    victim=${members[$i_victim]}
    unwatch_role "consumer-$victim"
    kill_role "consumer-$victim"
    start_consumer "$next"
    members[i_victim]=$next
    faults=$((faults + 1)) fault_end=$(now_ms)
    say "killed consumer-$victim with SIGKILL; consumer-$next replaces it ($faults of $kills)"
    next=$((next + 1))
  done
  wait_workload
  finish "a group of 3 members on $PARTITIONS partitions: a random member killed with SIGKILL and replaced by a new one x$kills during load; a 4th member joined half-way and one left with SIGTERM" \
    --min-faults "$kills"
}

# A database restore under load: a backup a third of the way in, put back two thirds of the
# way in, while the workload goes on writing (past the old high-water mark too).
scenario_restores() { # scenario_restores SHAPE
  local shape=$1 secs restored=(acct-0001 acct-0002) whole_tables outcome what
  whole_tables=(version_counter id_sequences contacts contact_phones properties tenancies)
  secs=$(pick 60 30)
  use_store
  use_sqlite_legacy
  case $shape in
    version-counter)
      sed -i '/^account_column/a version_query = "SELECT value FROM version_counter"' "$sc_dir/sources.toml" ;;
    identity-marker)
      py sqlite-exec "$sc_dir/legacy.db" "CREATE TABLE IF NOT EXISTS db_identity (value TEXT NOT NULL); INSERT INTO db_identity SELECT 'original' WHERE NOT EXISTS (SELECT 1 FROM db_identity)" ||
        die "cannot add the identity marker"
      sed -i '/^account_column/a identity_query = "SELECT value FROM db_identity"' "$sc_dir/sources.toml"
      whole_tables+=(db_identity) ;;
  esac
  start_cloudsim
  enroll
  start_consumer 0
  start_producer 0
  start_workload "$secs"
  at_s $((secs / 3))
  if [ "$shape" = account-rows ]; then
    py sqlite-account-backup "$sc_dir/legacy.db" "${restored[@]}" || die "the backup failed"
  else
    py sqlite-backup "$sc_dir/legacy.db" "$sc_dir/backup.db" || die "the backup failed"
  fi
  say "backup taken"
  at_s $((secs * 2 / 3))
  case $shape in
    account-rows)
      outcome=$(py sqlite-account-restore "$sc_dir/legacy.db" "${restored[@]}") || die "the restore failed"
      say "$outcome of ${restored[*]}"
      faults=${#restored[@]} ;;
    identity-marker)
      outcome=$(py sqlite-restore "$sc_dir/legacy.db" "$sc_dir/backup.db" "${whole_tables[@]}" \
        --then "UPDATE db_identity SET value = 'restored-$(date +%s)'") || die "the restore failed"
      say "$outcome; the identity marker changed"
      faults=1 ;;
    *)
      outcome=$(py sqlite-restore "$sc_dir/legacy.db" "$sc_dir/backup.db" "${whole_tables[@]}") ||
        die "the restore failed"
      say "$outcome (the whole database)"
      faults=1 ;;
  esac
  fault_end=$(now_ms)
  wait_workload
  case $shape in
    account-rows) what="two accounts' rows put back from a backup, versions and all, as the demo restores them (the version counter goes on)" ;;
    whole-database) what="the whole database put back from a backup, version counter and id sequences included; found by the data alone" ;;
    version-counter) what="the whole database put back from a backup; the sources name the version counter (version_query)" ;;
    identity-marker) what="the whole database put back from a backup and marked with a new identity (identity_query)" ;;
  esac
  finish "$what, two thirds into the load; the load goes on" --min-faults 1
}

# The cloud answering every request 30 s late — longer than the consumer's lease (10 s) —
# for 30 s, twice. Calls already waiting when a stall is lifted still take their 30 s.
scenario_cloud_stall() {
  local stall=30 gap=10 w
  standard_setup
  start_consumer 0
  start_consumer 1
  start_producer 0
  start_workload $((gap + stall + gap + stall))
  for w in 0 1; do
    at_s $((gap + w * (stall + gap)))
    set_faults "{\"latency_ms\":$((stall * 1000))}"
    faults=$((faults + 1))
    at_s $((gap + w * (stall + gap) + stall))
    set_faults '{}'
    fault_end=$(now_ms)
  done
  wait_workload
  # Calls that started before the stall was lifted are answered up to 30 s later: the final
  # verify comes after them.
  if [ "$STABLE_S" -lt $((stall + 5)) ]; then STABLE_S=$((stall + 5)); fi
  finish "cloudsim answers every request $stall s late (the consumer's lease is 10 s) for $stall s, twice, during load" \
    --min-faults 2
}

# Members whose clocks disagree by SKEW_MS: one of three consumer members and one of two
# producer instances run ahead (TANDEM_FAULT_CLOCK_OFFSET_MS, read by tandem_event::now_millis,
# the clock leases are compared on). Random kills make leases change hands between them.
scenario_clock_skew() {
  local kills=10 secs=60 spacing i roles victim
  if ! grep -q -a TANDEM_FAULT_CLOCK_OFFSET_MS "$tandem"; then
    unsupported "clocks $SKEW_MS ms apart" \
      "this tandem binary reads no clock offset (TANDEM_FAULT_CLOCK_OFFSET_MS in tandem_event::now_millis)"
    return
  fi
  standard_setup
  start_consumer 0
  start_consumer 1 "TANDEM_FAULT_CLOCK_OFFSET_MS=$SKEW_MS"
  start_consumer 2
  start_producer 0
  start_producer 1 "TANDEM_FAULT_CLOCK_OFFSET_MS=$SKEW_MS"
  roles=(consumer-0 consumer-1 consumer-2 producer-0 producer-1)
  start_workload "$secs"
  spacing=$((secs * 1000 / (kills + 1)))
  for i in $(seq 1 "$kills"); do
    until_ms $((load_started + spacing * i))
    victim=${roles[$((RANDOM % ${#roles[@]}))]}
    kill_role "$victim"
    relaunch "$victim"
    faults=$((faults + 1)) fault_end=$(now_ms)
    say "killed $victim with SIGKILL and started it again, its clock as it was ($faults of $kills)"
  done
  wait_workload
  finish "clocks $SKEW_MS ms apart: one of 3 consumer members and one of 2 producer instances ahead (TANDEM_FAULT_CLOCK_OFFSET_MS); a random one of them killed with SIGKILL and restarted x$kills during load" \
    --min-faults "$kills"
}

# --- running a scenario ----------------------------------------------------------------------

scenario_exit() {
  local rc=$?
  trap - EXIT TERM INT
  stop_all
  if [ -n "$private_pg_dir" ]; then pg_dir_stop "$private_pg_dir"; fi
  local entry
  for entry in "${sc_dbs[@]}"; do
    # A private server's databases went with it.
    if [ "${entry%% *}" = "$pg" ]; then drop_database "$pg" "${entry#* }"; fi
  done
  exit "$rc"
}

scenario_main() { # in a subshell of its own
  scenario=$1
  sc_dir=$work/${scenario//\//-}
  mkdir -p "$sc_dir"
  pidfile=$sc_dir/pids
  role_pid=() role_cmd=() role_log=() role_down=() watched=() restarts=0
  faults=0 fault_end=0 load_started=0 load_ended=0 load_seconds=0 events=0 scenario_failed=0
  brokers=$global_brokers
  topic=chaos-${scenario//\//-}-$$-$RANDOM
  group=$topic-group
  cp "$root/deploy/demo/mapping.toml" "$sc_dir/mapping.toml"
  trap scenario_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  say "starting"
  case $scenario in
    restores/*) scenario_restores "${scenario#restores/}" ;;
    *) "scenario_${scenario//-/_}" ;;
  esac
  exit "$scenario_failed"
}

current=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$current" ]; then
    kill -TERM "$current" 2>/dev/null || true
    wait "$current" 2>/dev/null || true
  fi
  stop_all
  sweep "$work"/pids "$work"/*/pids
  if [ -f "$work/pgdirs" ]; then
    while read -r dir; do pg_dir_stop "$dir"; done <"$work/pgdirs"
  fi
  if [ -f "$work/databases" ] && command -v psql >/dev/null; then
    while read -r db; do drop_database "$pg" "$db"; done <"$work/databases"
  fi
  if [ "$keep" -eq 1 ] || [ "$status" -ne 0 ]; then
    say "logs and data kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what the suite needs --------------------------------------------------------------------

for tool in python3 psql timeout; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
psql -X "$pg/postgres" -Atc 'SELECT 1' >/dev/null 2>&1 || die "cannot reach PostgreSQL at $pg (TANDEM_TEST_PG)"
if [ -z "$tandem" ]; then
  tandem=$root/target/debug/tandem
  if [ "$build" -eq 1 ]; then
    say "building tandem (cargo build -p tandem-cli)"
    cargo build --locked -p tandem-cli --bin tandem >&2
  fi
fi
[ -x "$tandem" ] || die "no tandem binary at $tandem (build it, or set TANDEM_BIN)"
# The garbage scenario's writer of raw messages (crates/testkit/src/bin/tandem-garbage.rs).
garbage_bin=${TANDEM_GARBAGE_BIN:-$root/target/debug/tandem-garbage}
if [[ " ${scenarios[*]} " == *" garbage "* ]] && [ -z "${TANDEM_GARBAGE_BIN:-}" ] && [ "$build" -eq 1 ]; then
  say "building tandem-garbage (cargo build -p tandem-testkit)"
  cargo build --locked -p tandem-testkit --bin tandem-garbage >&2
fi
if ! { [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "$tansu_version"; }; then
  say "installing the Tansu broker $tansu_version into $cache/tansu (first run only, 7-17 minutes)"
  cargo install --locked "tansu@$tansu_version" --features dynostore,libsql --root "$cache/tansu" >&2
  tansu=$cache/tansu/bin/tansu
fi

global_brokers=
for s in "${scenarios[@]}"; do
  case $s in
    broker-*) ;;
    *)
      if [ -z "$global_brokers" ]; then
        port=$(py port)
        say "starting Tansu (memory storage) on 127.0.0.1:$port"
        start_tansu broker "$work/tansu" "$port" memory://tansu/
        global_brokers=127.0.0.1:$port
      fi ;;
  esac
done

say "scenarios: ${scenarios[*]}"
say "settings: $ACCOUNTS accounts, $RATE changes/s, $PARTITIONS partitions; produce ${producer_args[*]}; consume --kafka session.timeout.ms=$SESSION_MS ${consumer_args[*]}"
failed=()
for s in "${scenarios[@]}"; do
  (scenario_main "$s") &
  current=$!
  rc=0
  wait "$current" || rc=$?
  current=
  slug=${s//\//-}
  sweep "$work/$slug/pids"
  if [ -s "$work/$slug/results.jsonl" ]; then
    cat "$work/$slug/results.jsonl"
    if [ -n "$out" ]; then cat "$work/$slug/results.jsonl" >>"$out"; fi
  else
    line=$(printf '{"scenario":"%s","events":null,"faults":null,"lost":null,"duplicates":null,"drift":null,"recovery_s":null,"pass":false,"detail":{"error":"the scenario stopped before it was measured (exit %s); its logs are in %s","command":"%s"}}' \
      "$s" "$rc" "$work/$slug" "$invocation")
    echo "$line"
    if [ -n "$out" ]; then echo "$line" >>"$out"; fi
  fi
  if [ "$rc" -ne 0 ]; then failed+=("$s"); fi
done

if [ ${#failed[@]} -gt 0 ]; then
  say "${#failed[@]} of ${#scenarios[@]} scenarios failed: ${failed[*]}"
  exit 1
fi
say "all ${#scenarios[@]} scenarios passed"
