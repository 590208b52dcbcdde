#!/usr/bin/env python3
"""Fleet provisioning benchmark: devices provisioned per second through the claim flow, beside
the plain mTLS connect rate measured in the same run with the same client and concurrency.

One device = a new TLS connection with the claim certificate, CONNECT, SUBSCRIBE to the four
answer topics, `$aws/certificates/create/json` -> accepted (a new key and certificate, signed
by the built-in CA), `$aws/provisioning-templates/{t}/provision/json` -> accepted (a thing, the
certificate attached and activated, a policy attached), DISCONNECT. The anchor = a new TLS
connection with a registered device certificate, CONNECT, CONNACK, DISCONNECT. The ratio
(anchor / provisioning) says what provisioning costs in connects.

Both run with CONCURRENCY client threads (raw MQTT 3.1.1 over Python's ssl, from the test
suite's mqttwire, on the same 2 cores as the server: the client is part of what is measured,
and it is the same on both sides).

    FLEETCORE_BIN=target/release/fleetcore .venv/bin/python benches/provisioning.py
"""

from __future__ import annotations

import configparser
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crates/fleetcore/tests/system"))
import mqttwire as w  # noqa: E402  (the test suite's raw MQTT codec: no client-side event loop)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("FLEETCORE_BIN", REPO / "target" / "release" / "fleetcore"))
DEVICES = int(os.environ.get("DEVICES", "1000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
TEMPLATE = "bench"
TIMEOUT = 30.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    def __init__(self, data: Path):
        self.data = data
        self.http, self.mqtts = free_port(), free_port()
        self.log = open(data / "broker.log", "w")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--data-dir", str(data / "data"), "--http", f"127.0.0.1:{self.http}",
             "--mqtts", f"127.0.0.1:{self.mqtts}"],
            stdout=self.log, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})

        def ready():
            try:
                with socket.create_connection(("127.0.0.1", self.http), timeout=0.5) as s:
                    s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    return b" 200 " in s.recv(100)
            except OSError:
                return False
        wait_until(ready, 60, "the server")
        cp = configparser.ConfigParser()
        cp.read(data / "data" / "credentials")
        self.iot = boto3.session.Session(
            aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
            aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"],
            region_name="us-east-1").client("iot", endpoint_url=f"http://127.0.0.1:{self.http}",
                                            config=Config(retries={"max_attempts": 1}))
        self.ca = data / "data" / "ca" / "ca.pem"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def write_cert(iot, out: Path, name: str, policy: str) -> tuple[str, str]:
    made = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName=policy, target=made["certificateArn"])
    cert, key = out / f"{name}.pem", out / f"{name}.key"
    cert.write_text(made["certificatePem"])
    key.write_text(made["keyPair"]["PrivateKey"])
    return str(cert), str(key)


def setup(server: Server, out: Path):
    iot = server.iot
    allow = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
    iot.create_policy(policyName="bench-device", policyDocument=allow)
    iot.create_policy(policyName="bench-claim", policyDocument=allow)
    iot.create_provisioning_template(
        templateName=TEMPLATE, provisioningRoleArn="arn:aws:iam::000000000000:role/provisioning",
        enabled=True, templateBody=json.dumps({
            "Parameters": {"SerialNumber": {"Type": "String"},
                           "AWS::IoT::Certificate::Id": {"Type": "String"}},
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                    "ThingName": {"Fn::Join": ["", ["bench-", {"Ref": "SerialNumber"}]]},
                    "AttributePayload": {"serial": {"Ref": "SerialNumber"}}}},
                "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "bench-device"}}},
            "DeviceConfiguration": {"topic": {"Fn::Sub": "telemetry/bench-${SerialNumber}"}}}))
    return write_cert(iot, out, "claim", "bench-claim"), write_cert(iot, out, "device", "bench-device")


def open_tls(port: int, ctx: ssl.SSLContext) -> w.RawClient:
    plain = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return w.RawClient("127.0.0.1", port, w.V311, TIMEOUT,
                       sock=ctx.wrap_socket(plain, server_hostname="localhost"))


def answer(rc: w.RawClient, topic: str) -> dict:
    """The accepted answer to `topic` (QoS 1: acknowledged); a rejection fails the device."""
    while True:
        pk = rc.recv()
        if pk.type != w.PUBLISH:
            continue
        if pk.qos:
            rc.send(w.puback(pk.pid))
        if pk.topic.decode() == f"{topic}/accepted":
            return json.loads(pk.payload)
        if pk.topic.decode() == f"{topic}/rejected":
            raise RuntimeError(f"{topic} rejected: {pk.payload!r}")


def provision_one(port, ctx, serial: str):
    rc = open_tls(port, ctx)
    try:
        assert rc.connect(f"claim-{serial}").rc == 0
        create, provision = "$aws/certificates/create/json", f"$aws/provisioning-templates/{TEMPLATE}/provision/json"
        rc.subscribe([(f"{create}/accepted", 1), (f"{create}/rejected", 1),
                      (f"{provision}/accepted", 1), (f"{provision}/rejected", 1)])
        rc.publish(create, b"{}", qos=0)
        keys = answer(rc, create)
        rc.publish(provision, json.dumps({"certificateOwnershipToken": keys["certificateOwnershipToken"],
                                          "parameters": {"SerialNumber": serial}}).encode(), qos=0)
        done = answer(rc, provision)
        assert done["thingName"] == f"bench-{serial}", done
        rc.disconnect()
    finally:
        rc.close()


def connect_one(port, ctx, n: str):
    rc = open_tls(port, ctx)
    try:
        assert rc.connect(f"anchor-{n}").rc == 0
        rc.disconnect()
    finally:
        rc.close()


def tls_context(ca: str, cert: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(*cert)
    return ctx


def run(work, n: int, label: str) -> float:
    counter = iter(range(n))
    lock = threading.Lock()
    errors: list[str] = []

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                work(f"{label}{i:06d}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} of {n} failed, first: {errors[0]}")
    return n / elapsed


def main():
    if not BIN.exists():
        raise SystemExit(f"no server binary at {BIN} (set FLEETCORE_BIN)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = Server(tmp)
        try:
            claim, device = setup(server, tmp)
            claim_ctx, device_ctx = tls_context(str(server.ca), claim), tls_context(str(server.ca), device)
            rows = []
            for r in range(ROUNDS):
                anchor = run(lambda n: connect_one(server.mqtts, device_ctx, n), DEVICES, f"a{r}-")
                prov = run(lambda s: provision_one(server.mqtts, claim_ctx, s), DEVICES, f"r{r}-")
                rows.append((anchor, prov))
                print(f"round {r + 1}: mTLS connects/s {anchor:,.0f}  provisioned devices/s {prov:,.0f}  "
                      f"(a device costs {anchor / prov:.2f} connects)", flush=True)
            things = server.iot.list_things(maxResults=1)["things"]
            assert things, "no thing was provisioned"
            print(json.dumps({"devices": DEVICES, "concurrency": CONCURRENCY, "binary": str(BIN),
                              "rounds": [{"mtls_connects_per_s": round(a), "provisioned_per_s": round(p)}
                                         for a, p in rows]}))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
