"""Device authentication and authorization end to end: certificates made by the control plane
(CreateKeysAndCertificate and friends, through boto3), IoT policies attached to them or to thing
groups, and real clients (paho at 3.1.1 and 5, mosquitto_pub/mosquitto_sub, and a raw MQTT client
over TLS where the exact packets matter) on the mTLS listeners.

The reference policy: a device connects only as its thing name, publishes only under
`devices/<its thing name>/`, subscribes to and receives only `devices/<its thing name>/#`, all
written with `${iot:Connection.Thing.ThingName}`.

What is checked: allowed traffic flows; denied PUBLISH (v5 PUBACK/PUBREC 0x87, QoS 0 dropped;
3.1.1 disconnect) and SUBSCRIBE (SUBACK 0x87 / 0x80); CONNECT under another client id; Receive
filtering; explicit Deny; thing-group inheritance; thing type, attribute, client id and common name
variables; RetainPublish; live changes (revoke, deactivate, detach policy or thing, new policy
versions, CA deactivation) within a second; expired, unregistered, inactive, policy-less and
foreign-CA certificates; a CA of one's own; and anonymous clients governed by --anonymous-policy.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import mqttwire as w
import pki
from brokers import have_mosquitto_clients
from clients import V5, V311, Client, ConnectFailed, fence
from conftest import VERSIONS

pytestmark = pytest.mark.fleetcore_only("certificate registration and IoT policies are fleetcore's")

REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}"
THING = "${iot:Connection.Thing.ThingName}"
CLIENT_ID = "${iot:ClientId}"
THING_TYPE = "${iot:Connection.Thing.ThingTypeName}"
COMMON_NAME = "${iot:Certificate.Subject.CommonName}"
NOT_AUTHORIZED = 0x87
LIVE_CHANGE_DEADLINE = 1.0  # seconds from the control-plane call to the cut-off

need_cli_clients = pytest.mark.skipif(not have_mosquitto_clients(),
                                      reason="mosquitto_pub/mosquitto_sub not installed")
CLI_VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]


# ---------------------------------------------------------------------------------------------
# policies

def document(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions, *resources) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": list(resources)}


def deny(actions, *resources) -> dict:
    return {"Effect": "Deny", "Action": actions, "Resource": list(resources)}


def reference_statements() -> list[dict]:
    return [
        allow("iot:Connect", f"{ARN}:client/{THING}"),
        allow("iot:Publish", f"{ARN}:topic/devices/{THING}/*"),
        allow("iot:Subscribe", f"{ARN}:topicfilter/devices/{THING}/#"),
        allow("iot:Receive", f"{ARN}:topic/devices/{THING}/*"),
    ]


REFERENCE = document(*reference_statements())
ALLOW_ALL = document(allow("iot:*", "*"))


# ---------------------------------------------------------------------------------------------
# devices: a thing, a certificate made by CreateKeysAndCertificate written to files, policies

@dataclass
class Device:
    thing: str | None
    cert: Path
    key: Path
    cert_id: str
    arn: str

    @property
    def tls(self) -> tuple[Path, Path]:
        return self.cert, self.key


@pytest.fixture
def iot(aws):
    return aws("iot")


@pytest.fixture
def make_policy(iot, uid):
    """make_policy(document, suffix="") -> a new policy's name."""
    n = [0]

    def make(doc: str, suffix: str = "", client=None) -> str:
        n[0] += 1
        name = f"{uid}-p{n[0]}{suffix}"
        (client or iot).create_policy(policyName=name, policyDocument=doc)
        return name
    return make


