"""Will messages: sent on an abnormal disconnect and on a keep-alive timeout, not on a normal
DISCONNECT; v5: DISCONNECT 0x04, Will Delay Interval (delayed, and cancelled by a reconnect),
will properties."""

import time

import pytest

import mqttwire as w
from clients import V5, fence
from brokers import MODE
from conftest import VERSIONS

# 1.5 x keep-alive (1 s) plus scheduling slack. Mosquitto 2.0.11 checks keep-alives on a coarse
# timer (5-6 s seen for a keep-alive of 1 s), so its anchor run gets a looser deadline.
KEEPALIVE_DEADLINE = 10.0 if MODE == "mosquitto" else 5.0


def _will_client(raw, version, cid, topic, payload=b"gone", qos=1, retain=False, will_props=None,
                 connect_props=None, keepalive=60, clean=True):
    c = raw(version)
    will = {"topic": topic, "payload": payload, "qos": qos, "retain": retain, "props": will_props}
    ack = c.connect(cid, will=will, keepalive=keepalive, props=connect_props, clean=clean)
    assert ack.rc == 0, ack
    return c


def _assert_nothing_until(sub, deadline: float, pred, what: str):
    """Bounded negative check: no message matching `pred` arrives before `deadline`."""
    left = deadline - time.monotonic()
    if left > 0:
        try:
            m = sub.wait_message(timeout=left, pred=pred)
        except AssertionError:
            return
        raise AssertionError(f"{what}: got {m.topic} {m.payload!r}")
    assert not sub.matching(pred=pred), what


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_abnormal_disconnect(raw, clients, uid, version):
    topic = f"will/{uid}"
    sub = clients(version)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, version, f"w-{uid}", topic, b"abnormal", qos=1)
    c.abort()
    m = sub.wait_message(topic=topic, timeout=10)
    assert (m.payload, m.qos, m.retain) == (b"abnormal", 1, False)


@pytest.mark.parametrize("version", VERSIONS)
def test_no_will_on_normal_disconnect(raw, clients, uid, version):
    topic = f"will/{uid}"
    sub = clients(version)
    sub.subscribe(topic, qos=1)
    sub.subscribe(f"{topic}-fence", qos=1)
    c = _will_client(raw, version, f"w-{uid}", topic, b"should-not-be-sent")
    c.send(w.disconnect(version))
    c.wait_closed(5)  # the broker has processed the DISCONNECT and closed
    fence(sub, clients(version), f"{topic}-fence")
    assert sub.matching(topic=topic) == []


def test_v5_will_sent_on_disconnect_with_will_message_reason(raw, clients, uid):
    topic = f"will/{uid}"
    sub = clients(V5)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, V5, f"w-{uid}", topic, b"asked-for")
    c.send(w.disconnect(V5, rc=0x04))
    assert sub.wait_message(topic=topic, timeout=10).payload == b"asked-for"


def test_v5_will_properties_are_forwarded(raw, clients, uid):
    topic = f"will/{uid}"
    sub = clients(V5)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, V5, f"w-{uid}", topic, b"{}", will_props={
        "ContentType": "application/json", "ResponseTopic": f"reply/{uid}",
        "CorrelationData": b"\x01\x02", "UserProperty": [("k", "v")], "PayloadFormatIndicator": 1})
    c.abort()
    m = sub.wait_message(topic=topic, timeout=10)
    p = m.properties
    assert p.ContentType == "application/json"
    assert p.ResponseTopic == f"reply/{uid}"
    assert p.CorrelationData == b"\x01\x02"
    assert p.UserProperty == [("k", "v")]
    assert p.PayloadFormatIndicator == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_will(raw, clients, uid, version):
    topic = f"will/{uid}/status"
    sub = clients(version)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, version, f"w-{uid}", topic, b"offline", retain=True)
    c.abort()
    sub.wait_message(topic=topic, timeout=10)
    late = clients(version)
    late.subscribe(topic, qos=1)
    m = late.wait_message(topic=topic)
    assert (m.payload, m.retain) == (b"offline", True)


def test_v5_will_delay_interval_delays_the_will(raw, clients, uid):
    topic = f"will/{uid}"
    sub = clients(V5)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, V5, f"w-{uid}", topic, b"delayed", will_props={"WillDelayInterval": 2},
                     connect_props={"SessionExpiryInterval": 30}, clean=True)
    t0 = time.monotonic()
    c.abort()
    m = sub.wait_message(topic=topic, timeout=10)
    elapsed = time.monotonic() - t0
    assert m.payload == b"delayed"
    assert elapsed >= 1.5, f"will sent after {elapsed:.2f}s, before its 2 s delay"


def test_v5_will_delay_cancelled_by_reconnect(raw, clients, uid):
    topic = f"will/{uid}"
    cid = f"w-{uid}"
    sub = clients(V5)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, V5, cid, topic, b"cancelled", will_props={"WillDelayInterval": 2},
                     connect_props={"SessionExpiryInterval": 30})
    t0 = time.monotonic()
    c.abort()
    back = raw(V5)
    ack = back.connect(cid, clean=False, props={"SessionExpiryInterval": 30})
    assert ack.rc == 0 and ack.session_present, ack
    # well past the 2 s delay: still no will
    _assert_nothing_until(sub, t0 + 4.0, lambda m: m.topic == topic, "will sent despite the reconnect")
    back.disconnect()


def test_v5_will_sent_at_session_end_when_delay_is_longer(raw, clients, uid):
    """Will Delay 30 s but Session Expiry 1 s: the will goes out when the session ends."""
    topic = f"will/{uid}"
    sub = clients(V5)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, V5, f"w-{uid}", topic, b"session-ended", will_props={"WillDelayInterval": 30},
                     connect_props={"SessionExpiryInterval": 1})
    t0 = time.monotonic()
    c.abort()
    m = sub.wait_message(topic=topic, timeout=10)
    assert m.payload == b"session-ended"
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("version", VERSIONS)
def test_keepalive_timeout_disconnects_and_fires_will(raw, clients, uid, version):
    topic = f"will/{uid}"
    sub = clients(version)
    sub.subscribe(topic, qos=1)
    c = _will_client(raw, version, f"w-{uid}", topic, b"timed-out", keepalive=1)
    t0 = time.monotonic()
    seen = c.wait_closed(KEEPALIVE_DEADLINE)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9, f"closed after {elapsed:.2f}s, sooner than the keep-alive allows"
    if version == V5 and seen:
        assert seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8D, seen
    assert sub.wait_message(topic=topic, timeout=5).payload == b"timed-out"


@pytest.mark.parametrize("version", VERSIONS)
def test_keepalive_respected_when_client_pings(raw, uid, version):
    c = raw(version)
    c.connect(f"k-{uid}", keepalive=1)
    end = time.monotonic() + 3.5
    while time.monotonic() < end:
        # a well-behaved client: a PINGREQ every ~half keep-alive keeps the connection open
        c.send(w.pingreq())
        assert c.expect(w.PINGRESP, timeout=2).type == w.PINGRESP
        c.quiet(0.5)
    c.send(w.pingreq())
    assert c.expect(w.PINGRESP, timeout=2)
