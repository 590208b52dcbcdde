"""MQTT 5 features: user properties, response topic / correlation data, topic aliases both ways,
receive maximum, maximum packet size, message expiry, subscription identifiers, no-local,
retain-as-published, retain handling, reason strings / request problem information."""

import time

import pytest

import mqttwire as w
from brokers import MODE, let_time_pass
from clients import V5, fence, sub_opts


# ---------------------------------------------------------------------------------------------
# properties forwarded

def test_user_properties_forwarded_in_order(clients, uid):
    t = f"p/{uid}"
    sub, pub = clients(V5), clients(V5)
    sub.subscribe(t, qos=1)
    ups = [("a", "1"), ("b", "2"), ("a", "3"), ("ключ", "значение")]
    pub.publish(t, b"x", qos=1, properties={"UserProperty": ups})
    m = sub.wait_message(topic=t)
    assert m.properties.UserProperty == ups


def test_request_response_properties_forwarded(clients, uid):
    t = f"p/{uid}/req"
    sub, pub = clients(V5), clients(V5)
    sub.subscribe(t, qos=1)
    pub.publish(t, b'{"q":1}', qos=1, properties={
        "ResponseTopic": f"p/{uid}/resp", "CorrelationData": b"\x00corr\xff",
        "ContentType": "application/json", "PayloadFormatIndicator": 1})
    m = sub.wait_message(topic=t)
    assert m.properties.ResponseTopic == f"p/{uid}/resp"
    assert m.properties.CorrelationData == b"\x00corr\xff"
    assert m.properties.ContentType == "application/json"
    assert m.properties.PayloadFormatIndicator == 1
    # and the responder's answer reaches the requester on the response topic
    pub.subscribe(f"p/{uid}/resp", qos=1)
    sub.publish(m.properties.ResponseTopic, b"answer", qos=1,
                properties={"CorrelationData": m.properties.CorrelationData})
    r = pub.wait_message(topic=f"p/{uid}/resp")
    assert (r.payload, r.properties.CorrelationData) == (b"answer", b"\x00corr\xff")


def test_v5_properties_dropped_for_v311_subscriber(clients, uid):
    """A 3.1.1 subscriber still gets the message (it simply has no properties)."""
    t = f"p/{uid}"
    sub = clients(4)
    sub.subscribe(t, qos=1)
    clients(V5).publish(t, b"x", qos=1, properties={"UserProperty": [("k", "v")],
                                                    "ResponseTopic": "r"})
    assert sub.wait_message(topic=t).payload == b"x"


# ---------------------------------------------------------------------------------------------
# topic aliases

def test_topic_alias_client_to_server(raw, clients, uid):
    t1, t2 = f"ta/{uid}/one", f"ta/{uid}/two"
    sub = clients(V5)
    sub.subscribe(f"ta/{uid}/+", qos=1)
    c = raw(V5)
    ack = c.connect(f"c-{uid}")
    tam = ack.props.get("TopicAliasMaximum", 0)
    assert tam >= 1, f"broker advertises no topic aliases: {ack}"
    c.publish(t1, b"1", qos=1, pid=1, props={"TopicAlias": 1})
    c.publish("", b"2", qos=1, pid=2, props={"TopicAlias": 1})
    c.publish(t2, b"3", qos=1, pid=3, props={"TopicAlias": 1})  # re-map alias 1
    c.publish("", b"4", qos=1, pid=4, props={"TopicAlias": 1})
    c.publish("", b"5", qos=0, props={"TopicAlias": 1})
    for pid in (1, 2, 3, 4):
        assert c.expect(w.PUBACK).pid == pid
    msgs = sub.wait_messages(5, pred=lambda m: m.topic.startswith(f"ta/{uid}/"))
    assert [(m.topic, m.payload) for m in msgs] == [
        (t1, b"1"), (t1, b"2"), (t2, b"3"), (t2, b"4"), (t2, b"5")]
    assert all(m.properties is None or not hasattr(m.properties, "TopicAlias") for m in msgs)


