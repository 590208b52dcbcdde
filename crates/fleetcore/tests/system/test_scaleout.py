"""Several fleetcore nodes as one: two `fleetcore serve` processes on loopback, each with its own
ports and data folder, sharing a real PostgreSQL (`[state] backend = "postgres"`) and a real
nats-server (`[cluster] nats`). What a user of either node sees:

- a thing, certificate and policy created through node A are usable through node B (boto3 reads
  them there, a device connects to B with the certificate and is authorized by the policy);
- a certificate revoked through A cuts off its device connected to B within a second, as it does
  on one node; a new default policy version made through A applies on B at once;
- a topic rule created through A runs for messages published on B;
- messages published on A reach subscribers on B at QoS 0 and 1 (each once, in order, with the
  subscriber's PUBACK to B), with topics NATS would otherwise read as wildcards or separators;
- QoS 1 is acknowledged end to end: every message A PUBACKed while B was killed (SIGKILL)
  reaches B's persistent session once B is back, in each publisher's order; with three nodes
  each subscriber of B and C gets each message of A once; while NATS restarts, A withholds its
  PUBACKs and every message arrives once NATS is back; when JetStream's stream is full (a node
  stopped), A withholds PUBACKs and retries until the node runs again and catches up;
- `/health/cluster` on each node names both nodes, and a node killed with SIGKILL leaves the
  others' lists within the heartbeat timeout;
- a retained message published on one node is what a new subscriber on another gets, and
  clearing it on one node clears it everywhere;
- a client id connecting on B takes the session over from its connection on A (0x8E for MQTT 5,
  a plain close for 3.1.1) within a second; connecting on both at once leaves exactly one;
- a drain of A (`POST /admin/drain`) sends its MQTT 5 clients to B with DISCONNECT 0x9C and B's
  address as Server Reference, closes its 3.1.1 clients, loses nothing it PUBACKed, and B lists
  A as draining; a node alone refuses to drain;
- a shared group with members on both nodes gets each message once across the cluster; once
  its last member anywhere left (on one node, or on both at once), the group keeps no consumer
  and a later member gets nothing published meanwhile;
- a persistent session with QoS 1 messages queued on A resumes on B (Session Present 1, every
  PUBACKed message delivered, in order) after A was SIGKILLed, and while A runs (A releases it);
  a session still connected on A moves to B the same way (the old connection gets 0x8E);
- a thing's shadow is one document across the nodes, and two updates racing on one version
  through A and B leave exactly one accepted (the other gets 409).
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

import mqttwire as w
from brokers import wait_until
from clients import V5, Client

pytestmark = pytest.mark.fleetcore_only("clustering is fleetcore's")

KEY_ID, SECRET = "AKIDSCALEOUTTEST0001", "scaleout-test-secret-key-0000000000000000"
LIVE_CHANGE_DEADLINE = 1.0  # seconds from the control-plane call to the effect on the other node
NOT_AUTHORIZED = 0x87
REGION, ACCOUNT = "us-east-1", "000000000000"
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}"


class Cluster:
    def __init__(self, nodes, aws, nats, postgres, database):
        self.nodes = nodes
        self._aws = aws
        self.nats = nats
        self._postgres = postgres
        self._database = database

    def session_saved(self, client_id: str, topic_filter: str) -> bool:
        """True once some node stored the persistent session `client_id` with `topic_filter`
        among its subscriptions (sessions are saved just after SUBACK, not before it)."""
        def literal(text: str) -> str:
            return "convert_to('" + text.replace("'", "''") + "', 'UTF8')"
        count = self._postgres.sql(
            f"SELECT count(*) FROM fleetcore_kv WHERE tbl = 'mqtt_sessions' "
            f"AND position({literal(client_id)} in key) > 0 "
            f"AND position({literal(topic_filter)} in value) > 0", self._database)
        return int(count.strip() or 0) > 0

    def iot(self, i: int):
        return self._aws("iot", broker=self.nodes[i], access_key_id=KEY_ID,
                         secret_access_key=SECRET)

    def data(self, i: int):
        return self._aws("iot-data", broker=self.nodes[i], access_key_id=KEY_ID,
                         secret_access_key=SECRET)

    def client(self, service: str, i: int):
        """A boto3 client of `service` for node `i`."""
        return self._aws(service, broker=self.nodes[i], access_key_id=KEY_ID,
                         secret_access_key=SECRET)


def start_cluster(names, broker_factory, nats_server, postgres_server, aws, uid,
                  extra=(), started: int | None = None, jetstream_streams: bool = False,
                  env: dict | None = None) -> Cluster:
    """Nodes named `names` on one PostgreSQL database and one nats-server, started with the
    flags `extra` and the variables `env` (only the first `started` of them, when given: the
    test starts the others); with `jetstream_streams` their Kinesis streams live in that
    nats-server's JetStream (`[stream] backend = "jetstream"`: one set of streams for all
    nodes). The others get the first node's CA (a cluster's nodes share their CA, as they share
    their state) and all the same admin keys."""
    db_name = uid.lower().replace("-", "_")[:60]
    db = postgres_server.database(db_name)
    nats = nats_server()
    env = {"FLEETCORE_ACCESS_KEY_ID": KEY_ID, "FLEETCORE_SECRET_ACCESS_KEY": SECRET, **(env or {})}
    if jetstream_streams:
        extra = ("--stream-backend", "jetstream", "--stream-servers", nats.url, *extra)

    def node(name: str, start: bool):
        return broker_factory("--state-backend", "postgres", "--state-url", db,
                              "--cluster-nats", nats.url, "--cluster-node-id", name, *extra,
                              env=env, start=start)
    first = node(names[0], True)
    nodes = [first]
    for name in names[1:]:
        other = node(name, False)
        shutil.copytree(first.data_dir / "ca", other.data_dir / "ca")
        nodes.append(other)
    for other in nodes[1:started]:
        other.start()
    return Cluster(nodes, aws, nats, postgres_server, db_name)


@pytest.fixture
def cluster(broker_factory, nats_server, postgres_server, aws, uid):
    """Two nodes `a` and `b` (see `start_cluster`)."""
    return start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid)


@pytest.fixture
def cluster3(broker_factory, nats_server, postgres_server, aws, uid):
    """Three nodes `a`, `b` and `c` (see `start_cluster`)."""
    return start_cluster(["a", "b", "c"], broker_factory, nats_server, postgres_server, aws, uid)


def health(node) -> dict:
    with urllib.request.urlopen(f"{node.http_base}/health/cluster", timeout=5) as r:
        return json.loads(r.read())


def allow_all(thing: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{thing}"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
         "Resource": f"{ARN}:topic/devices/{thing}/*"},
        {"Effect": "Allow", "Action": "iot:Subscribe",
         "Resource": f"{ARN}:topicfilter/devices/{thing}/*"}]})


def make_device(iot, tmp_path, thing: str, policy: str):
    iot.create_thing(thingName=thing)
    iot.create_policy(policyName=policy, policyDocument=allow_all(thing))
    made = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName=policy, target=made["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
    cert, key = tmp_path / f"{thing}.pem", tmp_path / f"{thing}.key"
    cert.write_text(made["certificatePem"])
    key.write_text(made["keyPair"]["PrivateKey"])
    return made["certificateId"], (cert, key)


def test_health_names_the_node_and_both_members(cluster):
    a, b = cluster.nodes
    assert health(a)["node_id"] == "a" and health(a)["state"] == "postgres"
    for node in (a, b):
        wait_until(lambda: [m["node_id"] for m in health(node)["members"]] == ["a", "b"], 5,
                   what=f"both members on /health/cluster of {node.name}")


def test_registry_made_on_one_node_is_usable_on_the_other(cluster, tmp_path, uid):
    iot_a, iot_b = cluster.iot(0), cluster.iot(1)
    thing = f"{uid}-dev"
    cert_id, tls = make_device(iot_a, tmp_path, thing, f"{uid}-p")
    assert iot_b.describe_thing(thingName=thing)["thingName"] == thing
    assert iot_b.describe_certificate(certificateId=cert_id)[
        "certificateDescription"]["status"] == "ACTIVE"
    assert iot_b.list_thing_principals(thingName=thing)["principals"]
    with pytest.raises(iot_b.exceptions.ResourceAlreadyExistsException):
        iot_b.create_thing(thingName=thing, attributePayload={"attributes": {"x": "1"}})
    # The device connects to B, authorized by the policy made through A.
    dev = Client(cluster.nodes[1], V5, client_id=thing, tls=tls)
    try:
        dev.connect()
        dev.subscribe(f"devices/{thing}/echo", qos=1)
        dev.publish(f"devices/{thing}/echo", b"hello", qos=1)
        dev.wait_payload(b"hello")
    finally:
        dev.close()


def test_revoked_on_one_node_cuts_off_the_device_on_the_other(cluster, tmp_path, uid):
    thing = f"{uid}-dev"
    cert_id, tls = make_device(cluster.iot(0), tmp_path, thing, f"{uid}-p")
    dev = Client(cluster.nodes[1], V5, client_id=thing, tls=tls)
    try:
        dev.connect()
        started = time.monotonic()
        cluster.iot(0).update_certificate(certificateId=cert_id, newStatus="REVOKED")
        code, _ = dev.wait_disconnected(timeout=LIVE_CHANGE_DEADLINE + 2)
        assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE, "cut off within a second"
        assert code == NOT_AUTHORIZED, dev.disconnects
    finally:
        dev.close()
    again = Client(cluster.nodes[1], V5, client_id=thing, tls=tls)
    try:
        assert again.connect(expect_ok=False)[0] == NOT_AUTHORIZED
    finally:
        again.close()


def test_a_new_policy_version_made_on_one_node_applies_on_the_other(cluster, tmp_path, uid):
    thing, policy = f"{uid}-dev", f"{uid}-p"
    _, tls = make_device(cluster.iot(0), tmp_path, thing, policy)
    dev = Client(cluster.nodes[1], V5, client_id=thing, tls=tls)
    try:
        dev.connect()
        dev.subscribe(f"devices/{thing}/x", qos=1)
        dev.publish(f"devices/{thing}/x", b"allowed", qos=1)
        dev.wait_payload(b"allowed")  # B has compiled and cached the policy by now
        without_connect = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": f"{ARN}:topic/devices/{thing}/*"}]})
        started = time.monotonic()
        cluster.iot(0).create_policy_version(policyName=policy, policyDocument=without_connect,
                                             setAsDefault=True)
        code, _ = dev.wait_disconnected(timeout=LIVE_CHANGE_DEADLINE + 2)
        assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE, "cut off within a second"
        assert code == NOT_AUTHORIZED, dev.disconnects
    finally:
        dev.close()


def test_a_rule_created_on_one_node_runs_on_the_other(cluster, uid):
    a, b = cluster.nodes
    cluster.iot(0).create_topic_rule(ruleName=uid.replace("-", "_"), topicRulePayload={
        "sql": f"SELECT temp FROM '{uid}/in' WHERE temp > 50",
        "actions": [{"republish": {"topic": f"{uid}/hot", "qos": 1,
                                   "roleArn": f"arn:aws:iam::{ACCOUNT}:role/republish"}}]})
    sub = Client(b, V5)
    pub = Client(b, V5)
    try:
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/hot", qos=1)
        # The rule reaches B within a second; until then B's messages pass it by.
        started = time.monotonic()
        wait_until(lambda: _probe(pub, sub, f"{uid}/in", f"{uid}/hot",
                                  json.dumps({"temp": 70}).encode()),
                   LIVE_CHANGE_DEADLINE + 2, what="the rule made on A running on B")
        assert time.monotonic() - started <= LIVE_CHANGE_DEADLINE + 0.5
        assert json.loads(sub.received[0].payload) == {"temp": 70}
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_messages_published_on_one_node_reach_subscribers_on_the_other(cluster, uid, qos):
    a, b = cluster.nodes
    topics = [f"{uid}/plain", f"{uid}/a.b/*/>/with space", f"{uid}//empty/"]
    on_b = Client(b, V5)
    on_a = Client(a, V5)
    pub = Client(a, V5)
    try:
        for c in (on_b, on_a, pub):
            c.connect()
        on_b.subscribe(f"{uid}/#", qos=1)
        on_b.subscribe(f"{uid}/+/*/>/with space", qos=1)  # overlaps the first: one delivery
        on_a.subscribe(f"{uid}/#", qos=1)
        # B's subscription exists before the first message: wait until a probe crosses.
        wait_until(lambda: _probe(pub, on_b, f"{uid}/probe"), 10, what="the route from A to B")
        wait_until(lambda: on_a.matching(topic=f"{uid}/probe"), 5, what="the probe on A")
        on_b.received.clear()
        on_a.received.clear()
        sent = []
        for i in range(200):
            topic = topics[i % len(topics)]
            payload = f"{i}".encode()
            sent.append((topic, payload))
            pub.publish(topic, payload, qos=qos)
        pub.sync()
        on_b.wait_messages(len(sent), timeout=10)
        on_a.wait_messages(len(sent), timeout=10)
        for who in (on_b, on_a):
            got = [(m.topic, m.payload) for m in who.received if not m.topic.endswith("/probe")]
            assert got == sent, f"every message once, in order ({who is on_b and 'B' or 'A'})"
        assert {m.qos for m in on_b.received} == {qos}
    finally:
        for c in (on_b, on_a, pub):
            c.close()


def _probe(pub: Client, sub: Client, topic: str, expect: str | None = None,
           payload: bytes = b"probe") -> bool:
    """Publishes once on `topic`; true when `sub` gets a message on `expect` (default: `topic`)
    within 0.2 s."""
    pub.publish(topic, payload, qos=1)
    try:
        sub.wait_message(timeout=0.2, topic=expect or topic)
        return True
    except AssertionError:
        return False


def _retained(node, uid: str) -> bytes | None:
    """The retained payload a new subscriber to `<uid>/state` on `node` gets, or None: a fence
    published by the subscriber itself after its SUBACK would arrive first had it none."""
    c = Client(node, V5)
    try:
        c.connect()
        c.subscribe(f"{uid}/state", qos=1)
        c.subscribe(f"{uid}/fence", qos=1)
        c.publish(f"{uid}/fence", b"fence", qos=1)
        first = c.wait_message(timeout=5)
        return None if first.topic == f"{uid}/fence" else first.payload
    finally:
        c.close()


def test_retained_messages_are_cluster_wide(cluster, uid):
    """A retained message published on A is what a new subscriber on B gets (shared through
    JetStream's key-value bucket); it survives A's restart; clearing it on B (empty retained
    payload) clears it on A."""
    a, b = cluster.nodes
    pub = Client(a, V5)
    try:
        pub.connect()
        pub.publish(f"{uid}/state", b"retained on a", qos=1, retain=True)
    finally:
        pub.close()
    wait_until(lambda: _retained(b, uid) == b"retained on a", 5, what="A's retained message on B")
    a.restart()
    assert _retained(a, uid) == b"retained on a"
    clear = Client(b, V5)
    try:
        clear.connect()
        clear.publish(f"{uid}/state", b"", qos=1, retain=True)
    finally:
        clear.close()
    wait_until(lambda: _retained(a, uid) is None, 5, what="the retained message cleared on A")
    assert _retained(b, uid) is None


TAKEOVER_DEADLINE = 1.0  # seconds from the second CONNACK to the first connection's end


@pytest.mark.parametrize("version", [w.V311, w.V5])
def test_a_client_id_connecting_on_another_node_takes_the_session_over(cluster, uid, version):
    """A CONNECT on B with a client id connected on A takes the session over, as on one node: A
    closes the old connection within a second, with DISCONNECT 0x8E (Session taken over) for
    MQTT 5 and a plain close for 3.1.1; the new connection on B stays."""
    a, b = cluster.nodes
    cid = f"{uid}-dev"
    first = w.RawClient(a.host, a.ports["mqtt"], version, 5.0)
    second = w.RawClient(b.host, b.ports["mqtt"], version, 5.0)
    try:
        assert first.connect(cid).rc == 0
        assert second.connect(cid).rc == 0
        connected = time.monotonic()
        seen = first.wait_closed(5)
        took = time.monotonic() - connected
        if version == w.V5:
            assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == 0x8E, seen
        else:
            assert seen == [], seen
        assert took <= TAKEOVER_DEADLINE, f"the old connection ended {took:.2f} s after the new one"
        second.send(w.pingreq())
        second.expect(w.PINGRESP)  # the new one stays: A's own announcement was older
        assert a.metrics().get("fleetcore_cluster_takeovers_total", 0) == 1
        assert b.metrics().get("fleetcore_cluster_takeovers_total", 0) == 0
    finally:
        first.close()
        second.close()


def test_two_nodes_accepting_one_client_id_at_once_keep_exactly_one(cluster, uid):
    """The same client id connects to A and to B at the same moment: each node hears of the
    other's connection, and both judge the pair alike (the later attach stays, node ids break a
    tie), so exactly one connection is closed with 0x8E and the other stays."""
    a, b = cluster.nodes
    cid = f"{uid}-twin"
    for attempt in range(3):
        clients = [w.RawClient(n.host, n.ports["mqtt"], w.V5, 5.0) for n in (a, b)]
        try:
            go = threading.Barrier(2)

            def connect(c):
                go.wait()
                return c.connect(cid)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                acks = list(pool.map(connect, clients))
            assert [ack.rc for ack in acks] == [0, 0]
            closed = []
            deadline = time.monotonic() + TAKEOVER_DEADLINE + 1.0
            while not closed and time.monotonic() < deadline:
                for i, c in enumerate(clients):
                    try:
                        c.send(w.pingreq())
                        c.expect(w.PINGRESP, timeout=0.2)
                    except (AssertionError, OSError, w.Closed, TimeoutError):
                        closed.append(i)
            assert len(closed) == 1, f"exactly one of the two connections closed, not {closed}"
            stays = clients[1 - closed[0]]
            stays.send(w.pingreq())
            stays.expect(w.PINGRESP)
        finally:
            for c in clients:
                c.close()


HEARTBEAT_TIMEOUT = 3.0  # seconds: three missed one-second heartbeats (docs/SCALING.md)


def _route_ready(pub: Client, subs, topic: str) -> None:
    """Waits until a QoS 1 probe from `pub` reaches every client of `subs` (their subscriptions
    are known cluster-wide), then forgets the probes."""
    for sub in subs:
        wait_until(lambda: _probe(pub, sub, topic), 10, what="the route between the nodes")
    for sub in subs:
        wait_until(lambda: sub.matching(topic=topic), 5, what="the last probe")
        sub.received.clear()


def _first_copies(messages) -> list[bytes]:
    """The payloads in arrival order, each once (at-least-once may repeat some)."""
    seen, out = set(), []
    for m in messages:
        if m.payload not in seen:
            seen.add(m.payload)
            out.append(m.payload)
    return out


def test_qos1_acknowledged_on_one_node_survives_the_other_nodes_kill(cluster, uid):
    """A PUBACK from A means JetStream has the message: B, killed with SIGKILL while A keeps
    acknowledging, delivers every such message to its persistent session when it is back, in
    each publisher's order."""
    a, b = cluster.nodes
    topic = f"{uid}/t"
    sub_id = f"{uid}-sub"
    sub = Client(b, V5, client_id=sub_id, clean=False, session_expiry=3600)
    pubs = [Client(a, V5, client_id=f"{uid}-p{i}") for i in range(2)]
    try:
        sub.connect()
        sub.subscribe(f"{uid}/#", qos=1)
        wait_until(lambda: cluster.session_saved(sub_id, f"{uid}/#"), 5,
                   what="B saving the persistent session")
        for p in pubs:
            p.connect()
        _route_ready(pubs[0], [sub], f"{uid}/probe")
        sent = {p.client_id: [] for p in pubs}

        def publish_round(label: str, n: int) -> None:
            for i in range(n):
                for p in pubs:
                    payload = f"{p.client_id}:{label}:{i}".encode()
                    p.publish(topic, payload, qos=1)  # returns once PUBACKed
                    sent[p.client_id].append(payload)

        publish_round("before", 20)
        sub.wait_messages(40, timeout=10, topic=topic)
        b.kill()
        sub.drop()
        publish_round("during", 50)  # every one PUBACKed by A while B is down
        b.start()
        again = Client(b, V5, client_id=sub_id, clean=False, session_expiry=3600)
        try:
            again.connect()
            assert again.session_present, "B kept the persistent session across SIGKILL"
            want = sum(len(v) for v in sent.values())
            already = _first_copies(sub.matching(topic=topic))

            def all_arrived():
                return len(set(already) | set(_first_copies(again.matching(topic=topic)))) >= want
            wait_until(all_arrived, 15, what="every PUBACKed message on B's session")
            for p in pubs:
                mine = lambda m, cid=p.client_id: m.payload.startswith(f"{cid}:".encode())
                got = _first_copies(sub.matching(mine, topic) + again.matching(mine, topic))
                assert got == sent[p.client_id], f"every message of {p.client_id}, in order"
        finally:
            again.close()
    finally:
        sub.close()
        for p in pubs:
            p.close()


