"""QoS 0/1/2 delivery: real-client flows, the packet-level QoS 2 handshake, exactly-once under
a retransmitted PUBLISH, and redelivery (DUP) of unacknowledged messages on reconnect."""

import pytest

import mqttwire as w
from conftest import VERSIONS

N = 20


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_qos_flow_in_order_exactly_once(clients, uid, version, qos):
    topic = f"t/{uid}/q"
    sub = clients(version)
    pub = clients(version)
    assert sub.subscribe(topic, qos=qos) == [qos]
    for i in range(N):
        pub.publish(topic, f"m{i}".encode(), qos=qos)
    msgs = sub.wait_messages(N, topic=topic)
    if qos > 0:
        # fence: nothing more (no duplicate) arrives behind the N messages
        pub.publish(topic, b"end", qos=qos)
        sub.wait_payload(b"end")
        msgs = [m for m in sub.matching(topic=topic) if m.payload != b"end"]
    assert [m.payload for m in msgs] == [f"m{i}".encode() for i in range(N)]
    assert {m.qos for m in msgs} == {qos}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pub_qos,sub_qos", [(2, 0), (2, 1), (1, 0), (0, 2), (1, 2)])
def test_delivered_qos_is_the_minimum(clients, uid, version, pub_qos, sub_qos):
    topic = f"t/{uid}/min"
    sub = clients(version)
    pub = clients(version)
    sub.subscribe(topic, qos=sub_qos)
    pub.publish(topic, b"x", qos=pub_qos)
    assert sub.wait_message(topic=topic).qos == min(pub_qos, sub_qos)


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_publish_is_acknowledged_with_its_packet_id(raw, uid, version):
    sub = raw(version)
    sub.connect(f"s-{uid}")
    sub.subscribe([(f"t/{uid}/a", 1)])
    pub = raw(version)
    pub.connect(f"p-{uid}")
    for pid in (1, 7, 65535):
        pub.publish(f"t/{uid}/a", f"m{pid}", qos=1, pid=pid)
        ack = pub.expect(w.PUBACK)
        assert ack.pid == pid and ack.rc == 0, ack
        got = sub.expect(w.PUBLISH)
        assert got.payload == f"m{pid}".encode() and got.qos == 1 and got.pid
        sub.send(w.puback(got.pid, version))


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_packet_flow_and_exactly_once_under_retransmission(raw, uid, version):
    topic = f"t/{uid}/q2"
    sub = raw(version)
    assert sub.connect(f"s-{uid}").rc == 0
    assert sub.subscribe([(topic, 2)]).rcs == [2]
    pub = raw(version)
    assert pub.connect(f"p-{uid}").rc == 0

    # publisher side: PUBLISH -> PUBREC; a retransmitted PUBLISH (DUP) before PUBREL -> PUBREC
    # again; PUBREL -> PUBCOMP
    pub.publish(topic, b"once", qos=2, pid=10)
    rec = pub.expect(w.PUBREC)
    assert rec.pid == 10 and rec.rc == 0, rec
    pub.publish(topic, b"once", qos=2, pid=10, dup=True)
    rec2 = pub.expect(w.PUBREC)
    assert rec2.pid == 10 and rec2.rc == 0, rec2
    pub.send(w.pubrel(10, version))
    comp = pub.expect(w.PUBCOMP)
    assert comp.pid == 10 and comp.rc == 0, comp

    # subscriber side: PUBLISH -> (PUBREC) -> PUBREL -> (PUBCOMP)
    got = sub.expect(w.PUBLISH)
    assert (got.payload, got.qos, got.dup) == (b"once", 2, False), got
    sub.send(w.pubrec(got.pid, version))
    rel = sub.expect(w.PUBREL)
    assert rel.pid == got.pid and rel.flags == 0x02, rel
    sub.send(w.pubcomp(got.pid, version))

    # a second message completes the same way; the first was not delivered twice
    pub.publish(topic, b"fence", qos=2, pid=11)
    assert pub.expect(w.PUBREC).pid == 11
    pub.send(w.pubrel(11, version))
    assert pub.expect(w.PUBCOMP).pid == 11
    nxt = sub.expect(w.PUBLISH)
    assert nxt.payload == b"fence", f"duplicate delivery of a QoS 2 message: {nxt}"
    sub.send(w.pubrec(nxt.pid, version))
    assert sub.expect(w.PUBREL).pid == nxt.pid
    sub.send(w.pubcomp(nxt.pid, version))


