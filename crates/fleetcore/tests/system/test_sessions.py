"""Sessions: clean session / clean start, persistent sessions queueing QoS 1/2 while offline
(bounded by max_queued_messages), v5 session expiry, session takeover."""

import time

import pytest

import mqttwire as w
from brokers import MODE
from clients import V5, V311, fence
from conftest import VERSIONS


def _persistent(clients, version, cid, broker=None, connect=True, expiry=300):
    kw = {"client_id": cid, "clean": False}
    if version == V5:
        kw["session_expiry"] = expiry
    if broker is not None:
        kw["broker"] = broker
    return clients(version, connect=connect, **kw)


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_queues_qos1_and_qos2_while_offline(clients, uid, version):
    t = f"s/{uid}"
    cid = f"s-{uid}"
    sub = _persistent(clients, version, cid)
    assert sub.session_present is False
    sub.subscribe(f"{t}/+", qos=2)
    sub.disconnect()

    pub = clients(version)
    for i in range(5):
        pub.publish(f"{t}/q1", f"q1-{i}".encode(), qos=1)
        pub.publish(f"{t}/q2", f"q2-{i}".encode(), qos=2)

    back = _persistent(clients, version, cid)
    assert back.session_present is True
    back.wait_messages(10, pred=lambda m: m.topic.startswith(t))
    # live messages still flow on the restored subscription, and nothing is delivered twice
    pub.publish(f"{t}/q1", b"live", qos=1)
    back.wait_payload(b"live")
    got = back.matching(pred=lambda m: m.topic.startswith(t))
    assert [m.payload for m in got if m.topic.endswith("q1")] == [f"q1-{i}".encode() for i in range(5)] + [b"live"]
    assert [m.payload for m in got if m.topic.endswith("q2")] == [f"q2-{i}".encode() for i in range(5)]
    assert [m.qos for m in got if m.topic.endswith("q2")] == [2] * 5


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_session_discards_the_old_session(clients, uid, version):
    t = f"s/{uid}"
    cid = f"s-{uid}"
    sub = _persistent(clients, version, cid)
    sub.subscribe(t, qos=1)
    sub.disconnect()
    clients(version).publish(t, b"while-offline", qos=1)

    clean = clients(version, client_id=cid, clean=True)
    assert clean.session_present is False
    clean.subscribe(f"{t}-fence", qos=1)
    pub = clients(version)
    pub.publish(t, b"after-clean", qos=1)
    fence(clean, pub, f"{t}-fence")
    assert clean.matching(topic=t) == [], "old subscription or queued messages survived a clean start"
    clean.disconnect()

    # and nothing of it is kept afterwards either
    again = _persistent(clients, version, cid)
    assert again.session_present is False


def test_v5_session_expiry_zero_ends_session_on_disconnect(clients, uid):
    cid = f"s-{uid}"
    a = clients(V5, client_id=cid, clean=False, session_expiry=0)
    a.subscribe(f"s/{uid}", qos=1)
    a.disconnect()
    b = clients(V5, client_id=cid, clean=False, session_expiry=0)
    assert b.session_present is False


def test_v5_session_survives_within_expiry(clients, uid):
    cid = f"s-{uid}"
    a = _persistent(clients, V5, cid, expiry=5)
    a.subscribe(f"s/{uid}", qos=1)
    a.disconnect()
    clients(V5).publish(f"s/{uid}", b"queued", qos=1)
    b = _persistent(clients, V5, cid, expiry=5)
    assert b.session_present is True
    assert b.wait_message(topic=f"s/{uid}").payload == b"queued"


def test_v5_session_gone_after_expiry(clients, uid):
    cid = f"s-{uid}"
    a = _persistent(clients, V5, cid, expiry=2)
    a.subscribe(f"s/{uid}", qos=1)
    a.disconnect()
    t_disc = time.monotonic()
    pub = clients(V5)
    pub.publish(f"s/{uid}", b"queued-then-expired", qos=1)
    # Let the 2 s session expiry pass (plus margin for a once-a-second expiry sweep).
    # This waits for time itself to pass, not for the broker to finish something.
    remaining = t_disc + 3.5 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    b = _persistent(clients, V5, cid, expiry=2)
    assert b.session_present is False
    b.subscribe(f"s/{uid}-fence", qos=1)
    fence(b, pub, f"s/{uid}-fence")
    assert b.matching(topic=f"s/{uid}") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_offline_queue_bounded_by_max_queued_messages(broker_factory, clients, uid, version):
    b = broker_factory("--max-queued-messages", "5")
    t = f"s/{uid}"
    cid = f"s-{uid}"
    sub = _persistent(clients, version, cid, broker=b)
    sub.subscribe(t, qos=1)
    sub.disconnect()
    dropped_before = _dropped(b)
    pub = clients(version, broker=b)
    for i in range(12):
        pub.publish(t, f"m{i}".encode(), qos=1)
    back = _persistent(clients, version, cid, broker=b)
    assert back.session_present is True
    back.subscribe(f"{t}-fence", qos=1)
    fence(back, pub, f"{t}-fence")
    got = back.payloads(topic=t)
    # the first five were kept; the rest were dropped (not delivered late, not delivered twice)
    assert got == [f"m{i}".encode() for i in range(5)], got
    if MODE == "fleetcore":
        assert _dropped(b) - dropped_before >= 7, "drops not counted in fleetcore_mqtt_messages_dropped_total"


def _dropped(b):
    if MODE != "fleetcore":
        return 0
    return b.metrics().get("fleetcore_mqtt_messages_dropped_total@sum", 0.0)


@pytest.mark.parametrize("version", VERSIONS)
def test_session_takeover(raw, clients, uid, version):
    cid = f"s-{uid}"
    t = f"s/{uid}"
    first = raw(version)
    props = {"SessionExpiryInterval": 300} if version == V5 else None
    assert first.connect(cid, clean=False, props=props).rc == 0
    first.subscribe([(t, 1)])

    second = raw(version)
    ack = second.connect(cid, clean=False, props=props)
    assert ack.rc == 0 and ack.session_present is True, ack
    seen = first.wait_closed(5)
    # Mosquitto 2.0.11 closes the old connection without a DISCONNECT (0x8E came in a later
    # release), so the reason code is checked against fleetcore only.
    if version == V5 and MODE == "fleetcore":
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8E, \
            f"old connection should get DISCONNECT 0x8E (session taken over), got {seen}"
    elif version == V311:
        assert seen == [], seen
    # the new connection has the session, with its subscription
    clients(version).publish(t, b"to-the-new-owner", qos=1)
    p = second.expect(w.PUBLISH)
    assert p.payload == b"to-the-new-owner"
    second.send(w.puback(p.pid, version))


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_by_clean_session_drops_old_subscriptions(raw, clients, uid, version):
    cid = f"s-{uid}"
    first = clients(version, client_id=cid, clean=False, **({"session_expiry": 300} if version == V5 else {}))
    first.subscribe(f"s/{uid}", qos=1)
    second = clients(version, client_id=cid, clean=True)
    assert second.session_present is False
    first.wait_disconnected(5)
    if version == V5 and MODE == "fleetcore":  # see test_session_takeover
        assert first.disconnects[-1][0] == 0x8E, first.disconnects
    second.subscribe(f"s/{uid}-fence", qos=1)
    pub = clients(version)
    pub.publish(f"s/{uid}", b"old-sub", qos=1)
    fence(second, pub, f"s/{uid}-fence")
    assert second.matching(topic=f"s/{uid}") == []
