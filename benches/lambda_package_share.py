#!/usr/bin/env python3
"""A Lambda deployment package at the 50 MB direct-upload limit, shared through PostgreSQL
(docs/SCALING.md, "Which state is shared"), beside one embedded node in the same run.

Starts a private PostgreSQL 15 (the system tests' `pgserver.py`), two `fleetcore serve` nodes
A and B on it (`--state-backend postgres`: functions and their packages are shared) and one
embedded node E. Each round builds a package of SIZE_MIB random (incompressible) bytes plus a
WebAssembly echo handler, stored uncompressed, then times:

- CreateFunction through A (decode, hash, unpack, and the zip written to PostgreSQL) and
  through E (decode, hash, unpack);
- the first Invoke through B (the zip read from PostgreSQL and unpacked there) and the first
  through E; a second Invoke through B (warm).

The median of ROUNDS is reported with the ratio A / E. Usage:

    SIZE_MIB=48 ROUNDS=3 BIN=target/release/fleetcore python3 benches/lambda_package_share.py
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "crates/fleetcore/tests/system"))

from brokers import free_port, wait_until  # noqa: E402
from fleet_nodes import start_node, start_postgres  # noqa: E402

BIN = os.environ.get("BIN", str(ROOT / "target/release/fleetcore"))
SIZE_MIB = int(os.environ.get("SIZE_MIB", "48"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
KEY_ID, SECRET = "AKIDPACKAGEBENCH0001", "package-bench-secret-key-000000000000000"
WAT = (ROOT / "crates/fleetcore/tests/system/functions/echo.wat").read_text()


def lambda_client(url: str):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(read_timeout=120, retries={"max_attempts": 1}))


def package() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("echo.wat", WAT)
        z.writestr("blob.bin", os.urandom(SIZE_MIB << 20))
    return out.getvalue()


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def main() -> None:
    pg = start_postgres()
    nodes: list[subprocess.Popen] = []
    try:
        db = pg.database("packages")
        shared = ["--state-backend", "postgres", "--state-url", db]
        urls = {}
        for name, state in (("a", shared), ("b", shared), ("e", [])):
            node, urls[name] = start_node(BIN, name, free_port(), state, (KEY_ID, SECRET))
            nodes.append(node)
        lam = {name: lambda_client(url) for name, url in urls.items()}
        rows: dict[str, list[float]] = {k: [] for k in
                                        ("create_a", "create_e", "first_b", "first_e", "warm_b")}
        for i in range(ROUNDS):
            zip_bytes = package()
            name = f"pkg-{i}"

            def create(client):
                return lambda: client.create_function(
                    FunctionName=name, Runtime="provided.al2023", Handler="echo.wat",
                    Role="arn:aws:iam::000000000000:role/bench", Code={"ZipFile": zip_bytes})

            def invoke(client):
                return lambda: client.invoke(FunctionName=name, Payload=b'{"n":1}')["Payload"].read()
            rows["create_a"].append(timed(create(lam["a"])))
            rows["create_e"].append(timed(create(lam["e"])))

            def on_b() -> bool:
                try:
                    lam["b"].get_function_configuration(FunctionName=name)
                    return True
                except lam["b"].exceptions.ResourceNotFoundException:
                    return False
            wait_until(on_b, 10, what="the function on B")
            rows["first_b"].append(timed(invoke(lam["b"])))
            rows["first_e"].append(timed(invoke(lam["e"])))
            rows["warm_b"].append(timed(invoke(lam["b"])))
            for client in (lam["a"], lam["e"]):
                client.delete_function(FunctionName=name)
        size = len(zip_bytes)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"package {size:,} bytes, {ROUNDS} rounds, medians (s):\n")
        print("| step | shared (PostgreSQL) | embedded node | shared / embedded |")
        print("|---|---|---|---|")
        print(f"| CreateFunction | {med['create_a']:.2f} (A) | {med['create_e']:.2f} | "
              f"{med['create_a'] / med['create_e']:.2f}x |")
        print(f"| first Invoke | {med['first_b']:.2f} (B: read + unpack) | {med['first_e']:.3f} | "
              f"{med['first_b'] / med['first_e']:.0f}x |")
        print(f"| next Invoke | {med['warm_b']:.3f} (B) | | |")
    finally:
        for node in nodes:
            node.terminate()
            node.wait(30)
        pg.stop()


if __name__ == "__main__":
    main()
