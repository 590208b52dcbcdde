"""Hostile and broken input: malformed packets, oversize packets, slow-loris connections,
garbage bytes, a client exceeding our Receive Maximum. Each time the offender is disconnected
(v5: DISCONNECT with the reason first) and the broker stays healthy for everyone else."""

import random
import socket
import time

import pytest

import mqttwire as w
from brokers import MODE
from clients import V5, V311
from conftest import VERSIONS

MALFORMED_V5_CODES = (0x81, 0x82)


def assert_healthy(b, clients, version=V5):
    """A normal client round trip on broker `b` (plus /health for fleetcore)."""
    sub = clients(version, broker=b)
    pub = clients(version, broker=b)
    t = f"health/{sub.client_id}"
    sub.subscribe(t, qos=1)
    pub.publish(t, b"still-alive", qos=1)
    assert sub.wait_message(topic=t).payload == b"still-alive"
    if MODE == "fleetcore":
        assert b.http_get("/health")[0] == 200


def _check_closed(c: w.RawClient, version: int, allowed=MALFORMED_V5_CODES, timeout=5.0):
    seen = c.wait_closed(timeout)
    others = [p for p in seen if p.type != w.DISCONNECT]
    assert not others, f"unexpected answer to a malformed packet: {seen}"
    if seen:
        assert version == V5, f"a 3.1.1 server sends no DISCONNECT: {seen}"
        assert seen[-1].rc in allowed, f"DISCONNECT reason {seen[-1].rc:#x}, expected one of {allowed}"
    elif version == V5 and MODE == "fleetcore":
        raise AssertionError(f"v5: expected DISCONNECT with one of {[hex(a) for a in allowed]} before the close")


# malformed packets sent after a successful CONNECT: (id, bytes for version, allowed v5 codes)
def _publish_raw(flags, body):
    return w.packet(w.PUBLISH, flags, body)


def _v5_props_raw(raw_props: bytes) -> bytes:
    return w.varint(len(raw_props)) + raw_props


