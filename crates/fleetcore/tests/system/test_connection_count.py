"""Many idle connections to one broker: 10,000 MQTT connections from source addresses spread over
127.0.0.0/8 are all admitted and held, then one publish to each of 1,000 of them arrives. The
load comes from `conncount` (benches/conncount, one epoll loop), the same tool that runs the
200,000-connection version by hand (benches/idle_connections.sh)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import pytest

from brokers import FLEETCORE_BIN, MODE, wait_until

CONNCOUNT_BIN = Path(os.environ.get("FLEETCORE_CONNCOUNT_BIN", FLEETCORE_BIN.parent / "conncount"))
CONNECTIONS = 10_000
TARGETS = 1_000
PER_SOURCE = 1_000


def test_ten_thousand_idle_connections_then_a_publish_reaches_each_of_a_thousand(broker_factory):
    if not CONNCOUNT_BIN.exists():
        pytest.skip(f"{CONNCOUNT_BIN} not built (cargo build -p fleetcore-conncount)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 200:
        pytest.skip(f"the hard open-files limit ({hard}) is below {CONNECTIONS} connections")
    b = broker_factory()
    tool = subprocess.Popen(
        [str(CONNCOUNT_BIN), "--port", str(b.port()), "--connections", str(CONNECTIONS),
         "--targets", str(TARGETS), "--per-source", str(PER_SOURCE), "--settle", "4",
         "--connect-timeout", "240", "--deliver-timeout", "60", "--broker-pid", str(b.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most_parked = 0
    try:
        # While the tool holds its connections idle, fleetcore parks them (no buffers, timer or
        # busy-loop state): its gauge shows them all.
        while tool.poll() is None and MODE == "fleetcore":
            parked = b.metrics().get("fleetcore_mqtt_connections_parked", 0)
            most_parked = max(most_parked, parked)
            time.sleep(0.2)  # sampling a gauge, not waiting for an event
        stdout, stderr = tool.communicate(timeout=400)
    finally:
        if tool.poll() is None:
            tool.kill()
    assert stdout, f"conncount printed no report (exit {tool.returncode}): {stderr}"
    report = json.loads(stdout)
    assert report["connected"] == CONNECTIONS, report
    assert report["failed"] == 0 and report["first_error"] is None, report
    assert report["source_addresses"] == CONNECTIONS // PER_SOURCE
    assert report["dropped"] == 0 and report["open_after_hold"] == CONNECTIONS, report
    assert report["subscribed"] == TARGETS and report["publisher_acked"] == TARGETS, report
    assert report["delivered"] == TARGETS and report["misdelivered"] == 0, report
    assert tool.returncode == 0 and report["ok"], report
    assert b.running(), b.log_tail()
    if MODE == "fleetcore":
        # (the publisher may be parked too)
        assert most_parked >= CONNECTIONS, f"at most {most_parked} of {CONNECTIONS} idle connections parked"
        # Every connection the tool closed is gone from the broker: nothing stays behind.
        wait_until(lambda: b.metrics().get("fleetcore_mqtt_connections", -1) == 0, 60,
                   what="the broker's connection gauge to return to 0")