def _resolve_aliases(pubs, alias_max):
    """Resolve server-to-client topic aliases as a client must; fails on any misuse."""
    table, out = {}, []
    for p in pubs:
        alias = p.props.get("TopicAlias")
        topic = p.topic.decode()
        if alias is None:
            assert topic, f"PUBLISH without topic and without alias: {p}"
        else:
            assert 1 <= alias <= alias_max, f"alias {alias} outside 1..{alias_max}: {p}"
            if topic:
                table[alias] = topic
            else:
                assert alias in table, f"alias {alias} used before it was set: {p}"
                topic = table[alias]
        out.append((topic, p.payload))
    return out


def test_topic_alias_server_to_client(raw, clients, uid):
    """The subscriber allows 3 aliases; whether the broker uses them or not, every PUBLISH must
    resolve to the right topic. (paho does not resolve inbound aliases, hence the raw client.)"""
    u = f"ta/{uid}"
    c = raw(V5)
    c.connect(f"c-{uid}", props={"TopicAliasMaximum": 3})
    c.subscribe([(f"{u}/+", 0)])
    pub = clients(V5)
    expected = []
    for rnd in range(3):
        for i in range(5):  # more topics than aliases
            t = f"{u}/t{i}"
            pub.publish(t, f"{rnd}-{i}".encode(), qos=0)
            expected.append((t, f"{rnd}-{i}".encode()))
    got = [c.expect(w.PUBLISH) for _ in expected]
    assert _resolve_aliases(got, 3) == expected


def test_no_topic_alias_to_client_that_did_not_allow_them(raw, clients, uid):
    u = f"ta/{uid}"
    c = raw(V5)
    c.connect(f"c-{uid}")  # no Topic Alias Maximum: 0
    c.subscribe([(f"{u}/+", 0)])
    pub = clients(V5)
    for i in range(6):
        pub.publish(f"{u}/t{i % 2}", b"x", qos=0)
    for _ in range(6):
        p = c.expect(w.PUBLISH)
        assert "TopicAlias" not in p.props and p.topic, p


def test_topic_alias_zero_is_rejected(raw, uid):
    c = raw(V5)
    c.connect(f"c-{uid}")
    c.publish(f"ta/{uid}", b"x", qos=0, props={"TopicAlias": 0})
    seen = c.wait_closed(5)
    # [MQTT-3.3.2-8] says 0x94 Topic Alias invalid; Mosquitto 2.0.11 answers 0x81 Malformed.
    allowed = (0x94, 0x81) if MODE == "mosquitto" else (0x94,)
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc in allowed, seen


def test_topic_alias_above_maximum_is_rejected(broker_factory, raw, uid):
    b = broker_factory("--topic-alias-maximum", "3")
    c = raw(V5, broker=b)
    ack = c.connect(f"c-{uid}")
    assert ack.props.get("TopicAliasMaximum") == 3, ack
    c.publish(f"ta/{uid}", b"ok", qos=0, props={"TopicAlias": 3})
    c.publish(f"ta/{uid}", b"bad", qos=0, props={"TopicAlias": 4})
    seen = c.wait_closed(5)
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x94, seen


def test_unknown_topic_alias_is_a_protocol_error(raw, uid):
    c = raw(V5)
    c.connect(f"c-{uid}")
    c.publish("", b"x", qos=0, props={"TopicAlias": 2})  # alias never set
    seen = c.wait_closed(5)
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc in (0x82, 0x94), seen


# ---------------------------------------------------------------------------------------------
# flow control and size limits

@pytest.mark.fleetcore_only(
    "Mosquitto 2.0.11 overfills the client's quota: with Receive Maximum 2 it sends pids 1,2, then "
    "after one PUBACK sends 3 and 4, leaving 3 unacknowledged in flight")
