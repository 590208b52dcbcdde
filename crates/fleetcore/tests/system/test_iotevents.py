"""IoT Events through boto3 (`iotevents`, `iotevents-data`, botocore 1.42.50 as test.sh pins):
inputs and detector models round trips with AWS's validation (an unknown state, an undefined
input attribute or a bad expression is an InvalidRequestException naming the place); detectors
created per key by BatchPutMessage, described, listed, forced (BatchUpdateDetector) and deleted;
timers firing with no input; telemetry over MQTT -> rule `iotEvents` action -> detector ->
Alarm -> a message on `alerts/...` and an SNS notification at an HTTP subscriber (the overheat
example); SIGKILL with detectors in Alarm and pending timers, then a
restart: state, variables and timers intact, and a timer that came due while the server was down
fires once."""

from __future__ import annotations

import base64
import json
import time

import pytest
from botocore.exceptions import ClientError

from brokers import let_time_pass, wait_until
from clients import V5
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("IoT Events is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/events"


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def make_input(ev, name: str, *paths: str) -> None:
    ev.create_input(inputName=name, inputDefinition={"attributes": [{"jsonPath": p} for p in paths]})


def put(data, input_name: str, *bodies: dict) -> list:
    """BatchPutMessage; returns the error entries."""
    messages = [{"messageId": f"m{i}-{time.monotonic_ns()}", "inputName": input_name,
                 "payload": json.dumps(b).encode()} for i, b in enumerate(bodies)]
    return data.batch_put_message(messages=messages)["BatchPutMessageErrorEntries"]


def detector(data, model: str, key: str | None = None) -> dict | None:
    try:
        kw = {"keyValue": key} if key is not None else {}
        return data.describe_detector(detectorModelName=model, **kw)["detector"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def variables(d: dict) -> dict:
    return {v["name"]: v["value"] for v in d["state"]["variables"]}


def in_state(data, model: str, key: str | None, state: str, timeout: float = 30):
    return wait_until(lambda: (d := detector(data, model, key)) and d["state"]["stateName"] == state and d,
                      timeout, what=f"detector {model}/{key} in state {state}")


def threshold_model(input_name: str, topic: str | None = None, timer_seconds: int = 0) -> dict:
    """Normal -> Alarm above 30 (counting alarms), Alarm -> Normal below 25; optionally an MQTT
    publish on entering Alarm and a timer in Alarm whose expiry counts in `fired` and returns
    to Normal."""
    alarm_enter = [{"setVariable": {"variableName": "alarms", "value": "$variable.alarms + 1"}},
                   {"setVariable": {"variableName": "last", "value": f"$input.{input_name}.temperature"}}]
    if topic:
        alarm_enter.append({"iotTopicPublish": {
            "mqttTopic": topic,
            "payload": {"contentExpression":
                        f"'{{\"sensor\": \"${{$input.{input_name}.sensorId}}\", \"t\": ${{$input.{input_name}.temperature}}}}'",
                        "type": "JSON"}}})
    alarm_input_events = []
    if timer_seconds:
        alarm_enter.append({"setTimer": {"timerName": "cooldown", "seconds": timer_seconds}})
    alarm_transitions = [{"eventName": "cooled", "condition": f"$input.{input_name}.temperature < 25",
                          "actions": [], "nextState": "Normal"}]
    if timer_seconds:
        alarm_transitions.insert(0, {"eventName": "expired", "condition": 'timeout("cooldown")',
                                     "actions": [{"setVariable": {"variableName": "fired",
                                                                  "value": "$variable.fired + 1"}}],
                                     "nextState": "Normal"})
    return {
        "initialStateName": "Normal",
        "states": [
            {"stateName": "Normal",
             "onEnter": {"events": [{"eventName": "init", "condition": "isUndefined($variable.alarms)",
                                     "actions": [{"setVariable": {"variableName": "alarms", "value": "0"}},
                                                 {"setVariable": {"variableName": "fired", "value": "0"}}]}]},
             "onInput": {"events": [], "transitionEvents": [
                 {"eventName": "overheat", "condition": f"$input.{input_name}.temperature > 30",
                  "actions": [], "nextState": "Alarm"}]},
             "onExit": {"events": []}},
            {"stateName": "Alarm",
             "onEnter": {"events": [{"eventName": "raise", "condition": "true", "actions": alarm_enter}]},
             "onInput": {"events": alarm_input_events, "transitionEvents": alarm_transitions},
             "onExit": {"events": []}},
        ],
    }


@pytest.fixture
def ev(aws):
    return aws("iotevents")


@pytest.fixture
def data(aws):
    return aws("iotevents-data")


def test_input_round_trip(ev, uid):
    name = rule_name(uid)
    created = ev.create_input(inputName=name, inputDescription="telemetry",
                              inputDefinition={"attributes": [{"jsonPath": "temperature"},
                                                              {"jsonPath": "sensor.id"}]})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    conf = created["inputConfiguration"]
    assert conf["inputName"] == name and conf["status"] == "ACTIVE"
    assert conf["inputArn"] == f"arn:aws:iotevents:us-east-1:000000000000:input/{name}"
    described = ev.describe_input(inputName=name)["input"]
    assert described["inputDefinition"]["attributes"] == [{"jsonPath": "temperature"}, {"jsonPath": "sensor.id"}]
    assert described["inputConfiguration"]["inputDescription"] == "telemetry"
    assert name in [s["inputName"] for s in ev.list_inputs()["inputSummaries"]]
    with pytest.raises(ClientError) as e:
        make_input(ev, name, "x")
    assert error_code(e) == "ResourceAlreadyExistsException"
    updated = ev.update_input(inputName=name, inputDefinition={"attributes": [{"jsonPath": "humidity"}]})
    assert updated["inputConfiguration"]["inputName"] == name
    assert ev.describe_input(inputName=name)["input"]["inputDefinition"]["attributes"] == [{"jsonPath": "humidity"}]
    ev.delete_input(inputName=name)
    with pytest.raises(ClientError) as e:
        ev.describe_input(inputName=name)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        ev.create_input(inputName=name, inputDefinition={"attributes": [{"jsonPath": "a..b"}]})
    assert error_code(e) == "InvalidRequestException"


def test_detector_model_round_trip_and_versions(ev, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    conf = ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=ROLE,
                                    evaluationMethod="SERIAL",
                                    detectorModelDefinition=threshold_model(name))["detectorModelConfiguration"]
    assert (conf["detectorModelName"], conf["detectorModelVersion"], conf["key"], conf["evaluationMethod"]) == \
        (model, "1", "sensorId", "SERIAL")
    assert conf["detectorModelArn"].endswith(f":detectorModel/{model}")
    described = ev.describe_detector_model(detectorModelName=model)["detectorModel"]
    assert described["detectorModelDefinition"]["initialStateName"] == "Normal"
    assert [s["stateName"] for s in described["detectorModelDefinition"]["states"]] == ["Normal", "Alarm"]
    assert model in [s["detectorModelName"] for s in ev.list_detector_models()["detectorModelSummaries"]]
    with pytest.raises(ClientError) as e:
        ev.create_detector_model(detectorModelName=model, roleArn=ROLE, detectorModelDefinition=threshold_model(name))
    assert error_code(e) == "ResourceAlreadyExistsException"

    updated = ev.update_detector_model(detectorModelName=model, roleArn=ROLE, evaluationMethod="BATCH",
                                       detectorModelDefinition=threshold_model(name, timer_seconds=60))
    assert updated["detectorModelConfiguration"]["detectorModelVersion"] == "2"
    assert updated["detectorModelConfiguration"]["key"] == "sensorId"
    versions = ev.list_detector_model_versions(detectorModelName=model)["detectorModelVersionSummaries"]
    assert [(v["detectorModelVersion"], v["evaluationMethod"]) for v in versions] == [("2", "BATCH"), ("1", "SERIAL")]
    v1 = ev.describe_detector_model(detectorModelName=model, detectorModelVersion="1")["detectorModel"]
    assert v1["detectorModelConfiguration"]["detectorModelVersion"] == "1"
    assert "setTimer" not in json.dumps(v1["detectorModelDefinition"])

    deleted = ev.delete_detector_model(detectorModelName=model)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        ev.describe_detector_model(detectorModelName=model)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        ev.update_detector_model(detectorModelName=model, roleArn=ROLE, detectorModelDefinition=threshold_model(name))
    assert error_code(e) == "ResourceNotFoundException"


@pytest.mark.parametrize("change, words", [
    (lambda d: d["states"][0]["onInput"]["transitionEvents"][0].update(nextState="Nowhere"),
     ["Normal", "overheat", "Nowhere"]),
    (lambda d: d["states"][0]["onInput"]["transitionEvents"][0].update(
        condition="$input.{input}.pressure > 3"), ["Normal", "overheat", "pressure"]),
    (lambda d: d["states"][1]["onEnter"]["events"][0]["actions"][0]["setVariable"].update(value="$variable.alarms +"),
     ["Alarm", "raise", "action 1", "not valid"]),
    (lambda d: d["states"][0]["onInput"]["transitionEvents"][0].update(condition="nosuch($input.{input}.temperature)"),
     ["overheat", "nosuch"]),
    (lambda d: d["states"][0]["onInput"]["transitionEvents"][0].update(condition="$input.Missing.temperature > 1"),
     ["overheat", "Missing", "does not exist"]),
    (lambda d: d["states"][1]["onEnter"]["events"][0]["actions"].append({"sqs": {"queueUrl": "https://q"}}),
     ["Alarm", "raise", "sqs"]),
    (lambda d: d.update(initialStateName="Start"), ["Start"]),
])
def test_bad_definitions_are_refused_naming_the_place(ev, uid, change, words):
    name = rule_name(uid)[:40] + "_in"
    make_input(ev, name, "temperature")
    definition = json.loads(json.dumps(threshold_model(name)).replace("{input}", name))
    change(definition)
    definition = json.loads(json.dumps(definition).replace("{input}", name))
    with pytest.raises(ClientError) as e:
        ev.create_detector_model(detectorModelName=rule_name(uid)[:60], roleArn=ROLE,
                                 detectorModelDefinition=definition)
    assert error_code(e) == "InvalidRequestException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = e.value.response["Error"]["Message"]
    for w in words:
        assert w in message, message
    with pytest.raises(ClientError) as e:
        ev.describe_detector_model(detectorModelName=rule_name(uid)[:60])
    assert error_code(e) == "ResourceNotFoundException", "a refused model must leave nothing behind"


def test_detectors_per_key_from_batch_put_message(ev, data, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=ROLE, evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(name))
    errors = put(data, name, {"sensorId": "a", "temperature": 20}, {"sensorId": "b", "temperature": 35.5},
                 {"sensorId": "c", "temperature": 20})
    assert errors == []
    b = in_state(data, model, "b", "Alarm")
    assert variables(b) == {"alarms": "1", "fired": "0", "last": "35.5"}
    assert b["detectorModelVersion"] == "1" and b["keyValue"] == "b"
    a = in_state(data, model, "a", "Normal")
    assert variables(a) == {"alarms": "0", "fired": "0"}
    summaries = data.list_detectors(detectorModelName=model)["detectorSummaries"]
    assert sorted((s["keyValue"], s["state"]["stateName"]) for s in summaries) == \
        [("a", "Normal"), ("b", "Alarm"), ("c", "Normal")]
    alarmed = data.list_detectors(detectorModelName=model, stateName="Alarm")["detectorSummaries"]
    assert [s["keyValue"] for s in alarmed] == ["b"]
    # back to Normal below 25, and up again: the counter keeps counting
    assert put(data, name, {"sensorId": "b", "temperature": 10}, {"sensorId": "b", "temperature": 40}) == []
    wait_until(lambda: variables(detector(data, model, "b"))["alarms"] == "2", 10, what="second alarm")
    # BatchUpdateDetector forces a state and variables
    out = data.batch_update_detector(detectors=[{
        "messageId": "u1", "detectorModelName": model, "keyValue": "a",
        "state": {"stateName": "Alarm", "variables": [{"name": "alarms", "value": "7"}], "timers": []}}])
    assert out["batchUpdateDetectorErrorEntries"] == []
    a = detector(data, model, "a")
    assert a["state"]["stateName"] == "Alarm" and variables(a) == {"alarms": "7"}
    bad = data.batch_update_detector(detectors=[{
        "messageId": "u2", "detectorModelName": model, "keyValue": "a",
        "state": {"stateName": "Nowhere", "variables": [], "timers": []}}])["batchUpdateDetectorErrorEntries"]
    assert [(e["messageId"], e["errorCode"]) for e in bad] == [("u2", "InvalidRequestException")]
    # errors per message: an unknown input, a payload that is not JSON
    errors = data.batch_put_message(messages=[
        {"messageId": "x1", "inputName": "NoSuchInput", "payload": b'{"a": 1}'},
        {"messageId": "x2", "inputName": name, "payload": b"not json"},
        {"messageId": "x3", "inputName": name, "payload": b'{"sensorId": "d", "temperature": 1}'},
    ])["BatchPutMessageErrorEntries"]
    assert sorted((e["messageId"], e["errorCode"]) for e in errors) == \
        [("x1", "ResourceNotFoundException"), ("x2", "InvalidRequestException")]
    in_state(data, model, "d", "Normal")
    deleted = data.batch_delete_detector(detectors=[{"messageId": "d1", "detectorModelName": model, "keyValue": "d"}])
    assert deleted["batchDeleteDetectorErrorEntries"] == []
    assert detector(data, model, "d") is None
    with pytest.raises(ClientError) as e:
        data.describe_detector(detectorModelName="NoSuchModel", keyValue="a")
    assert error_code(e) == "ResourceNotFoundException"


def test_model_without_key_has_one_detector_and_batch_sees_old_variables(ev, data, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "v")
    definition = {"initialStateName": "S", "states": [{"stateName": "S", "onInput": {"events": [
        {"eventName": "set", "condition": "true",
         "actions": [{"setVariable": {"variableName": "x", "value": f"$input.{name}.v"}}]},
        {"eventName": "copy", "condition": "true",
         "actions": [{"setVariable": {"variableName": "seen", "value": "$variable.x"}}]},
    ], "transitionEvents": []}}]}
    ev.create_detector_model(detectorModelName=model, roleArn=ROLE, evaluationMethod="BATCH",
                             detectorModelDefinition=definition)
    assert put(data, name, {"v": 1}) == []
    d = wait_until(lambda: detector(data, model), 10, what="the single detector")
    assert d.get("keyValue") is None
    wait_until(lambda: variables(detector(data, model)).get("x") == "1", 10, what="x set")
    # actions of a BATCH group run in order after all conditions: `copy` reads the x `set` wrote
    assert variables(detector(data, model))["seen"] == "1"
    assert put(data, name, {"v": 2}) == []
    wait_until(lambda: variables(detector(data, model)) == {"x": "2", "seen": "2"}, 10, what="second message")
    assert len(data.list_detectors(detectorModelName=model)["detectorSummaries"]) == 1


def test_timer_fires_without_input(ev, data, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=ROLE, evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(name, timer_seconds=1))
    assert put(data, name, {"sensorId": "t", "temperature": 50}) == []
    d = in_state(data, model, "t", "Alarm")
    assert [t["name"] for t in d["state"]["timers"]] == ["cooldown"]
    assert d["state"]["timers"][0]["timestamp"].timestamp() > time.time() - 5
    # no message comes: the timer's expiry alone moves the detector back to Normal
    d = in_state(data, model, "t", "Normal", timeout=15)
    assert variables(d)["fired"] == "1" and d["state"]["timers"] == []


def test_mqtt_telemetry_through_a_rule_raises_an_alert(broker, ev, data, aws, clients, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId", "thingType")
    topic = f"alerts/${{$input.{name}.thingType}}/critical"
    ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=ROLE, evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(name, topic=topic))
    iot = aws("iot")
    create_rule(iot, rule_name(uid) + "_rule",
                f"SELECT *, topic(3) AS sensorId FROM 'ev/{uid}/+/telemetry'",
                [{"iotEvents": {"inputName": name, "roleArn": ROLE, "messageId": "${newuuid()}"}}])
    sub = clients(V5)
    sub.subscribe(f"alerts/TempSensor{uid}/critical", qos=1)
    dev = clients(V5)
    dev.publish(f"ev/{uid}/s1/telemetry", json.dumps({"temperature": 22, "thingType": f"TempSensor{uid}"}), qos=1)
    dev.publish(f"ev/{uid}/s2/telemetry", json.dumps({"temperature": 31.5, "thingType": f"TempSensor{uid}"}), qos=1)
    alert = sub.wait_message(timeout=15)
    assert alert.topic == f"alerts/TempSensor{uid}/critical"
    assert json.loads(alert.payload) == {"sensor": "s2", "t": 31.5}
    in_state(data, model, "s1", "Normal")
    in_state(data, model, "s2", "Alarm")
    assert len(sub.matching()) == 1


def test_kill_restart_keeps_state_variables_and_timers(fresh_broker, aws, uid):
    b = fresh_broker
    ev, data = aws("iotevents", broker=b), aws("iotevents-data", broker=b)
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=ROLE, evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(name, timer_seconds=3))
    long_model = model + "_long"
    ev.create_detector_model(detectorModelName=long_model, key="sensorId", roleArn=ROLE, evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(name, timer_seconds=3600))
    assert put(data, name, {"sensorId": "hot1", "temperature": 45}, {"sensorId": "hot2", "temperature": 46},
               {"sensorId": "cool", "temperature": 10}) == []
    before = {}
    for key in ("hot1", "hot2"):
        before[key] = in_state(data, model, key, "Alarm")
        in_state(data, long_model, key, "Alarm")
    in_state(data, model, "cool", "Normal")
    due = max(d["state"]["timers"][0]["timestamp"].timestamp() for d in before.values())
    long_timer = detector(data, long_model, "hot1")["state"]["timers"]

    b.kill()
    # the short timers come due while the server is down
    let_time_pass(time.monotonic() + max(0.0, due - time.time()) + 1.0)
    b.start()

    # the long-timer model's detectors are exactly as they were, timer included
    after_long = detector(data, long_model, "hot1")
    assert after_long["state"]["stateName"] == "Alarm"
    assert variables(after_long) == {"alarms": "1", "fired": "0", "last": "45"}
    assert after_long["state"]["timers"] == long_timer
    # the overdue timers fired once, at restart
    for key in ("hot1", "hot2"):
        d = in_state(data, model, key, "Normal", timeout=10)
        assert variables(d)["fired"] == "1" and variables(d)["alarms"] == "1", d
        assert d["state"]["timers"] == []
    assert detector(data, model, "cool")["state"]["stateName"] == "Normal"


def test_operations_not_built_are_answered_unknown(ev):
    with pytest.raises(ClientError) as e:
        ev.describe_logging_options()
    assert error_code(e) == "UnknownOperationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


@pytest.fixture
def http_subscriber():
    from test_sns import Endpoint
    made = []

    def make():
        made.append(Endpoint())
        return made[-1]

    yield make
    for e in made:
        e.close()


def test_overheat_example_from_mqtt_to_alerts_and_sns(broker, ev, data, aws, clients, http_subscriber, uid):
    """The whole path with examples/events/overheat.json (its timer shortened to 1 s, its SNS
    topic this test's): telemetry over MQTT -> rule `iotEvents` action -> detector per sensor ->
    Overheating -> (no recovery before the timer) Alarm -> a message on alerts/{thingType}/critical
    and an SNS notification at an HTTP subscriber. A spike that recovers in time alerts nobody."""
    from pathlib import Path
    from test_sns import confirmed_http_subscription
    sns = aws("sns")
    topic_arn = sns.create_topic(Name=f"alerts-{uid}")["TopicArn"]
    ep = http_subscriber()
    confirmed_http_subscription(sns, topic_arn, ep)
    example = json.loads((Path(__file__).resolve().parents[4] / "examples/events/overheat.json").read_text())
    name, model = rule_name(uid) + "_in", rule_name(uid)
    text = json.dumps(example["detectorModelDefinition"]).replace("TelemetryInput", name) \
        .replace('"seconds": 60', '"seconds": 1') \
        .replace("arn:aws:sns:us-east-1:000000000000:alerts", topic_arn)
    make_input(ev, name, "sensorId", "temperature", "thingType")
    ev.create_detector_model(detectorModelName=model, key=example["key"], roleArn=example["roleArn"],
                             evaluationMethod=example["evaluationMethod"], detectorModelDefinition=json.loads(text))
    create_rule(aws("iot"), rule_name(uid) + "_rule",
                f"SELECT *, topic(3) AS sensorId FROM 'ovens/{uid}/+/telemetry'",
                [{"iotEvents": {"inputName": name, "roleArn": ROLE}}])
    kind = f"Oven{uid}"
    sub = clients(V5)
    sub.subscribe(f"alerts/{kind}/critical", qos=1)
    dev = clients(V5)

    def send(sensor, temperature):
        dev.publish(f"ovens/{uid}/{sensor}/telemetry",
                    json.dumps({"temperature": temperature, "thingType": kind}), qos=1)

    # a short spike that recovers before the timer never alerts
    send("o1", 33)
    in_state(data, model, "o1", "Overheating")
    send("o1", 29)
    assert in_state(data, model, "o1", "Normal")["state"]["timers"] == []
    # a sustained one does, with no further message
    send("o2", 35)
    send("o2", 36.5)
    alert = sub.wait_message(timeout=15)
    assert alert.topic == f"alerts/{kind}/critical"
    assert json.loads(alert.payload) == {"severity": "critical", "temperature": 36.5, "alarms": 1}
    (_, notification), = ep.wait("Notification")
    assert notification["TopicArn"] == topic_arn
    assert notification["Message"] == f"Sensor {kind} above 30 degrees for 60 s: 36.5"
    in_state(data, model, "o2", "Alarm")
    assert detector(data, model, "o1")["state"]["stateName"] == "Normal"
    assert len(sub.matching()) == 1 and len(ep.of_type("Notification")) == 1
