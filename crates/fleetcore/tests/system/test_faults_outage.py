"""Fault suite (b): a rule action's destination goes down, then comes back or never does.

The destinations are the `http` action's HTTPS endpoint, and NATS JetStream under the `kinesis`
action when the stream backend is JetStream (the S3 destination of the lake has its own outage
test, test_firehose.py::test_s3_destination_survives_an_outage). The retry schedule is the server's
`--rules-retry-backoff-ms` (first backoff; doubled per attempt, at most 8x) and
`--rules-retry-attempts`. Most cases shorten it for CI: with BACKOFF_MS = 400 and 5 attempts a
message is retried for 0.4 + 0.8 + 1.6 + 3.2 = 6.0 s before its errorAction, and an OUTAGE of 3 s
is half of that window. One case takes the issue's 30 s outage as it is, with the default 1 s
backoff and 8 attempts (1 + 2 + 4 + 8 + 8 + 8 + 8 = 39 s of retries; the default 5 attempts ride
out about 15 s).

- Down for OUTAGE seconds (connection refused), then back on the same port: every PUBACKed
  message reaches the endpoint, and the errorAction never fires.
- Down for good: the errorAction fires for each message, and only once its retries ran out: never
  before the schedule's total backoff, and for an endpoint that answers 503 only after the
  endpoint saw all 5 attempts."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from brokers import HOST, let_time_pass, wait_until
from clients import V5
from test_rules_actions import enabled_destination, endpoint, test_ca  # noqa: F401 - fixtures
from test_rules_engine import ROLE, create_rule, rule_name, stream_records

pytestmark = pytest.mark.fleetcore_only("rule actions are fleetcore's")

BACKOFF_MS = 400
ATTEMPTS = 5
RETRY_WINDOW = BACKOFF_MS * (1 + 2 + 4 + 8) / 1000  # 6.0 s of backoff before the errorAction
OUTAGE = 3.0
RATE = 40  # messages per second from the publisher


def outage_broker(broker_factory, test_ca, backoff_ms: int = BACKOFF_MS, attempts: int = ATTEMPTS):
    return broker_factory("--rules-https-ca-file", str(test_ca[0]),
                          "--rules-retry-backoff-ms", str(backoff_ms),
                          "--rules-retry-attempts", str(attempts))


def retry_window(backoff_ms: int, attempts: int) -> float:
    """Seconds of backoff between a message's first attempt and its last."""
    return sum(min(backoff_ms * 2 ** k, backoff_ms * 8) for k in range(attempts - 1)) / 1000