def test_receive_maximum_bounds_unacked_qos1_in_flight(raw, clients, uid):
    N, RM = 8, 2
    t = f"rm/{uid}"
    c = raw(V5)
    c.connect(f"c-{uid}", props={"ReceiveMaximum": RM})
    c.subscribe([(t, 1)])
    pub = clients(V5)
    for i in range(N):
        pub.publish(t, f"m{i}".encode(), qos=1)  # the broker acks the publisher regardless

    outstanding: list[int] = []
    received: list[bytes] = []
    while len(received) < N:
        want = min(RM, N - len(received) + len(outstanding))
        while len(outstanding) < want:
            p = c.expect(w.PUBLISH)
            outstanding.append(p.pid)
            received.append(p.payload)
        if len(outstanding) == RM:
            extra = [p for p in c.quiet(0.4) if p.type == w.PUBLISH]
            assert not extra, f"more than {RM} unacknowledged QoS 1 in flight: {extra}"
        c.send(w.puback(outstanding.pop(0), V5))
    assert received == [f"m{i}".encode() for i in range(N)]


@pytest.mark.parametrize("qos", [0, 1])
def test_maximum_packet_size_of_client_is_respected(clients, uid, qos):
    t = f"mps/{uid}"
    sub = clients(V5, connect_props={"MaximumPacketSize": 100})
    sub.subscribe(t, qos=1)
    pub = clients(V5)
    pub.publish(t, b"B" * 500, qos=qos)
    pub.publish(t, b"small", qos=qos)
    sub.wait_payload(b"small")
    assert [len(p) for p in sub.payloads(topic=t)] == [5], "an oversize message reached the client"
    assert sub.connected
    # and the session keeps working afterwards
    pub.publish(t, b"again", qos=1)
    sub.wait_payload(b"again")


# ---------------------------------------------------------------------------------------------
# server keep alive

MAX_KEEP_ALIVE = 2


@pytest.mark.parametrize("asked", [0, 60])
def test_keep_alive_above_the_maximum_is_lowered_announced_and_applied(broker_factory, raw, uid, asked):
    """A client asking for no keep alive, or a longer one than the server allows, is told the
    server's in CONNACK (Server Keep Alive) and is held to it."""
    b = broker_factory("--max-keep-alive", str(MAX_KEEP_ALIVE))
    c = raw(V5, broker=b)
    ack = c.connect(f"ka-{uid}", keepalive=asked)
    assert ack.rc == 0 and ack.props.get("ServerKeepAlive") == MAX_KEEP_ALIVE, ack
    t0 = time.monotonic()
    seen = c.wait_closed(MAX_KEEP_ALIVE * 1.5 + 5)
    elapsed = time.monotonic() - t0
    assert elapsed >= MAX_KEEP_ALIVE, f"closed after {elapsed:.2f}s, before the keep alive ran out"
    assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8D, seen


def test_keep_alive_within_the_maximum_is_kept(broker_factory, raw, uid):
    b = broker_factory("--max-keep-alive", str(MAX_KEEP_ALIVE))
    c = raw(V5, broker=b)
    ack = c.connect(f"ka-{uid}", keepalive=1)
    assert ack.rc == 0 and "ServerKeepAlive" not in ack.props, ack


@pytest.mark.fleetcore_only("AWS IoT's maximum keep alive of 1200 s is fleetcore's default; "
                            "Mosquitto's is 65535 s")
def test_default_maximum_keep_alive_is_aws_iots(raw, uid):
    c = raw(V5)
    assert c.connect(f"ka-{uid}", keepalive=0).props.get("ServerKeepAlive") == 1200
    c2 = raw(V5)
    assert "ServerKeepAlive" not in c2.connect(f"kb-{uid}", keepalive=1200).props


