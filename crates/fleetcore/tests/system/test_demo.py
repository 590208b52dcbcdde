"""`fleetcore demo` as a newcomer runs it: it starts a server on loopback, applies the reference
stack, runs a fleet of mTLS devices, prints where to look (console, lake folder, an aws CLI line)
and a status line with the server's detector and alarm states and Defender violations; the
devices' telemetry reaches the Kinesis stream (read back with boto3) and they answer the shadow
deltas the demo causes; Ctrl-C (SIGINT) stops everything and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

import boto3
import pytest
from botocore.config import Config

from brokers import FLEETCORE_BIN, free_port, wait_until
from conftest import AWS_REGION

pytestmark = pytest.mark.fleetcore_only("fleetcore's own demo")


def test_demo_runs_a_fleet_into_the_stream_and_stops_on_ctrl_c(tmp_path):
    http, mqtts = free_port(), free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCORE_", "AWS_"))}
    cmd = [str(FLEETCORE_BIN), "demo", "--devices", "5", "--data-dir", str(data),
           "--http", f"127.0.0.1:{http}", "--mqtts", f"127.0.0.1:{mqtts}"]
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        status = re.compile(r"devices (\d+)/5 \| telemetry (\d+)")

        def fleet_up():
            assert demo.poll() is None, "".join(lines)
            seen = [status.search(line) for line in lines]
            return any(m and int(m.group(1)) == 5 and int(m.group(2)) > 0 for m in seen)

        wait_until(fleet_up, timeout=180, what="all 5 devices connected and publishing")
        text = "".join(lines)
        assert "Where to look:" in text and f"http://127.0.0.1:{http}/metrics" in text
        assert f"console:    http://127.0.0.1:{http}/console" in text
        assert f"lake:       {data / 'lake' / 'fleet-lake'}" in text
        assert "kinesis get-records" in text and "--stream-name fleet-telemetry" in text

        # The server's side of the status line: every device has a detector and an alarm, each
        # counted by state, and Device Defender's violations are counted (none for a calm fleet).
        server_part = re.compile(r"detectors ((?:\w+ \d+(?:, )?)+) \| alarms ((?:\w+ \d+(?:, )?)+) \| "
                                 r"defender violations (\d+)$")

        def every_device_watched():
            for line in lines:
                m = server_part.search(line.strip())
                if m:
                    count = lambda part: sum(int(n) for n in re.findall(r"\d+", part))
                    if count(m.group(1)) == 5 and count(m.group(2)) == 5:
                        return m
            return None

        m = wait_until(every_device_watched, timeout=120, what="5 detectors and 5 alarms in the status line")
        assert set(re.findall(r"[A-Za-z]+", m.group(1))) <= {"Normal", "Overheating"}, m.group(0)
        assert set(re.findall(r"[A-Z_]+", m.group(2))) <= {"NORMAL", "ACTIVE", "ACKNOWLEDGED", "LATCHED"}, m.group(0)
        assert m.group(3) == "0", m.group(0)

        # Every 5 s the demo changes one device's desired state; the device answers the delta.
        answered = re.compile(r"deltas answered ([1-9]\d*) ")
        wait_until(lambda: any(answered.search(line) for line in lines), timeout=60,
                   what="a shadow delta answered by its device")

        key, secret = None, None
        for line in (data / "credentials").read_text().splitlines():
            if line.startswith("aws_access_key_id"):
                key = line.split("=", 1)[1].strip()
            if line.startswith("aws_secret_access_key"):
                secret = line.split("=", 1)[1].strip()
        kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{http}", region_name=AWS_REGION,
                               aws_access_key_id=key, aws_secret_access_key=secret,
                               config=Config(retries={"max_attempts": 1}))
        shards = kinesis.list_shards(StreamName="fleet-telemetry")["Shards"]
        iterators = [kinesis.get_shard_iterator(StreamName="fleet-telemetry", ShardId=s["ShardId"],
                                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                     for s in shards]
        records: list[dict] = []

        def some_records():
            for i, it in enumerate(iterators):
                out = kinesis.get_records(ShardIterator=it)
                iterators[i] = out["NextShardIterator"]
                records.extend(out["Records"])
            return len(records) >= 5

        wait_until(some_records, timeout=60, what="telemetry records in the stream")
        readings = [json.loads(r["Data"]) for r in records]
        assert any(r.get("thing", "").startswith("fleet-device-") and "temperature" in r for r in readings)

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "".join(lines)
        reader.join(timeout=5)
        text = "".join(lines)
        assert "stopping the fleet" in text and "stopping the server" in text
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
