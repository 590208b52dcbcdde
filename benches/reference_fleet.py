#!/usr/bin/env python3
"""The reference fleet through every destination, measured from the outside.

For each N in DEVICES it runs `fleetcore demo --devices N` (a server on loopback, the reference
stack applied, N devices each on its own certificate over mTLS publishing one QoS 1 telemetry
message a second through every rule of examples/reference-stack: stream, lake, Lambda
processor, analytics channel, detector and alarm inputs, alert republish), waits until every
device is connected, lets it run DURATION seconds, and then reads the Kinesis stream from the
start. It reports:

- the devices' publish rate and the raw stream records per second in the window;
- publish-to-stream latency p50 / p99 / max: the record's ApproximateArrivalTimestamp minus the
  `sent_ms` the device put in the payload (same machine, same clock; ms resolution);
- records lost: readings of the window missing from the stream;
- the lake's records and the Lambda processor's (enriched) stream records in the window.

Usage (repo root; a release build; the machine's open-files limit bounds N: the server and the
demo each need one descriptor per device):

    BIN=target/release/fleetcore DEVICES="50 500 2000" DURATION=20 .venv/bin/python benches/reference_fleet.py
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

BIN = os.environ.get("BIN", "target/release/fleetcore")
DEVICES = [int(n) for n in os.environ.get("DEVICES", "50").split()]
DURATION = float(os.environ.get("DURATION", "20"))
CONNECT_TIMEOUT = float(os.environ.get("CONNECT_TIMEOUT", "1800"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def credentials(data: Path) -> tuple[str, str]:
    pairs = (line.split("=", 1) for line in (data / "credentials").read_text().splitlines() if "=" in line)
    fields = {k.strip(): v.strip() for k, v in pairs}
    return fields["aws_access_key_id"], fields["aws_secret_access_key"]


def run(n: int) -> dict:
    http, mqtts = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix=f"reference-fleet-{n}-"))
    cmd = [BIN, "demo", "--devices", str(n), "--data-dir", str(data),
           "--http", f"127.0.0.1:{http}", "--mqtts", f"127.0.0.1:{mqtts}"]
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True).start()
    status = re.compile(rf"devices (\d+)/{n} \| telemetry (\d+)")
    started = time.monotonic()
    try:
        while True:
            if demo.poll() is not None:
                raise SystemExit(f"demo exited:\n{''.join(lines[-40:])}")
            if any((m := status.search(l)) and int(m.group(1)) == n for l in lines[-5:]):
                break
            if time.monotonic() - started > CONNECT_TIMEOUT:
                raise SystemExit(f"not every device connected within {CONNECT_TIMEOUT}s:\n{''.join(lines[-5:])}")
            time.sleep(0.5)
        setup_s = time.monotonic() - started
        window_start_ms = int(time.time() * 1000) + 2000  # past the connection burst
        time.sleep(2 + DURATION)
        window_end_ms = int(time.time() * 1000)
        load = os.getloadavg()[0]
        time.sleep(3)  # let the window's last readings land
        key, secret = credentials(data)
        kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{http}", region_name="us-east-1",
                               aws_access_key_id=key, aws_secret_access_key=secret,
                               config=Config(retries={"max_attempts": 2}))
        raw, enriched = [], 0
        for shard in kinesis.list_shards(StreamName="fleet-telemetry")["Shards"]:
            it = kinesis.get_shard_iterator(StreamName="fleet-telemetry", ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                out = kinesis.get_records(ShardIterator=it, Limit=10000)
                for r in out["Records"]:
                    body = json.loads(r["Data"])
                    sent = body.get("sent_ms", 0)
                    if not window_start_ms <= sent < window_end_ms:
                        continue
                    if "attributes" in body:
                        enriched += 1
                    else:
                        raw.append((body["thing"], sent, r["ApproximateArrivalTimestamp"].timestamp() * 1000 - sent))
                if not out["Records"] and out.get("MillisBehindLatest", 0) == 0:
                    break
                it = out.get("NextShardIterator")
        demo_status = [l for l in lines if status.search(l)]
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
    lake = 0
    for path in (data / "lake").rglob("*.gz"):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            if line and window_start_ms <= json.loads(line).get("sent_ms", 0) < window_end_ms:
                lake += 1
    seconds = (window_end_ms - window_start_ms) / 1000
    latencies = [x[2] for x in raw]
    expected = n * seconds
    result = {
        "devices": n, "window_s": round(seconds, 1), "setup_s": round(setup_s, 1), "load_1m": round(load, 1),
        "stream_raw_per_s": round(len(raw) / seconds, 1), "expected_per_s": n,
        "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=float("nan")), 1),
        "missing_vs_1_per_s": round(max(0.0, expected - len(raw)) / expected, 4),
        "lake_per_s": round(lake / seconds, 1), "processor_per_s": round(enriched / seconds, 1),
        "last_status": demo_status[-1].strip() if demo_status else "",
    }
    import shutil
    shutil.rmtree(data, ignore_errors=True)
    return result


def main() -> None:
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {BIN} cores={os.cpu_count()} "
          f"open-files hard limit={__import__('resource').getrlimit(__import__('resource').RLIMIT_NOFILE)[1]}",
          file=sys.stderr)
    for n in DEVICES:
        print(json.dumps(run(n)), flush=True)


if __name__ == "__main__":
    main()
