#!/usr/bin/env python3
"""Helpers for tests/chaos.sh that bash cannot do by itself, with nothing but the standard
library (CI has python3, not confluent-kafka):

  port                                   a free loopback TCP port
  http METHOD URL [JSON]                 one HTTP request; prints the body, exit 1 on >= 400
  wait-http URL SECONDS                  waits until URL answers 2xx
  proxy LISTEN_PORT TARGET_HOST TARGET_PORT
                                         a TCP proxy, until killed
  sqlite-account-backup DB ACCOUNT...    the demo workload's per-account backup
  sqlite-account-restore DB ACCOUNT...   ... and restore (rows back with their versions)
  sqlite-backup DB OUT                   a consistent copy of the whole database (VACUUM INTO)
  sqlite-restore DB FROM TABLE... [--then SQL]
                                         puts the copy's TABLEs back (then runs SQL), in one
                                         transaction
  sqlite-exec DB SQL                     runs SQL (several statements) in one transaction
  pg-legacy-sql                          the demo's legacy schema and workload for PostgreSQL
  drift-zero VERIFY_JSON                 exit 0 when verify found no missing, extra or
                                         different document and nothing parked
  result --scenario S ...                the scenario's JSON line (see cmd_result)
  table FILE                             the JSON lines of FILE as docs/RELIABILITY.md's table
"""

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request