def test_three_nodes_each_subscriber_gets_each_message_once(cluster3, uid):
    a, b, c = cluster3.nodes
    topic = f"{uid}/three"
    subs = [Client(node, V5) for node in (b, c)]
    pub = Client(a, V5)
    try:
        for client in (*subs, pub):
            client.connect()
        for sub in subs:
            sub.subscribe(f"{uid}/#", qos=1)
        _route_ready(pub, subs, f"{uid}/probe")
        sent = []
        for i in range(100):
            payload = f"{i}".encode()
            pub.publish(topic, payload, qos=1, wait=False)
            sent.append(payload)
        pub.sync()
        for sub, name in zip(subs, "bc"):
            sub.wait_messages(len(sent), timeout=10, topic=topic)
            assert sub.payloads(topic) == sent, f"each message once, in order, on {name}"
            assert {m.qos for m in sub.matching(topic=topic)} == {1}
    finally:
        for client in (*subs, pub):
            client.close()


def test_a_killed_node_leaves_the_others_members_within_the_heartbeat_timeout(cluster3):
    a, b, c = cluster3.nodes
    for node in (a, b):
        wait_until(lambda: [m["node_id"] for m in health(node)["members"]] == ["a", "b", "c"],
                   5, what=f"three members on /health/cluster of {node.name}")
    c.kill()
    killed = time.monotonic()
    for node in (a, b):
        wait_until(lambda: [m["node_id"] for m in health(node)["members"]] == ["a", "b"],
                   HEARTBEAT_TIMEOUT + 2, what=f"c gone from /health/cluster of {node.name}")
    assert time.monotonic() - killed <= HEARTBEAT_TIMEOUT + 1.0, \
        "gone within the heartbeat timeout (plus one period of the reader's clock)"


