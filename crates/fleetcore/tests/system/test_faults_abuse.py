"""Fault suite (d): 10,000 idle connections plus misbehaving clients (malformed packets, slow
readers that subscribe to the devices' traffic and to a 16 KiB feed and never read, a connect
flood, half-open connections that never send CONNECT) while well-behaved devices publish at QoS 1.

The devices' load (faultload.py devices: 4 devices x 100 msg/s, one subscriber measuring
publish-to-delivery latency) runs twice in the same test: on the quiet broker (the baseline) and
with the idle fleet (conncount, holding) and the misbehaving clients (faultload.py abuse, started
with the measurement) on. What CI asserts is what stays robust on a shared 2-core machine: every
device message is delivered under abuse, the throughput holds (at least half the baseline's),
every malformed connection is closed by the server, the idle fleet stays parked, and the server
stays up. The p99 ratio is printed (run with -s) and not asserted (a timing on a shared machine):
once the slow readers' buffers are full, publishers of their topics wait for them for the
stuck-subscriber timeout (200 ms) at most, once (decision 0008). The 2x target is measured by
benches/faults_abuse.sh beside Mosquitto, at that moment and after it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from brokers import FLEETCORE_BIN

pytestmark = pytest.mark.fleetcore_only("the fault suite measures fleetcore")

HERE = Path(__file__).parent
CONNCOUNT_BIN = Path(os.environ.get("FLEETCORE_CONNCOUNT_BIN", FLEETCORE_BIN.parent / "conncount"))
IDLE = 10_000
SECONDS = 5


def run_devices(port: int, prefix: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "faultload.py"), "devices", "--port", str(port),
                          "--seconds", str(SECONDS), "--prefix", prefix],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.timeout_seconds(300)
def test_idle_fleet_and_misbehaving_clients_leave_devices_their_service(broker_factory, uid):
    if not CONNCOUNT_BIN.exists():
        pytest.skip(f"{CONNCOUNT_BIN} not built (cargo build -p fleetcore-conncount)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 1000:
        pytest.skip(f"the hard open-files limit ({hard}) is below {IDLE} connections")
    b = broker_factory()
    port = b.ports["mqtt"]
    quiet = run_devices(port, f"q{uid}")
    assert quiet["received"] == quiet["sent"] == quiet["acked"], quiet

    idle = subprocess.Popen(
        [str(CONNCOUNT_BIN), "--port", str(port), "--connections", str(IDLE), "--targets", "10",
         "--per-source", "1000", "--settle", "0", "--hold", "3600", "--connect-timeout", "240",
         "--progress", "--broker-pid", str(b.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    abuse = None
    try:
        # conncount reports its ramp on stderr, then holds the fleet (pinging) for the rest.
        ramp = []
        for line in idle.stderr:  # conncount's own --connect-timeout bounds the ramp
            ramp.append(line)
            if "ramp done" in line:
                break
        assert idle.poll() is None, f"conncount stopped: {''.join(ramp)}"
        done = next(line for line in ramp if "ramp done" in line)
        assert f"{IDLE} connected, 0 failed" in done, done
        abuse = subprocess.Popen(
            [sys.executable, str(HERE / "faultload.py"), "abuse", "--port", str(port),
             "--seconds", str(SECONDS + 4), "--prefix", f"a{uid}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the abusers' slow readers subscribe to the loaded devices' topics
        loaded = run_devices(port, f"a{uid}")
        tally_out, tally_err = abuse.communicate(timeout=60)
        assert abuse.returncode == 0, tally_err
        tally = json.loads(tally_out)
        assert b.running(), b.log_tail()
        parked = b.metrics().get("fleetcore_mqtt_connections_parked", 0)
    finally:
        idle.kill()
        if abuse is not None and abuse.poll() is None:
            abuse.kill()
    idle.wait(10)

    ratio_tput = loaded["msgs_per_s"] / quiet["msgs_per_s"]
    ratio_p99 = loaded["p99_ms"] / quiet["p99_ms"]
    print(f"\nfault (d): quiet {quiet}\n           abused {loaded}\n           abuse {tally}\n"
          f"           throughput ratio {ratio_tput:.2f}, p99 ratio {ratio_p99:.2f}, parked {parked:.0f}")
    assert loaded["received"] == loaded["sent"] == loaded["acked"], loaded
    assert ratio_tput >= 0.5, f"throughput under abuse {ratio_tput:.2f}x the quiet baseline"
    assert tally["malformed_sent"] > 0 and tally["errors"] == 0, tally
    assert tally["malformed_closed_by_server"] == tally["malformed_sent"], tally
    assert tally["slow_readers"] == 20 and tally["flood_connects"] > 0, tally
    assert parked >= IDLE * 0.9, f"{parked} of {IDLE} idle connections parked"
