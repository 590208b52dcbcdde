"""CONNECT / CONNACK: protocol levels, client identifiers, anonymous access, enhanced auth, and
what a v5 CONNACK advertises."""

import pytest

import mqttwire as w
from brokers import MODE
from clients import V5
from conftest import VERSIONS


def _connack_then_close(rc: w.RawClient, timeout: float = 5.0):
    """Read what the server answers before closing: (CONNACK or None, other packets)."""
    seen = rc.wait_closed(timeout)
    connacks = [p for p in seen if p.type == w.CONNACK]
    assert len(connacks) <= 1, seen
    assert all(p.type == w.CONNACK for p in seen), f"unexpected packets: {seen}"
    return connacks[0] if connacks else None


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_accepted(raw, uid, version):
    c = raw(version)
    ack = c.connect(f"c-{uid}")
    assert ack.rc == 0
    assert ack.session_present is False
    c.send(w.pingreq())
    c.expect(w.PINGRESP)
    c.disconnect()


@pytest.mark.fleetcore_only("Mosquitto implements MQTT 3.1 (MQIsdp, level 3) and accepts it")
def test_mqtt31_mqisdp_level3_is_refused(raw, uid):
    c = raw(w.V311)
    c.send(w.connect(f"c-{uid}", version=w.V31))
    ack = _connack_then_close(c)
    # 3.1.1 §3.1.2.2: unsupported level -> CONNACK 0x01 then close; a wrong protocol name may
    # also just be closed ([MQTT-3.1.2-1]).
    assert ack is None or ack.rc == 0x01, ack


@pytest.mark.parametrize("name", ["MQTT"])
def test_protocol_level_6_is_refused(raw, uid, name):
    c = raw(w.V311)
    c.send(w.connect(f"c-{uid}", version=w.V311, proto_name=name, proto_level=6))
    ack = _connack_then_close(c)
    # A server may answer in 3.1.1 form (0x01 unacceptable protocol version) or v5 form (0x84
    # unsupported protocol version), or just close.
    assert ack is None or ack.rc in (0x01, 0x84), ack


def test_unknown_protocol_name_is_closed(raw, uid):
    c = raw(w.V5)
    c.send(w.connect(f"c-{uid}", version=w.V5, proto_name="MQTX"))
    ack = _connack_then_close(c)
    assert ack is None or ack.rc != 0, ack


def test_v311_empty_client_id_with_persistent_session_is_rejected(raw):
    c = raw(w.V311)
    c.send(w.connect("", version=w.V311, clean=False))
    ack = _connack_then_close(c)
    assert ack is not None and ack.rc == 0x02, f"expected CONNACK 2 (identifier rejected), got {ack}"


def test_v311_empty_client_id_with_clean_session_is_accepted(raw):
    c = raw(w.V311)
    ack = c.connect("", clean=True)
    assert ack.rc == 0


def test_v5_server_assigned_client_identifier(raw, clients, uid):
    ids = []
    for _ in range(2):
        c = raw(w.V5)
        ack = c.connect("", clean=True)
        assert ack.rc == 0
        assigned = ack.props.get("AssignedClientIdentifier")
        assert assigned, f"no Assigned Client Identifier in {ack}"
        ids.append(assigned)
    assert ids[0] != ids[1]
    # and the assigned session works: subscribe, receive
    c.subscribe([(f"t/{uid}/a", 1)])
    clients(V5).publish(f"t/{uid}/a", b"to-assigned", qos=1)
    p = c.expect(w.PUBLISH)
    assert p.payload == b"to-assigned"


@pytest.mark.parametrize("version", VERSIONS)
def test_anonymous_refused_without_allow_anonymous(broker_factory, raw, client_cert, clients, uid, version):
    b = broker_factory(allow_anonymous=False)
    c = raw(version, broker=b)
    c.send(w.connect(f"anon-{uid}", version=version))
    ack = _connack_then_close(c)
    expected = 0x87 if version == V5 else 0x05
    assert ack is not None and ack.rc == expected, f"expected CONNACK {expected:#x}, got {ack}"
    # the plain WebSocket listener follows the same rule
    ws = w.WsRawClient(b.host, b.ports["ws"], version)
    try:
        ws.send(w.connect(f"anon-ws-{uid}", version=version))
        ack = _connack_then_close(ws)
        assert ack is not None and ack.rc == expected, f"ws: expected CONNACK {expected:#x}, got {ack}"
    finally:
        ws.close()
    # the broker itself is fine: a client with a certificate gets in over mTLS
    good = clients(version, broker=b, tls=client_cert(b, f"dev-{uid}"))
    assert good.connack[0] == 0


def test_v5_authentication_method_is_refused(raw, uid):
    c = raw(w.V5)
    c.send(w.connect(f"c-{uid}", version=w.V5,
                     props={"AuthenticationMethod": "SCRAM-SHA-256", "AuthenticationData": b"n,,n=user,r=abc"}))
    ack = _connack_then_close(c)
    assert ack is not None and ack.rc == 0x8C, f"expected CONNACK 0x8C bad authentication method, got {ack}"


def test_v5_connack_advertises_configured_limits(broker_factory, raw, uid):
    b = broker_factory("--max-packet-size", "4096", "--topic-alias-maximum", "5", "--max-inflight", "7")
    c = raw(w.V5, broker=b)
    ack = c.connect(f"c-{uid}")
    assert ack.rc == 0
    assert ack.props.get("MaximumPacketSize") == 4096, ack
    assert ack.props.get("TopicAliasMaximum") == 5, ack
    assert ack.props.get("ReceiveMaximum") == 7, ack


@pytest.mark.fleetcore_only("the contract lists the availability flags explicitly; Mosquitto omits "
                            "those that are at their default (1)")
def test_v5_connack_advertises_features(raw, uid):
    c = raw(w.V5)
    ack = c.connect(f"c-{uid}")
    assert ack.rc == 0
    for key in ("ReceiveMaximum", "TopicAliasMaximum", "MaximumPacketSize"):
        assert key in ack.props, f"CONNACK lacks {key}: {ack}"
    for key in ("RetainAvailable", "WildcardSubscriptionAvailable",
                "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable"):
        assert ack.props.get(key) == 1, f"CONNACK {key} should be 1: {ack}"
    assert ack.props.get("MaximumQoS", 2) == 2


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connect_is_a_protocol_violation(raw, clients, uid, version):
    c = raw(version)
    assert c.connect(f"c-{uid}").rc == 0
    c.send(w.connect(f"c-{uid}", version=version))
    seen = c.wait_closed(5)
    if version == V5 and MODE == "fleetcore":
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x82, seen
    # still healthy
    p = clients(version)
    p.subscribe(f"t/{uid}/ok")
    p.publish(f"t/{uid}/ok", b"ok", qos=1)
    p.wait_message()