def test_qos1_waits_for_nats_to_come_back_and_loses_nothing(cluster, uid):
    """NATS stopped: A still delivers to its own subscribers but withholds the PUBACKs (it cannot
    vouch for the other nodes); NATS back: the PUBACKs come and B gets every message, in order."""
    a, b = cluster.nodes
    topic = f"{uid}/t"
    on_b = Client(b, V5)
    on_a = Client(a, V5)
    pub = Client(a, V5)
    try:
        for c in (on_b, on_a, pub):
            c.connect()
        on_b.subscribe(f"{uid}/#", qos=1)
        on_a.subscribe(f"{uid}/#", qos=1)
        _route_ready(pub, [on_b, on_a], f"{uid}/probe")
        cluster.nats.stop()
        sent = [f"{i}".encode() for i in range(20)]
        pending = [pub.publish(topic, p, qos=1, wait=False) for p in sent]
        on_a.wait_messages(len(sent), timeout=10, topic=topic)  # A has handled every one
        assert not any(info.is_published() for info in pending), \
            f"no PUBACK while JetStream cannot take the messages {[i.is_published() for i in pending]}"
        cluster.nats.start()
        for info in pending:
            info.wait_for_publish(20)
            assert info.is_published(), "PUBACKed once NATS is back"
        on_b.wait_messages(len(sent), timeout=10, topic=topic)
        assert _first_copies(on_b.matching(topic=topic)) == sent
    finally:
        for c in (on_b, on_a, pub):
            c.close()