def _persistent_connect(rc: w.RawClient, client_id: str):
    props = {"SessionExpiryInterval": 300} if rc.version == w.V5 else None
    return rc.connect(client_id, clean=False, props=props)


@pytest.mark.parametrize("version", VERSIONS)
def test_unacked_qos1_is_redelivered_with_dup_on_reconnect(raw, clients, uid, version):
    topic = f"t/{uid}/redeliver"
    cid = f"s-{uid}"
    sub = raw(version)
    assert _persistent_connect(sub, cid).rc == 0
    assert sub.subscribe([(topic, 1)]).rcs == [1]
    clients(version).publish(topic, b"redeliver-me", qos=1)
    first = sub.expect(w.PUBLISH)
    assert first.payload == b"redeliver-me" and first.dup is False and first.qos == 1
    sub.abort()  # no PUBACK, no DISCONNECT

    again = raw(version)
    ack = _persistent_connect(again, cid)
    assert ack.rc == 0 and ack.session_present is True, ack
    p = again.expect(w.PUBLISH)
    assert (p.payload, p.pid, p.dup, p.qos) == (b"redeliver-me", first.pid, True, 1), p
    again.send(w.puback(p.pid, version))
    again.send(w.disconnect(version))
    # Reconnect only once the broker has closed this connection: a CONNECT racing on a new
    # socket may take the session over before the old socket's PUBACK was read, and then a
    # redelivery is legitimate at-least-once behaviour.
    again.wait_closed(5)

    # acknowledged now: a further reconnect does not bring it back
    third = raw(version)
    assert _persistent_connect(third, cid).session_present is True
    clients(version).publish(topic, b"fence", qos=1)
    p = third.expect(w.PUBLISH)
    assert p.payload == b"fence", f"acknowledged message redelivered: {p}"


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_pubrel_is_resent_on_reconnect(raw, clients, uid, version):
    topic = f"t/{uid}/rel"
    cid = f"s-{uid}"
    sub = raw(version)
    assert _persistent_connect(sub, cid).rc == 0
    sub.subscribe([(topic, 2)])
    clients(version).publish(topic, b"q2", qos=2)
    p = sub.expect(w.PUBLISH)
    sub.send(w.pubrec(p.pid, version))
    assert sub.expect(w.PUBREL).pid == p.pid  # the broker has our PUBREC
    sub.abort()  # no PUBCOMP

    again = raw(version)
    assert _persistent_connect(again, cid).session_present is True
    rel = again.expect(w.PUBREL)
    assert rel.pid == p.pid, rel
    again.send(w.pubcomp(rel.pid, version))
    clients(version).publish(topic, b"fence", qos=2)
    nxt = again.expect(w.PUBLISH)
    assert nxt.payload == b"fence", f"QoS 2 message delivered again after PUBREC: {nxt}"


@pytest.mark.parametrize("version", VERSIONS)
def test_pingreq_pingresp(raw, uid, version):
    c = raw(version)
    c.connect(f"c-{uid}", keepalive=5)
    for _ in range(3):
        c.send(w.pingreq())
        assert c.recv().type == w.PINGRESP


def test_v5_puback_no_matching_subscribers_is_success_class(raw, uid):
    """With nobody subscribed a v5 broker may answer 0x10; either way it is not an error."""
    c = raw(w.V5)
    c.connect(f"c-{uid}")
    c.publish(f"t/{uid}/nobody", b"x", qos=1, pid=3)
    ack = c.expect(w.PUBACK)
    assert ack.pid == 3 and ack.rc in (0x00, 0x10), ack


@pytest.mark.parametrize("version", VERSIONS)
def test_large_payload_round_trip(clients, uid, version):
    """100 kB: below AWS IoT's 128 kB message limit, so any sane default must carry it."""
    topic = f"t/{uid}/big"
    payload = bytes(range(256)) * 400
    sub, pub = clients(version), clients(version)
    sub.subscribe(topic, qos=1)
    pub.publish(topic, payload, qos=1)
    assert sub.wait_message(topic=topic).payload == payload