MALFORMED = {
    "publish-qos3": lambda v: _publish_raw(0x06, w.mqtt_str("t/x") + w.u16(1) + (w.varint(0) if v == V5 else b"") + b"p"),
    "publish-wildcard-topic": lambda v: w.publish("t/+/x", b"p", version=v),
    "publish-invalid-utf8-topic": lambda v: w.publish(b"t/\xff\xfe", b"p", version=v),
    "publish-nul-in-topic": lambda v: w.publish(b"t/\x00/x", b"p", version=v),
    "publish-qos1-packet-id-0": lambda v: w.publish("t/x", b"p", qos=1, pid=0, version=v),
    "publish-topic-longer-than-packet": lambda v: _publish_raw(0x00, w.u16(200) + b"t/x"),
    "subscribe-bad-flags": lambda v: w.packet(w.SUBSCRIBE, 0x00, w.subscribe(1, "t/x", v)[2:]),
    "subscribe-no-filters": lambda v: w.packet(w.SUBSCRIBE, 0x02, w.u16(1) + (w.varint(0) if v == V5 else b"")),
    "subscribe-bad-options": lambda v: w.subscribe(1, [("t/x", 0x03)], v),  # QoS 3
    "unsubscribe-bad-flags": lambda v: w.packet(w.UNSUBSCRIBE, 0x00, w.unsubscribe(1, ["t/x"], v)[2:]),
    "reserved-type-0": lambda v: w.packet(0, 0, b""),
    "pingreq-with-body": lambda v: w.packet(w.PINGREQ, 0, b"\x00"),
    "pingreq-bad-flags": lambda v: w.packet(w.PINGREQ, 0x01, b""),
    "remaining-length-5-bytes": lambda v: b"\x30\xff\xff\xff\xff\x01",
    "second-connect": lambda v: w.connect("again", version=v),
}
# Mosquitto 2.0.11 answers these with PINGRESP instead of closing (it does not check the
# reserved flags or the zero length of PINGREQ); 3.1.1 §2.2.2 / v5 §3.12 make them malformed.
MOSQUITTO_LENIENT = {"pingreq-with-body", "pingreq-bad-flags"}
TOPIC_CASES = {"publish-wildcard-topic", "publish-invalid-utf8-topic", "publish-nul-in-topic"}
MALFORMED_V5_ONLY = {
    "duplicate-property": lambda v: w.packet(w.PUBLISH, 0, w.mqtt_str("t/x") + _v5_props_raw(b"\x01\x00\x01\x01") + b"p"),
    "unknown-property": lambda v: w.packet(w.PUBLISH, 0, w.mqtt_str("t/x") + _v5_props_raw(b"\x7f\x00") + b"p"),
    "property-length-overrun": lambda v: w.packet(w.PUBLISH, 0, w.mqtt_str("t/x") + w.varint(9) + b"\x01\x00"),
    "disconnect-bad-reason": lambda v: w.packet(w.DISCONNECT, 0, b"\x03"),  # 0x03 not a DISCONNECT code
    "subscribe-retain-handling-3": lambda v: w.subscribe(1, [("t/x", 0x30)], v),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_packet_after_connect(raw, clients, broker, uid, version, case):
    if MODE == "mosquitto" and case in MOSQUITTO_LENIENT:
        pytest.skip("Mosquitto 2.0.11 accepts a PINGREQ with a body or reserved flags set")
    c = raw(version)
    assert c.connect(f"bad-{uid}").rc == 0
    c.try_send(MALFORMED[case](version))
    allowed = MALFORMED_V5_CODES + ((0x90,) if case in TOPIC_CASES else ())
    _check_closed(c, version, allowed)
    assert_healthy(broker, clients, version)


@pytest.mark.parametrize("case", sorted(MALFORMED_V5_ONLY))
def test_malformed_v5_packet_after_connect(raw, clients, broker, uid, case):
    c = raw(V5)
    assert c.connect(f"bad-{uid}").rc == 0
    c.try_send(MALFORMED_V5_ONLY[case](V5))
    _check_closed(c, V5)
    assert_healthy(broker, clients, V5)


@pytest.mark.parametrize("version", VERSIONS)
def test_invalid_topic_filter_is_refused(raw, clients, broker, uid, version):
    """`#` not last: SUBACK failure (0x80 / v5 0x8F) or a disconnect are both correct."""
    c = raw(version)
    c.connect(f"bad-{uid}")
    c.send(w.subscribe(1, [(f"t/{uid}/#/x", 1)], version))
    try:
        p = c.recv(5)
    except w.Closed:
        p = None
    if p is not None and p.type == w.SUBACK:
        assert p.rcs == [0x80 if version == V311 else 0x8F] or p.rcs[0] >= 0x80, p
    else:
        assert p is None or (p.type == w.DISCONNECT and p.rc in (0x81, 0x82, 0x8F)), p
    assert_healthy(broker, clients, version)


def _connect_bytes(version):
    return w.connect("x", version=version)


PRE_CONNECT = {
    "pingreq-first": w.pingreq(),
    "publish-first": w.publish("t/x", b"p"),
    "http-request": b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x02\x13\x01\x01\x00",
    "random-bytes": bytes(random.Random(1234).getrandbits(8) for _ in range(512)),
    "zeros": b"\x00" * 64,
    "connect-bad-flags": b"\x11" + _connect_bytes(V311)[1:],
    "connect-reserved-flag": (lambda b: b[:9] + bytes([b[9] | 0x01]) + b[10:])(_connect_bytes(V311)),
    "connect-will-qos3": (lambda b: b[:9] + bytes([b[9] | 0x04 | 0x18]) + b[10:])(_connect_bytes(V311)),
    "connect-password-without-username": w.connect("x", version=V311, password=b"pw"),
    "connect-truncated-length": b"\x10\x05\x00\x04MQ",
}


@pytest.mark.parametrize("case", sorted(PRE_CONNECT))
def test_garbage_before_connect(raw, clients, broker, case):
    c = raw(V311)
    c.try_send(PRE_CONNECT[case])
    if case == "connect-truncated-length":
        # a CONNECT whose declared length is longer than what follows is merely incomplete
        # (that is the slow-loris case, see below): finish with garbage that cannot parse
        c.try_send(b"\xff" * 8)
    seen = c.wait_closed(10)
    for p in seen:
        # a 3.1.1 server may answer a bad CONNECT with a refusing CONNACK, never a success
        assert p.type == w.CONNACK and p.rc != 0, seen
    assert_healthy(broker, clients)


def test_garbage_after_connect(raw, clients, broker, uid):
    c = raw(V5)
    assert c.connect(f"bad-{uid}").rc == 0
    c.try_send(bytes(random.Random(99).getrandbits(8) for _ in range(256)))
    c.wait_closed(10)
    assert_healthy(broker, clients)


def test_many_bad_clients_do_not_disturb_a_good_one(raw, clients, broker, uid):
    t = f"t/{uid}"
    good_sub, good_pub = clients(V5), clients(V5)
    good_sub.subscribe(t, qos=1)
    bad = []
    rng = random.Random(7)
    for i in range(20):
        c = raw(V311)
        c.try_send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))))
        bad.append(c)
        good_pub.publish(t, f"m{i}".encode(), qos=1)
    msgs = good_sub.wait_messages(20, topic=t)
    assert [m.payload for m in msgs] == [f"m{i}".encode() for i in range(20)]
    assert good_sub.connected and good_pub.connected


# ---------------------------------------------------------------------------------------------
# size limit

