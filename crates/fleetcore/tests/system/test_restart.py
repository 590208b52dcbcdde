"""Durability across a graceful restart (same data dir and ports): retained messages, persistent
sessions with their subscriptions and queued QoS 1/2 messages, in-flight messages, the CA; and
graceful shutdown itself (SIGTERM / SIGINT -> exit code 0)."""

import signal
import time

import pytest

import mqttwire as w
from brokers import port_open
from clients import V5, fence
from conftest import VERSIONS


def _persistent(clients, b, version, cid):
    kw = {"client_id": cid, "clean": False, "broker": b}
    if version == V5:
        kw["session_expiry"] = 3600
    return clients(version, **kw)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_survive_restart(fresh_broker, clients, uid, version):
    b = fresh_broker
    pub = clients(version, broker=b)
    pub.publish(f"r/{uid}/kept", b"v2-old", qos=1, retain=True)
    pub.publish(f"r/{uid}/kept", b"kept", qos=1, retain=True)
    pub.publish(f"r/{uid}/cleared", b"soon-gone", qos=1, retain=True)
    pub.publish(f"r/{uid}/cleared", b"", qos=1, retain=True)
    pub.publish(f"r/{uid}/q0", b"qos0-retained", qos=0, retain=True)
    pub.sync()
    pub.disconnect()

    b.restart()

    sub = clients(version, broker=b)
    sub.subscribe(f"r/{uid}/#", qos=1)
    sub.subscribe(f"r-{uid}-fence", qos=1)
    fence(sub, clients(version, broker=b), f"r-{uid}-fence")
    got = {m.topic: (m.payload, m.retain) for m in sub.matching(pred=lambda m: m.topic.startswith(f"r/{uid}/"))}
    assert got == {f"r/{uid}/kept": (b"kept", True), f"r/{uid}/q0": (b"qos0-retained", True)}


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_survives_restart(fresh_broker, clients, uid, version):
    b = fresh_broker
    cid = f"s-{uid}"
    sub = _persistent(clients, b, version, cid)
    sub.subscribe(f"s/{uid}/q1", qos=1)
    sub.subscribe(f"s/{uid}/q2", qos=2)
    sub.disconnect()
    pub = clients(version, broker=b)
    pub.publish(f"s/{uid}/q1", b"queued-q1", qos=1)
    pub.publish(f"s/{uid}/q2", b"queued-q2", qos=2)
    pub.disconnect()

    b.restart()

    back = _persistent(clients, b, version, cid)
    assert back.session_present is True, "persistent session lost across a graceful restart"
    got = back.wait_messages(2, pred=lambda m: m.topic.startswith(f"s/{uid}/"))
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        (f"s/{uid}/q1", b"queued-q1", 1), (f"s/{uid}/q2", b"queued-q2", 2)]
    # the subscriptions themselves came back: live messages flow without re-subscribing
    pub2 = clients(version, broker=b)
    pub2.publish(f"s/{uid}/q1", b"live", qos=1)
    back.wait_payload(b"live")
    assert [m.payload for m in back.matching(topic=f"s/{uid}/q1")] == [b"queued-q1", b"live"]


@pytest.mark.parametrize("version", VERSIONS)
def test_inflight_message_redelivered_after_restart(fresh_broker, raw, clients, uid, version):
    b = fresh_broker
    cid = f"s-{uid}"
    props = {"SessionExpiryInterval": 3600} if version == V5 else None
    c = raw(version, broker=b)
    assert c.connect(cid, clean=False, props=props).rc == 0
    c.subscribe([(f"s/{uid}", 1)])
    clients(version, broker=b).publish(f"s/{uid}", b"unacked", qos=1)
    p = c.expect(w.PUBLISH)
    assert p.payload == b"unacked"
    c.abort()  # never acknowledged

    b.restart()

    again = raw(version, broker=b)
    ack = again.connect(cid, clean=False, props=props)
    assert ack.rc == 0 and ack.session_present, ack
    p2 = again.expect(w.PUBLISH)
    assert (p2.payload, p2.qos, p2.dup) == (b"unacked", 1, True), p2
    again.send(w.puback(p2.pid, version))


def test_ca_and_client_certificates_survive_restart(fresh_broker, clients, client_cert, uid):
    b = fresh_broker
    ca_before = b.ca_pem.read_bytes()
    cert = client_cert(b, f"dev-{uid}")
    clients(V5, broker=b, tls=cert).disconnect()
    b.restart()
    assert b.ca_pem.read_bytes() == ca_before, "CA regenerated on restart"
    c = clients(V5, broker=b, tls=cert)
    c.subscribe(f"t/{uid}", qos=1)
    c.publish(f"t/{uid}", b"mtls-after-restart", qos=1)
    c.wait_payload(b"mtls-after-restart")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_exits_zero(fresh_broker, raw, clients, uid, sig):
    b = fresh_broker
    held = raw(V5, broker=b)
    assert held.connect(f"held-{uid}").rc == 0
    idle = clients(4, broker=b)
    t0 = time.monotonic()
    rc = b.stop(sig, timeout=20)
    assert rc == 0, f"exit code {rc} after {sig.name}"
    assert time.monotonic() - t0 < 20
    # connections were closed (v5 may be told why: 0x8B server shutting down)
    seen = held.wait_closed(5)
    assert all(p.type == w.DISCONNECT and p.rc in (0x8B, 0x80, 0x00) for p in seen), seen
    idle.wait_disconnected(5)
    for name, port in b.ports.items():
        if port:
            assert not port_open(port), f"{name} listener still accepting after shutdown"


def test_restart_after_sigkill_keeps_last_saved_state(fresh_broker, clients, uid):
    """A crash (SIGKILL) must not corrupt the data dir: the state saved by the last graceful
    shutdown is still there and the broker serves again."""
    b = fresh_broker
    pub = clients(V5, broker=b)
    pub.publish(f"r/{uid}", b"saved", qos=1, retain=True)
    pub.disconnect()
    b.restart()  # graceful: the retained message is on disk now
    c = clients(V5, broker=b)
    c.publish(f"t/{uid}", b"traffic before the crash", qos=1)
    b.kill()
    b.start()
    sub = clients(V5, broker=b)
    sub.subscribe(f"r/{uid}", qos=1)
    m = sub.wait_message(topic=f"r/{uid}")
    assert (m.payload, m.retain) == (b"saved", True)
