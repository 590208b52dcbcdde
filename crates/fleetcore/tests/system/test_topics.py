"""Topic filters: `+` and `#` matching (incl. `a/#` matching `a`), `$`-topics kept out of
wildcards that start with a wildcard, unsubscribe, overlapping subscriptions."""

import pytest

from clients import fence
from conftest import VERSIONS

# (filter, topics that match, topics that do not) - {u} is the test's unique prefix
CASES = [
    ("{u}/a/b", ["{u}/a/b"], ["{u}/a", "{u}/a/b/c", "{u}/a/B", "{u}/a/b/"]),
    ("{u}/+/b", ["{u}/a/b", "{u}/x/b", "{u}//b"], ["{u}/a/c", "{u}/a/b/c", "{u}/b"]),
    ("{u}/a/+", ["{u}/a/b", "{u}/a/"], ["{u}/a", "{u}/a/b/c"]),
    ("{u}/a/#", ["{u}/a", "{u}/a/b", "{u}/a/b/c", "{u}/a/"], ["{u}/ab", "{u}/b/a"]),
    ("{u}/+/+/c", ["{u}/a/b/c"], ["{u}/a/c", "{u}/a/b/c/d"]),
    ("{u}/+/#", ["{u}/a", "{u}/a/b/c"], ["{u}"]),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0].replace("{u}/", "") for c in CASES])
def test_wildcard_matching(clients, uid, version, case):
    flt, yes, no = CASES[case]
    u = f"w/{uid}"
    sub = clients(version)
    pub = clients(version)
    sub.subscribe(flt.format(u=u), qos=1)
    sub.subscribe(f"{u}-fence", qos=1)
    for t in no + yes:
        pub.publish(t.format(u=u), t.format(u=u).encode(), qos=1)
    fence(sub, pub, f"{u}-fence")
    got = sorted(m.topic for m in sub.matching() if m.topic != f"{u}-fence")
    assert got == sorted(t.format(u=u) for t in yes)


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_not_matched_by_leading_wildcards(clients, uid, version):
    dollar = f"$sys-{uid}/x"
    sub_hash = clients(version)
    sub_plus = clients(version)
    sub_explicit = clients(version)
    sub_hash.subscribe("#", qos=1)
    sub_plus.subscribe("+/x", qos=1)
    sub_explicit.subscribe(f"$sys-{uid}/#", qos=1)
    sub_explicit.subscribe(f"$sys-{uid}/+", qos=1)
    pub = clients(version)
    pub.publish(dollar, b"dollar", qos=1)
    # $-topic reaches a filter that names it, once per matching subscription at most
    assert sub_explicit.wait_message(topic=dollar).payload == b"dollar"
    # the fence topic matches both '#' and '+/x'
    fence_topic = f"fence-{uid}"
    pub.publish(dollar, b"dollar-2", qos=1)
    sub_plus.subscribe(f"{fence_topic}/x", qos=1)
    pub.publish(f"{fence_topic}/x", b"f", qos=1)
    sub_hash.wait_payload(b"f")
    sub_plus.wait_payload(b"f")
    assert not [m for m in sub_hash.matching() if m.topic.startswith("$")], "'#' matched a $-topic"
    assert not [m for m in sub_plus.matching() if m.topic.startswith("$")], "'+/x' matched a $-topic"


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(clients, uid, version):
    t = f"t/{uid}/u"
    sub = clients(version)
    pub = clients(version)
    sub.subscribe(t, qos=1)
    sub.subscribe(f"{t}-fence", qos=1)
    pub.publish(t, b"before", qos=1)
    sub.wait_payload(b"before")
    sub.unsubscribe(t)
    pub.publish(t, b"after", qos=1)
    fence(sub, pub, f"{t}-fence")
    assert sub.payloads(topic=t) == [b"before"]


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_replaces_subscription_qos(clients, uid, version):
    t = f"t/{uid}/r"
    sub = clients(version)
    pub = clients(version)
    assert sub.subscribe(t, qos=0) == [0]
    assert sub.subscribe(t, qos=2) == [2]
    pub.publish(t, b"x", qos=2)
    pub.publish(t, b"fence", qos=2)
    msgs = sub.wait_messages(2, topic=t)
    # one subscription (replaced), not two: each message once, at the new QoS
    pub.publish(f"{t}", b"end", qos=2)
    sub.wait_payload(b"end")
    msgs = sub.matching(topic=t)
    assert [m.payload for m in msgs] == [b"x", b"fence", b"end"]
    assert {m.qos for m in msgs} == {2}


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_deliver_at_least_once_at_highest_qos(clients, uid, version):
    """Overlapping filters of one client: the message arrives (3.1.1 §3.3.5 allows one copy at
    the maximum QoS, or one per subscription), and the highest granted QoS is honoured."""
    u = f"o/{uid}"
    sub = clients(version)
    pub = clients(version)
    sub.subscribe(f"{u}/#", qos=0)
    sub.subscribe(f"{u}/+", qos=1)
    pub.publish(f"{u}/x", b"m", qos=1)
    pub.publish(f"{u}/x", b"end", qos=1)
    sub.wait_payload(b"end")
    copies = [m for m in sub.matching(topic=f"{u}/x") if m.payload == b"m"]
    assert 1 <= len(copies) <= 2
    assert max(m.qos for m in copies) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_names_are_case_sensitive_and_utf8(clients, uid, version):
    u = f"c/{uid}"
    sub = clients(version)
    pub = clients(version)
    sub.subscribe(f"{u}/Grüße/+", qos=1)
    pub.publish(f"{u}/grüße/a", b"lower", qos=1)
    pub.publish(f"{u}/Grüße/a", b"upper", qos=1)
    msg = sub.wait_message()
    assert (msg.topic, msg.payload) == (f"{u}/Grüße/a", b"upper")


@pytest.mark.parametrize("version", VERSIONS)
def test_fan_out_to_many_subscribers(clients, uid, version):
    t = f"fan/{uid}"
    subs = [clients(version) for _ in range(40)]
    for s in subs:
        s.subscribe(t, qos=1)
    pub = clients(version)
    for i in range(3):
        pub.publish(t, f"m{i}".encode(), qos=1)
    for s in subs:
        assert [m.payload for m in s.wait_messages(3, topic=t)] == [b"m0", b"m1", b"m2"]
