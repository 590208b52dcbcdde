"""Parked connections: an idle connection is parked (no buffers, no timer of its own, see
`fleetcore_mqtt_connections_parked`) and behaves exactly as before: keep-alive expiry still
closes it at 1.5 x keep alive and fires its will, a takeover still reaches it, a delivery wakes
it, over plain TCP and mTLS alike."""

import time

import pytest

import mqttwire as w
from clients import V5
from brokers import wait_until
from conftest import VERSIONS

pytestmark = pytest.mark.fleetcore_only("parking is fleetcore's own mechanism, seen in its metrics")

PARKED = "fleetcore_mqtt_connections_parked"


def _wait_parked(b, n: int):
    wait_until(lambda: b.metrics().get(PARKED, 0) >= n, 10, what=f"{n} parked connection(s)")


@pytest.mark.parametrize("version", VERSIONS)
def test_parked_connection_past_its_keep_alive_is_closed_and_its_will_fires(
        fresh_broker, raw, clients, uid, version):
    b = fresh_broker
    topic = f"parked/{uid}"
    sub = clients(version, broker=b)
    sub.subscribe(topic, qos=1)
    c = raw(version, broker=b)
    will = {"topic": topic, "payload": b"late", "qos": 1, "retain": False, "props": None}
    t0 = time.monotonic()
    assert c.connect(f"p-{uid}", will=will, keepalive=2).rc == 0
    _wait_parked(b, 1)
    seen = c.wait_closed(8)
    elapsed = time.monotonic() - t0
    # 1.5 x 2 s: not before, and the shared sweep is late by at most a fraction of a second
    assert elapsed >= 2.9, f"closed after {elapsed:.2f}s, sooner than 1.5 x keep alive"
    if version == V5:
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8D, seen
    assert sub.wait_message(topic=topic, timeout=5).payload == b"late"


def test_parked_connection_that_pings_stays(fresh_broker, raw, uid):
    b = fresh_broker
    c = raw(V5, broker=b)
    assert c.connect(f"k-{uid}", keepalive=2).rc == 0
    end = time.monotonic() + 7
    while time.monotonic() < end:
        # parks between pings (idle for over a second), wakes for each one
        _wait_parked(b, 1)
        c.send(w.pingreq())
        assert c.expect(w.PINGRESP, timeout=2).type == w.PINGRESP
    assert b.metrics().get("fleetcore_mqtt_protocol_errors_total", 0) == 0


def test_parked_session_is_taken_over(fresh_broker, raw, uid):
    b = fresh_broker
    first = raw(V5, broker=b)
    assert first.connect(f"t-{uid}", keepalive=60).rc == 0
    _wait_parked(b, 1)
    second = raw(V5, broker=b)
    assert second.connect(f"t-{uid}", keepalive=60).rc == 0
    seen = first.wait_closed(5)
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8E, seen


def test_parked_mtls_subscriber_wakes_for_a_delivery(fresh_broker, clients, client_cert, uid):
    b = fresh_broker
    topic = f"parked/tls/{uid}"
    sub = clients(V5, broker=b, transport="tcp", tls=client_cert(b, f"sub-{uid}"))
    sub.subscribe(topic, qos=1)
    _wait_parked(b, 1)
    pub = clients(V5, broker=b)
    pub.publish(topic, b"wake up", qos=1)
    assert sub.wait_message(topic=topic, timeout=5).payload == b"wake up"
