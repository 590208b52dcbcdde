#!/usr/bin/env python3
"""PostgreSQL writes per persistent MQTT session, for the capacity model (docs/SCALING.md).

Starts a private PostgreSQL 15 (the system tests' `pgserver.py`) and one `fleetcore serve`
with `--state-backend postgres`, then, with N persistent MQTT 5 sessions (session expiry one
hour, one subscription each) on raw sockets:

1. connect + subscribe, 2. disconnect (the session records stay), 3. one QoS 1 message
published to each offline session (queued durably before the PUBACK), 4. reconnect, receive
and acknowledge it.

After each phase it reports, per session: transactions committed (`pg_stat_database`, read
once the counters stop moving), rows inserted / updated / deleted, and WAL bytes written
(`pg_current_wal_lsn`, exact). Usage:

    SESSIONS=500 BIN=target/release/fleetcore python3 benches/pg_session_writes.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "crates/fleetcore/tests/system"))

import mqttwire as w  # noqa: E402
from brokers import HOST, free_port, wait_until  # noqa: E402
from pgserver import PostgresServer, find_bin_dir  # noqa: E402

N = int(os.environ.get("SESSIONS", "500"))
BIN = os.environ.get("BIN", str(ROOT / "target/release/fleetcore"))
DB = "sessions"


def stats(pg: PostgresServer) -> dict:
    row = pg.sql("SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, "
                 "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
                 f"FROM pg_stat_database WHERE datname = '{DB}'").strip().split("|")
    return dict(zip(["xacts", "inserted", "updated", "deleted", "wal_bytes"], map(int, row)))


def settled(pg: PostgresServer) -> dict:
    """The counters once they stopped moving for 12 s (a PostgreSQL 15 backend reports its
    statistics when idle, within 10 s). The reads go to the `postgres` database, so they do not
    count in the measured one."""
    last, stable_since = stats(pg), time.monotonic()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(1.0)  # bench pacing: waiting for PostgreSQL's statistics, not for fleetcore
        now = stats(pg)
        if now != last:
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= 12:
            return now
        last = now
    return last


def report(phase: str, before: dict, after: dict) -> None:
    d = {k: after[k] - before[k] for k in after}
    print(f"| {phase} | {d['xacts'] / N:.2f} | {d['inserted'] / N:.2f} | {d['updated'] / N:.2f} "
          f"| {d['deleted'] / N:.2f} | {d['wal_bytes'] / N:,.0f} |", flush=True)


def main() -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (test.sh installs it)")
    pg = PostgresServer(bin_dir).start()
    data = Path(tempfile.mkdtemp(prefix="fleetcore-pgbench-"))
    mqtt, http = free_port(), free_port()
    url = pg.database(DB)
    node = subprocess.Popen([BIN, "serve", "--data-dir", str(data), "--http", f"{HOST}:{http}",
                             "--mqtt", f"{HOST}:{mqtt}", "--mqtts", "off", "--allow-anonymous",
                             "--state-backend", "postgres", "--state-url", url],
                            stdout=subprocess.DEVNULL, stderr=open(data / "log", "wb"))
    clients: list[w.RawClient] = []
    try:
        def up() -> bool:
            try:
                w.RawClient(HOST, mqtt, w.V5, 1.0).close()
                return True
            except OSError:
                return False
        wait_until(up, 60, what="fleetcore")
        print(f"{N} persistent sessions, one subscription each; per session:\n")
        print("| phase | transactions | rows inserted | rows updated | rows deleted | WAL bytes |")
        print("|---|---|---|---|---|---|")
        expiry = {"SessionExpiryInterval": 3600}
        before = settled(pg)
        for i in range(N):
            c = w.RawClient(HOST, mqtt, w.V5, 10.0)
            assert c.connect(f"s{i}", clean=False, props=expiry).rc == 0
            assert c.subscribe([(f"bench/{i}", 1)]).rcs == [1]
            clients.append(c)
        after = settled(pg)
        report("connect + subscribe", before, after)
        for c in clients:
            c.disconnect()
        clients.clear()
        before, after = after, settled(pg)
        report("disconnect", before, after)
        pub = w.RawClient(HOST, mqtt, w.V5, 10.0)
        assert pub.connect("publisher").rc == 0
        for i in range(N):
            pub.publish(f"bench/{i}", b"x" * 256, qos=1, pid=i % 60000 + 1)
            pub.expect(w.PUBACK)
        pub.disconnect()
        before, after = after, settled(pg)
        report("1 QoS 1 message queued (256 B)", before, after)
        for i in range(N):
            c = w.RawClient(HOST, mqtt, w.V5, 10.0)
            ack = c.connect(f"s{i}", clean=False, props=expiry)
            assert ack.rc == 0 and ack.session_present
            got = c.expect(w.PUBLISH)
            c.send(w.puback(got.pid, w.V5))
            clients.append(c)
        for c in clients:
            c.disconnect()
        clients.clear()
        before, after = after, settled(pg)
        report("reconnect, receive, PUBACK, disconnect", before, after)
        rows = pg.sql("SELECT tbl, count(*), sum(length(key) + length(value)) FROM fleetcore_kv "
                      "WHERE tbl LIKE 'mqtt_%' GROUP BY tbl", DB)
        print(f"\nrows kept (table | rows | key+value bytes):\n{rows}")
    finally:
        for c in clients:
            c.close()
        node.terminate()
        node.wait(30)
        pg.stop()


if __name__ == "__main__":
    main()