def test_mqtt311_keep_alive_is_held_to_the_maximum(broker_factory, raw, uid):
    """3.1.1 has no Server Keep Alive: like AWS IoT, the server applies its maximum anyway."""
    b = broker_factory("--max-keep-alive", str(MAX_KEEP_ALIVE))
    c = raw(4, broker=b)
    assert c.connect(f"ka-{uid}", keepalive=0).rc == 0
    t0 = time.monotonic()
    c.wait_closed(MAX_KEEP_ALIVE * 1.5 + 5)
    assert time.monotonic() - t0 >= MAX_KEEP_ALIVE


# ---------------------------------------------------------------------------------------------
# message expiry

def test_message_expiry_for_offline_session(clients, uid):
    t = f"exp/{uid}"
    cid = f"s-{uid}"
    sub = clients(V5, client_id=cid, clean=False, session_expiry=300)
    sub.subscribe(t, qos=1)
    sub.disconnect()
    pub = clients(V5)
    pub.publish(t, b"short", qos=1, properties={"MessageExpiryInterval": 1})
    pub.publish(t, b"long", qos=1, properties={"MessageExpiryInterval": 30})
    # both are with the broker once "long" is acknowledged: the clock starts there, so a slow
    # machine cannot shorten the time they spend queued
    t_queued = time.monotonic()
    pub.publish(t, b"forever", qos=1)
    let_time_pass(t_queued + 2.5)  # the session stays offline while the 1 s expiry runs out
    back = clients(V5, client_id=cid, clean=False, session_expiry=300)
    assert back.session_present
    back.wait_payload(b"forever")
    got = back.matching(topic=t)
    assert [m.payload for m in got] == [b"long", b"forever"], "expired message delivered"
    long_msg = got[0]
    left = long_msg.properties.MessageExpiryInterval
    assert 1 <= left <= 28, f"expiry interval not reduced by the time spent queued: {left}"
    assert not hasattr(got[1].properties, "MessageExpiryInterval")


def test_message_expiry_forwarded_to_online_subscriber(clients, uid):
    t = f"exp/{uid}"
    sub, pub = clients(V5), clients(V5)
    sub.subscribe(t, qos=1)
    pub.publish(t, b"x", qos=1, properties={"MessageExpiryInterval": 60})
    m = sub.wait_message(topic=t)
    assert 55 <= m.properties.MessageExpiryInterval <= 60


def test_retained_message_expires(clients, uid):
    t = f"exp/{uid}/ret"
    pub = clients(V5)
    pub.publish(t, b"stale-soon", qos=1, retain=True, properties={"MessageExpiryInterval": 1})
    t_pub = time.monotonic()
    let_time_pass(t_pub + 2.5)  # the retained message's 1 s lifetime runs out
    sub = clients(V5)
    sub.subscribe(t, qos=1)
    sub.subscribe(f"{t}-fence", qos=1)
    fence(sub, pub, f"{t}-fence")
    assert sub.matching(topic=t) == [], "expired retained message delivered"


# ---------------------------------------------------------------------------------------------
# subscription options and identifiers

def test_subscription_identifiers(clients, uid):
    u = f"sid/{uid}"
    sub, pub = clients(V5), clients(V5)
    sub.subscribe(f"{u}/#", qos=1, sub_id=7)
    sub.subscribe(f"{u}/+/x", qos=1, sub_id=9)
    sub.subscribe(f"{u}-plain", qos=1)
    pub.publish(f"{u}/a/x", b"both", qos=1)
    pub.publish(f"{u}/b", b"seven", qos=1)
    pub.publish(f"{u}-plain", b"none", qos=1)
    sub.wait_payload(b"none")
    ids_both = set()
    for m in sub.matching(pred=lambda m: m.payload == b"both"):
        ids_both.update(m.properties.SubscriptionIdentifier)
    assert ids_both == {7, 9}
    [seven] = sub.matching(pred=lambda m: m.payload == b"seven")
    assert seven.properties.SubscriptionIdentifier == [7]
    [none] = sub.matching(pred=lambda m: m.payload == b"none")
    assert not hasattr(none.properties, "SubscriptionIdentifier")