@pytest.mark.parametrize("version", VERSIONS)
def test_oversize_packet(broker_factory, raw, clients, uid, version):
    b = broker_factory("--max-packet-size", "1024")
    sub = clients(version, broker=b)
    sub.subscribe(f"big/{uid}", qos=1)
    c = raw(version, broker=b)
    ack = c.connect(f"big-{uid}")
    if version == V5:
        assert ack.props.get("MaximumPacketSize") == 1024, ack
    c.publish(f"big/{uid}", b"ok" * 400, qos=1, pid=1)  # ~830 bytes: fits
    assert c.expect(w.PUBACK).pid == 1
    sub.wait_message(topic=f"big/{uid}")
    c.try_send(w.publish(f"big/{uid}", b"X" * 2000, qos=1, pid=2, version=version))
    seen = c.wait_closed(5)
    if version == V5:
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x95, seen
    else:
        assert seen == [], seen
    assert_healthy(b, clients, version)
    assert [len(p) for p in sub.payloads(topic=f"big/{uid}")] == [800], "oversize message forwarded"


def test_oversize_connect_is_closed(broker_factory, raw, clients, uid):
    b = broker_factory("--max-packet-size", "1024")
    c = raw(V311, broker=b)
    c.try_send(w.connect(f"big-{uid}", version=V311, username="u" * 3000, password=b"p"))
    seen = c.wait_closed(5)
    assert all(p.type == w.CONNACK and p.rc != 0 for p in seen), seen
    assert_healthy(b, clients)


# ---------------------------------------------------------------------------------------------
# slow loris

CONNECT_TIMEOUT = 2


@pytest.fixture
def slow_broker(broker_factory):
    return broker_factory("--connect-timeout", str(CONNECT_TIMEOUT))


@pytest.mark.parametrize("what", ["nothing", "half-connect", "one-byte-at-a-time"])
def test_slow_loris_is_closed_within_connect_timeout(slow_broker, raw, clients, what):
    deadline = CONNECT_TIMEOUT + 3
    c = raw(V311, broker=slow_broker)
    t0 = time.monotonic()
    if what == "half-connect":
        full = w.connect("slow", version=V311)
        c.send(full[: len(full) // 2])
    elif what == "one-byte-at-a-time":
        # a byte every 0.5 s: never a whole CONNECT before the timeout
        full = w.connect("slow", version=V311, username="u" * 40)
        for byte in full[:6]:
            if not c.try_send(bytes([byte])):
                break
            try:
                c.recv(0.5)
            except TimeoutError:
                continue
            except w.Closed:
                break
    try:
        seen = c.wait_closed(deadline - (time.monotonic() - t0))
    except AssertionError:
        raise AssertionError(f"{what}: still open {deadline}s after connecting "
                             f"(connect timeout {CONNECT_TIMEOUT}s)")
    assert seen == [] or all(p.type == w.CONNACK and p.rc != 0 for p in seen), seen
    assert_healthy(slow_broker, clients)


@pytest.mark.parametrize("port_name", ["mqtts", "ws", "wss"])
def test_silent_connection_on_other_listeners_is_closed(slow_broker, clients, port_name):
    """A TCP connection that never starts TLS / the WebSocket handshake is dropped too."""
    s = socket.create_connection(("127.0.0.1", slow_broker.ports[port_name]), timeout=10)
    t0 = time.monotonic()
    s.settimeout(CONNECT_TIMEOUT + 8)
    try:
        data = s.recv(1024)
        while data:
            data = s.recv(1024)
    except (ConnectionResetError, socket.timeout) as e:
        if isinstance(e, socket.timeout):
            raise AssertionError(f"{port_name}: silent connection still open after {CONNECT_TIMEOUT + 8}s")
    finally:
        s.close()
    assert time.monotonic() - t0 <= CONNECT_TIMEOUT + 8
    assert_healthy(slow_broker, clients)


def test_connected_client_is_not_hit_by_connect_timeout(slow_broker, raw, uid):
    c = raw(V311, broker=slow_broker)
    assert c.connect(f"ok-{uid}", keepalive=60).rc == 0
    # well past the connect timeout, the connection is still there
    assert c.quiet(CONNECT_TIMEOUT + 1) == []
    c.send(w.pingreq())
    assert c.expect(w.PINGRESP).type == w.PINGRESP


# ---------------------------------------------------------------------------------------------
# flow control: a client that ignores our Receive Maximum

@pytest.mark.fleetcore_only("Mosquitto 2.0.11 answers the excess QoS 2 PUBLISH with PUBREC 0x97 "
                            "(quota exceeded) and keeps the connection; [MQTT-3.3.4-9] wants "
                            "DISCONNECT 0x93")
def test_exceeding_receive_maximum_is_disconnected(broker_factory, raw, clients, uid):
    b = broker_factory("--max-inflight", "2")
    c = raw(V5, broker=b)
    ack = c.connect(f"greedy-{uid}")
    assert ack.props.get("ReceiveMaximum") == 2, ack
    # QoS 2 publishes stay in flight until PUBREL/PUBCOMP, which we never send
    for pid in (1, 2):
        c.publish(f"rm/{uid}", b"x", qos=2, pid=pid)
        assert c.expect(w.PUBREC).pid == pid
    c.try_send(w.publish(f"rm/{uid}", b"x", qos=2, pid=3, version=V5))
    seen = c.wait_closed(5)
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x93, seen
    assert_healthy(b, clients)
