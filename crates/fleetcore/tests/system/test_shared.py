"""Shared subscriptions `$share/{group}/{filter}`: each message to exactly one member of the
group, load spread over the members, ordinary subscribers unaffected."""

import pytest

from clients import fence
from conftest import VERSIONS

N = 30


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("flt", ["{u}/jobs", "{u}/+"], ids=["plain", "wildcard"])
def test_shared_subscription_delivers_each_message_to_one_member(clients, uid, version, flt):
    u = f"sh/{uid}"
    topic = f"{u}/jobs"
    members = [clients(version) for _ in range(2)]
    for m in members:
        assert m.subscribe(f"$share/g1/{flt.format(u=u)}", qos=1) == [1]
    plain = clients(version)
    plain.subscribe(topic, qos=1)
    pub = clients(version)
    for i in range(N):
        pub.publish(topic, f"job-{i}".encode(), qos=1)
    plain.wait_messages(N, topic=topic)

    def total():
        return sum(len(m.matching(topic=topic)) for m in members)
    # every message reaches the group; the last one may still be on its way to a member
    members[0]._wait(lambda: total() >= N, 10, "all jobs at the group")
    got = [m.payloads(topic=topic) for m in members]
    everything = sorted(got[0] + got[1], key=lambda p: int(p.split(b"-")[1]))
    assert everything == [f"job-{i}".encode() for i in range(N)], "lost or duplicated within the group"
    assert got[0] and got[1], f"one member got nothing: {len(got[0])} / {len(got[1])}"
    assert plain.payloads(topic=topic) == [f"job-{i}".encode() for i in range(N)]


@pytest.mark.parametrize("version", VERSIONS)
def test_two_groups_each_get_every_message(clients, uid, version):
    topic = f"sh/{uid}/t"
    g1 = [clients(version) for _ in range(2)]
    g2 = [clients(version)]
    for c in g1:
        c.subscribe(f"$share/a/{topic}", qos=1)
    for c in g2:
        c.subscribe(f"$share/b/{topic}", qos=1)
    pub = clients(version)
    for i in range(10):
        pub.publish(topic, f"{i}".encode(), qos=1)
    g2[0].wait_messages(10, topic=topic)
    g1[0]._wait(lambda: sum(len(c.matching(topic=topic)) for c in g1) >= 10, 10, "group a")
    assert sum(len(c.matching(topic=topic)) for c in g1) == 10


@pytest.mark.parametrize("version", VERSIONS)
def test_remaining_member_gets_everything_after_another_leaves(clients, uid, version):
    topic = f"sh/{uid}/t"
    stay, leave = clients(version), clients(version)
    stay.subscribe(f"$share/g/{topic}", qos=1)
    leave.subscribe(f"$share/g/{topic}", qos=1)
    leave.disconnect()
    pub = clients(version)
    for i in range(10):
        pub.publish(topic, f"{i}".encode(), qos=1)
    msgs = stay.wait_messages(10, topic=topic)
    assert [m.payload for m in msgs] == [f"{i}".encode() for i in range(10)]


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_from_shared_subscription(clients, uid, version):
    topic = f"sh/{uid}/t"
    a, b = clients(version), clients(version)
    a.subscribe(f"$share/g/{topic}", qos=1)
    b.subscribe(f"$share/g/{topic}", qos=1)
    a.subscribe(f"{topic}-fence", qos=1)
    a.unsubscribe(f"$share/g/{topic}")
    pub = clients(version)
    for i in range(6):
        pub.publish(topic, f"{i}".encode(), qos=1)
    b.wait_messages(6, topic=topic)
    fence(a, pub, f"{topic}-fence")
    assert a.matching(topic=topic) == []