@pytest.mark.parametrize("stop", ["sigkill", "sigstop"])
def test_a_full_forward_stream_holds_pubacks_until_the_nodes_catch_up(
        broker_factory, nats_server, postgres_server, aws, uid, stop):
    """The forward stream is bounded (here 16 messages): with B down (SIGKILL, then started
    again) or frozen (SIGSTOP, then SIGCONT) its messages stay, the stream fills and JetStream
    refuses — none of the stored ones is dropped to make room. A then withholds its PUBACKs and
    retries (counted) rather than drop anything; once B is back and acknowledges, A's PUBACKs
    come and B's persistent session has every message, in order."""
    cluster = start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                            extra=("--cluster-forward-max-messages", "16"))
    a, b = cluster.nodes
    topic = f"{uid}/full"
    sub_id = f"{uid}-sub"
    sub = Client(b, V5, client_id=sub_id, clean=False, session_expiry=3600)
    pub = Client(a, V5)
    again = None
    try:
        sub.connect()
        sub.subscribe(f"{uid}/#", qos=1)
        wait_until(lambda: cluster.session_saved(sub_id, f"{uid}/#"), 5,
                   what="B saving the persistent session")
        pub.connect()
        _route_ready(pub, [sub], f"{uid}/probe")
        if stop == "sigkill":
            b.kill()
            sub.drop()
        else:
            b.proc.send_signal(signal.SIGSTOP)
        sent = [f"{i:03d}".encode() + b"." * 100 for i in range(60)]
        pending = [pub.publish(topic, p, qos=1, wait=False) for p in sent]
        try:
            wait_until(lambda: a.metrics().get("fleetcore_cluster_forward_retries_total", 0) > 0,
                       10, what="A retrying what the full stream refused")
            assert not all(info.is_published() for info in pending), "PUBACKs held while full"
        finally:
            if stop == "sigstop":
                b.proc.send_signal(signal.SIGCONT)
        if stop == "sigkill":
            b.start()
            again = Client(b, V5, client_id=sub_id, clean=False, session_expiry=3600)
            again.connect()
            assert again.session_present
        receiver = again or sub
        for info in pending:
            info.wait_for_publish(20)
            assert info.is_published(), "PUBACKed once B caught up"
        receiver.wait_messages(len(sent), timeout=10, topic=topic)
        assert _first_copies(receiver.matching(topic=topic)) == sent
        assert a.metrics().get('fleetcore_cluster_dropped_total{reason="forward_full"}', 0) == 0
    finally:
        for c in (sub, pub, again):
            if c is not None:
                c.close()


USE_ANOTHER_SERVER = 0x9C


def _drain(node, expect_status: int = 200) -> dict:
    """`POST /admin/drain` on `node`, signed with the admin keys (service name `fleetcore`)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    request = AWSRequest(method="POST", url=f"{node.http_base}/admin/drain", data=b"")
    SigV4Auth(Credentials(KEY_ID, SECRET), "fleetcore", REGION).add_auth(request)
    prepared = urllib.request.Request(request.url, data=b"", method="POST",
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status == expect_status, (status, body)
    return json.loads(body or b"{}")


def _member(node, node_id: str) -> dict | None:
    return next((m for m in health(node)["members"] if m["node_id"] == node_id), None)


def test_a_drained_node_sends_its_clients_to_another_node_and_loses_nothing_acknowledged(
        cluster, uid):
    """`POST /admin/drain` on A: A stops accepting connections, sends its MQTT 5 clients
    DISCONNECT 0x9C (Use another server) with B's MQTT address as Server Reference — after the
    PUBACKs it owes them —, closes its 3.1.1 clients, and B lists A as draining. A publisher on
    A loses nothing it got a PUBACK for; a subscriber sent away reconnects to the address it was
    given and its subscription works there."""
    a, b = cluster.nodes
    wait_until(lambda: len((_member(a, "b") or {}).get("listeners", {})) == 4, 5,
               what="B's four advertised MQTT listeners on A")
    sub_b = Client(b, V5, client_id=f"{uid}-sub-b")
    pub = Client(a, V5, client_id=f"{uid}-pub")
    moved = w.RawClient(a.host, a.ports["mqtt"], w.V5, 5.0)
    old = w.RawClient(a.host, a.ports["mqtt"], w.V311, 5.0)
    try:
        sub_b.connect()
        sub_b.subscribe(f"{uid}/load", qos=1)
        sub_b.subscribe(f"{uid}/probe", qos=1)
        pub.connect()
        _route_ready(pub, [sub_b], f"{uid}/probe")
        assert moved.connect(f"{uid}-moved").rc == 0
        assert moved.subscribe([(f"{uid}/after", 1)]).rcs == [1]
        assert old.connect(f"{uid}-old").rc == 0
        # QoS 1 load from A while A drains.
        sent = [pub.publish(f"{uid}/load", f"{i}".encode(), qos=1, wait=False)
                for i in range(400)]
        wait_until(lambda: sum(s.is_published() for s in sent) >= 50, 10,
                   what="the first PUBACKs")
        done = _drain(a)
        assert done["node_id"] == "a" and done["clients"] >= 3, done
        # B's four listeners (each client goes to the one of its own transport).
        assert sorted(int(t.rsplit(":", 1)[1]) for t in done["targets"]) == \
            sorted(b.ports[k] for k in ("mqtt", "mqtts", "ws", "wss")), done
        # MQTT 5: DISCONNECT 0x9C naming B; 3.1.1: a plain close.
        seen = moved.wait_closed(5)
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == USE_ANOTHER_SERVER, seen
        reference = seen[-1].props["ServerReference"]
        host, port = reference.rsplit(":", 1)
        assert int(port) == b.ports["mqtt"], reference
        assert old.wait_closed(5) == []
        code, props = pub.wait_disconnected(5)
        assert code == USE_ANOTHER_SERVER, code
        assert getattr(props, "ServerReference", None) == reference
        # Every message A acknowledged reaches B's subscriber.
        acked = [f"{i}".encode() for i, s in enumerate(sent) if s.is_published()]
        assert len(acked) >= 50
        wait_until(lambda: set(acked) <= set(sub_b.payloads(topic=f"{uid}/load")), 10,
                   what="every message A acknowledged at B")
        # A accepts no new connection; B lists A as draining.
        with pytest.raises(OSError):
            w.RawClient(a.host, a.ports["mqtt"], w.V5, 1.0).connect(f"{uid}-late")
        wait_until(lambda: (_member(b, "a") or {}).get("draining"), 5,
                   what="A listed as draining on B")
        # The client sent away reconnects where it was told, and its subscription works there.
        again = w.RawClient(host, int(port), w.V5, 5.0)
        try:
            assert again.connect(f"{uid}-moved").rc == 0
            assert again.subscribe([(f"{uid}/after", 1)]).rcs == [1]
            on_b = Client(b, V5)
            try:
                on_b.connect()
                on_b.publish(f"{uid}/after", b"hello again", qos=1)
            finally:
                on_b.close()
            got = again.expect(w.PUBLISH)
            assert got.topic in (f"{uid}/after", f"{uid}/after".encode()), got
            assert got.payload == b"hello again", got
        finally:
            again.close()
        # A second drain is refused: it drains already.
        assert "already" in _drain(a, 409).get("message", "")
    finally:
        for c in (sub_b, pub):
            c.close()
        moved.close()
        old.close()


def test_sigterm_in_a_cluster_drains_before_the_node_stops(cluster, uid):
    """A node stopped with SIGTERM while another node runs sends its MQTT 5 clients to that
    node (0x9C with its address) instead of just saying it shuts down (0x8B), and exits 0."""
    a, b = cluster.nodes
    wait_until(lambda: len((_member(a, "b") or {}).get("listeners", {})) == 4, 5,
               what="B's four advertised MQTT listeners on A")
    c = w.RawClient(a.host, a.ports["mqtt"], w.V5, 5.0)
    try:
        assert c.connect(f"{uid}-term").rc == 0
        assert a.stop(signal.SIGTERM) == 0
        seen = c.wait_closed(5)
        assert seen and seen[-1].type == w.DISCONNECT and seen[-1].rc == USE_ANOTHER_SERVER, seen
        assert seen[-1].props["ServerReference"].endswith(f":{b.ports['mqtt']}"), seen
    finally:
        c.close()


def test_a_node_alone_refuses_to_drain(cluster):
    """A drain needs somewhere to send the clients: with B stopped, A answers 409 and keeps
    serving."""
    a, b = cluster.nodes
    b.kill()
    wait_until(lambda: _member(a, "b") is None, HEARTBEAT_TIMEOUT + 2, what="B gone from A")
    body = _drain(a, 409)
    assert "no other live node" in body.get("message", ""), body
    c = w.RawClient(a.host, a.ports["mqtt"], w.V5, 5.0)
    try:
        assert c.connect("still-served").rc == 0
    finally:
        c.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_a_shared_group_with_members_on_two_nodes_gets_each_message_once(cluster, uid, qos):
    """`$share/g/<uid>/s/#` with one member on A and one on B: messages published on both nodes
    reach the group once each across the cluster (never once per node), and members on either
    node get some (NATS hands each message to one of the nodes reading the group)."""
    a, b = cluster.nodes
    group = f"$share/g/{uid}/s/#"
    members = [Client(a, V5), Client(b, V5)]
    pubs = [Client(a, V5), Client(b, V5)]
    try:
        for c in members + pubs:
            c.connect()
        for m in members:
            m.subscribe(group, qos=1)
        # Both nodes read the group once each pulls from its consumers, and a probe reached
        # each member.
        _group_read_by(cluster, 2)
        probes = []

        def both_reached() -> bool:
            for p in pubs:
                probes.append(f"probe {len(probes)}".encode())
                p.publish(f"{uid}/s/probe", probes[-1], qos=1)
            return all(m.matching(topic=f"{uid}/s/probe") for m in members)
        wait_until(both_reached, 15, what="the group read on both nodes")
        # (A probe published while a node was still setting up its reader may come twice: the
        # node's own delivery and the cluster's. The messages below come after that.)

        def load(m: Client) -> list[bytes]:
            return [x.payload for x in m.received if x.topic != f"{uid}/s/probe"]
        sent = []
        for i in range(200):
            payload = f"{i}".encode()
            sent.append(payload)
            pubs[i % 2].publish(f"{uid}/s/{i % 3}", payload, qos=qos, wait=qos > 0)
        for p in pubs:
            p.sync()
        wait_until(lambda: sum(len(load(m)) for m in members) >= len(sent), 10,
                   what="every message at one member")
        got = load(members[0]) + load(members[1])
        assert sorted(got) == sorted(sent), "each message once across the group"
        assert all(load(m) for m in members), \
            f"members on both nodes get messages ({[len(load(m)) for m in members]})"
        # Nothing more comes (a second copy would arrive within the route's milliseconds).
        pubs[0].sync()
        assert sum(len(load(m)) for m in members) == len(sent)
    finally:
        for c in members + pubs:
            c.close()


def _group_read_by(cluster, nodes: int) -> None:
    """Waits until the shared group's consumers of the forward stream (the test's only group)
    exist and each has a pull request waiting from `nodes` nodes: every node with members
    reads the group from then on (a node marks the group read as it starts pulling)."""
    def read() -> bool:
        share = [c for c in cluster.nats.consumer_details("fleetcore_forward")
                 if c["name"].startswith("share-")]
        return bool(share) and all(c.get("num_waiting", 0) >= nodes for c in share)
    wait_until(read, 15, what=f"the shared group read by {nodes} node(s)")


def _poll(pred, timeout: float) -> bool:
    """True once `pred()` holds, False when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("leavers", ["a", "both"])