def cmd_port(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_http(args):
    data = args.body.encode() if args.body is not None else None
    request = urllib.request.Request(args.url, data=data, method=args.method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            sys.stdout.write(response.read().decode())
    except urllib.error.HTTPError as e:
        sys.stderr.write(f"{args.method} {args.url}: {e.code} {e.read().decode(errors='replace')}\n")
        sys.exit(1)


def cmd_wait_http(args):
    deadline = time.monotonic() + float(args.seconds)
    while True:
        try:
            with urllib.request.urlopen(args.url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.stderr.write(f"{args.url} did not answer within {args.seconds} s\n")
            sys.exit(1)
        time.sleep(0.1)


# --- a TCP proxy --------------------------------------------------------------------------

def cmd_proxy(args):
    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            target_reader, target_writer = await asyncio.open_connection(args.host, args.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", args.listen_port, reuse_address=True)
        sys.stderr.write(f"proxy 127.0.0.1:{args.listen_port} -> {args.host}:{args.target_port}\n")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the demo's SQLite legacy database ------------------------------------------------------
# The tables of crates/workload/src/lib.rs (LegacyDb): a row inserted with a row_version other
# than 0 keeps it (its triggers stamp only inserts at 0 and updates that left it unchanged).

ROW_TABLES = ["contacts", "contact_phones", "properties", "tenancies"]


def _open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 60000")
    return db


def cmd_sqlite_account_backup(args):
    """As LegacyDb::backup: a copy of the accounts' rows in <table>_backup."""
    db = _open(args.db)
    db.execute("BEGIN IMMEDIATE")
    for table in ROW_TABLES:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table}_backup AS SELECT * FROM {table} WHERE 0")
        for account in args.accounts:
            db.execute(f"DELETE FROM {table}_backup WHERE account_id = ?", (account,))
            db.execute(f"INSERT INTO {table}_backup SELECT * FROM {table} WHERE account_id = ?", (account,))
    db.execute("COMMIT")


def cmd_sqlite_account_restore(args):
    """As LegacyDb::restore: the accounts' rows go back exactly as they were."""
    db = _open(args.db)
    db.execute("BEGIN IMMEDIATE")
    rows = 0
    for table in ROW_TABLES:
        for account in args.accounts:
            db.execute(f"DELETE FROM {table} WHERE account_id = ?", (account,))
            rows += db.execute(
                f"INSERT INTO {table} SELECT * FROM {table}_backup WHERE account_id = ?", (account,)
            ).rowcount
    db.execute("COMMIT")
    print(f"restored {rows} rows")


def cmd_sqlite_backup(args):
    if os.path.exists(args.out):
        os.remove(args.out)
    db = _open(args.db)
    db.execute("VACUUM INTO ?", (args.out,))


def cmd_sqlite_restore(args):
    """The whole database's state put back from a copy: every TABLE's content replaced."""
    db = _open(args.db)
    db.execute("ATTACH DATABASE ? AS copy", (args.source,))
    db.execute("BEGIN IMMEDIATE")
    rows = 0
    for table in args.tables:
        db.execute(f"DELETE FROM main.{table}")
        rows += db.execute(f"INSERT INTO main.{table} SELECT * FROM copy.{table}").rowcount
    if args.then:  # e.g. the identity marker that restore tooling sets, in the same transaction
        db.execute(args.then)
    db.execute("COMMIT")
    db.execute("DETACH DATABASE copy")
    print(f"restored {rows} rows")


def cmd_sqlite_exec(args):
    db = _open(args.db)
    db.execute("BEGIN IMMEDIATE")
    for statement in args.sql.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("COMMIT")



# --- the demo's legacy data on PostgreSQL ---------------------------------------------------
# `tandem workload` writes SQLite only; the legacy-unreachable scenario needs a legacy database
# reached over TCP (through a proxy it can cut). This is crates/workload's schema and random
# changes in PL/pgSQL: the same tables, columns and account names (acct-0001…), versions from
# one database-wide sequence stamped by triggers, ids from a sequence per table and account.

PG_LEGACY_SQL = r"""
CREATE SEQUENCE legacy_version;
CREATE TABLE id_sequences (table_name TEXT NOT NULL, account_id TEXT NOT NULL,
  value BIGINT NOT NULL, PRIMARY KEY (table_name, account_id));
CREATE TABLE contacts (account_id TEXT NOT NULL, id BIGINT NOT NULL, first_name TEXT NOT NULL,
  last_name TEXT NOT NULL, email TEXT, row_version BIGINT NOT NULL DEFAULT 0,
  changed_at_ms BIGINT NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE contact_phones (account_id TEXT NOT NULL, id BIGINT NOT NULL,
  contact_id BIGINT NOT NULL, kind TEXT NOT NULL, number TEXT NOT NULL,
  row_version BIGINT NOT NULL DEFAULT 0, changed_at_ms BIGINT NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE properties (account_id TEXT NOT NULL, id BIGINT NOT NULL, owner_contact_id BIGINT,
  street TEXT NOT NULL, city TEXT NOT NULL, bedrooms BIGINT, row_version BIGINT NOT NULL DEFAULT 0,
  changed_at_ms BIGINT NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE tenancies (account_id TEXT NOT NULL, id BIGINT NOT NULL, property_id BIGINT NOT NULL,
  tenant_contact_id BIGINT NOT NULL, start_date TEXT NOT NULL, rent TEXT NOT NULL,
  row_version BIGINT NOT NULL DEFAULT 0, changed_at_ms BIGINT NOT NULL, PRIMARY KEY (account_id, id));

CREATE FUNCTION stamp_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.row_version = 0 THEN NEW.row_version := nextval('legacy_version'); END IF;
  ELSIF NEW.row_version IS NOT DISTINCT FROM OLD.row_version THEN
    NEW.row_version := nextval('legacy_version');
  END IF;
  RETURN NEW;
END $$;
DO $$
DECLARE t TEXT;
BEGIN
  FOREACH t IN ARRAY ARRAY['contacts', 'contact_phones', 'properties', 'tenancies'] LOOP
    EXECUTE format('CREATE INDEX %I ON %I (account_id, row_version)', t || '_by_version', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION stamp_version()', t || '_version', t);
  END LOOP;
END $$;

CREATE FUNCTION now_ms() RETURNS BIGINT LANGUAGE sql AS
  $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

CREATE FUNCTION next_id(t TEXT, a TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE v BIGINT;
BEGIN
  EXECUTE format('INSERT INTO id_sequences AS s (table_name, account_id, value) '
    'SELECT $1, $2, COALESCE(MAX(id), 0) + 1 FROM %I WHERE account_id = $2 '
    'ON CONFLICT (table_name, account_id) DO UPDATE SET value = s.value + 1 RETURNING value', t)
    INTO v USING t, a;
  RETURN v;
END $$;

CREATE FUNCTION random_id(t TEXT, a TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE v BIGINT;
BEGIN
  EXECUTE format('SELECT id FROM %I WHERE account_id = $1 ORDER BY random() LIMIT 1', t) INTO v USING a;
  RETURN v;
END $$;

CREATE FUNCTION add_contact(a TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
  firsts TEXT[] := ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Ken', 'Frances', 'Donald'];
  lasts TEXT[] := ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Thompson', 'Allen', 'Knuth'];
  f TEXT := firsts[1 + floor(random() * 8)::INT];
  l TEXT := lasts[1 + floor(random() * 8)::INT];
  c BIGINT := next_id('contacts', a);
BEGIN
  INSERT INTO contacts (account_id, id, first_name, last_name, email, changed_at_ms)
    VALUES (a, c, f, l, lower(f) || '.' || lower(l) || c || '@example.com', now_ms());
  FOR n IN 0 .. floor(random() * 2)::INT LOOP
    INSERT INTO contact_phones (account_id, id, contact_id, kind, number, changed_at_ms)
      VALUES (a, next_id('contact_phones', a), c, CASE WHEN n = 0 THEN 'mobile' ELSE 'home' END,
        '+44 20 7946 ' || lpad(floor(random() * 10000)::INT::TEXT, 4, '0'), now_ms());
  END LOOP;
  RETURN c;
END $$;

CREATE FUNCTION add_property(a TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
  streets TEXT[] := ARRAY['High Street', 'Station Road', 'Church Lane', 'Mill Road', 'Park Avenue'];
  cities TEXT[] := ARRAY['Leeds', 'Bristol', 'York', 'Bath'];
  owner BIGINT := COALESCE(random_id('contacts', a), add_contact(a));
  p BIGINT := next_id('properties', a);
BEGIN
  INSERT INTO properties (account_id, id, owner_contact_id, street, city, bedrooms, changed_at_ms)
    VALUES (a, p, owner, (1 + floor(random() * 199))::INT || ' ' || streets[1 + floor(random() * 5)::INT],
      cities[1 + floor(random() * 4)::INT], 1 + floor(random() * 5)::INT, now_ms());
  RETURN p;
END $$;

CREATE FUNCTION rent() RETURNS TEXT LANGUAGE sql AS
  $$ SELECT (400 + floor(random() * 2600))::INT || '.' || lpad(floor(random() * 100)::INT::TEXT, 2, '0') $$;

CREATE FUNCTION add_tenancy(a TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
  property BIGINT := COALESCE(random_id('properties', a), add_property(a));
  tenant BIGINT := COALESCE(random_id('contacts', a), add_contact(a));
  t BIGINT := next_id('tenancies', a);
BEGIN
  INSERT INTO tenancies (account_id, id, property_id, tenant_contact_id, start_date, rent, changed_at_ms)
    VALUES (a, t, property, tenant, '2026-' || lpad((1 + floor(random() * 12))::INT::TEXT, 2, '0') || '-01',
      rent(), now_ms());
  RETURN t;
END $$;

CREATE FUNCTION seed(a TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
  IF random_id('contacts', a) IS NOT NULL THEN RETURN; END IF;
  PERFORM add_contact(a); PERFORM add_contact(a); PERFORM add_contact(a);
  PERFORM add_property(a); PERFORM add_property(a);
  PERFORM add_tenancy(a);
END $$;

-- One random change to an account, as LegacyDb::random_change makes them; the rows written.
CREATE FUNCTION random_change(a TEXT) RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
  ts BIGINT := now_ms();
  choice INT := floor(random() * 13)::INT;
  x BIGINT;
  y BIGINT;
  n INT := 0;
BEGIN
  -- The row is chosen first: random_id() in a WHERE clause would be drawn again per row.
  CASE choice
  WHEN 0 THEN PERFORM add_contact(a); RETURN 2;
  WHEN 1 THEN PERFORM add_property(a); RETURN 1;
  WHEN 2 THEN PERFORM add_tenancy(a); RETURN 1;
  WHEN 3, 4 THEN
    x := random_id('contacts', a);
    UPDATE contacts SET email = 'updated.' || id || '.' || ts || '@example.com', changed_at_ms = ts
      WHERE account_id = a AND id = x;
  WHEN 5 THEN
    x := random_id('contact_phones', a);
    UPDATE contact_phones SET number = '+44 161 496 ' || (ts % 10000), changed_at_ms = ts
      WHERE account_id = a AND id = x;
  WHEN 6 THEN
    x := random_id('properties', a);
    UPDATE properties SET bedrooms = (bedrooms % 5) + 1, changed_at_ms = ts
      WHERE account_id = a AND id = x;
  WHEN 7 THEN
    -- A reference changes: the property gets another owner.
    x := random_id('properties', a);
    y := random_id('contacts', a);
    UPDATE properties SET owner_contact_id = y, changed_at_ms = ts
      WHERE account_id = a AND id = x AND y IS NOT NULL;
  WHEN 9 THEN
    x := random_id('contact_phones', a);
    DELETE FROM contact_phones WHERE account_id = a AND id = x;
  WHEN 10 THEN
    -- A phone moves to another contact: both contacts' documents change.
    x := random_id('contact_phones', a);
    y := random_id('contacts', a);
    UPDATE contact_phones SET contact_id = y, changed_at_ms = ts
      WHERE account_id = a AND id = x AND y IS NOT NULL;
  WHEN 11 THEN
    x := random_id('tenancies', a);
    DELETE FROM tenancies WHERE account_id = a AND id = x;
  WHEN 12 THEN
    -- A property is sold off, unless a tenancy still refers to it.
    x := random_id('properties', a);
    DELETE FROM properties p WHERE p.account_id = a AND p.id = x
      AND NOT EXISTS (SELECT 1 FROM tenancies t WHERE t.account_id = a AND t.property_id = x);
  ELSE
    x := random_id('tenancies', a);
    UPDATE tenancies SET rent = rent(), changed_at_ms = ts WHERE account_id = a AND id = x;
  END CASE;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Random changes across accounts acct-0001… at about `rate` a second for `seconds`, each
-- committed on its own; `changes` comes back as the rows written.
CREATE PROCEDURE legacy_workload(accounts INT, rate INT, seconds INT, INOUT changes BIGINT DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
  until TIMESTAMPTZ := clock_timestamp() + make_interval(secs => seconds);
BEGIN
  changes := 0;
  WHILE clock_timestamp() < until LOOP
    changes := changes + random_change(format('acct-%s', lpad((1 + floor(random() * accounts))::INT::TEXT, 4, '0')));
    COMMIT;
    PERFORM pg_sleep(1.0 / rate);
  END LOOP;
END $$;
"""


def cmd_pg_legacy_sql(_args):
    print(PG_LEGACY_SQL)

# --- results --------------------------------------------------------------------------------

def _load(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _drift(report):
    d = report.get("drift", {})
    return d.get("missing", 0) + d.get("extra", 0) + d.get("different", 0)


def cmd_drift_zero(args):
    report = _load(args.verify)
    ok = report is not None and _drift(report) == 0 and report.get("parked", 0) == 0
    sys.exit(0 if ok else 1)


def cmd_result(args):
    """The scenario's one JSON line; exit 0 when it passed.

    lost        documents out of step in accounts that are not parked: legacy changes whose
                effect never reached the cloud (missing: a create; extra: a delete;
                different: an update, or a create/update applied out of order)
    drift       every document out of step (missing + extra + different), parked accounts
                included: held events are not lost, but the cloud still differs
    duplicates  creates of a root key while a resource of that key existed, from cloudsim's
                audit log (as tandem verify counts them)
    recovery_s  from max(fault ended, workload stopped) to the end of the first verify that
                found no drift; null when it never got there
    """
    report = _load(args.verify)
    status = _load(args.status) if args.status else None
    detail = {"fault": args.fault, "settled": args.settled == 1, "restarts": args.restarts,
              "command": args.command}
    if args.note:
        detail["note"] = args.note
    line = {"scenario": args.scenario, "events": args.events, "faults": args.faults,
            "lost": None, "duplicates": None, "drift": None, "recovery_s": None, "pass": False}
    problems = []
    if report is None:
        problems.append("no verify report")
    else:
        drift = report.get("drift", {})
        line["drift"] = _drift(report)
        line["duplicates"] = report.get("duplicates", 0)
        line["lost"] = sum(
            a["drift"]["missing"] + a["drift"]["extra"] + a["drift"]["different"]
            for a in report.get("by_account", [])
            if not a.get("parked")
        )
        detail.update(missing=drift.get("missing"), extra=drift.get("extra"),
                      different=drift.get("different"), parked=report.get("parked", 0),
                      accounts=report.get("accounts"))
        for what in ("lost", "duplicates", "drift"):
            if line[what]:
                problems.append(f"{what} {line[what]}")
        if report.get("parked", 0):
            problems.append(f"{report['parked']} accounts parked")
    if args.recovery_ms is not None and args.settled == 1:
        line["recovery_s"] = round(args.recovery_ms / 1000.0, 1)
    else:
        problems.append("never settled within the timeout")
    if status is not None:
        letters = sum(a.get("dead_letters", 0) for a in status.get("account_list", []))
        detail["dead_letters"] = letters
        if letters != args.expect_dead_letters:
            problems.append(f"{letters} dead letters, expected {args.expect_dead_letters}")
    elif args.status:
        problems.append("no status report")
    if args.events <= 0:
        problems.append("the workload made no change")
    if args.faults < args.min_faults:
        problems.append(f"{args.faults} faults injected, expected at least {args.min_faults}")
    if args.unsupported:
        problems.append(f"not supported: {args.unsupported}")
    line["pass"] = not problems
    if problems:
        detail["problems"] = problems
    line["detail"] = detail
    print(json.dumps(line, separators=(",", ":")))
    sys.exit(0 if line["pass"] else 1)


def cmd_table(args):
    rows, commands = [], []
    with open(args.file) as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            line = json.loads(raw)
            detail = line.get("detail", {})
            if detail.get("command") and detail["command"] not in commands:
                commands.append(detail["command"])

            def cell(key):
                value = line.get(key)
                return "–" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

            rows.append("| " + " | ".join([
                line["scenario"], detail.get("fault", ""), cell("faults"), cell("events"),
                cell("lost"), cell("duplicates"), cell("drift"), cell("recovery_s"), cell("pass"),
            ]) + " |")
    print("| scenario | fault | faults | events | lost | duplicates | drift | recovery_s | pass |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    for command in commands:
        print(f"\nProduced by `{command}`.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("port").set_defaults(run=cmd_port)
    p = sub.add_parser("http")
    p.add_argument("method")
    p.add_argument("url")
    p.add_argument("body", nargs="?")
    p.set_defaults(run=cmd_http)
    p = sub.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("seconds")
    p.set_defaults(run=cmd_wait_http)
    p = sub.add_parser("proxy")
    p.add_argument("listen_port", type=int)
    p.add_argument("host")
    p.add_argument("target_port", type=int)
    p.set_defaults(run=cmd_proxy)
    for name, run in [("sqlite-account-backup", cmd_sqlite_account_backup),
                      ("sqlite-account-restore", cmd_sqlite_account_restore)]:
        p = sub.add_parser(name)
        p.add_argument("db")
        p.add_argument("accounts", nargs="+")
        p.set_defaults(run=run)
    p = sub.add_parser("sqlite-backup")
    p.add_argument("db")
    p.add_argument("out")
    p.set_defaults(run=cmd_sqlite_backup)
    p = sub.add_parser("sqlite-restore")
    p.add_argument("db")
    p.add_argument("source")
    p.add_argument("tables", nargs="+")
    p.add_argument("--then", help="a statement run in the restore's transaction, after it")
    p.set_defaults(run=cmd_sqlite_restore)
    p = sub.add_parser("sqlite-exec")
    p.add_argument("db")
    p.add_argument("sql")
    p.set_defaults(run=cmd_sqlite_exec)
    sub.add_parser("pg-legacy-sql").set_defaults(run=cmd_pg_legacy_sql)
    p = sub.add_parser("drift-zero")
    p.add_argument("verify")
    p.set_defaults(run=cmd_drift_zero)
    p = sub.add_parser("result")
    p.add_argument("--scenario", required=True)
    p.add_argument("--fault", default="")
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--faults", type=int, default=0)
    p.add_argument("--min-faults", type=int, default=1)
    p.add_argument("--verify", required=True)
    p.add_argument("--status")
    p.add_argument("--expect-dead-letters", type=int, default=0)
    p.add_argument("--recovery-ms", type=int)
    p.add_argument("--settled", type=int, default=0)
    p.add_argument("--restarts", type=int, default=0)
    p.add_argument("--note")
    p.add_argument("--unsupported")
    p.add_argument("--command", default="")
    p.set_defaults(run=cmd_result)
    p = sub.add_parser("table")
    p.add_argument("file")
    p.set_defaults(run=cmd_table)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
