"""Durability across a graceful restart (same data dir and ports): retained messages, persistent
sessions with their subscriptions and queued QoS 1/2 messages, in-flight messages, the CA; and
graceful shutdown itself (SIGTERM / SIGINT -> exit code 0). Then durability across a crash
(SIGKILL): a QoS 1/2 message acknowledged to its publisher (PUBACK / PUBREC) and routed to a
persistent session is delivered after the restart, queued or in flight, in order, with its
packet id and DUP where MQTT asks for them; what the subscriber acknowledged is not."""

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


# ---------------------------------------------------------------------------------------------
# crash (SIGKILL) durability of persistent sessions' queues (DESIGN §3)

crash_only = pytest.mark.fleetcore_only(
    "Mosquitto saves its queues periodically (autosave), so a crash loses acknowledged messages")


def _expiry(version):
    return {"SessionExpiryInterval": 3600} if version == V5 else None


def _connect_persistent(raw, b, version, cid, **kw):
    c = raw(version, broker=b, **kw)
    ack = c.connect(cid, clean=False, props=_expiry(version))
    assert ack.rc == 0, ack
    return c, ack


def _offline_subscriber(raw, b, version, cid, topic_filter, qos=1):
    c, _ = _connect_persistent(raw, b, version, cid)
    c.subscribe([(topic_filter, qos)])
    c.disconnect()


class _Publisher:
    """A raw publisher that keeps at most `window` QoS 1/2 messages unacknowledged and returns
    once every one it sent has its PUBACK (QoS 1) or PUBREC (QoS 2, left unreleased)."""

    def __init__(self, raw, b, version, cid, window=8):
        self.c = raw(version, broker=b)
        assert self.c.connect(cid).rc == 0
        self.version, self.window, self.next_pid = version, window, 1

    def send(self, messages, qos=1):
        ack = w.PUBACK if qos == 1 else w.PUBREC
        pending = []
        for topic, payload in messages:
            pid = self.next_pid
            self.next_pid = self.next_pid % 65535 + 1
            self.c.publish(topic, payload, qos=qos, pid=pid)
            pending.append(pid)
            if len(pending) == self.window:
                self._acks(pending, ack)
        self._acks(pending, ack)

    def _acks(self, pending, ack):
        for pid in pending:
            got = self.c.expect(ack, timeout=10)
            assert (got.pid, got.rc) == (pid, 0), got
        pending.clear()


def _durable_fence(raw, b, version, uid):
    """Returns a function that comes back once everything the broker was asked to store before
    the call is on disk: a QoS 1 message to an offline persistent session is acknowledged only
    after the group commit that holds it, and that commit holds every earlier write."""
    _offline_subscriber(raw, b, version, f"fence-{uid}", f"fence/{uid}")
    pub = _Publisher(raw, b, version, f"fence-pub-{uid}")

    def fence():
        pub.send([(f"fence/{uid}", b"fence")])
    return fence


def _receive(c, n, version, qos=1, ack=True):
    """The next n PUBLISH packets, each acknowledged (QoS 2: the whole PUBREC/PUBREL/PUBCOMP flow)
    unless ack is False."""
    got = []
    while len(got) < n:
        p = c.recv(timeout=10)
        if p.type == w.PUBREL:
            c.send(w.pubcomp(p.pid, version))
            continue
        assert p.type == w.PUBLISH, f"expected PUBLISH, got {p!r} after {len(got)}"
        got.append(p)
        if ack and p.qos == 1:
            c.send(w.puback(p.pid, version))
        elif ack and p.qos == 2:
            c.send(w.pubrec(p.pid, version))
    return got


def _nothing_more(c):
    """Bounded negative check: no further PUBLISH within half a second."""
    extra = [p for p in c.quiet(0.5) if p.type == w.PUBLISH]
    assert extra == [], extra