def test_a_shared_group_without_members_keeps_nothing_for_a_later_member(cluster, uid, leavers):
    """MQTT drops what a shared group without members gets. The group's last members leave
    (the one on A, or the ones on A and B at the same moment), 50 QoS 1 messages to the group's
    topic are PUBACKed, then a new member joins on B: it gets the messages published after it
    joined and none of the 50; and the forward stream keeps no consumer for the group once it
    has no member (before the fix the consumer stayed an hour and handed the 50 over)."""
    a, b = cluster.nodes
    group = f"$share/g/{uid}/late"
    topic = f"{uid}/late"
    first = [Client(a, V5)] + ([Client(b, V5)] if leavers == "both" else [])
    pub = Client(a, V5)
    later = Client(b, V5)
    clients = first + [pub, later]
    try:
        for c in first + [pub]:
            c.connect()
        for m in first:
            m.subscribe(group, qos=1)
        probes = iter(range(1_000_000))

        def probe(members) -> bool:
            pub.publish(topic, f"probe {next(probes)}".encode(), qos=1)
            return all(m.matching(topic=topic) for m in members)
        _group_read_by(cluster, len(first))
        wait_until(lambda: probe(first), 15, what="the group read on the cluster")

        leaving = [threading.Thread(target=m.unsubscribe, args=(group,)) for m in first]
        for t in leaving:
            t.start()
        for t in leaving:
            t.join()
        stale = [f"stale {i}".encode() for i in range(50)]
        for payload in stale:
            pub.publish(topic, payload, qos=1, wait=True)
        # The fix deletes the group's consumers once no member is left; the old code kept them
        # (the assertion on what the later member gets is the one that shows it).
        gone = _poll(lambda: not any(n.startswith("share-")
                                     for n in cluster.nats.consumers("fleetcore_forward")), 10)

        later.connect()
        later.subscribe(group, qos=1)
        _group_read_by(cluster, 1)
        wait_until(lambda: probe([later]), 15, what="the later member reading the group")
        pub.sync()
        got = later.payloads()
        assert not [p for p in got if p.startswith(b"stale")], \
            f"{sum(p.startswith(b'stale') for p in got)} messages published while the group " \
            "had no member reached the later member"
        assert gone, "the group kept its consumer with no member left"
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("owner", ["killed", "alive"])
def test_a_persistent_session_resumes_on_another_node_with_its_queued_messages(
        cluster, uid, owner):
    """A device with a persistent session on A (clean start = false, expiry 1 h) goes offline
    and 30 QoS 1 messages for it are PUBACKed on A (so they are in its durable queue). It then
    connects to B, after A was SIGKILLed and left B's members, or while A runs (A is asked to
    release the session): CONNACK has Session Present 1, every one of the 30 arrives in order,
    and its subscription works on B (a message published on B afterwards arrives). Before,
    B answered Session Present 0 and the messages stayed on A."""
    a, b = cluster.nodes
    dev_id = f"{uid}-dev"
    topic = f"{uid}/cmd"
    dev = Client(a, V5, client_id=dev_id, clean=False, session_expiry=3600)
    pub = Client(a, V5, client_id=f"{uid}-pub")
    again = Client(b, V5, client_id=dev_id, clean=False, session_expiry=3600)
    late = Client(b, V5, client_id=f"{uid}-late")
    try:
        dev.connect()
        dev.subscribe(topic, qos=1)
        wait_until(lambda: cluster.session_saved(dev_id, topic), 5,
                   what="A saving the persistent session")
        dev.disconnect()
        pub.connect()
        sent = [f"queued {i}".encode() for i in range(30)]
        for payload in sent:
            pub.publish(topic, payload, qos=1)  # returns once PUBACKed
        pub.close()
        if owner == "killed":
            a.kill()
            wait_until(lambda: all(m["node_id"] != "a" for m in health(b)["members"]), 10,
                       what="A leaving B's members")
        again.connect()
        assert again.session_present, "the session resumed on B"
        again.wait_messages(len(sent), timeout=10, topic=topic)
        assert _first_copies(again.matching(topic=topic)) == sent, \
            "every PUBACKed message, in order"
        late.connect()
        late.publish(topic, b"after", qos=1)
        again.wait_payload(b"after")
    finally:
        for c in (dev, pub, again, late):
            c.close()


