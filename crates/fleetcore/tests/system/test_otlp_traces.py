"""OpenTelemetry traces: with `--otlp-endpoint`, the server posts OTLP/HTTP JSON
ExportTraceServiceRequests to `/v1/traces` of a receiver running in this test: a span per API
request (service, operation, status; a child of the caller's W3C `traceparent`), per sampled
MQTT message (`--otlp-trace-sampling 1` samples every one here), per rule action delivery (with
its failure) and per function invocation; ids are W3C's (32 and 16 hex digits, not zero)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from brokers import Broker, wait_until
from clients import V5
from test_functions import create, fn_name, invoke
from test_grafana import Receiver
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("the exporter is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/r"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def tb(tmp_path_factory, receiver):
    b = Broker(tmp_path_factory.mktemp("traces-broker"),
               ["--otlp-endpoint", receiver.url, "--otlp-trace-sampling", "1"], name="traces",
               env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    b.start()
    yield b
    b.stop()


def spans(receiver: Receiver) -> list[dict]:
    out = []
    for content_type, body in list(receiver.traces):
        assert content_type == "application/json"
        for rs in body["resourceSpans"]:
            resource = {a["key"]: a["value"]["stringValue"] for a in rs["resource"]["attributes"]}
            assert resource["service.name"] == "fleetcore"
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    span["attrs"] = {a["key"]: next(iter(a["value"].values()))
                                     for a in span["attributes"]}
                    out.append(span)
    return out


def find(receiver: Receiver, name: str, **attrs) -> dict | None:
    for span in spans(receiver):
        if span["name"] == name and all(span["attrs"].get(k) == v for k, v in attrs.items()):
            return span
    return None


def wait_span(receiver: Receiver, name: str, **attrs) -> dict:
    return wait_until(lambda: find(receiver, name, **attrs), timeout=60, interval=0.2,
                      what=f"a {name} span with {attrs}")


def assert_w3c_ids(span: dict) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]) and set(span["traceId"]) != {"0"}
    assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"]) and set(span["spanId"]) != {"0"}
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0


def test_api_requests_are_spans_with_operation_and_status(tb, receiver, aws, uid):
    iot = aws("iot", broker=tb)

    def traceparent(request, **_):
        request.headers["traceparent"] = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    iot.meta.events.register("before-sign.iot.ListThings", traceparent)
    iot.list_things()
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=f"missing-{uid}")
    listed = wait_span(receiver, "aws.request", **{"rpc.method": "ListThings"})
    assert_w3c_ids(listed)
    assert listed["kind"] == 2  # SERVER
    assert listed["attrs"]["rpc.service"] == "iot"
    assert listed["attrs"]["http.response.status_code"] == "200"
    assert listed["traceId"] == CALLER_TRACE and listed["parentSpanId"] == CALLER_SPAN
    missing = wait_span(receiver, "aws.request", **{"rpc.method": "DescribeThing"})
    assert missing["attrs"]["http.response.status_code"] == "404"
    assert missing["traceId"] != CALLER_TRACE and "parentSpanId" not in missing


def test_messages_rule_actions_and_functions_are_spans(tb, receiver, aws, clients, uid):
    iot, lam = aws("iot", broker=tb), aws("lambda", broker=tb)
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(e, c):\n    return e\n"})
    rule = rule_name(uid)
    create_rule(iot, rule, f"SELECT * FROM 'traced/{uid}'", [
        {"republish": {"roleArn": ROLE, "topic": f"traced-out/{uid}", "qos": 0}},
        {"kinesis": {"roleArn": ROLE, "streamName": f"missing-{uid}", "partitionKey": "k"}}])
    pub = clients(V5, broker=tb, client_id=f"{uid}-pub")
    pub.publish(f"traced/{uid}", json.dumps({"n": 1}).encode(), qos=1)

    message = wait_span(receiver, "mqtt.publish",
                        **{"messaging.destination.name": f"traced/{uid}"})
    assert_w3c_ids(message)
    assert message["attrs"]["messaging.client_id"] == f"{uid}-pub"
    assert message["attrs"]["messaging.mqtt.qos"] == "1"
    assert message["attrs"]["fleetcore.rules_ingested"] is True

    republished = wait_span(receiver, "rule.action",
                            **{"fleetcore.rule": rule, "fleetcore.action": "0:republish"})
    assert_w3c_ids(republished)
    assert republished["kind"] == 3  # CLIENT
    assert republished["status"]["code"] == 1
    assert republished["attrs"]["fleetcore.resource"] == f"traced-out/{uid}"
    assert republished["attrs"]["fleetcore.action_type"] == "RepublishAction"
    failed = wait_span(receiver, "rule.action",
                       **{"fleetcore.rule": rule, "fleetcore.action": "1:kinesis"})
    assert failed["status"]["code"] == 2 and failed["status"]["message"]
    assert failed["attrs"]["fleetcore.delivered"] == "0"

    invoke(lam, name, {"x": 1})
    invoked = wait_span(receiver, "function.invoke", **{"faas.invoked_name": name})
    assert_w3c_ids(invoked)
    assert invoked["status"]["code"] == 1
    # Invoked through the API: a child of the Invoke request's span, named by its operation.
    request = wait_span(receiver, "aws.request", **{
        "rpc.service": "lambda", "rpc.method": "Invoke",
        "url.path": f"/2015-03-31/functions/{name}/invocations"})
    assert invoked["traceId"] == request["traceId"]
    assert invoked["parentSpanId"] == request["spanId"]
