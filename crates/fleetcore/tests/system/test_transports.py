"""Every transport does a full publish/subscribe round trip at both protocol versions: plain TCP,
TLS with a client certificate (mTLS), WebSocket and WebSocket over TLS."""

import ssl

import pytest

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
    import pki
    pki.make_ca(tmp_path / "other" / "ca.pem", tmp_path / "other" / "ca.key", cn="not the broker CA")
    cert, key = pki.make_client_cert(tmp_path / "other" / "ca.pem", tmp_path / "other" / "ca.key",
                                     "intruder", tmp_path / "other")
    c = clients(V5, connect=False, transport=kind, tls=(cert, key))
    _assert_refused(c)


def test_server_certificate_verifies_for_localhost_and_127001(broker, client_cert, uid):
    """The server certificate chains to ca.pem and names both localhost and 127.0.0.1."""
    import socket
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