def test_a_persistent_session_connected_on_one_node_moves_to_another(cluster, uid):
    """The device is still connected to A when it connects to B with clean start = false: A
    sends its old connection away (DISCONNECT 0x8E, session taken over) and releases the
    session, B answers Session Present 1, and messages published on A afterwards reach the
    device on B (its subscription moved with it, nothing stays behind on A)."""
    a, b = cluster.nodes
    dev_id = f"{uid}-dev"
    topic = f"{uid}/cmd"
    dev = Client(a, V5, client_id=dev_id, clean=False, session_expiry=3600)
    again = Client(b, V5, client_id=dev_id, clean=False, session_expiry=3600)
    pub = Client(a, V5, client_id=f"{uid}-pub")
    try:
        dev.connect()
        dev.subscribe(topic, qos=1)
        wait_until(lambda: cluster.session_saved(dev_id, topic), 5,
                   what="A saving the persistent session")
        again.connect()
        assert again.session_present, "the session moved to B"
        dev.wait_disconnected()
        assert dev.disconnects[0][0] == 0x8E, dev.disconnects
        pub.connect()
        sent = [f"moved {i}".encode() for i in range(10)]
        for payload in sent:
            pub.publish(topic, payload, qos=1)
        again.wait_messages(len(sent), timeout=10, topic=topic)
        assert _first_copies(again.matching(topic=topic)) == sent
        assert not dev.matching(topic=topic), "nothing delivered to the old connection"
    finally:
        for c in (dev, again, pub):
            c.close()


def _race(call) -> list:
    """Runs `call(0)` and `call(1)` at the same moment (one thread each, released together);
    each result is ("ok", what the call returned) or (AWS error code, HTTP status)."""
    from botocore.exceptions import ClientError
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ("ok", call(i))
        except ClientError as e:
            results[i] = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_shadow_is_one_document_across_nodes_and_racing_versions_let_one_win(cluster, uid):
    """A shadow updated through A is the one B reads and updates (one document in PostgreSQL,
    not one per node). Then, ten times, an update through A and one through B name the same
    current version at the same moment: exactly one is accepted, the other is refused with 409
    (ConflictException), and both nodes then read the winner's state at the next version."""
    data = [cluster.data(0), cluster.data(1)]
    thing = uid
    first = json.loads(data[0].update_thing_shadow(
        thingName=thing, payload=json.dumps({"state": {"reported": {"n": 0}}}))["payload"].read())
    assert first["version"] == 1
    seen = json.loads(data[1].get_thing_shadow(thingName=thing)["payload"].read())
    assert seen["version"] == 1 and seen["state"]["reported"] == {"n": 0}, seen
    version = 1
    for round_ in range(10):
        def update(i: int) -> int:
            payload = json.dumps({"state": {"reported": {"n": round_, "by": i}},
                                  "version": version})
            r = data[i].update_thing_shadow(thingName=thing, payload=payload)
            return json.loads(r["payload"].read())["version"]
        results = _race(update)
        winners = [i for i in (0, 1) if results[i][0] == "ok"]
        assert len(winners) == 1, f"round {round_}: {results}"
        loser = 1 - winners[0]
        assert results[loser] == ("ConflictException", 409), f"round {round_}: {results}"
        version += 1
        assert results[winners[0]][1] == version
        for d in data:
            doc = json.loads(d.get_thing_shadow(thingName=thing)["payload"].read())
            assert doc["version"] == version
            assert doc["state"]["reported"] == {"n": round_, "by": winners[0]}, doc


# ---------------------------------------------------------------------------------------------
# the other services' resources, shared through PostgreSQL

def _seen_within_a_second(pred, what: str):
    """Waits for `pred` (a change made through one node, seen through the other) and checks it
    came within LIVE_CHANGE_DEADLINE of the call that made it."""
    started = time.monotonic()
    value = wait_until(pred, LIVE_CHANGE_DEADLINE + 2, what=what)
    elapsed = time.monotonic() - started
    assert elapsed <= LIVE_CHANGE_DEADLINE, f"{what}: {elapsed:.2f} s, not within a second"
    return value


def _gone(call, exceptions, name: str = "ResourceNotFoundException") -> bool:
    """Whether `call` raises the client's not-found exception (`name`)."""
    try:
        call()
        return False
    except getattr(exceptions, name):
        return True


def test_a_topic_rule_destination_is_shared_and_its_http_action_runs_on_the_other_node(
        broker_factory, nats_server, postgres_server, aws, uid, tmp_path):
    """A destination created through A is the one B shows and confirms (with the token its
    confirmation message brought to the endpoint); a rule made on A with an http action under
    it delivers a message published on B; disabled through A, B shows it disabled; deleted
    through B, A no longer has it. Each change is seen on the other node within a second."""
    import pki
    from test_rules_actions import Endpoint
    ca = (tmp_path / "endpoint-ca.pem", tmp_path / "endpoint-ca.key")
    pki.make_ca(*ca, cn="endpoint test CA")
    (tmp_path / "endpoint").mkdir()
    e = Endpoint(tmp_path / "endpoint", ca)
    cluster = start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                            extra=("--rules-https-ca-file", str(ca[0])))
    iot_a, iot_b = cluster.iot(0), cluster.iot(1)
    try:
        arn = iot_a.create_topic_rule_destination(destinationConfiguration={
            "httpUrlConfiguration": {"confirmationUrl": e.url + "/"}})["topicRuleDestination"]["arn"]

        def on(iot):
            return lambda: iot.get_topic_rule_destination(arn=arn)["topicRuleDestination"]
        wait_until(lambda: e.confirmations(), 20, what="the confirmation message")
        token = json.loads(e.confirmations()[0][2])["confirmationToken"]
        # B reads it (IN_PROGRESS) and confirms it; A sees it ENABLED.
        _seen_within_a_second(lambda: not _gone(on(iot_b), iot_b.exceptions),
                              "the destination made on A, on B")
        assert on(iot_b)()["status"] == "IN_PROGRESS"
        iot_b.confirm_topic_rule_destination(confirmationToken=token)
        _seen_within_a_second(lambda: on(iot_a)()["status"] == "ENABLED",
                              "the destination confirmed on B, ENABLED on A")
        # A rule made on A delivers, under that destination, what a device publishes on B.
        cluster.iot(0).create_topic_rule(ruleName=uid.replace("-", "_"), topicRulePayload={
            "sql": f"SELECT v FROM '{uid}/in'",
            "actions": [{"http": {"url": e.url + "/hook", "confirmationUrl": e.url + "/"}}]})
        _publish_until(cluster.nodes[1], f"{uid}/in", lambda: e.deliveries("/hook"), 10,
                       "the http action run on B")
        assert "v" in json.loads(e.deliveries("/hook")[0][2])
        # Disabled through A: B shows it disabled. Deleted through B: gone from A.
        iot_a.update_topic_rule_destination(arn=arn, status="DISABLED")
        _seen_within_a_second(lambda: on(iot_b)()["status"] == "DISABLED",
                              "the destination disabled on A, on B")
        iot_b.delete_topic_rule_destination(arn=arn)
        _seen_within_a_second(lambda: _gone(on(iot_a), iot_a.exceptions),
                              "the destination deleted on B, gone from A")
        assert iot_a.list_topic_rule_destinations()["destinationSummaries"] == []
    finally:
        e.close()


def wait_until_or_none(pred, timeout: float):
    """`pred`'s first truthy value within `timeout`, or None."""
    try:
        return wait_until(pred, timeout)
    except AssertionError:
        return None


def _publish_until(node, topic: str, seen, timeout: float, what: str, each: float = 0.5):
    """Publishes `{"v": n}` (n = 1, 2, ...) at QoS 1 through `node` until `seen()` is truthy
    within `each` seconds of a publish (a rule made on another node may take a moment to reach
    this one); returns that value."""
    dev = Client(node, V5)
    n = 0
    try:
        dev.connect()

        def attempt():
            nonlocal n
            n += 1
            dev.publish(topic, json.dumps({"v": n}).encode(), qos=1)
            return wait_until_or_none(seen, each)
        return wait_until(attempt, timeout, interval=0, what=what)
    finally:
        dev.close()


def _claim(node, setup, serial: str) -> tuple[str, dict]:
    """Fleet provisioning by claim through `node` (JSON over MQTT with the claim certificate):
    new keys, then the template; (accepted|rejected, the answer to the provision request)."""
    from test_access import TlsRawClient
    from test_provisioning import raw_answer
    create = "$aws/certificates/create/json"
    provision = f"$aws/provisioning-templates/{setup.name}/provision/json"
    rc = TlsRawClient(node, setup.claim_cert, setup.claim_key, V5)
    try:
        assert rc.connect(f"claim-{serial}").rc == 0
        rc.subscribe([(f"{t}/{k}", 1) for t in (create, provision) for k in ("accepted", "rejected")])
        rc.publish(create, b"{}", qos=0)
        kind, payload = raw_answer(rc, create)
        assert kind == "accepted", payload
        token = json.loads(payload)["certificateOwnershipToken"]
        rc.publish(provision, json.dumps({"certificateOwnershipToken": token,
                                          "parameters": {"SerialNumber": serial}}).encode(), qos=0)
        kind, payload = raw_answer(rc, provision)
        return kind, json.loads(payload)
    finally:
        rc.close()


