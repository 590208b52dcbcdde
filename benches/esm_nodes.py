#!/usr/bin/env python3
"""A Lambda event source mapping consuming one Kinesis stream from one node and from two nodes
sharing it (docs/SCALING.md, "Kinesis consumers on shared streams"), beside one embedded node
in the same run.

Starts a private PostgreSQL 15 and nats-server (the system tests' `pgserver.py` and
`natsserver.py`), node A on them with `[stream] backend = "jetstream"`, and an embedded node E.
Each case makes a stream of SHARDS shards holding RECORDS records (100 bytes each, a key per
record), a WebAssembly function (`forward.wat`: the batch's event goes on to an output stream
as one record) and a mapping (BatchSize 100, TRIM_HORIZON), and times from the mapping's
creation until the output holds every record:

- `embedded`: node E alone;
- `jetstream, 1 node`: node A alone;
- `jetstream, 2 nodes`: node B started on the same PostgreSQL and NATS, the mapping made
  through A (B's poller joins within a second and takes its share of the shards).

Usage (ports PORT.. for the fleetcore nodes' HTTP listeners):

    BIN=target/debug/fleetcore RECORDS=4000 PORT=25100 python3 benches/esm_nodes.py
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ROOT / "crates/fleetcore/tests/system"
sys.path.insert(0, str(SYSTEM))

from brokers import wait_until  # noqa: E402
from fleet_nodes import start_node, start_postgres  # noqa: E402
from natsserver import NatsServer  # noqa: E402

BIN = os.environ.get("BIN", str(ROOT / "target/release/fleetcore"))
RECORDS = int(os.environ.get("RECORDS", "4000"))
SHARDS = int(os.environ.get("SHARDS", "4"))
PORT = int(os.environ.get("PORT", "25100"))
KEYS = KEY_ID, SECRET = "AKIDESMNODESBENCH001", "esm-nodes-bench-secret-key-0000000000000"
WAT = (SYSTEM / "functions" / "forward.wat").read_text()


def client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(read_timeout=120, retries={"max_attempts": 2}))


class Output:
    """The records the function has seen: the sum of the events' record counts in the output
    stream (one shard), read on from where the last look ended."""

    def __init__(self, kinesis, out: str):
        self.kinesis, self.out, self.total, self.iterator = kinesis, out, 0, None

    def processed(self) -> int:
        if self.iterator is None:
            self.iterator = self.kinesis.get_shard_iterator(
                StreamName=self.out, ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while True:
            page = self.kinesis.get_records(ShardIterator=self.iterator, Limit=1000)
            self.iterator = page["NextShardIterator"]
            self.total += sum(len(json.loads(r["Data"])["wasm"]["Records"])
                              for r in page["Records"])
            if not page["Records"]:
                return self.total


def case(label: str, url: str) -> float:
    """Seconds from the mapping's creation (through `url`) to every record processed."""
    kinesis, lam = client("kinesis", url), client("lambda", url)
    tag = label.replace(" ", "").replace(",", "")
    src, out, name = f"src-{tag}", f"out-{tag}", f"fwd-{tag}"
    kinesis.create_stream(StreamName=src, ShardCount=SHARDS)
    kinesis.create_stream(StreamName=out, ShardCount=1)
    data = base64.b64encode(os.urandom(75)).decode()  # 100 bytes
    for start in range(0, RECORDS, 500):
        r = kinesis.put_records(StreamName=src, Records=[
            {"Data": data.encode(), "PartitionKey": f"k{i}"}
            for i in range(start, min(start + 500, RECORDS))])
        assert r["FailedRecordCount"] == 0, r
    import io
    import zipfile
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("forward.wat", WAT.replace("wasm-out", out))
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="forward.wat",
                        Role="arn:aws:iam::000000000000:role/bench",
                        Code={"ZipFile": package.getvalue()})
    started = time.monotonic()
    lam.create_event_source_mapping(EventSourceArn=f"arn:aws:kinesis:us-east-1:000000000000:"
                                    f"stream/{src}", FunctionName=name, BatchSize=100,
                                    StartingPosition="TRIM_HORIZON")
    output = Output(kinesis, out)
    wait_until(lambda: output.processed() >= RECORDS, 600, interval=0.2,
               what=f"{label}: every record")
    return time.monotonic() - started


def main() -> None:
    pg = start_postgres()
    nats = NatsServer(Path(tempfile.mkdtemp(prefix="esmbench-nats-"))).start()
    nodes: list[subprocess.Popen] = []
    try:
        db = pg.database("esmbench")
        shared = ["--state-backend", "postgres", "--state-url", db, "--cluster-nats", nats.url,
                  "--stream-backend", "jetstream", "--stream-servers", nats.url]
        e, e_url = start_node(BIN, "e", PORT, [], KEYS)
        a, a_url = start_node(BIN, "a", PORT + 1, [*shared, "--cluster-node-id", "a"], KEYS)
        nodes += [e, a]
        rows = [("embedded, 1 node", case("embedded 1 node", e_url)),
                ("jetstream, 1 node", case("jetstream 1 node", a_url))]
        b, _ = start_node(BIN, "b", PORT + 2, [*shared, "--cluster-node-id", "b"], KEYS)
        nodes.append(b)
        rows.append(("jetstream, 2 nodes", case("jetstream 2 nodes", a_url)))
        base = rows[0][1]
        print(f"{RECORDS} records of 100 B on {SHARDS} shards, BatchSize 100, forward.wat:\n")
        print("| case | seconds | records/s | vs embedded |")
        print("|---|---|---|---|")
        for label, seconds in rows:
            print(f"| {label} | {seconds:.2f} | {RECORDS / seconds:,.0f} | {base / seconds:.2f}x |")
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=30)
        nats.stop()
        pg.stop()


if __name__ == "__main__":
    main()