def write_pair(out: Path, name: str, cert_pem: str, key_pem: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / f"{name}.pem", out / f"{name}.key"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def devices(iot, tmp_path, uid):
    """devices(name, policies=[...], thing=True, active=True, thing_type=None, attributes=None,
    attach_thing=True, client=iot) -> Device. Creates the thing `<uid>-<name>` (unless
    thing=False), an ACTIVE certificate with CreateKeysAndCertificate, attaches the policies and
    the thing principal, and writes cert and key to files."""
    def make(name: str, policies=(), thing: bool = True, active: bool = True,
             thing_type: str | None = None, attributes: dict | None = None,
             attach_thing: bool = True, client=None) -> Device:
        api = client or iot
        thing_name = f"{uid}-{name}" if thing else None
        if thing_name:
            kw = {}
            if thing_type:
                kw["thingTypeName"] = thing_type
            if attributes:
                kw["attributePayload"] = {"attributes": attributes}
            api.create_thing(thingName=thing_name, **kw)
        made = api.create_keys_and_certificate(setAsActive=active)
        arn = made["certificateArn"]
        for p in policies:
            api.attach_policy(policyName=p, target=arn)
        if thing_name and attach_thing:
            api.attach_thing_principal(thingName=thing_name, principal=arn)
        cert, key = write_pair(tmp_path / "devices", name, made["certificatePem"],
                               made["keyPair"]["PrivateKey"])
        return Device(thing_name, cert, key, made["certificateId"], arn)
    return make


# ---------------------------------------------------------------------------------------------
# a raw MQTT client over TLS (exact packets, and where TLS itself refused)

class TlsRawClient(w.RawClient):
    """mqttwire.RawClient over TLS. A TLS-level failure (an alert, or a close without
    close_notify) ends the stream like a close, and is kept in `tls_error`."""

    def __init__(self, broker, cert, key, version: int, port: int | None = None,
                 timeout: float = 5.0, ca=None):
        self.tls_error: ssl.SSLError | None = None
        ctx = ssl.create_default_context(cafile=str(ca or broker.ca_pem))
        ctx.load_cert_chain(str(cert), str(key))
        plain = socket.create_connection((broker.host, port or broker.ports["mqtts"]), timeout=timeout)
        try:
            sock = ctx.wrap_socket(plain, server_hostname="localhost")
        except ssl.SSLError as e:
            plain.close()
            self.tls_error = e
            sock = None
        if sock is None:
            self.version, self.timeout, self.buf, self.closed, self.log = version, timeout, bytearray(), True, []
            self.sock = None
            return
        super().__init__(broker.host, 0, version, timeout, sock=sock)

    def _fill(self, deadline: float) -> None:
        if self.sock is None:
            raise w.Closed(f"TLS handshake failed: {self.tls_error}")
        try:
            super()._fill(deadline)
        except ssl.SSLError as e:  # alerts, and EOF without close_notify
            self.tls_error = e
            self.closed = True
            raise w.Closed(f"TLS: {e}") from e

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise w.Closed(f"TLS handshake failed: {self.tls_error}")
        super().send(data)

    def try_send(self, data: bytes) -> bool:
        if self.sock is None:
            return False
        return super().try_send(data)

    def close(self) -> None:
        if self.sock is not None:
            super().close()
        self.closed = True


@pytest.fixture
def tls_raw(broker):
    """tls_raw(device_or_(cert, key), version, broker=..., port=...) -> TlsRawClient (not yet
    connected at the MQTT level). Closed at teardown."""
    made: list[TlsRawClient] = []

    def make(dev, version: int, broker=broker, port: int | None = None, ca=None) -> TlsRawClient:
        cert, key = dev.tls if isinstance(dev, Device) else dev
        rc = TlsRawClient(broker, cert, key, version, port=port, ca=ca)
        made.append(rc)
        return rc
    yield make
    for rc in made:
        rc.close()


def connack_then_close(rc: w.RawClient, timeout: float = 5.0):
    """What the server answers a CONNECT before it closes: the CONNACK, or None."""
    seen = rc.wait_closed(timeout)
    acks = [p for p in seen if p.type == w.CONNACK]
    assert all(p.type == w.CONNACK for p in seen) and len(acks) <= 1, seen
    return acks[0] if acks else None


def refused_code(version: int) -> int:
    """CONNACK for "not authorized": 0x87 (MQTT 5) or return code 5 (3.1.1)."""
    return NOT_AUTHORIZED if version == V5 else 0x05


def paho_refused_code(version: int) -> int:
    """paho reports a 3.1.1 CONNACK return code 5 as reason code 0x87 (its MQTT 5 equivalent)."""
    return NOT_AUTHORIZED


def suback_denied(version: int) -> int:
    return NOT_AUTHORIZED if version == V5 else 0x80


def assert_connect_refused(rc: TlsRawClient, client_id: str, version: int) -> None:
    """CONNECT as `client_id` is answered with CONNACK "not authorized", then the close."""
    if not rc.try_send(w.connect(client_id, version=version)):
        raise AssertionError(f"connection closed before CONNECT (TLS: {rc.tls_error})")
    ack = connack_then_close(rc)
    assert ack is not None, f"closed without CONNACK (TLS: {rc.tls_error})"
    assert ack.rc == refused_code(version), f"expected CONNACK {refused_code(version):#x}, got {ack}"


def assert_tls_refused(rc: TlsRawClient, client_id: str, version: int, alert: str) -> None:
    """The TLS layer refuses the client certificate with `alert` (e.g. UNKNOWN_CA), at the
    handshake or at the first read; never a CONNACK."""
    if rc.tls_error is None and rc.try_send(w.connect(client_id, version=version)):
        try:
            seen = rc.wait_closed(5.0)
        except AssertionError:
            raise AssertionError(f"connection still open; packets: {rc.log}")
        assert not [p for p in seen if p.type == w.CONNACK], f"got past TLS: {seen}"
    assert rc.tls_error is not None, f"closed without a TLS error; packets: {rc.log}"
    assert alert in str(rc.tls_error), f"expected TLS alert {alert}, got {rc.tls_error!r}"


def assert_paho_refused(c: Client) -> str:
    """paho cannot get in: the TLS handshake or the first read fails, or CONNACK refuses.
    Returns how."""
    try:
        ack = c.connect(timeout=5, expect_ok=False)
    except ConnectionRefusedError:
        raise AssertionError("TCP connection refused: is the TLS listener up?")
    except (ssl.SSLError, ConnectionError, OSError, ConnectFailed) as e:
        assert not c.connected
        return f"failed: {e!r}"
    assert ack[0] != 0, f"connection accepted: CONNACK {ack}"
    assert not c.connected
    return f"CONNACK {ack[0]:#x}"


def connected_raw(tls_raw, dev: Device, version: int, client_id: str | None = None,
                  **kw) -> TlsRawClient:
    rc = tls_raw(dev, version, **kw)
    ack = rc.connect(client_id or dev.thing)
    assert ack.rc == 0, f"CONNACK refused: {ack} (TLS: {rc.tls_error})"
    return rc


def await_packet(rc: w.RawClient, ptype: int, timeout: float = 5.0) -> w.Packet:
    """The next packet of type `ptype`; PUBLISHes arriving meanwhile are kept for next_publish."""
    deadline = time.monotonic() + timeout
    stash = rc.__dict__.setdefault("stash", [])
    while True:
        pk = rc.recv(max(0.001, deadline - time.monotonic()))
        if pk.type == ptype:
            return pk
        if pk.type == w.PUBLISH:
            stash.append(pk)
            continue
        if pk.type != w.PINGRESP:
            raise AssertionError(f"expected {w.TYPE_NAMES[ptype]}, got {pk!r}")


def next_publish(rc: w.RawClient, timeout: float = 5.0) -> w.Packet:
    stash = rc.__dict__.setdefault("stash", [])
    if stash:
        return stash.pop(0)
    return await_packet(rc, w.PUBLISH, timeout)


def raw_publish_qos1(rc: w.RawClient, topic: str, payload: bytes, pid: int, retain=False) -> w.Packet:
    rc.publish(topic, payload, qos=1, pid=pid, retain=retain)
    ack = await_packet(rc, w.PUBACK)
    assert ack.pid == pid, ack
    return ack


def expect_cut_off(rc: w.RawClient, version: int, started: float, what: str) -> float:
    """The server ends the connection within LIVE_CHANGE_DEADLINE of `started`: MQTT 5 with
    DISCONNECT 0x87 first, 3.1.1 by closing. Returns the elapsed seconds."""
    left = max(0.0, started + LIVE_CHANGE_DEADLINE - time.monotonic())
    try:
        seen = rc.wait_closed(left)
    except AssertionError as e:
        raise AssertionError(f"{what}: the connection was not ended within {LIVE_CHANGE_DEADLINE}s: {e}")
    elapsed = time.monotonic() - started
    disconnects = [p for p in seen if p.type == w.DISCONNECT]
    if version == V5:
        assert disconnects and disconnects[-1].rc == NOT_AUTHORIZED, \
            f"{what}: expected DISCONNECT 0x87 before the close, got {seen}"
    else:
        assert not disconnects, f"{what}: a 3.1.1 server must not send DISCONNECT: {seen}"
    return elapsed


# ---------------------------------------------------------------------------------------------
# paho helpers

def track_acks(c: Client) -> dict:
    """Records the reason code of every PUBACK/PUBCOMP paho gets (mid -> code)."""
    acks: dict[int, int] = {}

    def on_publish(client, userdata, mid, reason_code, properties):
        with c.cv:
            acks[mid] = getattr(reason_code, "value", reason_code)
            c.cv.notify_all()
    c.c.on_publish = on_publish
    return acks


def publish_code(c: Client, acks: dict, topic: str, payload: bytes, qos: int = 1,
                 retain: bool = False, timeout: float = 5.0) -> int:
    info = c.publish(topic, payload, qos=qos, retain=retain, wait=False)
    return c._wait(lambda: info.mid in acks and (acks[info.mid],), timeout,
                   f"PUBACK for {topic}")[0]


def none_of(c: Client, pred, what: str) -> None:
    """Call after a fence (a later message from the same publisher has arrived): whatever was
    published before it has been routed, so what has not arrived by now never will."""
    got = c.matching(pred)
    assert not got, f"{what}: {[(m.topic, m.payload) for m in got]}"


@pytest.fixture
def watcher(clients):
    """An anonymous (plain TCP, allow-all on the shared broker) MQTT 5 client subscribed to
    `filter`: what really got routed."""
    def make(topic_filter: str, broker=None) -> Client:
        kw = {"broker": broker} if broker is not None else {}
        c = clients(V5, **kw)
        assert c.subscribe(topic_filter, qos=1) == [1]
        return c
    return make


# =============================================================================================
# the reference policy with paho

TRANSPORTS = [pytest.param("tcp", id="mqtts"), pytest.param("websockets", id="wss")]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_reference_policy_allows_own_topics_paho(clients, devices, make_policy, watcher,
                                                 version, transport):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    c = clients(version, client_id=dev.thing, tls=dev.tls, transport=transport)
    own = f"devices/{dev.thing}"
    outside = watcher(f"{own}/#")
    assert c.subscribe(f"{own}/#", qos=1) == [1]
    acks = track_acks(c)
    assert publish_code(c, acks, f"{own}/telemetry", b"t-1") == 0
    assert c.wait_message(topic=f"{own}/telemetry").payload == b"t-1"
    assert outside.wait_message(topic=f"{own}/telemetry").payload == b"t-1"
    # a message from elsewhere into the device's space reaches it
    outside.publish(f"{own}/cmd", b"reboot", qos=1)
    assert c.wait_message(topic=f"{own}/cmd").payload == b"reboot"
    # deeper levels are under devices/<thing>/ too
    c.publish(f"{own}/a/b/c", b"deep", qos=1)
    assert c.wait_message(topic=f"{own}/a/b/c").payload == b"deep"
    assert c.connected


@pytest.mark.parametrize("version", VERSIONS)
def test_reference_policy_denies_foreign_subscriptions_paho(clients, devices, make_policy, uid, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    other = f"{uid}-other"
    c = clients(version, client_id=dev.thing, tls=dev.tls)
    no = suback_denied(version)
    assert c.subscribe(f"devices/{other}/#", qos=1) == [no]
    assert c.subscribe("#", qos=1) == [no]
    assert c.subscribe("devices/+/telemetry", qos=1) == [no]
    # the device's own filter is allowed, and only the exact granted filter form
    assert c.subscribe(f"devices/{dev.thing}/telemetry", qos=1) == [no]
    mixed = c.subscribe([(f"devices/{dev.thing}/#", 1), (f"devices/{other}/#", 1), ("+/#", 0)])
    assert mixed == [1, no, no]
    # the connection stays and works
    assert c.connected
    c.publish(f"devices/{dev.thing}/after", b"still here", qos=1)
    assert c.wait_message(topic=f"devices/{dev.thing}/after").payload == b"still here"


def test_reference_policy_denied_publish_v5_paho(clients, devices, make_policy, watcher, uid):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    other = f"devices/{uid}-other"
    seen = watcher(f"{other}/#")
    c = clients(V5, client_id=dev.thing, tls=dev.tls)
    acks = track_acks(c)
    assert publish_code(c, acks, f"{other}/x", b"denied-1") == NOT_AUTHORIZED
    assert publish_code(c, acks, "elsewhere/x", b"denied-2") == NOT_AUTHORIZED
    c.publish(f"{other}/x", b"denied-qos0", qos=0)
    # still connected, and its own topics still work
    assert c.connected
    assert publish_code(c, acks, f"devices/{dev.thing}/ok", b"allowed") == 0
    # nothing of it was routed: fence through the same topic from an allowed publisher
    fence(seen, seen, f"{other}/x")
    assert not [m for m in seen.received if m.payload.startswith(b"denied")]
    assert c.connected and not c.disconnects


def test_reference_policy_denied_publish_v311_paho(clients, devices, make_policy, watcher, uid):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    other = f"devices/{uid}-other"
    seen = watcher(f"{other}/#")
    for qos in (1, 0):
        c = clients(V311, client_id=dev.thing, tls=dev.tls)
        c.publish(f"devices/{dev.thing}/ok", b"allowed", qos=1)
        c.publish_refused_by_disconnect(f"{other}/x", f"denied-q{qos}".encode(), qos=qos, timeout=5)
    fence(seen, seen, f"{other}/x")
    assert not [m for m in seen.received if m.payload.startswith(b"denied")]


@pytest.mark.parametrize("version", VERSIONS)
def test_device_cannot_connect_as_another_thing_paho(clients, devices, make_policy, uid, version):
    p = make_policy(REFERENCE)
    a = devices("a", [p])
    b = devices("b", [p])
    for cid in (b.thing, f"{uid}-nothing", a.thing.upper()):
        c = clients(version, client_id=cid, tls=a.tls, connect=False)
        ack = c.connect(expect_ok=False)
        assert ack[0] == paho_refused_code(version), f"{cid}: {ack}"
    # each device as itself is fine
    clients(version, client_id=a.thing, tls=a.tls)
    clients(version, client_id=b.thing, tls=b.tls)


# =============================================================================================
# the reference policy at the packet level (raw client over TLS)

@pytest.mark.parametrize("version", VERSIONS)
def test_denied_packets_raw(tls_raw, devices, make_policy, watcher, uid, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    own, other = f"devices/{dev.thing}", f"devices/{uid}-other"
    seen = watcher(f"{other}/#")
    rc = connected_raw(tls_raw, dev, version)
    ack = rc.subscribe([(f"{own}/#", 1), (f"{other}/#", 1)], pid=1)
    assert ack.rcs == [1, suback_denied(version)], ack
    assert raw_publish_qos1(rc, f"{own}/a", b"ok", pid=2).rc == 0
    assert next_publish(rc).payload == b"ok"
    if version == V5:
        assert raw_publish_qos1(rc, f"{other}/a", b"denied-1", pid=3).rc == NOT_AUTHORIZED
        rc.publish(f"{other}/a", b"denied-2", qos=2, pid=4)
        rec = await_packet(rc, w.PUBREC)
        assert (rec.pid, rec.rc) == (4, NOT_AUTHORIZED), rec
        rc.publish(f"{other}/a", b"denied-0", qos=0)
        # the connection stays: a round trip still works
        assert raw_publish_qos1(rc, f"{own}/b", b"ok-2", pid=5).rc == 0
        got = next_publish(rc)
        assert got.payload == b"ok-2", got
    else:
        rc.publish(f"{other}/a", b"denied-1", qos=1, pid=3)
        seen_before_close = rc.wait_closed(5)
        assert not [p for p in seen_before_close if p.type in (w.PUBACK, w.DISCONNECT)], seen_before_close
    fence(seen, seen, f"{other}/x")
    assert not [m for m in seen.received if m.payload.startswith(b"denied")]


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_as_another_thing_is_refused_raw(broker, tls_raw, devices, make_policy, version):
    p = make_policy(REFERENCE)
    a = devices("a", [p])
    b = devices("b", [p])
    assert_connect_refused(tls_raw(a, version), b.thing, version)
    # over the WSS listener too
    ctx = ssl.create_default_context(cafile=str(broker.ca_pem))
    ctx.load_cert_chain(str(a.cert), str(a.key))
    sock = ctx.wrap_socket(socket.create_connection((broker.host, broker.ports["wss"]), timeout=5),
                           server_hostname="localhost")
    ws = w.WsRawClient(broker.host, broker.ports["wss"], version, sock=sock)
    try:
        ws.send(w.connect(b.thing, version=version))
        ack = connack_then_close(ws)
        assert ack is not None and ack.rc == refused_code(version), ack
    finally:
        ws.close()


# =============================================================================================
# the reference policy with mosquitto_pub / mosquitto_sub

def _mosq_tls(broker, dev: Device, version: str, client_id: str) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(broker.ports["mqtts"]), "-V", version, "-i", client_id,
            "--cafile", str(broker.ca_pem), "--cert", str(dev.cert), "--key", str(dev.key)]


def mosquitto(tool: str, args: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-d", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def subs():
    from test_interop import Sub
    made = []

    def make(args):
        s = Sub(args)
        made.append(s)
        return s
    yield make
    for s in made:
        s.kill()


@need_cli_clients
@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_reference_policy_allowed_mosquitto_clients(broker, devices, make_policy, subs, watcher,
                                                    clients, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    own = f"devices/{dev.thing}"
    # the device subscribes to its own space and receives what is published there
    s = subs([*_mosq_tls(broker, dev, version, dev.thing), "-t", f"{own}/#", "-q", "1",
              "-C", "1", "-W", "20"])
    granted = s.wait_line(lambda ln: ln.startswith("Subscribed (mid: 1):"), what="the SUBACK codes")
    assert granted == "Subscribed (mid: 1): 1", s.lines
    operator = clients(V5)
    operator.publish(f"{own}/cmd", b"from-operator", qos=1)
    assert s.wait_exit() == 0, s.lines
    assert s.messages() == [["0", "1", f"{own}/cmd", "from-operator"]]
    # the device publishes under its own space; the message is routed
    seen = watcher(f"{own}/#")
    out = mosquitto("mosquitto_pub", [*_mosq_tls(broker, dev, version, dev.thing), "-t",
                                      f"{own}/telemetry", "-q", "1", "-m", "cli-telemetry"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "received PUBACK" in out.stdout + out.stderr
    assert seen.wait_message(topic=f"{own}/telemetry").payload == b"cli-telemetry"


@need_cli_clients
@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_reference_policy_denied_mosquitto_clients(broker, devices, make_policy, watcher, uid, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    peer = devices("peer", [p])
    other = f"devices/{peer.thing}"
    seen = watcher(f"{other}/#")
    v5 = version == "mqttv5"

    # SUBSCRIBE outside its space: SUBACK 0x80 / 0x87, mosquitto_sub reports the denial
    out = mosquitto("mosquitto_sub", [*_mosq_tls(broker, dev, version, dev.thing), "-t",
                                      f"{other}/#", "-q", "1", "-W", "10"])
    text = out.stdout + out.stderr
    assert f"Subscribed (mid: 1): {135 if v5 else 128}" in text, text
    assert "All subscription requests were denied" in text, text

    # PUBLISH outside its space
    out = mosquitto("mosquitto_pub", [*_mosq_tls(broker, dev, version, dev.thing), "-t",
                                      f"{other}/x", "-q", "1", "-m", "denied-cli"])
    text = out.stdout + out.stderr
    if v5:
        assert "received PUBACK (Mid: 1, RC:135)" in text, text
        assert "Not authorized" in text, text
    else:
        assert out.returncode != 0, f"3.1.1 publisher not disconnected:\n{text}"
        assert "received PUBACK" not in text, text
        assert "connection was lost" in text.lower(), text

    # CONNECT with another thing's client id
    out = mosquitto("mosquitto_pub", [*_mosq_tls(broker, dev, version, peer.thing), "-t",
                                      f"{other}/x", "-q", "1", "-m", "denied-cli-2"])
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert f"received CONNACK ({135 if v5 else 5})" in text, text

    fence(seen, seen, f"{other}/x")
    assert not [m for m in seen.received if m.payload.startswith(b"denied")]


# =============================================================================================
# policy semantics

@pytest.mark.parametrize("version", VERSIONS)
def test_receive_filters_deliveries(clients, devices, make_policy, uid, version):
    """Allowed to subscribe to everything, allowed to receive only its own topics: the rest is
    silently not delivered."""
    p = make_policy(document(
        allow("iot:Connect", f"{ARN}:client/{THING}"),
        allow("iot:Subscribe", f"{ARN}:topicfilter/*"),
        allow("iot:Receive", f"{ARN}:topic/devices/{THING}/*"),
    ))
    dev = devices("dev", [p])
    sub = clients(version, client_id=dev.thing, tls=dev.tls)
    assert sub.subscribe("#", qos=1) == [1]
    assert sub.subscribe(f"{uid}/#", qos=1) == [1]
    pub = clients(V5)  # anonymous, allow-all
    for t in (f"devices/{uid}-other/x", f"{uid}/x", f"devices/{dev.thing}x/y", f"devices/{dev.thing}"):
        pub.publish(t, b"not-for-you", qos=1)
    pub.publish(f"devices/{dev.thing}/x", b"yours", qos=1)
    got = sub.wait_message(pred=lambda m: m.payload == b"yours")
    assert got.topic == f"devices/{dev.thing}/x"
    none_of(sub, lambda m: m.payload == b"not-for-you", "delivered despite iot:Receive")
    assert all(m.topic.startswith(f"devices/{dev.thing}/") for m in sub.received), \
        [m.topic for m in sub.received]
    assert sub.connected


def test_receive_filters_retained_and_shared_deliveries(clients, devices, make_policy, uid):
    """Receive also governs retained messages sent at SUBSCRIBE and shared-subscription
    deliveries."""
    p = make_policy(document(
        allow("iot:Connect", f"{ARN}:client/{THING}"),
        allow("iot:Subscribe", f"{ARN}:topicfilter/*"),
        allow("iot:Receive", f"{ARN}:topic/{uid}/{THING}/*"),
    ))
    dev = devices("dev", [p])
    operator = clients(V5)
    operator.publish(f"{uid}/{uid}-other/state", b"retained-not-for-you", qos=1, retain=True)
    operator.publish(f"{uid}/{dev.thing}/state", b"retained-yours", qos=1, retain=True)
    try:
        sub = clients(V5, client_id=dev.thing, tls=dev.tls)
        assert sub.subscribe(f"{uid}/#", qos=1) == [1]
        assert sub.wait_payload(b"retained-yours").retain
        operator.publish(f"{uid}/{uid}-other/x", b"not-for-you", qos=1)
        operator.publish(f"{uid}/{dev.thing}/x", b"yours-1", qos=1)
        sub.wait_payload(b"yours-1")
        # the same through a shared subscription alone
        sub.unsubscribe(f"{uid}/#")
        assert sub.subscribe(f"$share/g-{uid}/{uid}/#", qos=1) == [1]
        operator.publish(f"{uid}/{uid}-other/x", b"not-for-you-shared", qos=1)
        operator.publish(f"{uid}/{dev.thing}/x", b"yours-2", qos=1)
        sub.wait_payload(b"yours-2")
        none_of(sub, lambda m: b"not-for-you" in m.payload, "delivered despite iot:Receive")
    finally:
        operator.publish(f"{uid}/{uid}-other/state", b"", qos=1, retain=True)
        operator.publish(f"{uid}/{dev.thing}/state", b"", qos=1, retain=True)


def test_topic_alias_does_not_bypass_publish_checks(tls_raw, devices, make_policy, watcher, uid):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    other = f"devices/{uid}-other"
    seen = watcher(f"{other}/#")
    rc = connected_raw(tls_raw, dev, V5)
    own = f"devices/{dev.thing}/a"
    # an alias for an allowed topic works
    rc.publish(own, b"ok-1", qos=1, pid=1, props={"TopicAlias": 1})
    assert await_packet(rc, w.PUBACK).rc == 0
    rc.publish("", b"ok-2", qos=1, pid=2, props={"TopicAlias": 1})
    assert await_packet(rc, w.PUBACK).rc == 0
    # setting an alias to a forbidden topic is refused, and so is using it afterwards
    rc.publish(f"{other}/x", b"denied-1", qos=1, pid=3, props={"TopicAlias": 2})
    assert await_packet(rc, w.PUBACK).rc == NOT_AUTHORIZED
    rc.publish("", b"denied-2", qos=1, pid=4, props={"TopicAlias": 2})
    try:
        ack = await_packet(rc, w.PUBACK)
        assert ack.rc >= 0x80, f"PUBLISH through an alias of a forbidden topic accepted: {ack}"
    except w.Closed:
        pass  # refusing the unknown alias as a protocol error is fine too
    # re-pointing an allowed alias at a forbidden topic
    rc2 = connected_raw(tls_raw, dev, V5)
    rc2.publish(own, b"ok-3", qos=1, pid=1, props={"TopicAlias": 1})
    assert await_packet(rc2, w.PUBACK).rc == 0
    rc2.publish(f"{other}/y", b"denied-3", qos=1, pid=2, props={"TopicAlias": 1})
    assert await_packet(rc2, w.PUBACK).rc == NOT_AUTHORIZED
    rc2.publish("", b"denied-4", qos=1, pid=3, props={"TopicAlias": 1})
    ack = await_packet(rc2, w.PUBACK)
    assert ack.rc in (0, NOT_AUTHORIZED), ack  # alias 1 is still `own` (allowed) or refused
    fence(seen, seen, f"{other}/x")
    assert not [m for m in seen.received if m.payload.startswith(b"denied")], \
        [(m.topic, m.payload) for m in seen.received]


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_a_forbidden_topic_is_not_published(tls_raw, devices, make_policy, watcher, uid, version):
    """A will the device could not publish itself: refused at CONNECT or never published."""
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    other = f"devices/{uid}-other"
    seen = watcher(f"{other}/#")
    rc = tls_raw(dev, version)
    rc.send(w.connect(dev.thing, version=version,
                      will={"topic": f"{other}/will", "payload": b"denied-will", "qos": 1}))
    ack = rc.expect(w.CONNACK)
    if ack.rc == 0:
        rc.abort()  # an abnormal end: the will would be due now
    else:
        assert ack.rc == refused_code(version), ack
    # an allowed will of another connection, dropped after this one: once it is routed, the
    # forbidden one (due earlier) would have been too
    ok = tls_raw(devices("ok", [make_policy(ALLOW_ALL)]), version)
    assert ok.connect(f"{uid}-ok", will={"topic": f"{other}/will", "payload": b"allowed-will",
                                          "qos": 1}).rc == 0
    ok.abort()
    seen.wait_payload(b"allowed-will")
    assert b"denied-will" not in seen.payloads()


def test_offline_queued_messages_obey_receive_at_reconnect(iot, tls_raw, devices, make_policy, clients):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    own = f"devices/{dev.thing}"
    rc = tls_raw(dev, V5)
    assert rc.connect(dev.thing, clean=False, props={"SessionExpiryInterval": 300}).rc == 0
    assert rc.subscribe([(f"{own}/#", 1)]).rcs == [1]
    rc.disconnect()
    iot.create_policy_version(policyName=p, setAsDefault=True, policyDocument=document(
        *reference_statements(), deny("iot:Receive", f"{ARN}:topic/{own}/secret")))
    operator = clients(V5)
    operator.publish(f"{own}/secret", b"queued-secret", qos=1)
    operator.publish(f"{own}/open", b"queued-open", qos=1)
    again = tls_raw(dev, V5)
    ack = again.connect(dev.thing, clean=False, props={"SessionExpiryInterval": 0})
    assert ack.rc == 0 and ack.session_present, ack
    got = next_publish(again)
    assert got.payload == b"queued-open", f"queued message delivered despite iot:Receive: {got}"


@pytest.mark.parametrize("version", VERSIONS)
def test_explicit_deny_wins(clients, devices, make_policy, tls_raw, watcher, version):
    own = f"devices/{THING}"
    grant = make_policy(document(allow("iot:*", "*")))
    refuse = make_policy(document(
        deny("iot:Publish", f"{ARN}:topic/{own}/secret"),
        deny(["iot:Subscribe"], f"{ARN}:topicfilter/{own}/secret"),
        deny("iot:Receive", f"{ARN}:topic/{own}/hidden"),
    ))
    dev = devices("dev", [grant, refuse])
    mine = f"devices/{dev.thing}"
    seen = watcher(f"{mine}/#")
    c = clients(version, client_id=dev.thing, tls=dev.tls)
    assert c.subscribe(f"{mine}/secret", qos=1) == [suback_denied(version)]
    assert c.subscribe(f"{mine}/#", qos=1) == [1]
    seen.publish(f"{mine}/hidden", b"hidden", qos=1)
    seen.publish(f"{mine}/visible", b"visible", qos=1)
    assert c.wait_message(topic=f"{mine}/visible").payload == b"visible"
    if version == V5:
        acks = track_acks(c)
        assert publish_code(c, acks, f"{mine}/secret", b"denied") == NOT_AUTHORIZED
        assert publish_code(c, acks, f"{mine}/open", b"fine") == 0
    else:
        c.publish(f"{mine}/open", b"fine", qos=1)
        c.publish_refused_by_disconnect(f"{mine}/secret", b"denied", qos=1, timeout=5)
    fence(seen, seen, f"{mine}/x")
    assert b"denied" not in seen.payloads()
    assert b"hidden" not in c.payloads()

    # A Deny on iot:Connect in one policy beats an Allow in another.
    locked = make_policy(document(deny("iot:Connect", f"{ARN}:client/{THING}")))
    dev2 = devices("dev2", [grant, locked])
    assert_connect_refused(tls_raw(dev2, version), dev2.thing, version)
    # ... and within one policy as well
    both = make_policy(document(allow("iot:*", "*"), deny("iot:Connect", "*")))
    dev3 = devices("dev3", [both])
    assert_connect_refused(tls_raw(dev3, version), dev3.thing, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_thing_group_policies_apply(iot, clients, devices, make_policy, tls_raw, uid, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [])  # thing attached, no policy of its own
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)

    group = iot.create_thing_group(thingGroupName=f"{uid}-g")
    iot.attach_policy(policyName=p, target=group["thingGroupArn"])
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)  # not in the group yet
    iot.add_thing_to_thing_group(thingGroupName=f"{uid}-g", thingName=dev.thing)

    c = clients(version, client_id=dev.thing, tls=dev.tls)
    assert c.subscribe(f"devices/{dev.thing}/#") == [1]
    assert c.subscribe(f"devices/{uid}-x/#") == [suback_denied(version)]
    c.publish(f"devices/{dev.thing}/t", b"via-group", qos=1)
    assert c.wait_message(topic=f"devices/{dev.thing}/t").payload == b"via-group"


def test_parent_thing_group_policies_are_inherited(iot, clients, devices, make_policy, tls_raw, uid):
    p = make_policy(REFERENCE)
    iot.create_thing_group(thingGroupName=f"{uid}-parent")
    parent = iot.describe_thing_group(thingGroupName=f"{uid}-parent")["thingGroupArn"]
    iot.create_thing_group(thingGroupName=f"{uid}-child", parentGroupName=f"{uid}-parent")
    iot.attach_policy(policyName=p, target=parent)
    dev = devices("dev", [])
    iot.add_thing_to_thing_group(thingGroupName=f"{uid}-child", thingName=dev.thing)
    c = clients(V5, client_id=dev.thing, tls=dev.tls)
    assert c.subscribe(f"devices/{dev.thing}/#") == [1]


def test_group_policy_needs_the_thing_bound_to_the_connection(clients, iot, devices, make_policy,
                                                              tls_raw, uid):
    """Group policies apply through the thing, and the thing is the connection's only when the
    client id is its name."""
    p = make_policy(document(allow("iot:*", "*")))
    iot.create_thing_group(thingGroupName=f"{uid}-g")
    iot.attach_policy(policyName=p, target=iot.describe_thing_group(
        thingGroupName=f"{uid}-g")["thingGroupArn"])
    dev = devices("dev", [])
    iot.add_thing_to_thing_group(thingGroupName=f"{uid}-g", thingName=dev.thing)
    clients(V5, client_id=dev.thing, tls=dev.tls).disconnect()
    assert_connect_refused(tls_raw(dev, V5), f"{dev.thing}-alias", V5)


@pytest.mark.parametrize("version", VERSIONS)
def test_thing_type_attribute_client_id_and_common_name_variables(
        iot, clients, make_policy, watcher, tmp_path, uid, version):
    ttype = f"{uid}-type"
    iot.create_thing_type(thingTypeName=ttype)
    thing = f"{uid}-dev"
    iot.create_thing(thingName=thing, thingTypeName=ttype,
                     attributePayload={"attributes": {"site": "plant7", "line": "L2"}})
    cn = f"cn-{uid}"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    made = iot.create_certificate_from_csr(
        certificateSigningRequest=csr.public_bytes(serialization.Encoding.PEM).decode(),
        setAsActive=True)
    cert, keyfile = write_pair(tmp_path, "csr-dev", made["certificatePem"], key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode())
    p = make_policy(document(
        allow("iot:Connect", f"{ARN}:client/{CLIENT_ID}"),
        allow(["iot:Publish", "iot:Receive"],
              f"{ARN}:topic/types/{THING_TYPE}/*",
              f"{ARN}:topic/sites/${{iot:Connection.Thing.Attributes[site]}}/*",
              f"{ARN}:topic/cn/{COMMON_NAME}/*",
              f"{ARN}:topic/ids/{CLIENT_ID}/*"),
        allow("iot:Subscribe", f"{ARN}:topicfilter/types/{THING_TYPE}/#"),
    ))
    iot.attach_policy(policyName=p, target=made["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=made["certificateArn"])

    c = clients(version, client_id=thing, tls=(cert, keyfile))
    assert c.subscribe(f"types/{ttype}/#") == [1]
    assert c.subscribe(f"types/{ttype}-other/#") == [suback_denied(version)]
    allowed = [f"types/{ttype}/a", "sites/plant7/a", f"cn/{cn}/a", f"ids/{thing}/a"]
    denied = [f"types/{ttype}-other/a", "sites/plant8/a", "sites/L2/a", f"cn/{cn}x/a",
              f"ids/{thing}x/a"]
    if version == V5:
        acks = track_acks(c)
        for t in allowed:
            assert publish_code(c, acks, t, b"x") == 0, t
        for t in denied:
            assert publish_code(c, acks, t, b"x") == NOT_AUTHORIZED, t
    else:
        for t in allowed:
            c.publish(t, b"x", qos=1)
    c.publish(f"types/{ttype}/b", b"typed", qos=1)
    assert c.wait_message(topic=f"types/{ttype}/b").payload == b"typed"

    # Another client id on the same certificate: the thing (and its type and attributes) is not
    # the connection's, while the client id and common name variables still resolve.
    c.disconnect()
    alias = f"{thing}-alias"
    c2 = clients(V5, client_id=alias, tls=(cert, keyfile))
    acks = track_acks(c2)
    assert c2.subscribe(f"types/{ttype}/#") == [NOT_AUTHORIZED]
    assert publish_code(c2, acks, f"types/{ttype}/a", b"x") == NOT_AUTHORIZED
    assert publish_code(c2, acks, "sites/plant7/a", b"x") == NOT_AUTHORIZED
    assert publish_code(c2, acks, f"ids/{alias}/a", b"x") == 0
    assert publish_code(c2, acks, f"cn/{cn}/a", b"x") == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_publish_needs_retain_publish(clients, devices, make_policy, tls_raw, watcher, version):
    p = make_policy(document(
        allow("iot:Connect", f"{ARN}:client/{THING}"),
        allow(["iot:Publish", "iot:Receive"], f"{ARN}:topic/devices/{THING}/*"),
        allow("iot:Subscribe", f"{ARN}:topicfilter/devices/{THING}/#"),
        allow("iot:RetainPublish", f"{ARN}:topic/devices/{THING}/state",
              f"{ARN}:topic/retain-only/{THING}"),
    ))
    dev = devices("dev", [p])
    own = f"devices/{dev.thing}"
    rc = connected_raw(tls_raw, dev, version)
    assert raw_publish_qos1(rc, f"{own}/state", b"retained-ok", pid=1, retain=True).rc == 0
    assert raw_publish_qos1(rc, f"{own}/other", b"plain-ok", pid=2).rc == 0
    if version == V5:
        assert raw_publish_qos1(rc, f"{own}/other", b"retained-denied", pid=3,
                                retain=True).rc == NOT_AUTHORIZED
        # RetainPublish alone is not enough: a retained publish needs iot:Publish too
        assert raw_publish_qos1(rc, f"retain-only/{dev.thing}", b"retained-denied", pid=4,
                                retain=True).rc == NOT_AUTHORIZED
        rc.disconnect()
    else:
        rc.publish(f"{own}/other", b"retained-denied", qos=1, pid=3, retain=True)
        seen = rc.wait_closed(5)
        assert not [p for p in seen if p.type == w.PUBACK], seen
    # What was retained: the allowed one only (a fresh subscriber gets retained messages).
    late = clients(V5)
    assert late.subscribe(f"{own}/#", qos=1) == [1]
    assert late.wait_message(topic=f"{own}/state").payload == b"retained-ok"
    fence(late, late, f"{own}/fence")
    assert [m.payload for m in late.received if m.retain] == [b"retained-ok"]
    late.publish(f"{own}/state", b"", qos=1, retain=True)  # clear it


# =============================================================================================
# live changes

@pytest.mark.parametrize("status", ["REVOKED", "INACTIVE"])
@pytest.mark.parametrize("version", VERSIONS)
def test_certificate_status_change_cuts_off_live_connection(iot, devices, make_policy, tls_raw,
                                                            version, status):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    bystander = devices("by", [p])
    rc = connected_raw(tls_raw, dev, version)
    other = connected_raw(tls_raw, bystander, version)
    rc.subscribe([(f"devices/{dev.thing}/#", 1)])
    started = time.monotonic()
    iot.update_certificate(certificateId=dev.cert_id, newStatus=status)
    expect_cut_off(rc, version, started, f"UpdateCertificate {status}")
    # reconnecting is refused
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)
    # another device is unaffected
    other.send(w.pingreq())
    assert other.expect(w.PINGRESP)
    if status == "INACTIVE":
        iot.update_certificate(certificateId=dev.cert_id, newStatus="ACTIVE")
        connected_raw(tls_raw, dev, version).disconnect()


def test_revoke_cuts_off_paho_and_mosquitto_sub(iot, clients, devices, make_policy, subs, broker):
    """Real clients see it too: paho gets DISCONNECT 0x87; mosquitto_sub is disconnected."""
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    c = clients(V5, client_id=dev.thing, tls=dev.tls)
    started = time.monotonic()
    iot.update_certificate(certificateId=dev.cert_id, newStatus="REVOKED")
    code, _ = c.wait_disconnected(timeout=LIVE_CHANGE_DEADLINE)
    assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE
    assert code == NOT_AUTHORIZED, c.disconnects
    again = clients(V5, client_id=dev.thing, tls=dev.tls, connect=False)
    assert again.connect(expect_ok=False)[0] == NOT_AUTHORIZED

    if not have_mosquitto_clients():
        return
    dev2 = devices("dev2", [p])
    s = subs([*_mosq_tls(broker, dev2, "mqttv5", dev2.thing), "-t", f"devices/{dev2.thing}/#",
              "-q", "1"])
    s.wait_subscribed()
    started = time.monotonic()
    iot.update_certificate(certificateId=dev2.cert_id, newStatus="REVOKED")
    s.wait_line(lambda ln: ln == "Received DISCONNECT (135)", timeout=LIVE_CHANGE_DEADLINE,
                what="the server's DISCONNECT 0x87")
    assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE
    s.wait_exit(10)  # mosquitto_sub ends on the server's DISCONNECT


@pytest.mark.parametrize("version", VERSIONS)
def test_detach_policy_cuts_off_live_connection(iot, devices, make_policy, tls_raw, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    rc = connected_raw(tls_raw, dev, version)
    started = time.monotonic()
    iot.detach_policy(policyName=p, target=dev.arn)
    expect_cut_off(rc, version, started, "DetachPolicy")
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)
    iot.attach_policy(policyName=p, target=dev.arn)
    connected_raw(tls_raw, dev, version).disconnect()


def test_detaching_one_of_two_policies_keeps_the_connection(iot, devices, make_policy, tls_raw):
    p1 = make_policy(REFERENCE)
    p2 = make_policy(REFERENCE)
    dev = devices("dev", [p1, p2])
    rc = connected_raw(tls_raw, dev, V5)
    iot.detach_policy(policyName=p1, target=dev.arn)
    # still allowed: the next publish is fine and the connection is not ended
    assert raw_publish_qos1(rc, f"devices/{dev.thing}/x", b"x", pid=1).rc == 0
    rc.send(w.pingreq())
    assert rc.expect(w.PINGRESP)


@pytest.mark.parametrize("version", VERSIONS)
def test_detach_thing_principal_cuts_off_live_connection(iot, devices, make_policy, tls_raw, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    rc = connected_raw(tls_raw, dev, version)
    started = time.monotonic()
    iot.detach_thing_principal(thingName=dev.thing, principal=dev.arn)
    expect_cut_off(rc, version, started, "DetachThingPrincipal")
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)


@pytest.mark.parametrize("change", ["RemoveThingFromThingGroup", "DetachPolicy"])
def test_losing_the_group_policy_cuts_off_live_connection(iot, devices, make_policy, tls_raw, uid, change):
    p = make_policy(REFERENCE)
    group = f"{uid}-g"
    group_arn = iot.create_thing_group(thingGroupName=group)["thingGroupArn"]
    iot.attach_policy(policyName=p, target=group_arn)
    dev = devices("dev", [])
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=dev.thing)
    rc = connected_raw(tls_raw, dev, V5)
    started = time.monotonic()
    if change == "DetachPolicy":
        iot.detach_policy(policyName=p, target=group_arn)
    else:
        iot.remove_thing_from_thing_group(thingGroupName=group, thingName=dev.thing)
    expect_cut_off(rc, V5, started, change)
    assert_connect_refused(tls_raw(dev, V5), dev.thing, V5)


def test_revoke_cuts_off_a_wss_connection(iot, clients, devices, make_policy):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    c = clients(V5, client_id=dev.thing, tls=dev.tls, transport="websockets")
    started = time.monotonic()
    iot.update_certificate(certificateId=dev.cert_id, newStatus="REVOKED")
    code, _ = c.wait_disconnected(timeout=LIVE_CHANGE_DEADLINE)
    assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE
    assert code == NOT_AUTHORIZED, c.disconnects
    again = clients(V5, client_id=dev.thing, tls=dev.tls, transport="websockets", connect=False)
    assert again.connect(expect_ok=False)[0] == NOT_AUTHORIZED


@pytest.mark.parametrize("version", VERSIONS)
def test_new_default_version_without_connect_cuts_off(iot, devices, make_policy, tls_raw, version):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    rc = connected_raw(tls_raw, dev, version)
    started = time.monotonic()
    no_connect = [s for s in reference_statements() if s["Action"] != "iot:Connect"]
    iot.create_policy_version(policyName=p, policyDocument=document(*no_connect), setAsDefault=True)
    expect_cut_off(rc, version, started, "CreatePolicyVersion without iot:Connect")
    assert_connect_refused(tls_raw(dev, version), dev.thing, version)
    # Back to version 1 (SetDefaultPolicyVersion): connecting works again.
    iot.set_default_policy_version(policyName=p, policyVersionId="1")
    connected_raw(tls_raw, dev, version).disconnect()


def test_set_default_version_without_connect_cuts_off(iot, devices, make_policy, tls_raw):
    p = make_policy(REFERENCE)
    no_connect = [s for s in reference_statements() if s["Action"] != "iot:Connect"]
    iot.create_policy_version(policyName=p, policyDocument=document(*no_connect), setAsDefault=False)
    dev = devices("dev", [p])
    rc = connected_raw(tls_raw, dev, V5)
    started = time.monotonic()
    iot.set_default_policy_version(policyName=p, policyVersionId="2")
    expect_cut_off(rc, V5, started, "SetDefaultPolicyVersion without iot:Connect")


def test_new_version_denying_a_topic_applies_to_the_next_publish(iot, devices, make_policy, tls_raw):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    own = f"devices/{dev.thing}"
    rc = connected_raw(tls_raw, dev, V5)
    assert rc.subscribe([(f"{own}/#", 1)]).rcs == [1]
    assert raw_publish_qos1(rc, f"{own}/valve", b"v1", pid=1).rc == 0  # now cached as allowed
    assert next_publish(rc).payload == b"v1"
    iot.create_policy_version(policyName=p, setAsDefault=True, policyDocument=document(
        *reference_statements(), deny(["iot:Publish", "iot:Subscribe"],
                                      f"{ARN}:topic/{own}/valve", f"{ARN}:topicfilter/{own}/valve")))
    # the very next PUBLISH, no waiting
    assert raw_publish_qos1(rc, f"{own}/valve", b"v2", pid=2).rc == NOT_AUTHORIZED
    assert raw_publish_qos1(rc, f"{own}/other", b"o", pid=3).rc == 0
    assert next_publish(rc).payload == b"o"  # v2 was not routed: o is next
    assert rc.subscribe([(f"{own}/valve", 1)], pid=4).rcs == [NOT_AUTHORIZED]
    # and back
    iot.set_default_policy_version(policyName=p, policyVersionId="1")
    assert raw_publish_qos1(rc, f"{own}/valve", b"v3", pid=5).rc == 0
    assert next_publish(rc).payload == b"v3"


def test_new_version_denying_receive_stops_deliveries(iot, devices, make_policy, tls_raw, clients):
    p = make_policy(REFERENCE)
    dev = devices("dev", [p])
    own = f"devices/{dev.thing}"
    rc = connected_raw(tls_raw, dev, V5)
    assert rc.subscribe([(f"{own}/#", 1)]).rcs == [1]
    operator = clients(V5)
    operator.publish(f"{own}/a", b"before", qos=1)
    assert next_publish(rc).payload == b"before"
    iot.create_policy_version(policyName=p, setAsDefault=True, policyDocument=document(
        *reference_statements(), deny("iot:Receive", f"{ARN}:topic/{own}/a")))
    operator.publish(f"{own}/a", b"after", qos=1)
    operator.publish(f"{own}/b", b"marker", qos=1)
    got = next_publish(rc)
    assert got.payload == b"marker", f"delivered despite the new Deny on iot:Receive: {got}"


# =============================================================================================
# which certificates get in at all

@pytest.mark.parametrize("version", VERSIONS)
def test_unregistered_certificate_of_the_builtin_ca_is_refused(broker, tls_raw, tmp_path, uid, version):
    cert, key = pki.make_client_cert(broker.ca_pem, broker.ca_key, f"unregistered-{uid}", tmp_path)
    assert_connect_refused(tls_raw((cert, key), version), f"unregistered-{uid}", version)


@pytest.mark.parametrize("version", VERSIONS)
def test_inactive_and_policyless_certificates_are_refused(iot, devices, make_policy, tls_raw, version):
    p = make_policy(document(allow("iot:*", "*")))
    inactive = devices("inactive", [p], active=False)
    assert_connect_refused(tls_raw(inactive, version), inactive.thing, version)
    bare = devices("bare", [])
    assert_connect_refused(tls_raw(bare, version), bare.thing, version)
    # the same certificates once fixed
    iot.update_certificate(certificateId=inactive.cert_id, newStatus="ACTIVE")
    connected_raw(tls_raw, inactive, version).disconnect()
    iot.attach_policy(policyName=p, target=bare.arn)
    connected_raw(tls_raw, bare, version).disconnect()


def test_refused_certificates_with_paho_and_mosquitto(broker, iot, clients, devices, make_policy, uid):
    p = make_policy(REFERENCE)
    revoked = devices("revoked", [p])
    iot.update_certificate(certificateId=revoked.cert_id, newStatus="REVOKED")
    for version in (V311, V5):
        c = clients(version, client_id=revoked.thing, tls=revoked.tls, connect=False)
        assert c.connect(expect_ok=False)[0] == paho_refused_code(version)
    if not have_mosquitto_clients():
        return
    for version, code in (("mqttv311", 5), ("mqttv5", 135)):
        out = mosquitto("mosquitto_pub", [*_mosq_tls(broker, revoked, version, revoked.thing),
                                          "-t", f"devices/{revoked.thing}/x", "-m", "x", "-q", "1"])
        text = out.stdout + out.stderr
        assert out.returncode != 0 and f"received CONNACK ({code})" in text, text


def _leaf_signed_by(ca_cert, ca_key, cn: str, not_before, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def _now():
    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
@pytest.mark.parametrize("version", VERSIONS)
def test_expired_certificate_is_refused(broker, iot, clients, make_policy, tls_raw, tmp_path, uid,
                                        version, when):
    ca_cert, ca_key = pki.load_ca(broker.ca_pem, broker.ca_key)
    validity = ((_now() - dt.timedelta(days=3), _now() - dt.timedelta(days=1)) if when == "expired"
                else (_now() + dt.timedelta(days=1), _now() + dt.timedelta(days=3)))
    cert_pem, key_pem = _leaf_signed_by(ca_cert, ca_key, f"{when}-{uid}", *validity)
    thing = f"{uid}-expired"
    iot.create_thing(thingName=thing)
    registered = None
    try:
        registered = iot.register_certificate_without_ca(certificatePem=cert_pem, status="ACTIVE")
    except ClientError as e:  # refusing to register an expired certificate is fine too
        assert e.response["Error"]["Code"] == "CertificateValidationException", e.response
    if registered:
        iot.attach_policy(policyName=make_policy(ALLOW_ALL), target=registered["certificateArn"])
        iot.attach_thing_principal(thingName=thing, principal=registered["certificateArn"])
    pair = write_pair(tmp_path, "expired", cert_pem, key_pem)
    assert_tls_refused(tls_raw(pair, version), thing, version, alert="CERTIFICATE_EXPIRED")
    assert_paho_refused(clients(version, client_id=thing, tls=pair, connect=False))


@pytest.mark.parametrize("version", VERSIONS)
def test_certificate_from_unknown_ca_is_refused_at_tls(broker, iot, clients, make_policy, tls_raw,
                                                       tmp_path, uid, version):
    """Even registered (RegisterCertificateWithoutCA, ACTIVE, allow-all policy): its CA is not
    trusted, so the handshake fails."""
    pki.make_ca(tmp_path / "stranger" / "ca.pem", tmp_path / "stranger" / "ca.key", cn=f"stranger {uid}")
    ca_cert, ca_key = pki.load_ca(tmp_path / "stranger" / "ca.pem", tmp_path / "stranger" / "ca.key")
    cert_pem, key_pem = _leaf_signed_by(ca_cert, ca_key, f"stranger-{uid}",
                                        _now() - dt.timedelta(hours=1), _now() + dt.timedelta(days=1))
    thing = f"{uid}-stranger"
    iot.create_thing(thingName=thing)
    arn = iot.register_certificate_without_ca(certificatePem=cert_pem, status="ACTIVE")["certificateArn"]
    iot.attach_policy(policyName=make_policy(ALLOW_ALL), target=arn)
    iot.attach_thing_principal(thingName=thing, principal=arn)
    pair = write_pair(tmp_path, "stranger", cert_pem, key_pem)
    rc = tls_raw(pair, version)
    assert_tls_refused(rc, thing, version, alert="UNKNOWN_CA")
    assert_paho_refused(clients(version, client_id=thing, tls=pair, connect=False))
    if have_mosquitto_clients():
        out = mosquitto("mosquitto_pub", ["-h", "127.0.0.1", "-p", str(broker.ports["mqtts"]),
                                          "-V", "mqttv5" if version == V5 else "mqttv311",
                                          "-i", thing, "--cafile", str(broker.ca_pem),
                                          "--cert", str(pair[0]), "--key", str(pair[1]),
                                          "-t", "x", "-m", "x", "-q", "1"])
        text = out.stdout + out.stderr
        assert out.returncode != 0 and "received CONNACK" not in text, text


class OwnCa:
    """A CA of the operator's own (self-signed), made in the test."""

    def __init__(self, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(_now() - dt.timedelta(hours=1))
                     .not_valid_after(_now() + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def leaf(self, cn: str) -> tuple[str, str]:
        return _leaf_signed_by(self.cert, self.key, cn, _now() - dt.timedelta(hours=1),
                               _now() + dt.timedelta(days=2))


@pytest.mark.parametrize("version", VERSIONS)
def test_registered_ca_device_connects_until_the_ca_is_deactivated(
        iot, clients, make_policy, tls_raw, tmp_path, uid, version):
    own = OwnCa(f"operator CA {uid}")
    code = iot.get_registration_code()["registrationCode"]
    verification, _ = own.leaf(code)
    ca = iot.register_ca_certificate(caCertificate=own.pem, verificationCertificate=verification,
                                     setAsActive=True)
    thing = f"{uid}-byo"
    iot.create_thing(thingName=thing)
    cert_pem, key_pem = own.leaf(thing)
    device = iot.register_certificate(certificatePem=cert_pem, caCertificatePem=own.pem,
                                      status="ACTIVE")
    iot.attach_policy(policyName=make_policy(REFERENCE), target=device["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=device["certificateArn"])
    pair = write_pair(tmp_path, "byo", cert_pem, key_pem)

    # paho end to end under the reference policy
    c = clients(version, client_id=thing, tls=pair)
    assert c.subscribe(f"devices/{thing}/#") == [1]
    assert c.subscribe(f"devices/{uid}-x/#") == [suback_denied(version)]
    c.publish(f"devices/{thing}/t", b"byo-ca", qos=1)
    assert c.wait_message(topic=f"devices/{thing}/t").payload == b"byo-ca"
    c.disconnect()

    rc = connected_raw(tls_raw, Device(thing, *pair, device["certificateId"], device["certificateArn"]),
                       version)
    started = time.monotonic()
    iot.update_ca_certificate(certificateId=ca["certificateId"], newStatus="INACTIVE")
    expect_cut_off(rc, version, started, "UpdateCACertificate INACTIVE")
    # now refused: at TLS (the CA left the trust store) or at CONNECT
    again = tls_raw(pair, version)
    if again.try_send(w.connect(thing, version=version)):
        try:
            seen = again.wait_closed(5)
        except AssertionError:
            raise AssertionError("a device of an INACTIVE CA is still served")
        acks = [p for p in seen if p.type == w.CONNACK]
        assert not acks or acks[0].rc == refused_code(version), seen

    # and back: ACTIVE again lets it in
    iot.update_ca_certificate(certificateId=ca["certificateId"], newStatus="ACTIVE")
    clients(version, client_id=thing, tls=pair).disconnect()


def test_device_of_an_unregistered_ca_is_refused_until_registration(iot, make_policy, tls_raw,
                                                                    tmp_path, uid):
    own = OwnCa(f"late CA {uid}")
    thing = f"{uid}-late"
    iot.create_thing(thingName=thing)
    cert_pem, key_pem = own.leaf(thing)
    pair = write_pair(tmp_path, "late", cert_pem, key_pem)
    assert_tls_refused(tls_raw(pair, V5), thing, V5, alert="UNKNOWN_CA")
    ca = iot.register_ca_certificate(caCertificate=own.pem, setAsActive=True)  # no verification cert
    device = iot.register_certificate(certificatePem=cert_pem, status="ACTIVE")
    iot.attach_policy(policyName=make_policy(REFERENCE), target=device["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=device["certificateArn"])
    rc = tls_raw(pair, V5)
    assert rc.connect(thing).rc == 0, rc.tls_error
    assert ca["certificateId"]


# =============================================================================================
# anonymous clients on the plain listener

ANON_LAB = document(
    allow("iot:Connect", f"{ARN}:client/lab-*"),
    allow(["iot:Publish", "iot:Receive"], f"{ARN}:topic/lab/{CLIENT_ID}/*"),
    allow("iot:Subscribe", f"{ARN}:topicfilter/lab/{CLIENT_ID}/#"),
)


@pytest.mark.parametrize("version", VERSIONS)
def test_anonymous_policy_governs_plain_clients(broker_factory, aws, raw, clients, uid, version):
    name = f"{uid}-anon"
    b = broker_factory("--anonymous-policy", name)
    aws("iot", broker=b).create_policy(policyName=name, policyDocument=ANON_LAB)

    # CONNECT: only lab-* client ids
    c = raw(version, broker=b)
    c.send(w.connect("intruder", version=version))
    ack = connack_then_close(c)
    assert ack is not None and ack.rc == refused_code(version), ack

    # SUBSCRIBE and PUBLISH per ${iot:ClientId}
    me = "lab-1"
    c = raw(version, broker=b)
    assert c.connect(me).rc == 0
    ack = c.subscribe([(f"lab/{me}/#", 1), ("lab/lab-2/#", 1), ("#", 0)])
    assert ack.rcs == [1, suback_denied(version), suback_denied(version)], ack
    c.publish(f"lab/{me}/x", b"mine", qos=1, pid=2)
    got = [c.recv(), c.recv()]
    assert sorted(p.type for p in got) == [w.PUBLISH, w.PUBACK], got
    assert [p for p in got if p.type == w.PUBACK][0].rc == 0
    assert [p for p in got if p.type == w.PUBLISH][0].payload == b"mine"

    # a paho client sees the same SUBACK
    pc = clients(version, broker=b, client_id="lab-paho")
    assert pc.subscribe("lab/lab-1/#") == [suback_denied(version)]
    assert pc.subscribe("lab/lab-paho/#") == [1]

    if version == V5:
        c.publish("lab/lab-2/x", b"theirs", qos=1, pid=3)
        ack = c.expect(w.PUBACK)
        assert (ack.pid, ack.rc) == (3, NOT_AUTHORIZED), ack
        c.send(w.pingreq())
        assert c.expect(w.PINGRESP)
    else:
        c.publish("lab/lab-2/x", b"theirs", qos=1, pid=3)
        seen = c.wait_closed(5)
        assert not [p for p in seen if p.type == w.PUBACK], seen


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_anonymous_policy_refuses_anonymous_clients(broker_factory, aws, raw, clients,
                                                            tmp_path, uid, version):
    name = f"{uid}-later"
    b = broker_factory("--anonymous-policy", name)
    c = raw(version, broker=b)
    c.send(w.connect("lab-1", version=version))
    ack = connack_then_close(c)
    assert ack is not None and ack.rc == refused_code(version), ack
    # certificate holders are not governed by it
    iot = aws("iot", broker=b)
    iot.create_policy(policyName=f"{name}-dev", policyDocument=ALLOW_ALL)
    made = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName=f"{name}-dev", target=made["certificateArn"])
    pair = write_pair(tmp_path, "dev", made["certificatePem"], made["keyPair"]["PrivateKey"])
    clients(version, broker=b, tls=pair, client_id=f"dev-{uid}").disconnect()
    # the policy is looked up at connect time: once it exists, anonymous clients get in
    iot.create_policy(policyName=name, policyDocument=ANON_LAB)
    c = raw(version, broker=b)
    assert c.connect("lab-1").rc == 0


def test_without_anonymous_policy_anonymous_clients_may_do_everything(raw, uid):
    c = raw(w.V5)
    assert c.connect(f"anything-{uid}").rc == 0
    assert c.subscribe([("#", 1), (f"devices/{uid}/#", 2)]).rcs == [1, 2]
    c.publish(f"devices/{uid}/x", b"free", qos=1, pid=2, retain=False)
    got = []
    deadline = time.monotonic() + 5
    while not ([p for p in got if p.type == w.PUBACK] and
               [p for p in got if p.type == w.PUBLISH and p.payload == b"free"]):
        got.append(c.recv(max(0.01, deadline - time.monotonic())))
    assert [p for p in got if p.type == w.PUBACK][0].rc == 0


@pytest.mark.parametrize("change", ["CreatePolicyVersion", "DeletePolicy"])
def test_anonymous_policy_change_cuts_off_anonymous_clients(broker_factory, aws, raw, uid, change):
    """The anonymous policy is a policy like any other: a new default version without
    iot:Connect, or its deletion, ends live anonymous connections."""
    name = f"{uid}-anon"
    b = broker_factory("--anonymous-policy", name)
    iot = aws("iot", broker=b)
    iot.create_policy(policyName=name, policyDocument=ANON_LAB)
    c = raw(w.V5, broker=b)
    assert c.connect("lab-1").rc == 0
    started = time.monotonic()
    if change == "DeletePolicy":
        iot.delete_policy(policyName=name)
    else:
        iot.create_policy_version(policyName=name, setAsDefault=True, policyDocument=document(
            *[s for s in json.loads(ANON_LAB)["Statement"] if s["Action"] != "iot:Connect"]))
    expect_cut_off(c, w.V5, started, f"anonymous policy: {change}")
    again = raw(w.V5, broker=b)
    again.send(w.connect("lab-1", version=w.V5))
    ack = connack_then_close(again)
    assert ack is not None and ack.rc == NOT_AUTHORIZED, ack