class PacedPublisher:
    """One paho client publishing {"i": n} at RATE per second, QoS 1, until stopped."""

    def __init__(self, port: int, topic: str, client_id: str):
        self.sent: dict[int, int] = {}
        self.acked_ids: set[int] = set()
        self.stop = threading.Event()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        self.c.on_publish = lambda client, userdata, mid, rc, props: self.acked_ids.add(mid)
        self.c.connect(HOST, port)
        self.c.loop_start()
        self.topic = topic
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        start = time.monotonic()
        for i in range(60000):
            if self.stop.is_set():
                return
            info = self.c.publish(self.topic, json.dumps({"i": i}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self.sent[info.mid] = i
            let_time_pass(start + (i + 1) / RATE)  # pacing the load, not synchronizing

    def acked(self) -> set[int]:
        return {self.sent[m] for m in list(self.acked_ids) if m in self.sent}

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        self.c.loop_stop()


@pytest.mark.timeout_seconds(180)
@pytest.mark.parametrize("backoff_ms,attempts,outage", [(BACKOFF_MS, ATTEMPTS, OUTAGE), (1000, 8, 30.0)],
                         ids=["3s-outage-short-schedule", "30s-outage-default-backoff"])
def test_an_endpoint_down_for_a_while_then_back_loses_nothing_and_fires_no_error_action(
        broker_factory, test_ca, endpoint, aws, clients, uid,  # noqa: F811 - fixtures
        backoff_ms, attempts, outage):
    assert outage < retry_window(backoff_ms, attempts), "the case must fit its retry window"
    b = outage_broker(broker_factory, test_ca, backoff_ms, attempts)
    first = endpoint()
    iot = aws("iot", broker=b)
    enabled_destination(iot, first.url + "/", first)
    name = rule_name(uid)
    create_rule(iot, name, f"SELECT * FROM 'out/{uid}'", [{"http": {"url": first.url + "/in"}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"errors/{uid}"}})
    errors = clients(V5, broker=b)
    errors.subscribe(f"errors/{uid}", qos=1)
    pub = PacedPublisher(b.ports["mqtt"], f"out/{uid}", f"p-{uid}")
    endpoints = [first]

    def delivered() -> set[int]:
        return {json.loads(body)["i"] for e in endpoints for _, _, body in e.deliveries("/in")}

    try:
        wait_until(lambda: len(delivered()) >= 40, 30, what="deliveries before the outage")
        first.close()
        down_at = time.monotonic()
        let_time_pass(down_at + outage)  # the outage itself is what is tested
        endpoints.append(endpoint(port=first.port))  # back, on the same address
        acked_at_return = pub.acked()
        wait_until(lambda: len(delivered() - acked_at_return) >= 40, 30,
                   what="deliveries after the endpoint came back")
    finally:
        pub.finish()
    acked = pub.acked()
    assert max(acked_at_return) - min(acked_at_return) >= outage * RATE, "the load ran through the outage"
    wait_until(lambda: acked <= delivered(), retry_window(backoff_ms, attempts) + 30,
               what=f"all {len(acked)} acknowledged messages at the endpoint")
    fired = b.metrics().get(f'fleetcore_rules_error_action_fired_total{{rule="{name}",action="0:http"}}', 0)
    assert fired == 0, f"the errorAction fired {fired} times for an outage shorter than the retries"
    assert errors.matching(topic=f"errors/{uid}") == [], "an errorAction message"
    print(f"\nfault (b): {len(acked)} acknowledged, all delivered; "
          f"{sum(len(e.deliveries('/in')) for e in endpoints) - len(delivered())} delivered twice")


@pytest.mark.timeout_seconds(120)
def test_an_endpoint_that_never_comes_back_gets_the_error_action_only_after_every_retry(
        broker_factory, test_ca, endpoint, aws, clients, uid):  # noqa: F811 - fixtures
    b = outage_broker(broker_factory, test_ca)
    iot = aws("iot", broker=b)
    busy = endpoint(answer=lambda handler, body: (503, b'{"message":"down"}'))
    enabled_destination(iot, busy.url + "/", busy)
    gone = endpoint()
    enabled_destination(iot, gone.url + "/", gone)
    gone.close()
    for n, url in enumerate((busy.url + "/busy", gone.url + "/gone")):
        create_rule(iot, f"{rule_name(uid)}_{n}", f"SELECT * FROM 'never/{uid}/{n}'",
                    [{"http": {"url": url}}],
                    errorAction={"republish": {"roleArn": ROLE, "topic": f"errors/{uid}/{n}"}})
    sub = clients(V5, broker=b)
    sub.subscribe(f"errors/{uid}/#", qos=1)
    pub = clients(V5, broker=b)
    published_at = time.monotonic()
    for n in (0, 1):
        pub.publish(f"never/{uid}/{n}", json.dumps({"n": n}), qos=1)
    arrived = {}
    for n in (0, 1):
        m = sub.wait_message(timeout=RETRY_WINDOW + 30, topic=f"errors/{uid}/{n}")
        arrived[m.topic] = (m.timestamp, json.loads(m.payload))  # paho's monotonic receive time
    assert set(arrived) == {f"errors/{uid}/0", f"errors/{uid}/1"}
    for topic, (at, payload) in arrived.items():
        # Never before the backoff between the attempts has passed (a lower bound: robust).
        assert at - published_at >= RETRY_WINDOW, f"{topic}: errorAction after {at - published_at:.2f} s"
        [failure] = payload["failures"]
        assert failure["failedAction"] == "HttpAction"
    assert "503" in arrived[f"errors/{uid}/0"][1]["failures"][0]["errorMessage"]
    assert "onnect" in arrived[f"errors/{uid}/1"][1]["failures"][0]["errorMessage"]
    assert len(busy.deliveries("/busy")) == ATTEMPTS, "no attempt after the errorAction"


@pytest.mark.timeout_seconds(120)
def test_nats_down_for_a_while_then_back_the_kinesis_action_loses_nothing(
        broker_factory, nats_server, aws, clients, uid):
    """The stream backend is JetStream; nats-server stops for OUTAGE seconds and starts again on
    the same port and store. PUBACKs keep coming (the ingest log is local); the kinesis action
    retries and every acknowledged message is in the stream after NATS is back."""
    nats = nats_server()
    b = broker_factory(env={"FLEETCORE_STREAM_BACKEND": "jetstream",
                            "FLEETCORE_STREAM_SERVERS": nats.url,
                            "FLEETCORE_RULES_RETRY_BACKOFF_MS": str(BACKOFF_MS)})
    iot, kinesis = aws("iot", broker=b), aws("kinesis", broker=b)
    stream, name = f"s-{uid}"[:64], rule_name(uid)
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    create_rule(iot, name, f"SELECT * FROM 'nats/{uid}'",
                [{"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "k"}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"errors/{uid}"}})
    errors = clients(V5, broker=b)
    errors.subscribe(f"errors/{uid}", qos=1)

    def in_stream() -> set[int]:
        return {json.loads(r["Data"])["i"] for r in stream_records(kinesis, stream)}

    pub = PacedPublisher(b.ports["mqtt"], f"nats/{uid}", f"p-{uid}")
    try:
        wait_until(lambda: len(in_stream()) >= 40, 30, what="records before the outage")
        nats.stop()
        let_time_pass(time.monotonic() + OUTAGE)  # the outage itself is what is tested
        acked_in_outage = pub.acked()
        nats.start()
        wait_until(lambda: len(in_stream() - acked_in_outage) >= 40, 30,
                   what="records after NATS came back")
    finally:
        pub.finish()
    acked = pub.acked()
    wait_until(lambda: acked <= in_stream(), RETRY_WINDOW + 30,
               what=f"all {len(acked)} acknowledged messages in the stream")
    fired = b.metrics().get(f'fleetcore_rules_error_action_fired_total{{rule="{name}",action="0:kinesis"}}', 0)
    assert fired == 0, f"the errorAction fired {fired} times for an outage shorter than the retries"
    assert errors.matching(topic=f"errors/{uid}") == [], "an errorAction message"
