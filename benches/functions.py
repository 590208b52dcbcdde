#!/usr/bin/env python3
"""Functions benchmark: warm invocations/s and latency of the same transformation (add a
Fahrenheit field) in Python, Node.js and WebAssembly, sequential and with 8 callers; cold start
(a new worker per configuration change); beside two anchors measured in the same run: the same
Python handler called in process in a loop (the limit of any runtime) and a bare
`python3 -c` process spawned per event (what a naive runtime would cost).

The `*-enrich` kinds are the examples of `examples/functions/` as a user deploys them (the
reference's enrichment processor: thing attributes, a Fahrenheit field, a Kinesis put per
event): `python-enrich` (boto3), `node-enrich` (`npm ci` of its lock file, the AWS SDK for
JavaScript v3 in the zip) and `wasm-enrich` (built from its Rust source for wasm32 with cargo).
Each of their invocations makes a Kinesis PutRecord into fleetcore (the SDK's HTTP request, or
the wasm host's append), so they cost more than the bare transformation beside them.

The client signs one request per second with botocore's SigV4 and replays it over keep-alive
connections (same body, same path), so the Python client costs tens of microseconds per call and
does not hide the server.

    FLEETCORE_BIN=target/release/fleetcore .venv/bin/python benches/functions.py
    KINDS="node-enrich wasm-enrich" N=1000 .venv/bin/python benches/functions.py
"""

from __future__ import annotations

