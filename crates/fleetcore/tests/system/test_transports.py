"""Every transport does a full publish/subscribe round trip at both protocol versions: plain TCP,
TLS with a client certificate (mTLS), WebSocket and WebSocket over TLS."""

import socket
import ssl

import pytest

import mqttwire as w
import pki
from clients import V5, V311, ConnectFailed
from conftest import VERSIONS

TRANSPORTS = [
    pytest.param(("tcp", False), id="tcp"),
    pytest.param(("tcp", True), id="mqtts"),
    pytest.param(("websockets", False), id="ws"),
    pytest.param(("websockets", True), id="wss"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_round_trip(broker, clients, client_cert, uid, version, transport):
    kind, tls = transport
    certs = [client_cert(broker, f"dev-{uid}-{i}") if tls else None for i in range(2)]
    sub = clients(version, transport=kind, tls=certs[0])
    pub = clients(version, transport=kind, tls=certs[1])
    topic = f"t/{uid}/x"
    assert sub.subscribe(topic, qos=1) == [1]
    for qos in (0, 1, 2):
        pub.publish(topic, f"hello-{qos}".encode(), qos=qos)
    msgs = sub.wait_messages(3, topic=topic)
    assert [m.payload for m in msgs] == [b"hello-0", b"hello-1", b"hello-2"]
    assert [m.qos for m in msgs] == [0, 1, 1]


@pytest.mark.parametrize("version", VERSIONS)
def test_cross_transport_delivery(broker, clients, client_cert, uid, version):
    """A message published over one transport reaches subscribers on all the others."""
    topic = f"t/{uid}/fanout"
    subs = [
        clients(version, transport="tcp"),
        clients(version, transport="tcp", tls=client_cert(broker, f"a-{uid}")),
        clients(version, transport="websockets"),
        clients(version, transport="websockets", tls=client_cert(broker, f"b-{uid}")),
    ]
    for s in subs:
        s.subscribe(topic, qos=1)
    pub = clients(version, transport="websockets", tls=client_cert(broker, f"c-{uid}"))
    pub.publish(topic, b"everywhere", qos=1)
    for s in subs:
        assert s.wait_message(topic=topic).payload == b"everywhere"


@pytest.mark.parametrize("kind", ["tcp", "websockets"])
def test_tls_without_client_certificate_is_refused(broker, clients, kind):
    c = clients(V311, connect=False, transport=kind, tls=(None, None))
    _assert_refused(c)


@pytest.mark.parametrize("kind", ["tcp", "websockets"])
def test_tls_with_certificate_from_another_ca_is_refused(broker, clients, tmp_path, kind):
    pki.make_ca(tmp_path / "other" / "ca.pem", tmp_path / "other" / "ca.key", cn="not the broker CA")
    cert, key = pki.make_client_cert(tmp_path / "other" / "ca.pem", tmp_path / "other" / "ca.key",
                                     "intruder", tmp_path / "other")
    c = clients(V5, connect=False, transport=kind, tls=(cert, key))
    _assert_refused(c)


def test_server_certificate_verifies_for_localhost_and_127001(broker, client_cert, uid):
    """The server certificate chains to ca.pem and names both localhost and 127.0.0.1."""
    cert, key = client_cert(broker, f"probe-{uid}")
    for host in ("127.0.0.1", "localhost"):
        ctx = ssl.create_default_context(cafile=str(broker.ca_pem))
        ctx.load_cert_chain(str(cert), str(key))
        with socket.create_connection(("127.0.0.1", broker.ports["mqtts"]), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=host) as tls:
                assert tls.version() is not None


def _assert_refused(c):
    """The TLS handshake or the first read fails - not a refused TCP connection (wrong port)."""
    try:
        c.connect(timeout=5)
    except ConnectionRefusedError:
        raise AssertionError("TCP connection refused: is the TLS listener up on that port?")
    except (ssl.SSLError, ConnectionError, OSError, ConnectFailed, AssertionError):
        assert not c.connected
        return
    raise AssertionError(f"connection accepted: CONNACK {c.connack}")


# ---------------------------------------------------------------------------------------------
# WebSocket details, with a raw WebSocket client


def _ws(broker, version=w.V5, path="/mqtt", tls_cert=None, subprotocol="mqtt"):
    sock = None
    port = broker.ports["wss" if tls_cert else "ws"]
    if tls_cert:
        ctx = ssl.create_default_context(cafile=str(broker.ca_pem))
        ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                               server_hostname="localhost")
    return w.WsRawClient("127.0.0.1", port, version, path=path, subprotocol=subprotocol, sock=sock)


@pytest.mark.parametrize("path", ["/mqtt", "/", "/any/other/path"])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_websocket_handshake_any_path_with_mqtt_subprotocol(broker, client_cert, uid, path, secure):
    c = _ws(broker, path=path, tls_cert=client_cert(broker, f"ws-{uid}") if secure else None)
    try:
        assert c.status == 101, c.status_line
        assert c.headers.get("sec-websocket-protocol") == "mqtt", c.headers
        assert c.connect(f"ws-{uid}").rc == 0
        c.subscribe([(f"t/{uid}", 1)])
        c.publish(f"t/{uid}", b"over-ws", qos=1, pid=5)
        got = {}
        for _ in range(2):
            p = c.recv()
            got[p.type] = p
        assert got[w.PUBACK].pid == 5
        assert got[w.PUBLISH].payload == b"over-ws"
    finally:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_websocket_packets_split_and_coalesced_across_frames(broker, uid, version):
    c = _ws(broker, version)
    try:
        connect = w.connect(f"ws-{uid}", version=version)
        c.send_frames([connect[:1], connect[1:5], connect[5:]])  # one packet, three frames
        assert c.expect(w.CONNACK).rc == 0
        both = w.subscribe(1, [(f"t/{uid}", 1)], version) + w.publish(f"t/{uid}", b"x", 1, pid=2, version=version)
        c.send(both)  # two packets, one frame (the publish may or may not reach our new subscription)
        types = set()
        while not {w.SUBACK, w.PUBACK} <= types:
            types.add(c.recv().type)
        c.publish(f"t/{uid}", b"after", qos=1, pid=3)
        seen = []
        while not any(p.type == w.PUBLISH and p.payload == b"after" for p in seen):
            seen.append(c.recv())
    finally:
        c.close()


def test_websocket_garbage_is_closed_and_broker_stays_up(broker, clients, uid):
    c = _ws(broker)
    try:
        assert c.connect(f"ws-{uid}").rc == 0
        c.try_send(b"\xff\xff\xff\xff\xff\x00garbage")
        c.wait_closed(5)
    finally:
        c.close()
    sub = clients(V5, transport="websockets")
    sub.subscribe(f"t/{uid}", qos=1)
    clients(V311, transport="websockets").publish(f"t/{uid}", b"fine", qos=1)
    sub.wait_payload(b"fine")