@pytest.mark.parametrize("version", VERSIONS)
def test_many_messages_in_order(clients, uid, version):
    topic = f"t/{uid}/many"
    n = 500
    sub, pub = clients(version), clients(version)
    sub.subscribe(topic, qos=1)
    infos = [pub.publish(topic, f"{i}".encode(), qos=1, wait=False) for i in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    msgs = sub.wait_messages(n, topic=topic, timeout=30)
    assert [m.payload for m in msgs] == [f"{i}".encode() for i in range(n)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
def test_final_ack_sent_together_with_disconnect_is_honoured(raw, clients, uid, version, qos):
    """PUBACK (or PUBCOMP) and DISCONNECT in one TCP segment: the broker must process the ack
    before ending the connection, so the message is not sent again on the next connect.
    Repeated, because a broker that races the two gets it wrong only some of the time."""
    topic = f"t/{uid}/ack-then-bye"
    cid = f"s-{uid}"
    pub = clients(version)
    sub = raw(version)
    assert _persistent_connect(sub, cid).rc == 0
    sub.subscribe([(topic, qos)])
    for i in range(10):
        pub.publish(topic, f"m{i}".encode(), qos=qos)
        p = sub.expect(w.PUBLISH)
        assert p.payload == f"m{i}".encode(), f"round {i}: {p}"
        if qos == 1:
            final = w.puback(p.pid, version)
        else:
            sub.send(w.pubrec(p.pid, version))
            assert sub.expect(w.PUBREL).pid == p.pid
            final = w.pubcomp(p.pid, version)
        sub.send(final + w.disconnect(version))
        sub.wait_closed(5)
        sub = raw(version)
        ack = _persistent_connect(sub, cid)
        assert ack.rc == 0 and ack.session_present, ack
        pub.publish(topic, f"fence{i}".encode(), qos=qos)
        nxt = sub.expect(w.PUBLISH)
        assert nxt.payload == f"fence{i}".encode(), \
            f"round {i}: acknowledged message sent again after reconnect: {nxt}"
        if qos == 1:
            sub.send(w.puback(nxt.pid, version))
        else:
            sub.send(w.pubrec(nxt.pid, version))
            assert sub.expect(w.PUBREL).pid == nxt.pid
            sub.send(w.pubcomp(nxt.pid, version))


# ---------------------------------------------------------------------------------------------
# flow control: a slow subscriber pushes back on its publishers

def test_slow_subscriber_holds_back_the_publishers_pubacks_and_loses_nothing(broker_factory, raw, uid):
    """With 4 KiB queued for a subscriber, a publisher that runs ahead of a slow subscriber gets
    its PUBACKs only as the subscriber takes messages: the queue between them stays short
    (latency) and nothing is dropped."""
    n, size, queued_bytes, window = 60, 1000, 4096, 2
    b = broker_factory("--max-queued-bytes", str(queued_bytes), "--slow-subscriber-timeout", "30")
    topic = f"fc/{uid}"
    sub = raw(w.V5, broker=b)
    sub.connect(f"slow-{uid}", props={"ReceiveMaximum": window})
    sub.subscribe([(topic, 1)])
    pub = raw(w.V5, broker=b)
    pub.connect(f"fast-{uid}")
    for i in range(n):
        pub.publish(topic, i.to_bytes(2, "big") * (size // 2), qos=1, pid=i + 1)

    # The subscriber takes nothing yet: only what fits in its queue and its window is acked.
    early = [p for p in pub.quiet(1.0) if p.type == w.PUBACK]
    ahead = queued_bytes // size + window + 2
    assert len(early) <= ahead, f"{len(early)} PUBACKs before the subscriber took anything"

    # The subscriber takes and acknowledges every message, in order; the publisher's PUBACKs follow.
    got = []
    while len(got) < n:
        p = sub.expect(w.PUBLISH, timeout=10)
        got.append(int.from_bytes(p.payload[:2], "big"))
        sub.send(w.puback(p.pid, w.V5))
    assert got == list(range(n)), "messages lost or out of order"
    acks = [p.pid for p in early]
    while len(acks) < n:
        acks.append(pub.expect(w.PUBACK, timeout=10).pid)
    assert acks == list(range(1, n + 1))
