"""Retained messages: set, replace, clear with an empty payload, delivered on subscribe with the
retain flag set (and without it on live delivery)."""

import pytest

from clients import fence
from conftest import VERSIONS


def _subscribe_and_collect(clients, version, flt, fence_pub, fence_topic, qos=1):
    """A new subscriber to `flt`; returns it once a live message published after the SUBACK has
    arrived, so every retained message the broker was going to send has been sent."""
    sub = clients(version)
    sub.subscribe(flt, qos=qos)
    # the fence goes at the same QoS: paho hands a QoS 2 message over only at PUBREL, so a QoS 1
    # marker could overtake QoS 2 retained messages still in their handshake
    sub.subscribe(fence_topic, qos=qos)
    fence(sub, fence_pub, fence_topic, qos=qos)
    return sub


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_replace_clear(clients, uid, version):
    t = f"r/{uid}/state"
    f = f"r/{uid}-fence"
    pub = clients(version)

    pub.publish(t, b"v1", qos=1, retain=True)
    s1 = _subscribe_and_collect(clients, version, t, pub, f)
    got = s1.matching(topic=t)
    assert [(m.payload, m.retain) for m in got] == [(b"v1", True)]

    pub.publish(t, b"v2", qos=1, retain=True)
    # the live copy to an existing subscriber does not carry the retain flag
    live = s1.wait_message(topic=t, pred=lambda m: m.payload == b"v2")
    assert live.retain is False

    s2 = _subscribe_and_collect(clients, version, t, pub, f)
    assert [(m.payload, m.retain) for m in s2.matching(topic=t)] == [(b"v2", True)]

    pub.publish(t, b"", qos=1, retain=True)  # clear
    s3 = _subscribe_and_collect(clients, version, t, pub, f)
    assert s3.matching(topic=t) == [], "retained message not cleared by an empty payload"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_retained_delivered_on_wildcard_subscribe(clients, uid, version, pub_qos):
    u = f"r/{uid}"
    pub = clients(version)
    topics = [f"{u}/a", f"{u}/b/c", f"{u}/d"]
    for t in topics:
        pub.publish(t, t.encode(), qos=pub_qos, retain=True)
    pub.publish(f"{u}/not-retained", b"live", qos=pub_qos, retain=False)
    pub.sync()
    sub = _subscribe_and_collect(clients, version, f"{u}/#", pub, f"{u}-fence", qos=2)
    got = sub.matching(pred=lambda m: m.topic.startswith(f"{u}/"))
    assert sorted(m.topic for m in got) == sorted(topics)
    assert all(m.retain for m in got)
    assert {m.qos for m in got} == {pub_qos}  # min(stored QoS, subscription QoS 2)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_qos_capped_by_subscription(clients, uid, version):
    t = f"r/{uid}/cap"
    pub = clients(version)
    pub.publish(t, b"q2", qos=2, retain=True)
    sub = _subscribe_and_collect(clients, version, t, pub, f"r/{uid}-fence", qos=0)
    [m] = sub.matching(topic=t)
    assert (m.payload, m.qos, m.retain) == (b"q2", 0, True)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_with_qos0_and_clear_with_qos0(clients, uid, version):
    t = f"r/{uid}/q0"
    pub = clients(version)
    pub.publish(t, b"x", qos=0, retain=True)
    pub.sync()
    sub = _subscribe_and_collect(clients, version, t, pub, f"r/{uid}-fence")
    assert sub.payloads(topic=t) == [b"x"]
    pub.publish(t, b"", qos=0, retain=True)
    pub.sync()
    sub2 = _subscribe_and_collect(clients, version, t, pub, f"r/{uid}-fence")
    assert sub2.payloads(topic=t) == []
    # the clearing message itself is still forwarded live (with an empty payload)
    sub.wait_message(topic=t, pred=lambda m: m.payload == b"")