@crash_only
@pytest.mark.parametrize("version", VERSIONS)
def test_acknowledged_messages_to_an_offline_session_survive_sigkill(fresh_broker, raw, uid, version):
    b = fresh_broker
    cid = f"d-{uid}"
    _offline_subscriber(raw, b, version, cid, f"d/{uid}/#")
    fence = _durable_fence(raw, b, version, uid)
    pubs = [_Publisher(raw, b, version, f"p{i}-{uid}") for i in range(2)]
    n = 150
    for i in range(0, n, 25):  # the two publishers interleave in batches
        for k, p in enumerate(pubs):
            p.send([(f"d/{uid}/{k}", f"{k}:{j}".encode()) for j in range(i, i + 25)])
    # every PUBACK is in: a crash now must lose nothing
    b.kill()
    b.start()

    sub, ack = _connect_persistent(raw, b, version, cid)
    assert ack.session_present, "persistent session lost in the crash"
    got = _receive(sub, 2 * n, version)
    for k in range(2):
        mine = [p.payload for p in got if p.topic == f"d/{uid}/{k}".encode()]
        assert mine == [f"{k}:{j}".encode() for j in range(n)], f"publisher {k}: order or loss"
    assert all(p.qos == 1 and not p.dup for p in got), "queued messages were never sent: no DUP"
    _nothing_more(sub)

    # what the subscriber acknowledged is gone from disk too: after a fence and another crash,
    # only what came after is delivered
    sub.send(w.pingreq())
    sub.expect(w.PINGRESP)  # the PUBACKs before it were handled
    sub.disconnect()
    _Publisher(raw, b, version, f"p-after-{uid}").send([(f"d/{uid}/0", b"after")])
    fence = _durable_fence(raw, b, version, f"{uid}-2")
    fence()
    b.kill()
    b.start()
    sub, ack = _connect_persistent(raw, b, version, cid)
    assert ack.session_present
    assert [p.payload for p in _receive(sub, 1, version)] == [b"after"]
    _nothing_more(sub)


@crash_only
@pytest.mark.parametrize("version", VERSIONS)
def test_inflight_window_of_a_connected_session_survives_sigkill(broker_factory, raw, uid, version):
    window = 4
    b = broker_factory("--max-inflight", str(window))
    cid = f"d-{uid}"
    fence = _durable_fence(raw, b, version, uid)
    sub, _ = _connect_persistent(raw, b, version, cid)
    sub.subscribe([(f"d/{uid}", 1)])
    pub = _Publisher(raw, b, version, f"p-{uid}", window=window)
    n = 12
    pub.send([(f"d/{uid}", f"m{j}".encode()) for j in range(n)])
    first = _receive(sub, window, version, ack=False)  # the window, never acknowledged
    assert [p.payload for p in first] == [f"m{j}".encode() for j in range(window)]
    fence()
    b.kill()
    b.start()

    again, ack = _connect_persistent(raw, b, version, cid)
    assert ack.session_present
    resent = _receive(again, window, version, ack=False)
    assert [(p.payload, p.pid, p.dup) for p in resent] == [(p.payload, p.pid, True) for p in first], \
        "the inflight window is resent first, with its packet ids and DUP"
    for p in resent:
        again.send(w.puback(p.pid, version))
    rest = _receive(again, n - window, version)
    assert [p.payload for p in rest] == [f"m{j}".encode() for j in range(window, n)]
    assert not any(p.dup for p in rest)
    _nothing_more(again)


@crash_only
@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_messages_and_releases_survive_sigkill(fresh_broker, raw, uid, version):
    b = fresh_broker
    fence = _durable_fence(raw, b, version, uid)
    # one session offline, with QoS 2 messages queued; one connected, with a message whose PUBREC
    # it sent and whose PUBCOMP it never did
    _offline_subscriber(raw, b, version, f"off-{uid}", f"q2/{uid}/off", qos=2)
    on, _ = _connect_persistent(raw, b, version, f"on-{uid}")
    on.subscribe([(f"q2/{uid}/on", 2)])
    pub = _Publisher(raw, b, version, f"p-{uid}")
    pub.send([(f"q2/{uid}/off", f"m{j}".encode()) for j in range(10)], qos=2)
    pub.send([(f"q2/{uid}/on", b"received")], qos=2)
    p = on.expect(w.PUBLISH)
    assert (p.payload, p.qos) == (b"received", 2)
    on.send(w.pubrec(p.pid, version))
    rel = on.expect(w.PUBREL)
    assert rel.pid == p.pid
    on.send(w.pingreq())
    on.expect(w.PINGRESP)  # the PUBREC was handled
    fence()
    b.kill()
    b.start()

    off, ack = _connect_persistent(raw, b, version, f"off-{uid}")
    assert ack.session_present
    got = _receive(off, 10, version)
    assert [(x.payload, x.qos) for x in got] == [(f"m{j}".encode(), 2) for j in range(10)]
    _nothing_more(off)
    again, ack = _connect_persistent(raw, b, version, f"on-{uid}")
    assert ack.session_present
    rel = again.recv(timeout=10)
    assert (rel.type, rel.pid) == (w.PUBREL, p.pid), \
        f"after PUBREC only the PUBREL is resent, not the message: {rel!r}"
    again.send(w.pubcomp(rel.pid, version))
    _nothing_more(again)