def test_no_local(clients, uid):
    t = f"nl/{uid}"
    me, other = clients(V5), clients(V5)
    me.subscribe(t, options=sub_opts(qos=1, no_local=True))
    me.publish(t, b"from-me", qos=1)
    other.publish(t, b"from-other", qos=1)
    me.wait_payload(b"from-other")
    assert me.payloads(topic=t) == [b"from-other"]


def test_retain_as_published(clients, uid):
    t = f"rap/{uid}"
    keep = clients(V5)
    keep.subscribe(t, options=sub_opts(qos=1, retain_as_published=True))
    clear = clients(V5)
    clear.subscribe(t, options=sub_opts(qos=1, retain_as_published=False))
    pub = clients(V5)
    pub.publish(t, b"r", qos=1, retain=True)
    pub.publish(t, b"n", qos=1, retain=False)
    a = keep.wait_messages(2, topic=t)
    b = clear.wait_messages(2, topic=t)
    assert [(m.payload, m.retain) for m in a] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in b] == [(b"r", False), (b"n", False)]
    pub.publish(t, b"", qos=1, retain=True)


@pytest.mark.parametrize("rh", [0, 1, 2])
def test_retain_handling(clients, uid, rh):
    t = f"rh/{uid}"
    pub = clients(V5)
    pub.publish(t, b"kept", qos=1, retain=True)
    sub = clients(V5)
    sub.subscribe(f"{t}-fence", qos=1)

    def subscribe_and_count():
        sub.subscribe(t, options=sub_opts(qos=1, retain_handling=rh))
        fence(sub, pub, f"{t}-fence")
        return len(sub.matching(topic=t))

    first = subscribe_and_count()
    second = subscribe_and_count() - first  # subscribing again to an existing subscription
    assert (first, second) == {0: (1, 1), 1: (1, 0), 2: (0, 0)}[rh]
    # a live message still flows whatever the retain handling
    pub.publish(t, b"live", qos=1)
    sub.wait_payload(b"live")


# ---------------------------------------------------------------------------------------------
# reason strings

def test_no_reason_string_when_problem_information_not_requested(raw, uid):
    """[MQTT-3.1.2-29]: with Request Problem Information 0, no Reason String or User Property
    on anything but PUBLISH, CONNACK and DISCONNECT."""
    c = raw(V5)
    ack = c.connect(f"c-{uid}", props={"RequestProblemInformation": 0})
    assert ack.rc == 0
    acks = []
    acks.append(c.subscribe([(f"rs/{uid}", 1)], pid=1))
    c.send(w.unsubscribe(2, [f"rs/{uid}/never-subscribed"], V5))
    acks.append(c.expect(w.UNSUBACK))
    c.publish(f"rs/{uid}/nobody", b"x", qos=1, pid=3)
    acks.append(c.expect(w.PUBACK))
    c.publish(f"rs/{uid}/nobody", b"x", qos=2, pid=4)
    acks.append(c.expect(w.PUBREC))
    c.send(w.pubrel(4, V5))
    acks.append(c.expect(w.PUBCOMP))
    c.send(w.pubrel(99, V5))  # unknown packet id: PUBCOMP 0x92 is the likely answer
    acks.append(c.expect(w.PUBCOMP))
    for a in acks:
        assert "ReasonString" not in a.props and "UserProperty" not in a.props, a


def test_reason_strings_are_utf8_when_sent(raw, uid):
    c = raw(V5)
    c.connect(f"c-{uid}")
    c.send(w.unsubscribe(2, [f"rs/{uid}/never-subscribed"], V5))
    ack = c.expect(w.UNSUBACK)  # the decoder fails on invalid UTF-8
    assert ack.rcs[0] in (0x00, 0x11), ack
    c.send(w.pubrel(77, V5))
    comp = c.expect(w.PUBCOMP)
    assert comp.pid == 77 and comp.rc in (0x00, 0x92), comp
    if "ReasonString" in comp.props:
        assert isinstance(comp.props["ReasonString"], str)
