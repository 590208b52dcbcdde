"""fleetcore's own contract around the broker: /health and /metrics, what the first start
creates in the data dir, configuration by flag / env / TOML and their precedence, the limits
flags. None of this exists in Mosquitto, so the whole module is fleetcore-only."""

import configparser
import os
import stat
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import mqttwire as w
import pki
from brokers import FLEETCORE_BIN, HOST, wait_until
from clients import V5, V311

pytestmark = pytest.mark.fleetcore_only("fleetcore HTTP endpoints, data dir layout and configuration")

CONTRACT_FLAGS = [
    "--config", "--data-dir", "--http", "--mqtt", "--mqtts", "--ws", "--wss", "--allow-anonymous",
    "--max-packet-size", "--max-topic-length", "--max-inflight", "--max-queued-messages",
    "--max-connections-per-second", "--connect-timeout", "--topic-alias-maximum",
]


def test_serve_help_lists_every_flag():
    out = subprocess.run([str(FLEETCORE_BIN), "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    missing = [f for f in CONTRACT_FLAGS if f not in out.stdout]
    assert not missing, f"serve --help does not mention {missing}"


# ---------------------------------------------------------------------------------------------
# HTTP: health and metrics

def test_health(broker):
    status, _ = broker.http_get("/health")
    assert status == 200


def test_metrics_exposes_broker_series(broker):
    status, text = broker.http_get("/metrics")
    assert status == 200
    for name, kind in [("fleetcore_mqtt_connections", "gauge"),
                       ("fleetcore_mqtt_messages_received_total", "counter"),
                       ("fleetcore_mqtt_messages_sent_total", "counter")]:
        assert any(line.startswith(name) for line in text.splitlines()), f"/metrics lacks {name}"
        family = name[:-len("_total")] if name.endswith("_total") else name
        types = [ln for ln in text.splitlines() if ln.startswith("# TYPE ") and ln.split()[2] in (name, family)]
        assert types and types[0].split()[3] == kind, f"{name} should be a {kind}: {types}"


def test_metrics_count_connections_and_messages(fresh_broker, clients, uid):
    b = fresh_broker
    m0 = b.metrics()
    sub = clients(V5, broker=b)
    pub = clients(V311, broker=b)
    wait_until(lambda: b.metrics().get("fleetcore_mqtt_connections@sum", 0) >= m0.get("fleetcore_mqtt_connections@sum", 0) + 2,
               10, what="connections gauge to count two clients")
    sub.subscribe(f"m/{uid}", qos=1)
    for i in range(5):
        pub.publish(f"m/{uid}", b"x", qos=1)
    sub.wait_messages(5, topic=f"m/{uid}")
    wait_until(lambda: b.metrics().get("fleetcore_mqtt_messages_received_total@sum", 0)
               >= m0.get("fleetcore_mqtt_messages_received_total@sum", 0) + 5, 10,
               what="messages_received_total += 5")
    wait_until(lambda: b.metrics().get("fleetcore_mqtt_messages_sent_total@sum", 0)
               >= m0.get("fleetcore_mqtt_messages_sent_total@sum", 0) + 5, 10,
               what="messages_sent_total += 5")
    sub.disconnect()
    pub.disconnect()
    wait_until(lambda: b.metrics().get("fleetcore_mqtt_connections@sum", -1) == m0.get("fleetcore_mqtt_connections@sum", 0),
               10, what="connections gauge back down after disconnect")


def test_health_down_after_shutdown(fresh_broker):
    b = fresh_broker
    assert b.http_get("/health")[0] == 200
    assert b.stop() == 0
    assert not b.ready()


# ---------------------------------------------------------------------------------------------
# the data dir's first start

def test_first_start_creates_ca_server_cert_and_credentials(fresh_broker):
    d = fresh_broker.data_dir
    for rel in ("ca/ca.pem", "ca/ca.key", "tls/server.pem", "tls/server.key", "credentials"):
        assert (d / rel).is_file(), f"{rel} not created in the data dir"
    for rel in ("ca/ca.key", "tls/server.key"):
        mode = stat.S_IMODE((d / rel).stat().st_mode)
        assert mode == 0o600, f"{rel} has mode {oct(mode)}, want 0o600"

    ca = x509.load_pem_x509_certificate((d / "ca/ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    key_pem = (d / "ca/ca.key").read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in key_pem, "ca.key should be PEM PKCS#8"
    serialization.load_pem_private_key(key_pem, password=None)

    server = x509.load_pem_x509_certificate((d / "tls/server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    dns, ips = pki.cert_sans(d / "tls/server.pem")
    assert "localhost" in dns and "127.0.0.1" in ips, (dns, ips)

    creds = configparser.ConfigParser()
    creds.read(d / "credentials")
    assert "fleetcore" in creds, f"no [fleetcore] profile in credentials: {creds.sections()}"
    assert creds["fleetcore"].get("aws_access_key_id")
    assert creds["fleetcore"].get("aws_secret_access_key")


def test_restart_keeps_ca_and_credentials(fresh_broker):
    d = fresh_broker.data_dir
    before = {rel: (d / rel).read_bytes() for rel in ("ca/ca.pem", "ca/ca.key", "tls/server.pem", "credentials")}
    fresh_broker.restart()
    for rel, data in before.items():
        assert (d / rel).read_bytes() == data, f"{rel} changed across a restart"


def test_credentials_from_environment(broker_factory):
    b = broker_factory(env={"FLEETCORE_ACCESS_KEY_ID": "AKIATESTFLEETCORE01",
                            "FLEETCORE_SECRET_ACCESS_KEY": "s3cr3t/test+key"})
    creds_file = b.data_dir / "credentials"
    if creds_file.exists():
        creds = configparser.ConfigParser()
        creds.read(creds_file)
        if "fleetcore" in creds:
            assert creds["fleetcore"]["aws_access_key_id"] == "AKIATESTFLEETCORE01"
            assert creds["fleetcore"]["aws_secret_access_key"] == "s3cr3t/test+key"


def test_default_data_dir_is_fleetcore_data_in_cwd(broker_factory):
    b = broker_factory(start=False, data_dir_flag=False)
    b.data_dir = b.workdir / "fleetcore-data"
    b.start()
    assert (b.workdir / "fleetcore-data" / "ca" / "ca.pem").is_file()


# ---------------------------------------------------------------------------------------------
# configuration: flag > env > TOML > default

def _max_packet_size(b) -> int:
    c = w.RawClient(HOST, b.ports["mqtt"], w.V5)
    try:
        ack = c.connect("probe")
        assert ack.rc == 0, ack
        return ack.props.get("MaximumPacketSize")
    finally:
        c.close()


def _listener_toml(b) -> str:
    p = b.ports
    return (f'data_dir = "{b.data_dir}"\nhttp = "{HOST}:{p["http"]}"\nmqtt = "{HOST}:{p["mqtt"]}"\n'
            f'mqtts = "{HOST}:{p["mqtts"]}"\nws = "{HOST}:{p["ws"]}"\nwss = "{HOST}:{p["wss"]}"\n'
            f'allow_anonymous = true\n')


def test_everything_from_toml(broker_factory, clients, uid):
    b = broker_factory(start=False, listener_flags=False, data_dir_flag=False, allow_anonymous=False)
    b.config_toml = _listener_toml(b) + "max_packet_size = 2048\n"
    b.start()
    assert b.ca_pem.is_file(), "data_dir from the TOML not used"
    assert _max_packet_size(b) == 2048
    c = clients(V5, broker=b)
    c.subscribe(f"t/{uid}", qos=1)
    c.publish(f"t/{uid}", b"toml", qos=1)
    c.wait_payload(b"toml")


def test_everything_from_env(broker_factory, clients, uid):
    b = broker_factory(start=False, listener_flags=False, data_dir_flag=False, allow_anonymous=False)
    p = b.ports
    b.env = {"FLEETCORE_DATA_DIR": str(b.data_dir), "FLEETCORE_HTTP": f"{HOST}:{p['http']}",
             "FLEETCORE_MQTT": f"{HOST}:{p['mqtt']}", "FLEETCORE_MQTTS": f"{HOST}:{p['mqtts']}",
             "FLEETCORE_WS": f"{HOST}:{p['ws']}", "FLEETCORE_WSS": f"{HOST}:{p['wss']}",
             "FLEETCORE_ALLOW_ANONYMOUS": "true", "FLEETCORE_MAX_PACKET_SIZE": "1500"}
    b.start()
    assert _max_packet_size(b) == 1500
    c = clients(V5, broker=b)
    c.subscribe(f"t/{uid}", qos=1)
    c.publish(f"t/{uid}", b"env", qos=1)
    c.wait_payload(b"env")


@pytest.mark.parametrize("layers,expected", [
    (("toml",), 2048),
    (("toml", "env"), 1500),
    (("toml", "env", "flag"), 1024),
    (("toml", "flag"), 1024),
    (("env", "flag"), 1024),
], ids=["toml", "env-over-toml", "flag-over-env-and-toml", "flag-over-toml", "flag-over-env"])
def test_precedence_flag_env_toml(broker_factory, layers, expected):
    extra = ("--max-packet-size", "1024") if "flag" in layers else ()
    b = broker_factory(*extra, start=False)
    if "toml" in layers:
        b.config_toml = "max_packet_size = 2048\n"
    if "env" in layers:
        b.env = {"FLEETCORE_MAX_PACKET_SIZE": "1500"}
    b.start()
    assert _max_packet_size(b) == expected


def test_invalid_config_value_fails_fast(broker_factory):
    b = broker_factory(start=False, config_toml='max_packet_size = "not a number"\n')
    with pytest.raises(AssertionError, match="exited with"):
        b.start()
    assert b.proc.returncode != 0


def test_invalid_flag_fails_fast():
    out = subprocess.run([str(FLEETCORE_BIN), "serve", "--max-packet-size", "lots"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert out.stderr.strip(), "no error message for an invalid flag value"


# ---------------------------------------------------------------------------------------------
# limits with no Mosquitto equivalent

def test_max_topic_length(broker_factory, raw, clients, uid):
    b = broker_factory("--max-topic-length", "32")
    ok_topic = f"l/{uid}"[:32]
    long_topic = ok_topic + "/" + "x" * 40
    sub = clients(V5, broker=b)
    sub.subscribe(f"{ok_topic}/#", qos=1)
    sub.subscribe(ok_topic, qos=1)
    c = raw(V5, broker=b)
    c.connect(f"c-{uid}")
    c.publish(long_topic, b"too-long", qos=1, pid=1)
    try:
        p = c.recv(5)
        refused = (p.type == w.PUBACK and p.rc >= 0x80) or (p.type == w.DISCONNECT and p.rc in (0x90, 0x81, 0x82, 0x95))
        assert refused, f"over-long topic accepted: {p}"
    except w.Closed:
        pass
    pub = clients(V5, broker=b)
    pub.publish(ok_topic, b"fits", qos=1)
    sub.wait_payload(b"fits")
    assert sub.payloads(topic=long_topic) == []


def test_max_connections_per_second(broker_factory):
    b = broker_factory("--max-connections-per-second", "5")
    t0 = time.monotonic()
    outcomes = []
    conns = []
    for i in range(15):
        try:
            c = w.RawClient(HOST, b.ports["mqtt"], w.V311, timeout=10)
            conns.append(c)
            c.send(w.connect(f"burst-{i}"))
            p = c.recv(10)
            outcomes.append(p.rc if p.type == w.CONNACK else p.name)
        except (w.Closed, OSError, TimeoutError) as e:
            outcomes.append(type(e).__name__)
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    refused = [o for o in outcomes if o != 0]
    # either excess connections are refused, or accepting them is slowed to the rate
    assert refused or elapsed >= 1.5, f"15 connections accepted in {elapsed:.2f}s at 5/s: {outcomes}"
    # and once the burst is over, connecting works again
    def can_connect():
        c = w.RawClient(HOST, b.ports["mqtt"], w.V311, timeout=5)
        try:
            return c.connect("after-burst").rc == 0
        except (w.Closed, TimeoutError, OSError):
            return False
        finally:
            c.close()
    wait_until(can_connect, 10, interval=0.3, what="a connection after the burst")


def test_max_inflight_is_receive_maximum(broker_factory, raw, uid):
    b = broker_factory("--max-inflight", "3")
    c = raw(V5, broker=b)
    assert c.connect(f"c-{uid}").props.get("ReceiveMaximum") == 3


def test_environment_not_leaking_into_tests():
    """The suite strips FLEETCORE_* from the brokers' environment (sanity check of the harness)."""
    from brokers import Broker
    env = Broker.__new__(Broker)
    env.env = {}
    os.environ["FLEETCORE_MAX_PACKET_SIZE"] = "7"
    try:
        assert "FLEETCORE_MAX_PACKET_SIZE" not in Broker._child_env(env)
    finally:
        del os.environ["FLEETCORE_MAX_PACKET_SIZE"]


def test_connections_gauge_returns_to_baseline_after_churn(fresh_broker, clients, client_cert, uid):
    """Connections that end every which way (DISCONNECT, abort, garbage, failed TLS) are all
    accounted for: the gauge comes back down, nothing leaks."""
    import socket
    import ssl
    b = fresh_broker
    base = b.metrics().get("fleetcore_mqtt_connections@sum", 0)
    for i in range(10):
        ok = w.RawClient(HOST, b.ports["mqtt"], w.V5)
        ok.connect(f"churn-ok-{uid}-{i}")
        ok.disconnect()
        ab = w.RawClient(HOST, b.ports["mqtt"], w.V311)
        ab.connect(f"churn-abort-{uid}-{i}")
        ab.abort()
        bad = w.RawClient(HOST, b.ports["mqtt"], w.V311)
        bad.connect(f"churn-bad-{uid}-{i}")
        bad.try_send(b"\xff\xff\xff\xff\xff")
        bad.close()
        s = socket.create_connection((HOST, b.ports["mqtts"]), timeout=5)
        try:
            ctx = ssl.create_default_context(cafile=str(b.ca_pem))  # no client certificate
            with ctx.wrap_socket(s, server_hostname="localhost") as tls:
                tls.sendall(w.connect(f"churn-tls-{uid}-{i}"))
                tls.recv(16)
        except (ssl.SSLError, OSError):
            pass
        finally:
            s.close()
    wait_until(lambda: b.metrics().get("fleetcore_mqtt_connections@sum", -1) == base, 10,
               what=f"fleetcore_mqtt_connections back to {base}")
    c = clients(V5, broker=b, tls=client_cert(b, f"after-{uid}"))
    assert c.connected