import base64
import configparser
import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("FLEETCORE_BIN", REPO / "target" / "release" / "fleetcore"))
N = int(os.environ.get("N", "2000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
SPAWNS = int(os.environ.get("SPAWNS", "50"))
KINDS = os.environ.get("KINDS", "python node wasm python-enrich node-enrich wasm-enrich").split()
EVENT = json.dumps({"device": "d1", "temperature": 21.5}).encode()
# What a rule `SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'` hands the examples.
THING_EVENT = json.dumps({"thing": "d1", "temperature": 21.5}).encode()
EXAMPLES = REPO / "examples" / "functions"
STREAM = "enriched"

PY = "def handler(event, context):\n    return dict(event, fahrenheit=event['temperature'] * 9 / 5 + 32)\n"
NODE = "exports.handler = async (event) => ({ ...event, fahrenheit: event.temperature * 9 / 5 + 32 });\n"
# The wasm module cannot compute with floats through JSON without a parser; it does the same
# amount of I/O (event in, event plus a field out) with a constant field.
WAT = (REPO / "crates/fleetcore/tests/system/functions/echo.wat").read_text()


def example_package(kind: str, work: Path, stream: str = STREAM) -> tuple[str, str, dict]:
    """(runtime, handler, files) of an example as a user deploys it, in `work`; the wasm one
    writes to `stream` (named when it is built; the others read their STREAM variable)."""
    if kind == "python-enrich":
        body = (EXAMPLES / "python-enrich" / "lambda_function.py").read_text()
        return "python3.11", "lambda_function.lambda_handler", {"lambda_function.py": body}
    if kind == "node-enrich":
        root = work / "node-enrich"
        shutil.copytree(EXAMPLES / "node-enrich", root, ignore=shutil.ignore_patterns("node_modules"))
        subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=root, check=True,
                       capture_output=True)
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                 if p.is_file() and p.name != "package-lock.json"}
        return "nodejs20.x", "index.handler", files
    if kind == "wasm-enrich":
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-unknown-unknown",
                        "--target-dir", str(target)], cwd=EXAMPLES / "rust-wasm-enrich", check=True,
                       env={**os.environ, "STREAM": stream})
        wasm = target / "wasm32-unknown-unknown" / "release" / "rust_wasm_enrich.wasm"
        return "provided.al2023", "enrich.wasm", {"enrich.wasm": wasm.read_bytes()}
    raise ValueError(f"unknown kind {kind}")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def package(files: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, body in files.items():
            z.writestr(name, body)
    return out.getvalue()


class Signer:
    """A SigV4-signed Invoke request for a function, re-signed once per second."""

    def __init__(self, base: str, creds: Credentials, name: str, event: bytes):
        self.url = f"{base}/2015-03-31/functions/{name}/invocations"
        self.event = event
        self.creds, self.at, self.headers = creds, 0.0, {}
        self.lock = threading.Lock()

    def current(self) -> dict:
        now = time.time()
        with self.lock:
            if now - self.at > 1.0:
                req = AWSRequest(method="POST", url=self.url, data=self.event)
                SigV4Auth(self.creds, "lambda", "us-east-1").add_auth(req)
                self.headers, self.at = dict(req.headers), now
            return self.headers


def run_calls(host: str, port: int, signer: Signer, path: str, count: int, lat: list) -> None:
    conn = http.client.HTTPConnection(host, port)
    for _ in range(count):
        t = time.perf_counter()
        conn.request("POST", path, body=signer.event, headers=signer.current())
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 or r.getheader("X-Amz-Function-Error"):
            raise RuntimeError(f"invoke failed: {r.status} {body[:200]!r}")
        lat.append(time.perf_counter() - t)


def measure(host, port, signer, name, threads: int, total: int) -> dict:
    path = f"/2015-03-31/functions/{name}/invocations"
    warm = [threading.Thread(target=run_calls, args=(host, port, signer, path, 20, []))
            for _ in range(threads)]
    for t in warm:  # every worker the measurement needs is started first
        t.start()
    for t in warm:
        t.join()
    lats: list[float] = []
    per = total // threads
    started = time.perf_counter()
    ts = [threading.Thread(target=run_calls, args=(host, port, signer, path, per, lats))
          for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - started
    lats.sort()
    return {"per_s": len(lats) / elapsed, "p50_ms": lats[len(lats) // 2] * 1000,
            "p99_ms": lats[int(len(lats) * 0.99)] * 1000}


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="fc-functions-bench."))
    http_port = int(os.environ.get("PORT", "0")) or free_port()
    proc = subprocess.Popen([str(BIN), "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
                             "--mqtts", "off", "--functions-python", sys.executable, "--log", "warn"],
                            stdout=open(data / "log", "wb"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{http_port}"
        for _ in range(200):
            try:
                if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        cp = configparser.ConfigParser()
        cp.read(data / "credentials")
        key, secret = cp["fleetcore"]["aws_access_key_id"], cp["fleetcore"]["aws_secret_access_key"]
        creds = Credentials(key, secret)
        session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                        region_name="us-east-1")
        lam = session.client("lambda", endpoint_url=base)
        fns = {
            "python": ("python3.11", "app.handler", {"app.py": PY}),
            "node": ("nodejs20.x", "index.handler", {"index.js": NODE}),
            "wasm": ("provided.al2023", "echo.wat", {"echo.wat": WAT}),
        }
        if any(k.endswith("-enrich") for k in KINDS):
            session.client("kinesis", endpoint_url=base).create_stream(StreamName=STREAM, ShardCount=1)
            session.client("iot", endpoint_url=base).create_thing(
                thingName="d1", attributePayload={"attributes": {"site": "plant-7"}})
        results = {}
        for kind in KINDS:
            runtime, handler, files = fns[kind] if kind in fns else example_package(kind, data)
            event = THING_EVENT if kind.endswith("-enrich") else EVENT
            env = {"STREAM": STREAM} if kind.endswith("-enrich") else {}
            name = f"bench-{kind}"
            lam.create_function(FunctionName=name, Runtime=runtime, Role="arn:aws:iam::000000000000:role/x",
                                Handler=handler, Code={"ZipFile": package(files)}, Timeout=10,
                                Environment={"Variables": env})
            signer = Signer(base, creds, name, event)
            results[kind] = {
                "sequential": measure("127.0.0.1", http_port, signer, name, 1, N),
                "concurrent": measure("127.0.0.1", http_port, signer, name, CONCURRENCY, N),
            }
            # A configuration change retires the warm workers (or wasm instances).
            colds = []
            for i in range(5):
                lam.update_function_configuration(FunctionName=name,
                                                  Environment={"Variables": {**env, "ROUND": str(i)}})
                r = lam.invoke(FunctionName=name, Payload=event, LogType="Tail")
                log = base64.b64decode(r["LogResult"]).decode()
                init = float(log.split("Init Duration: ")[1].split(" ms")[0])
                colds.append(init)
            results[kind]["cold_start_ms"] = statistics.median(colds)
        # anchors: in-process calls (the limit) and a process spawned per event
        ns: dict = {}
        exec(PY, ns)
        event = json.loads(EVENT)
        t = time.perf_counter()
        for _ in range(N * 10):
            json.dumps(ns["handler"](json.loads(EVENT), None))
        in_process = N * 10 / (time.perf_counter() - t)
        code = PY + "import json,sys\nprint(json.dumps(handler(json.loads(sys.argv[1]), None)))\n"
        t = time.perf_counter()
        for _ in range(SPAWNS):
            subprocess.run([sys.executable, "-c", code, json.dumps(event)], check=True,
                           capture_output=True)
        spawn = SPAWNS / (time.perf_counter() - t)
        results["anchor"] = {"in_process_per_s": in_process, "spawn_per_event_per_s": spawn}
        print(json.dumps(results, indent=2))
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
