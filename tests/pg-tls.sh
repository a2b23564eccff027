# A private PostgreSQL server that only accepts TLS over TCP, for the tests that connect to
# a store with sslmode=verify-full. Sourced by tests/run.sh: pg_tls_start starts it and
# exports the variables below, pg_tls_stop (from run.sh's cleanup) stops it and removes
# everything it made, and is safe to call at any point, also when the start failed half-way.
#
#   TANDEM_TEST_PG_TLS          server URL without a database (postgres://postgres@localhost:PORT)
#   TANDEM_TEST_PG_TLS_CA       the PEM file of the throwaway CA that signed the server's cert
#   TANDEM_TEST_PG_TLS_PASSWORD the password of the role `tandem` (LOGIN CREATEDB, SCRAM-SHA-256)
#
# Over TCP, postgres is trusted and tandem must give its password; a connection without TLS
# is refused. The certificate names localhost and 127.0.0.1. The server runs as the postgres
# OS user when the caller is root (PostgreSQL refuses to run as root), else as the caller.

pg_tls_dir=

# Runs a PostgreSQL server program as the user the server runs as.
pg_tls_as() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$pg_tls_dir" && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

pg_tls_start() {
  local bin port password started
  started=$(date +%s%N)
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "no PostgreSQL server programs under /usr/lib/postgresql/*/bin" >&2
    return 1
  fi
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "running as root, but there is no postgres OS user to run the TLS PostgreSQL as" >&2
    return 1
  fi

  # Short path under /tmp: the unix socket's path must stay under 108 bytes.
  pg_tls_dir=$(mktemp -d /tmp/tandem-pg-tls.XXXXXX)
  chmod 0755 "$pg_tls_dir"
  local d=$pg_tls_dir

  # The CA and the server's certificate, valid for two days. ECDSA P-256: instant to make.
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Tandem test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  if ! {
    openssl req -x509 -new -nodes -config "$d/openssl.cnf" -extensions ca \
      -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$d/ca.key" -out "$d/ca.pem" \
      -subj "/CN=Tandem test CA" -days 2 &&
      openssl req -new -nodes -config "$d/openssl.cnf" \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$d/server.key" \
        -out "$d/server.csr" -subj "/CN=localhost" &&
      openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 2 \
        -extfile "$d/openssl.cnf" -extensions server -out "$d/server.crt"
  } >"$d/openssl.log" 2>&1; then
    echo "openssl could not make the test certificates:" >&2
    cat "$d/openssl.log" >&2
    return 1
  fi
  chmod 0600 "$d/ca.key" "$d/server.key"
  chmod 0644 "$d/ca.pem" "$d/server.crt"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$d"; fi

  pg_tls_as "$bin/initdb" -D "$d/data" -U postgres -A trust --no-sync --no-instructions \
    -E UTF8 --locale=C >"$d/initdb.log" 2>&1 || {
    echo "initdb failed:" >&2
    cat "$d/initdb.log" >&2
    return 1
  }

  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >>"$d/data/postgresql.conf" <<EOF

# Tandem's TLS test server
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d'
ssl = on
ssl_cert_file = '$d/server.crt'
ssl_key_file = '$d/server.key'
ssl_ca_file = '$d/ca.pem'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
EOF
  # TCP only with TLS: no plain `host` line, so a connection without TLS finds no entry.
  cat >"$d/data/pg_hba.conf" <<'EOF'
local   all all                   trust
hostssl all postgres 127.0.0.1/32 trust
hostssl all tandem   127.0.0.1/32 scram-sha-256
EOF

  if ! pg_tls_as "$bin/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 30 start >/dev/null; then
    echo "the TLS PostgreSQL did not start; its log:" >&2
    cat "$d/server.log" >&2
    return 1
  fi
  # pg_ctl -w waits for the postmaster; this waits until TCP connections are accepted.
  local i
  for i in $(seq 1 100); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then break; fi
    if [ "$i" -eq 100 ]; then
      echo "the TLS PostgreSQL does not accept connections on 127.0.0.1:$port; its log:" >&2
      cat "$d/server.log" >&2
      return 1
    fi
    sleep 0.1
  done

  password=$(openssl rand -hex 24)
  # Through stdin, so the password is in no process's arguments.
  "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$d" -p "$port" -U postgres -d postgres <<EOF
CREATE ROLE tandem LOGIN CREATEDB PASSWORD '$password';
EOF

  export TANDEM_TEST_PG_TLS=postgres://postgres@localhost:$port
  export TANDEM_TEST_PG_TLS_CA=$d/ca.pem
  export TANDEM_TEST_PG_TLS_PASSWORD=$password

  # The server the tests get: TLS with a verified certificate, and nothing without it.
  local ssl
  ssl=$("$bin/psql" -X -Atc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' \
    "$TANDEM_TEST_PG_TLS/postgres?sslmode=verify-full&sslrootcert=$TANDEM_TEST_PG_TLS_CA")
  if [ "$ssl" != t ]; then
    echo "the TLS PostgreSQL's connection is not over TLS (pg_stat_ssl.ssl = '$ssl')" >&2
    return 1
  fi
  if "$bin/psql" -X -Atc 'SELECT 1' "$TANDEM_TEST_PG_TLS/postgres?sslmode=disable" >/dev/null 2>&1; then
    echo "the TLS PostgreSQL accepts connections without TLS" >&2
    return 1
  fi
  echo "TLS PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on localhost:$port," \
    "ready in $((($(date +%s%N) - started) / 1000000)) ms"
}

pg_tls_stop() {
  [ -n "$pg_tls_dir" ] || return 0
  local bin pid
  if [ -f "$pg_tls_dir/data/postmaster.pid" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if ! pg_tls_as "$bin/pg_ctl" -D "$pg_tls_dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
      # pg_ctl could not stop it: end the postmaster itself; its children follow it.
      pid=$(head -n 1 "$pg_tls_dir/data/postmaster.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = postgres ]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  rm -rf "$pg_tls_dir"
  pg_tls_dir=
}