@crash_only
def test_bounded_offline_queue_drops_are_counted_and_the_kept_messages_survive_sigkill(
        broker_factory, raw, uid):
    queued, sent = 5, 12
    b = broker_factory("--max-queued-messages", str(queued))
    cid = f"d-{uid}"
    _offline_subscriber(raw, b, V5, cid, f"d/{uid}")
    full = 'fleetcore_mqtt_messages_dropped_total{reason="queue_full"}'
    before = b.metrics().get(full, 0.0)
    _Publisher(raw, b, V5, f"p-{uid}").send([(f"d/{uid}", f"m{j}".encode()) for j in range(sent)])
    metrics = b.metrics()
    assert metrics.get(full, 0.0) - before == sent - queued
    assert metrics["fleetcore_mqtt_durable_queue_messages_total"] == queued, "only the kept ones are stored"
    b.kill()
    b.start()
    sub, ack = _connect_persistent(raw, b, V5, cid)
    assert ack.session_present
    assert [p.payload for p in _receive(sub, queued, V5)] == [f"m{j}".encode() for j in range(queued)]
    _nothing_more(sub)


@crash_only
@pytest.mark.parametrize("version", VERSIONS)
def test_connack_suback_and_unsuback_of_a_persistent_session_survive_sigkill(broker_factory, raw, uid, version):
    """CONNACK, SUBACK and UNSUBACK of a persistent session promise its record: a SIGKILL right
    after them loses none of it. The session store gathers changes for 0.7 s before each commit
    here, so an answer sent before its commit would be followed by a crash that loses it."""
    b = broker_factory("--session-commit-delay-ms", "700")
    cid = f"s-{uid}"
    sub, _ = _connect_persistent(raw, b, version, cid)
    sub.subscribe([(f"s/{uid}/kept", 1), (f"s/{uid}/dropped", 1)])
    sub.send(w.unsubscribe(2, [f"s/{uid}/dropped"], version))
    assert sub.expect(w.UNSUBACK).pid == 2
    b.kill()
    b.start()
    _Publisher(raw, b, version, f"p-{uid}").send(
        [(f"s/{uid}/dropped", b"unsubscribed"), (f"s/{uid}/kept", b"after the crash")])
    back, ack = _connect_persistent(raw, b, version, cid)
    assert ack.session_present, "the session CONNACK promised was lost in the crash"
    assert [p.payload for p in _receive(back, 1, version)] == [b"after the crash"]
    _nothing_more(back)


@crash_only
@pytest.mark.parametrize("version", VERSIONS)
def test_clean_session_subscriber_pays_nothing_for_durable_queues(fresh_broker, raw, uid, version):
    b = fresh_broker
    stored = "fleetcore_mqtt_durable_queue_messages_total"
    sub = raw(version, broker=b)
    assert sub.connect(f"c-{uid}", clean=True).rc == 0
    sub.subscribe([(f"c/{uid}", 1)])
    n = 50
    _Publisher(raw, b, version, f"p-{uid}").send([(f"c/{uid}", f"m{j}".encode()) for j in range(n)])
    got = _receive(sub, n, version)
    assert [p.payload for p in got] == [f"m{j}".encode() for j in range(n)]
    assert b.metrics()[stored] == 0, "messages to a clean session were written to disk"
    b.kill()
    b.start()
    back = raw(version, broker=b)
    ack = back.connect(f"c-{uid}", clean=False, props=_expiry(version))
    assert (ack.rc, ack.session_present) == (0, False)
    _nothing_more(back)