def test_a_provisioning_template_is_shared_and_provisions_on_the_other_node(cluster, uid, tmp_path):
    """A template created through A is described by B and provisions a device claiming through
    B; its description updated through B is what A shows; disabled through A, B refuses the
    next claim (its parsed template dropped); deleted through B, A no longer has it. Each change
    is seen on the other node within a second."""
    from test_provisioning import Setup
    iot_a, iot_b = cluster.iot(0), cluster.iot(1)
    s = Setup(iot_a, tmp_path, uid)

    def on(iot):
        return lambda: iot.describe_provisioning_template(templateName=s.name)
    _seen_within_a_second(lambda: not _gone(on(iot_b), iot_b.exceptions),
                          "the template made on A, on B")
    serial = "sc" + uid[-8:].replace("-", "")
    kind, answer = _claim(cluster.nodes[1], s, serial)
    assert (kind, answer["thingName"]) == ("accepted", f"sensor-{serial}"), answer
    assert iot_a.describe_thing(thingName=f"sensor-{serial}")["attributes"]["serial"] == serial
    iot_b.update_provisioning_template(templateName=s.name, description="updated on b")
    _seen_within_a_second(lambda: on(iot_a)().get("description") == "updated on b",
                          "the description set on B, on A")
    iot_a.update_provisioning_template(templateName=s.name, enabled=False)
    refused = _seen_within_a_second(
        lambda: (lambda r: r if r[0] == "rejected" else None)(_claim(cluster.nodes[1], s, serial + "x")),
        "the template disabled on A, refusing claims on B")
    assert "disabled" in refused[1]["errorMessage"], refused
    iot_b.delete_provisioning_template(templateName=s.name)
    _seen_within_a_second(lambda: _gone(on(iot_a), iot_a.exceptions),
                          "the template deleted on B, gone from A")


def test_a_function_is_shared_with_its_code_versions_and_aliases(cluster, uid):
    """A function created through A (a WebAssembly module) is described and invoked through B,
    which reads its package from PostgreSQL and unpacks it on first use; its configuration set
    through B is A's; a version published through A gets an alias through B that A shows; new
    code uploaded through A is what B runs next (a new CodeSha256); deleted through B, A no
    longer has it. Each change is seen on the other node within a second."""
    from test_functions import HERE, create, fn_name, invoke, package
    lam_a, lam_b = cluster.client("lambda", 0), cluster.client("lambda", 1)
    name = fn_name(uid)
    wat = (HERE / "functions" / "echo.wat").read_text()
    made = create(lam_a, name, {"echo.wat": wat}, runtime="provided.al2023", handler="echo.wat")

    def on(lam):
        return lambda: lam.get_function(FunctionName=name)
    got = _seen_within_a_second(lambda: not _gone(on(lam_b), lam_b.exceptions) and on(lam_b)(),
                                "the function made on A, on B")
    assert got["Configuration"]["CodeSha256"] == made["CodeSha256"]
    location = got["Code"]["Location"].removeprefix("file://")
    assert location.startswith(str(cluster.nodes[1].data_dir)), location
    r, body = invoke(lam_b, name, {"n": 1})
    assert body == {"wasm": {"n": 1}} and "FunctionError" not in r, body
    # Configuration through B, seen on A.
    lam_b.update_function_configuration(FunctionName=name, Description="set on b")
    _seen_within_a_second(
        lambda: on(lam_a)()["Configuration"]["Description"] == "set on b",
        "the description set on B, on A")
    # A version published on A, an alias made on B for it, shown on A.
    version = lam_a.publish_version(FunctionName=name)["Version"]
    _seen_within_a_second(
        lambda: [v["Version"] for v in lam_b.list_versions_by_function(
            FunctionName=name)["Versions"]] == ["$LATEST", version],
        "the version published on A, on B")
    lam_b.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    _seen_within_a_second(
        lambda: not _gone(lambda: lam_a.get_alias(FunctionName=name, Name="live"),
                          lam_a.exceptions),
        "the alias made on B, on A")
    # New code through A: B runs it (the same module answering under another key).
    new = lam_a.update_function_code(FunctionName=name, ZipFile=package(
        {"echo.wat": wat.replace('"{\\"wasm\\":"', '"{\\"wat2\\":"')}))
    assert new["CodeSha256"] != made["CodeSha256"]
    _seen_within_a_second(lambda: invoke(lam_b, name, {"n": 2})[1] == {"wat2": {"n": 2}},
                          "the code uploaded on A, run on B")
    # The alias still runs the published version's code, on both nodes.
    assert invoke(lam_b, f"{name}:live", {"n": 3})[1] == {"wasm": {"n": 3}}
    lam_b.delete_function(FunctionName=name)
    _seen_within_a_second(lambda: _gone(on(lam_a), lam_a.exceptions),
                          "the function deleted on B, gone from A")
    with pytest.raises(lam_a.exceptions.ResourceNotFoundException):
        invoke(lam_a, name, {"n": 4})


def test_a_rule_made_on_one_node_runs_a_function_made_there_for_a_message_on_the_other(
        cluster, uid):
    """The user's case: a function and a rule with a lambda action are created through A; a
    device publishes on B; the rule runs on B and calls the function there, which puts its
    output on a stream of B (forward.wat through the host's put_record)."""
    from test_functions import HERE, create, fn_name
    from test_rules_engine import wait_stream
    iot_a = cluster.iot(0)
    lam_a, kinesis_b = cluster.client("lambda", 0), cluster.client("kinesis", 1)
    name, out = fn_name(uid), f"wout-{uid}"
    kinesis_b.create_stream(StreamName=out, ShardCount=1)
    wat = (HERE / "functions" / "forward.wat").read_text().replace("wasm-out", out)
    fn = create(lam_a, name, {"forward.wat": wat}, runtime="provided.al2023", handler="forward.wat")
    iot_a.create_topic_rule(ruleName=uid.replace("-", "_"), topicRulePayload={
        "sql": f"SELECT v FROM 'fwd/{uid}'",
        "actions": [{"lambda": {"functionArn": fn["FunctionArn"]}}]})
    records = _publish_until(cluster.nodes[1], f"fwd/{uid}", lambda: _records(kinesis_b, out), 15,
                             "the function run on B by the rule made on A")
    assert json.loads(records[0]["Data"])["wasm"]["v"] >= 1


def _records(kinesis, stream: str) -> list:
    from test_rules_engine import stream_records
    return stream_records(kinesis, stream)


def test_changes_to_one_function_racing_on_two_nodes_lose_nothing(cluster, uid):
    """Ten times, a permission is added to one function through A and another through B at the
    same moment: each call either succeeds or is refused with ResourceConflictException (409,
    the record changed under it), never both lost or silently overwritten — the function's
    policy then holds exactly the statements whose calls succeeded, on both nodes."""
    from test_functions import HERE, create, fn_name
    lams = [cluster.client("lambda", 0), cluster.client("lambda", 1)]
    name = fn_name(uid)
    create(lams[0], name, {"echo.wat": (HERE / "functions" / "echo.wat").read_text()},
           runtime="provided.al2023", handler="echo.wat")
    _seen_within_a_second(lambda: not _gone(lambda: lams[1].get_function(FunctionName=name),
                                            lams[1].exceptions), "the function on B")
    added: set[str] = set()
    refused = 0
    for round_ in range(10):
        def add(i: int) -> str:
            sid = f"{'ab'[i]}{round_}"
            lams[i].add_permission(FunctionName=name, StatementId=sid,
                                   Action="lambda:InvokeFunction", Principal="iot.amazonaws.com")
            return sid
        results = _race(add)
        for result in results:
            if result[0] == "ok":
                added.add(result[1])
            else:
                assert result == ("ResourceConflictException", 409), results
                refused += 1
        assert any(r[0] == "ok" for r in results), f"round {round_}: {results}"

    def statements(lam) -> set[str]:
        return {s["Sid"] for s in json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]}
    for lam in lams:
        wait_until(lambda: statements(lam) == added, LIVE_CHANGE_DEADLINE + 2,
                   what=f"the statements {sorted(added)} (refused: {refused})")


