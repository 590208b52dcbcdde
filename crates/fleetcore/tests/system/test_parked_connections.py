"""Parked connections: an idle connection is parked (no buffers, no timer of its own, see
`fleetcore_mqtt_connections_parked`) and behaves exactly as before: keep-alive expiry still
closes it at 1.5 x keep alive and fires its will, a takeover still reaches it, a delivery wakes
it, over plain TCP and mTLS alike."""

import socket
import ssl
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


def _tasks(b) -> float:
    metrics = b.metrics()
    assert "fleetcore_runtime_tasks" in metrics, "the broker reports no runtime task count"
    return metrics["fleetcore_runtime_tasks"]


def test_parked_connections_hold_no_task(fresh_broker, raw, uid):
    """A parked connection's task ends (its state waits in a parking spot): parking N
    connections leaves the runtime's task count where it was, and they all still answer."""
    b = fresh_broker
    n = 200
    before = _tasks(b)
    conns = []
    for i in range(n):
        c = raw(V5, broker=b)
        assert c.connect(f"n-{uid}-{i}", keepalive=60).rc == 0
        conns.append(c)
    _wait_parked(b, n)
    # While all n are parked, a task each would add n; allow for the HTTP scrape's own tasks.
    wait_until(lambda: _tasks(b) < before + n // 4, 10,
               what=f"runtime tasks back near {before} with {n} connections parked")
    for c in conns[:: n // 10]:
        c.send(w.pingreq())
        assert c.expect(w.PINGRESP, timeout=5).type == w.PINGRESP


@pytest.mark.parametrize("version", VERSIONS)
def test_parked_subscriber_gets_qos1_messages_in_order(fresh_broker, clients, uid, version):
    """Messages that wake a parked subscriber arrive, all of them, in publish order; twice, so
    the second burst meets a connection parked again after the first."""
    b = fresh_broker
    topic = f"parked/order/{uid}"
    sub = clients(version, broker=b)
    sub.subscribe(topic, qos=1)
    _wait_parked(b, 1)
    pub = clients(V5, broker=b)
    expected = []
    for burst in range(2):
        _wait_parked(b, 2)  # the subscriber, and the publisher between bursts
        for i in range(50):
            payload = b"%d-%03d" % (burst, i)
            expected.append(payload)
            pub.publish(topic, payload, qos=1)
        sub.wait_messages(len(expected), topic=topic, timeout=10)
        assert sub.payloads(topic) == expected


def test_parked_mtls_connection_resumes_on_its_own_traffic(fresh_broker, clients, client_cert, uid):
    """A parked mTLS connection wakes when its client sends (a publish), and parks and wakes
    again for a delivery: the TLS session goes on across parkings."""
    b = fresh_broker
    topic = f"parked/tls/own/{uid}"
    watcher = clients(V5, broker=b)
    watcher.subscribe(topic, qos=1)
    tls = clients(V5, broker=b, transport="tcp", tls=client_cert(b, f"tls-{uid}"))
    tls.subscribe(f"{topic}/back", qos=1)
    _wait_parked(b, 2)
    for i in range(3):
        tls.publish(topic, b"from parked %d" % i, qos=1)
        assert watcher.wait_payload(b"from parked %d" % i, timeout=5)
        _wait_parked(b, 2)
        watcher.publish(f"{topic}/back", b"back %d" % i, qos=1)
        assert tls.wait_payload(b"back %d" % i, timeout=5)


def test_parked_mtls_connection_wakes_for_a_qos1_publish_and_answers_pingreq(
        fresh_broker, clients, client_cert, uid):
    """A parked mTLS connection (its TLS record buffers given back while parked) wakes for a
    QoS 1 delivery and acknowledges it, parks again, then answers a PINGREQ that arrives split
    over two TLS records, and ends cleanly: the TLS session goes on across parkings."""
    b = fresh_broker
    topic = f"parked/tls/ping/{uid}"
    cert, key = client_cert(b, f"ping-{uid}")
    ctx = ssl.create_default_context(cafile=str(b.ca_pem))
    ctx.load_cert_chain(str(cert), str(key))
    plain = socket.create_connection((b.host, b.ports["mqtts"]), timeout=5)
    c = w.RawClient(b.host, 0, V5, 5.0, sock=ctx.wrap_socket(plain, server_hostname="localhost"))
    try:
        assert c.connect(f"ping-{uid}", keepalive=60).rc == 0
        assert c.subscribe([(topic, 1)]).rcs == [1]
        _wait_parked(b, 1)
        pub = clients(V5, broker=b)
        pub.publish(topic, b"to a parked tls connection", qos=1)
        msg = c.expect(w.PUBLISH, timeout=5)
        assert (msg.payload, msg.qos) == (b"to a parked tls connection", 1), msg
        c.send(w.puback(msg.pid, V5))
        _wait_parked(b, 2)  # this connection again, and the publisher
        ping = w.pingreq()
        c.send(ping[:1])  # one TLS record each
        c.send(ping[1:])
        assert c.expect(w.PINGRESP, timeout=5).type == w.PINGRESP
        assert c.quiet(0.3) == [], "nothing else arrives (the PUBLISH is not resent)"
        c.send(w.disconnect(V5))
        assert c.wait_closed(5) == []
        assert b.metrics().get("fleetcore_mqtt_protocol_errors_total", 0) == 0
    finally:
        c.close()


def test_client_topic_alias_outlives_parking(fresh_broker, raw, clients, uid):
    """A parked connection keeps a smaller state than a busy one and gets the busy one back when
    it wakes: an alias the client set before parking still names its topic after."""
    b = fresh_broker
    t = f"pa/{uid}/one"
    sub = clients(V5, broker=b)
    sub.subscribe(f"pa/{uid}/+", qos=1)
    c = raw(V5, broker=b)
    assert c.connect(f"pa-{uid}", keepalive=60).rc == 0
    c.publish(t, b"1", qos=1, pid=1, props={"TopicAlias": 1})
    assert c.expect(w.PUBACK).pid == 1
    _wait_parked(b, 2)  # the publisher and the subscriber
    c.publish("", b"2", qos=1, pid=2, props={"TopicAlias": 1})
    assert c.expect(w.PUBACK, timeout=5).pid == 2
    msgs = sub.wait_messages(2, pred=lambda m: m.topic.startswith(f"pa/{uid}/"))
    assert [(m.topic, m.payload) for m in msgs] == [(t, b"1"), (t, b"2")]


def test_server_topic_alias_outlives_parking(fresh_broker, raw, clients, uid):
    """An alias the broker taught a subscriber before it parked is still the broker's after
    the wake: a delivery that uses it (or names the topic again) resolves to the right topic."""
    b = fresh_broker
    t = f"pa/{uid}/two"
    c = raw(V5, broker=b)
    assert c.connect(f"ps-{uid}", keepalive=60, props={"TopicAliasMaximum": 3}).rc == 0
    c.subscribe([(t, 0)])
    pub = clients(V5, broker=b)
    pub.publish(t, b"1", qos=0)
    first = c.expect(w.PUBLISH, timeout=5)
    assert first.topic.decode() == t and first.payload == b"1", first
    aliases = {}
    if "TopicAlias" in first.props:
        aliases[first.props["TopicAlias"]] = t
    _wait_parked(b, 2)  # the subscriber and the publisher
    pub.publish(t, b"2", qos=0)
    second = c.expect(w.PUBLISH, timeout=5)
    topic = second.topic.decode() or aliases.get(second.props.get("TopicAlias"))
    assert (topic, second.payload) == (t, b"2"), (second, aliases)