def test_an_sns_topic_is_shared_and_a_rule_made_on_one_node_notifies_from_the_other(cluster, uid):
    """A topic created through A is B's; its DisplayName set through B is A's; an mqtt
    subscription made through A is listed by B; a rule with an sns action made on A runs for a
    device's message on B, whose notification reaches the subscription's MQTT topic; the
    subscription removed through B is gone from A, then the topic deleted through B. Each
    change is seen on the other node within a second."""
    sns_a, sns_b = cluster.client("sns", 0), cluster.client("sns", 1)
    topic = sns_a.create_topic(Name=f"t-{uid}")["TopicArn"]

    def attributes(sns):
        return lambda: sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    _seen_within_a_second(lambda: not _gone(attributes(sns_b), sns_b.exceptions, "NotFoundException"),
                          "the topic made on A, on B")
    sns_b.set_topic_attributes(TopicArn=topic, AttributeName="DisplayName", AttributeValue="set on b")
    _seen_within_a_second(lambda: attributes(sns_a)().get("DisplayName") == "set on b",
                          "the DisplayName set on B, on A")
    out = f"sns-out/{uid}"
    subscription = sns_a.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=out)["SubscriptionArn"]

    def listed(sns):
        return [s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
    _seen_within_a_second(lambda: listed(sns_b) == [subscription], "the subscription made on A, on B")
    cluster.iot(0).create_topic_rule(ruleName=uid.replace("-", "_"), topicRulePayload={
        "sql": f"SELECT v FROM 'notify/{uid}'",
        "actions": [{"sns": {"targetArn": topic,
                             "roleArn": f"arn:aws:iam::{ACCOUNT}:role/sns"}}]})
    sub = Client(cluster.nodes[1], V5)
    try:
        sub.connect()
        sub.subscribe(out, qos=1)
        _publish_until(cluster.nodes[1], f"notify/{uid}", lambda: sub.matching(topic=out), 15,
                       "the notification of the rule made on A, from B")
        envelope = json.loads(sub.matching(topic=out)[0].payload)
        assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic, envelope
        assert "v" in json.loads(envelope["Message"])
    finally:
        sub.close()
    sns_b.unsubscribe(SubscriptionArn=subscription)
    _seen_within_a_second(lambda: listed(sns_a) == [], "the subscription removed on B, gone from A")
    sns_b.delete_topic(TopicArn=topic)
    _seen_within_a_second(lambda: _gone(attributes(sns_a), sns_a.exceptions, "NotFoundException"),
                          "the topic deleted on B, gone from A")


def test_a_delivery_stream_is_shared_and_each_node_delivers_what_it_took(cluster, uid):
    """A Firehose delivery stream created through A is B's: a record put through B lands in B's
    lake (each node delivers what it took) and one put through A in A's; its destination updated
    through B (version 2, a new prefix) is what A describes and delivers under; a rule made on A
    with a firehose action runs for a device's message on B; deleted through A, B no longer has
    it. Each change is seen on the other node within a second."""
    from test_firehose import records_in, s3_destination
    fh_a, fh_b = cluster.client("firehose", 0), cluster.client("firehose", 1)
    a, b = cluster.nodes
    name, bucket = f"fh-{uid}"[:64], "lake-shared"
    fh_a.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                                ExtendedS3DestinationConfiguration=s3_destination(bucket, Prefix="one/"))

    def described(fh):
        return lambda: fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    _seen_within_a_second(lambda: not _gone(described(fh_b), fh_b.exceptions), "the stream made on A, on B")
    fh_b.put_record(DeliveryStreamName=name, Record={"Data": b'{"on":"b"}\n'})
    fh_a.put_record(DeliveryStreamName=name, Record={"Data": b'{"on":"a"}\n'})
    for node, on in ((b, b'{"on":"b"}'), (a, b'{"on":"a"}')):
        wait_until(lambda: records_in(node, bucket, "one/") == [on], 20,
                   what=f"the record put through {node.name} in its lake")
    version = described(fh_b)()["VersionId"]
    fh_b.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId=version,
                            DestinationId="destinationId-000000000001",
                            ExtendedS3DestinationUpdate={"Prefix": "two/"})
    _seen_within_a_second(lambda: described(fh_a)()["VersionId"] == "2", "the update made on B, on A")
    fh_a.put_record(DeliveryStreamName=name, Record={"Data": b'{"on":"a2"}\n'})
    wait_until(lambda: records_in(a, bucket, "two/") == [b'{"on":"a2"}'], 20,
               what="A delivering under B's update")
    cluster.iot(0).create_topic_rule(ruleName=uid.replace("-", "_"), topicRulePayload={
        "sql": f"SELECT v FROM 'archive/{uid}'",
        "actions": [{"firehose": {"deliveryStreamName": name, "separator": "\n",
                                  "roleArn": f"arn:aws:iam::{ACCOUNT}:role/firehose"}}]})
    archived = _publish_until(b, f"archive/{uid}", lambda: records_in(b, bucket, "two/"), 20,
                              "the rule made on A archiving B's message", each=1.5)
    assert json.loads(archived[0])["v"] >= 1
    fh_a.delete_delivery_stream(DeliveryStreamName=name)
    _seen_within_a_second(lambda: _gone(described(fh_b), fh_b.exceptions), "the stream deleted on A, gone from B")


def test_a_node_started_later_serves_the_shared_resources_made_before(
        broker_factory, nats_server, postgres_server, aws, uid):
    """B starts after a function and a delivery stream were made through A: B invokes the
    function (its package read from PostgreSQL) and takes a record for the delivery stream into
    its own lake (its internal stream made at start)."""
    from test_firehose import records_in, s3_destination
    from test_functions import HERE, create, fn_name, invoke
    cluster = start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                            started=1)
    name = fn_name(uid)
    create(cluster.client("lambda", 0), name,
           {"echo.wat": (HERE / "functions" / "echo.wat").read_text()},
           runtime="provided.al2023", handler="echo.wat")
    stream, bucket = f"fh-{uid}"[:64], "lake-later"
    cluster.client("firehose", 0).create_delivery_stream(
        DeliveryStreamName=stream, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_destination(bucket))
    b = cluster.nodes[1]
    b.start()
    assert invoke(cluster.client("lambda", 1), name, {"n": 1})[1] == {"wasm": {"n": 1}}
    cluster.client("firehose", 1).put_record(DeliveryStreamName=stream,
                                             Record={"Data": b'{"on":"b"}\n'})
    wait_until(lambda: records_in(b, bucket) == [b'{"on":"b"}'], 20,
               what="the record put through B in its lake")


def test_a_package_at_lambdas_size_limit_made_on_one_node_runs_on_the_other(cluster, uid):
    """A deployment package just under Lambda's 50 MB direct-upload limit (48 MiB that do not
    compress, stored) is created through A and runs through B: the zip travels through
    PostgreSQL as one value and B unpacks it on first use."""
    import io
    import os
    import zipfile
    from test_functions import HERE, fn_name, invoke
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("echo.wat", (HERE / "functions" / "echo.wat").read_text())
        z.writestr("blob.bin", os.urandom(48 * 1024 * 1024))
    package = out.getvalue()
    assert 48 << 20 < len(package) <= 50 * 1024 * 1024
    name = fn_name(uid)
    made = cluster.client("lambda", 0).create_function(
        FunctionName=name, Runtime="provided.al2023", Role=f"arn:aws:iam::{ACCOUNT}:role/l",
        Handler="echo.wat", Code={"ZipFile": package})
    assert made["CodeSize"] == len(package)
    lam_b = cluster.client("lambda", 1)
    _seen_within_a_second(lambda: not _gone(lambda: lam_b.get_function_configuration(
        FunctionName=name), lam_b.exceptions), "the function made on A, on B")
    assert invoke(lam_b, name, {"n": 1})[1] == {"wasm": {"n": 1}}
