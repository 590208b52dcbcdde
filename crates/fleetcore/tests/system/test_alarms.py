"""IoT Events alarm models through boto3 (`iotevents`, `iotevents-data`, botocore 1.42.50 as
test.sh pins): CreateAlarmModel / Describe / List / ListVersions / Update / Delete with AWS's
validation (InvalidRequestException naming the member); one alarm per key value fed by MQTT
telemetry -> rule `iotEvents` action; the state machine AWS documents (NORMAL -> ACTIVE ->
ACKNOWLEDGED -> NORMAL, ACTIVE -> LATCHED, reset, snooze ending on its own, disable / enable,
disabledOnInitialization, no acknowledge flow); every state change sent to an MQTT topic and an
HTTP SNS subscriber; a SIGKILL keeps every alarm's state, and a snooze that ended while the server
was down ends at restart."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from brokers import let_time_pass, wait_until
from clients import V5
from test_iotevents import ROLE, error_code, make_input, put
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("IoT Events is fleetcore's")


@pytest.fixture
def ev(aws):
    return aws("iotevents")


@pytest.fixture
def data(aws):
    return aws("iotevents-data")


def simple_rule(input_name: str, operator: str = "GREATER", threshold: str = "30") -> dict:
    return {"simpleRule": {"inputProperty": f"$input.{input_name}.temperature",
                           "comparisonOperator": operator, "threshold": threshold}}


def alarm(data, model: str, key: str | None = None) -> dict | None:
    try:
        kw = {"keyValue": key} if key is not None else {}
        return data.describe_alarm(alarmModelName=model, **kw)["alarm"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def alarm_in(data, model: str, key: str | None, state: str, timeout: float = 10) -> dict:
    return wait_until(lambda: (a := alarm(data, model, key)) and a["alarmState"]["stateName"] == state and a,
                      timeout, what=f"alarm {model}/{key} in state {state}")


def request(model: str, key: str | None, n: int = 1, **extra) -> dict:
    r = {"requestId": f"r{n}", "alarmModelName": model} | extra
    if key is not None:
        r["keyValue"] = key
    return r


def test_alarm_model_round_trip_and_versions(ev, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    created = ev.create_alarm_model(
        alarmModelName=model, alarmModelDescription="too hot", roleArn=ROLE, key="sensorId", severity=3,
        alarmRule=simple_rule(name), tags=[{"key": "site", "value": "lab"}],
        alarmCapabilities={"initializationConfiguration": {"disabledOnInitialization": False},
                           "acknowledgeFlow": {"enabled": True}},
        alarmEventActions={"alarmActions": [{"iotTopicPublish": {"mqttTopic": f"alarms/{uid}"}}]})
    assert (created["alarmModelVersion"], created["status"]) == ("1", "ACTIVE")
    assert created["alarmModelArn"] == f"arn:aws:iotevents:us-east-1:000000000000:alarmModel/{model}"
    described = ev.describe_alarm_model(alarmModelName=model)
    assert (described["alarmModelName"], described["key"], described["severity"]) == (model, "sensorId", 3)
    assert described["alarmRule"] == simple_rule(name)
    assert described["alarmCapabilities"]["acknowledgeFlow"] == {"enabled": True}
    assert described["alarmModelDescription"] == "too hot"
    assert model in [s["alarmModelName"] for s in ev.list_alarm_models()["alarmModelSummaries"]]
    with pytest.raises(ClientError) as e:
        ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, alarmRule=simple_rule(name))
    assert error_code(e) == "ResourceAlreadyExistsException"

    updated = ev.update_alarm_model(alarmModelName=model, roleArn=ROLE, severity=1,
                                    alarmRule=simple_rule(name, "LESS", "5"))
    assert updated["alarmModelVersion"] == "2"
    versions = ev.list_alarm_model_versions(alarmModelName=model)["alarmModelVersionSummaries"]
    assert [v["alarmModelVersion"] for v in versions] == ["2", "1"]
    latest = ev.describe_alarm_model(alarmModelName=model)
    assert (latest["key"], latest["severity"], latest["alarmRule"]["simpleRule"]["comparisonOperator"]) == \
        ("sensorId", 1, "LESS")
    v1 = ev.describe_alarm_model(alarmModelName=model, alarmModelVersion="1")
    assert v1["alarmRule"]["simpleRule"]["comparisonOperator"] == "GREATER"

    deleted = ev.delete_alarm_model(alarmModelName=model)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call in (lambda: ev.describe_alarm_model(alarmModelName=model),
                 lambda: ev.update_alarm_model(alarmModelName=model, roleArn=ROLE, alarmRule=simple_rule(name))):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"


@pytest.mark.parametrize("change, words", [
    (lambda r: r["alarmRule"]["simpleRule"].update(comparisonOperator="ABOVE"), "comparisonOperator"),
    (lambda r: r["alarmRule"]["simpleRule"].update(inputProperty="$input.NoSuchInput.temperature"),
     "input 'NoSuchInput' does not exist"),
    (lambda r: r["alarmRule"]["simpleRule"].update(inputProperty="$input.IN.humidity"),
     "is not an attribute of input"),
    (lambda r: r["alarmRule"]["simpleRule"].update(threshold="30 +"), "alarmRule.simpleRule.threshold"),
    (lambda r: r["alarmRule"]["simpleRule"].update(inputProperty="30"), "reads no input"),
    (lambda r: r.update(alarmRule={}), "alarmRule.simpleRule is required"),
    (lambda r: r.update(alarmEventActions={"alarmActions": [{"sqs": {"queueUrl": "https://q"}}]}),
     "alarmActions[0]: the sqs action needs SQS queues, which this server does not run"),
    (lambda r: r.update(alarmEventActions={"alarmActions": [{"sns": {"targetArn": "nope"}}]}),
     "alarmActions[0]: sns: targetArn"),
    (lambda r: r.update(alarmNotification={"notificationActions": [{
        "action": {"lambdaAction": {"functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f"}},
        "emailConfigurations": [{"from": "a@example.com", "recipients": {"to": [
            {"ssoIdentity": {"identityStoreId": "d-1", "userId": "u"}}]}}]}]}),
     "notificationActions[0].emailConfigurations"),
    (lambda r: r.update(alarmCapabilities={"acknowledgeFlow": {}}), "acknowledgeFlow.enabled is required"),
])
def test_bad_alarm_models_are_refused_naming_the_member(aws, uid, change, words):
    # botocore's own checks would refuse some of these before they are sent
    ev = aws("iotevents", parameter_validation=False)
    name = rule_name(uid) + "_in"
    make_input(ev, name, "temperature")
    req = {"alarmModelName": rule_name(uid), "roleArn": ROLE, "alarmRule": simple_rule("IN")}
    req["alarmRule"]["simpleRule"]["inputProperty"] = f"$input.{name}.temperature"
    change(req)
    text = json.dumps(req).replace("$input.IN.", f"$input.{name}.")
    with pytest.raises(ClientError) as e:
        ev.create_alarm_model(**json.loads(text))
    assert error_code(e) == "InvalidRequestException"
    assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ev.describe_alarm_model(alarmModelName=rule_name(uid))
    assert error_code(e) == "ResourceNotFoundException"


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


def test_alarm_lifecycle_from_mqtt_telemetry_to_mqtt_and_sns(ev, data, aws, clients, http_subscriber, uid):
    """Telemetry over MQTT -> rule `iotEvents` action -> one alarm per sensor; every state change
    on `alarms/<uid>` and at an HTTP SNS subscriber; acknowledge, latch, reset, snooze (ending on
    its own), disable and enable through the data API."""
    from test_sns import confirmed_http_subscription
    sns = aws("sns")
    topic_arn = sns.create_topic(Name=f"alarms-{uid}")["TopicArn"]
    ep = http_subscriber()
    confirmed_http_subscription(sns, topic_arn, ep)
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, key="sensorId", severity=2,
                          alarmRule=simple_rule(name),
                          alarmEventActions={"alarmActions": [
                              {"iotTopicPublish": {"mqttTopic": f"alarms/{uid}"}},
                              {"sns": {"targetArn": topic_arn}}]})
    create_rule(aws("iot"), rule_name(uid) + "_rule",
                f"SELECT *, topic(3) AS sensorId FROM 'al/{uid}/+/telemetry'",
                [{"iotEvents": {"inputName": name, "roleArn": ROLE}}])
    sub = clients(V5)
    sub.subscribe(f"alarms/{uid}", qos=1)
    dev = clients(V5)
    seen: list[str] = []

    def send(sensor: str, temperature: float):
        dev.publish(f"al/{uid}/{sensor}/telemetry", json.dumps({"temperature": temperature}), qos=1)

    def changed_to(state: str, key: str = "s1") -> dict:
        a = alarm_in(data, model, key, state)
        seen.append(state)
        sub.wait_messages(len(seen), timeout=10)
        ep.wait("Notification", n=len(seen), timeout=10)
        return a

    def act(operation: str, member: str, key: str = "s1", **extra) -> list:
        out = getattr(data, operation)(**{member: [request(model, key, **extra)]})
        assert out["ResponseMetadata"]["HTTPStatusCode"] == 202
        return out["errorEntries"]

    send("s1", 22)
    send("s2", 25)
    a = alarm_in(data, model, "s1", "NORMAL")
    assert a["alarmState"]["ruleEvaluation"]["simpleRuleEvaluation"] == \
        {"inputPropertyValue": "22", "operator": "GREATER", "thresholdValue": "30"}
    alarm_in(data, model, "s2", "NORMAL")

    send("s1", 35.5)
    a = changed_to("ACTIVE")
    assert (a["severity"], a["alarmModelVersion"], a["keyValue"]) == (2, "1", "s1")
    notice = json.loads(sub.matching()[-1].payload)
    assert (notice["alarmModelName"], notice["keyValue"], notice["alarmState"]["stateName"]) == (model, "s1", "ACTIVE")
    assert notice["alarmState"]["ruleEvaluation"]["simpleRuleEvaluation"]["inputPropertyValue"] == "35.5"
    (_, sns_notice), = ep.of_type("Notification")
    assert sns_notice["TopicArn"] == topic_arn
    assert json.loads(sns_notice["Message"])["alarmState"]["stateName"] == "ACTIVE"

    assert act("batch_acknowledge_alarm", "acknowledgeActionRequests", note="on it") == []
    a = changed_to("ACKNOWLEDGED")
    assert a["alarmState"]["customerAction"] == {"actionName": "ACKNOWLEDGE",
                                                 "acknowledgeActionConfiguration": {"note": "on it"}}
    send("s1", 20)
    changed_to("NORMAL")
    # breached, back to normal unacknowledged: LATCHED until reset
    send("s1", 40)
    changed_to("ACTIVE")
    send("s1", 21)
    changed_to("LATCHED")
    assert act("batch_reset_alarm", "resetActionRequests") == []
    changed_to("NORMAL")
    # a snooze ignores the data and ends on its own
    assert act("batch_snooze_alarm", "snoozeActionRequests", snoozeDuration=2) == []
    a = changed_to("SNOOZE_DISABLED")
    assert a["alarmState"]["customerAction"]["snoozeActionConfiguration"]["snoozeDuration"] == 2
    # (straight to the engine, so the message is in while the snooze lasts)
    assert put(data, name, {"sensorId": "s1", "temperature": 50}) == []
    a = changed_to("NORMAL")
    assert a["alarmState"]["systemEvent"] == {"eventType": "STATE_CHANGE",
                                              "stateChangeConfiguration": {"triggerType": "SNOOZE_TIMEOUT"}}
    assert act("batch_disable_alarm", "disableActionRequests") == []
    changed_to("DISABLED")
    send("s1", 60)
    send("s2", 61)
    changed_to("ACTIVE", key="s2")
    assert alarm(data, model, "s1")["alarmState"]["stateName"] == "DISABLED"
    assert act("batch_enable_alarm", "enableActionRequests") == []
    changed_to("NORMAL")

    summaries = data.list_alarms(alarmModelName=model)["alarmSummaries"]
    assert [(s["keyValue"], s["stateName"]) for s in summaries] == [("s1", "NORMAL"), ("s2", "ACTIVE")]
    # requests that do not apply are error entries; the rest of the batch applies
    errors = data.batch_acknowledge_alarm(acknowledgeActionRequests=[
        request(model, "s1", 1), request(model, "s2", 2), request(model, "nobody", 3),
        request("NoSuchModel", "s1", 4), request(model, None, 5)])["errorEntries"]
    assert sorted((e["requestId"], e["errorCode"]) for e in errors) == [
        ("r1", "InvalidRequestException"), ("r3", "ResourceNotFoundException"),
        ("r4", "ResourceNotFoundException"), ("r5", "InvalidRequestException")]
    assert "only an ACTIVE or LATCHED alarm" in next(e["errorMessage"] for e in errors if e["requestId"] == "r1")
    changed_to("ACKNOWLEDGED", key="s2")
    errors = data.batch_snooze_alarm(snoozeActionRequests=[request(model, "s1", snoozeDuration=0)])["errorEntries"]
    assert [(e["errorCode"], "snoozeDuration" in e["errorMessage"]) for e in errors] == [("InvalidRequestException", True)]
    with pytest.raises(ClientError) as e:
        data.batch_reset_alarm(resetActionRequests=[request(model, "s1", requestId="not ok!")])
    assert error_code(e) == "InvalidRequestException"
    # nothing else was sent
    assert len(sub.matching()) == len(seen) and len(ep.of_type("Notification")) == len(seen)


def test_disabled_on_initialization_without_acknowledge_flow(ev, data, uid):
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature")
    ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, alarmRule=simple_rule(name, "LESS_OR_EQUAL", "0"),
                          alarmCapabilities={"initializationConfiguration": {"disabledOnInitialization": True},
                                             "acknowledgeFlow": {"enabled": False}})
    assert put(data, name, {"temperature": -5}) == []
    a = alarm_in(data, model, None, "DISABLED")
    assert "keyValue" not in a
    assert data.batch_enable_alarm(enableActionRequests=[request(model, None)])["errorEntries"] == []
    alarm_in(data, model, None, "NORMAL")
    assert put(data, name, {"temperature": 0}) == []
    alarm_in(data, model, None, "ACTIVE")
    errors = data.batch_acknowledge_alarm(acknowledgeActionRequests=[request(model, None)])["errorEntries"]
    assert [e["errorCode"] for e in errors] == ["InvalidRequestException"]
    assert "acknowledge flow" in errors[0]["errorMessage"]
    # without an acknowledge flow the alarm clears itself
    assert put(data, name, {"temperature": 3}) == []
    alarm_in(data, model, None, "NORMAL")
    # a message without the property is not an evaluation
    assert put(data, name, {"humidity": 3}) == []
    assert put(data, name, {"temperature": -1}) == []
    a = alarm_in(data, model, None, "ACTIVE")
    assert a["alarmState"]["ruleEvaluation"]["simpleRuleEvaluation"]["inputPropertyValue"] == "-1"


def test_kill_restart_keeps_alarm_states_and_ends_a_snooze_due_while_down(fresh_broker, aws, uid):
    b = fresh_broker
    ev, data = aws("iotevents", broker=b), aws("iotevents-data", broker=b)
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, key="sensorId", alarmRule=simple_rule(name))
    assert put(data, name, *({"sensorId": k, "temperature": 40} for k in ("act", "ack", "latch", "long", "short")),
               {"sensorId": "calm", "temperature": 10}) == []
    for k in ("act", "ack", "latch", "long", "short"):
        alarm_in(data, model, k, "ACTIVE")
    assert put(data, name, {"sensorId": "latch", "temperature": 10}) == []
    alarm_in(data, model, "latch", "LATCHED")
    assert data.batch_acknowledge_alarm(acknowledgeActionRequests=[request(model, "ack")])["errorEntries"] == []
    assert data.batch_snooze_alarm(snoozeActionRequests=[
        request(model, "long", 1, snoozeDuration=3600), request(model, "short", 2, snoozeDuration=2)])["errorEntries"] == []
    alarm_in(data, model, "short", "SNOOZE_DISABLED")
    before = {a["keyValue"]: a for a in (alarm(data, model, k) for k in ("act", "ack", "latch", "long", "calm"))}
    assert {k: a["alarmState"]["stateName"] for k, a in before.items()} == {
        "act": "ACTIVE", "ack": "ACKNOWLEDGED", "latch": "LATCHED", "long": "SNOOZE_DISABLED", "calm": "NORMAL"}

    b.kill()
    let_time_pass(time.monotonic() + 2.5)  # the short snooze ends while the server is down
    b.start()

    for k, a in before.items():
        assert alarm(data, model, k) == a, k
    a = alarm_in(data, model, "short", "NORMAL", timeout=10)
    assert a["alarmState"]["systemEvent"]["stateChangeConfiguration"]["triggerType"] == "SNOOZE_TIMEOUT"
    # and they go on from there
    assert put(data, name, {"sensorId": "ack", "temperature": 5}) == []
    alarm_in(data, model, "ack", "NORMAL")


def test_email_and_sms_notifications_reach_the_recipient_directory(broker_factory, aws, clients, uid):
    """emailConfigurations / smsConfigurations name IAM Identity Center users; the server looks
    them up in `[[sns.recipients]]`: the mail goes through the SMTP server of SNS email (a local
    aiosmtpd sink here) and the text to the SMS gateway's MQTT topic, when the alarm becomes
    ACTIVE (not when it is created NORMAL). A recipient missing from the directory, or without an
    address for the channel, is refused at create naming the member."""
    from test_sns import smtp_sink

    with smtp_sink() as (smtp, mails):
        b = broker_factory(config_toml=(
            "[sns]\n" + smtp +
            f'sms_topic = "sms/{uid}/outbound"\n'
            '[[sns.recipients]]\nidentity_store_id = "d-1234567890"\nuser_id = "ann"\n'
            'email = "ann@example.test"\nphone = "+4915112345678"\n'
            '[[sns.recipients]]\nidentity_store_id = "d-1234567890"\nuser_id = "bob"\n'
            'phone = "+4915187654321"\n'))
        ev, data = aws("iotevents", broker=b), aws("iotevents-data", broker=b)
        gateway = clients(V5, broker=b)
        gateway.subscribe(f"sms/{uid}/outbound", qos=1)
        name, model = rule_name(uid) + "_in", rule_name(uid)
        make_input(ev, name, "temperature", "sensorId")

        def who(user: str) -> dict:
            return {"ssoIdentity": {"identityStoreId": "d-1234567890", "userId": user}}

        def notification(email_to: list, sms_to: list) -> dict:
            n = {"action": {"lambdaAction": {
                     "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:none"}},
                 "emailConfigurations": [{"from": "ops@example.test",
                                          "content": {"subject": "Boiler too hot",
                                                      "additionalMessage": "Check the boiler room."},
                                          "recipients": {"to": email_to}}]}
            if sms_to:
                n["smsConfigurations"] = [{"senderId": "fleet", "additionalMessage": "Boiler!",
                                           "recipients": sms_to}]
            return {"notificationActions": [n]}

        # Refused at create, naming the member: unknown user; a user without an email address.
        for email_to, words in ([who("eve")], "emailConfigurations[0].recipients.to[0].ssoIdentity: "
                                              "identityStoreId \"d-1234567890\" userId \"eve\" is not in"), \
                               ([who("bob")], "has no email address"):
            with pytest.raises(ClientError) as e:
                ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, key="sensorId",
                                      alarmRule=simple_rule(name), alarmNotification=notification(email_to, []))
            assert error_code(e) == "InvalidRequestException"
            assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]

        # Without the lambda function the notification action is still built (fleetcore sends
        # the mails and texts itself); here the function is left out of the request.
        wanted = notification([who("ann")], [who("ann"), who("bob")])
        del wanted["notificationActions"][0]["action"]
        ev_raw = aws("iotevents", broker=b, parameter_validation=False)
        ev_raw.create_alarm_model(alarmModelName=model, roleArn=ROLE, key="sensorId", severity=2,
                                  alarmRule=simple_rule(name), alarmNotification=wanted,
                                  alarmCapabilities={"acknowledgeFlow": {"enabled": False}})
        assert put(data, name, {"sensorId": "boiler-1", "temperature": 22}) == []
        alarm_in(data, model, "boiler-1", "NORMAL")
        assert put(data, name, {"sensorId": "boiler-1", "temperature": 41}) == []
        alarm_in(data, model, "boiler-1", "ACTIVE")

        wait_until(lambda: mails, 30, what="the alarm mail")
        mail = mails[0]
        assert mail["To"] == "ann@example.test"
        assert "alerts@fleetcore.test" in mail["From"]
        assert mail["Reply-To"] == "ops@example.test"
        assert mail["Subject"] == "Boiler too hot"
        body = mail.get_payload(decode=True).decode().replace("\r\n", "\n")
        assert body.startswith("Check the boiler room.\n\nAlarm " + model + " (key boiler-1) is ACTIVE: 41 > 30")
        assert '"stateName": "ACTIVE"' in body
        texts = [json.loads(m.payload) for m in gateway.wait_messages(2, timeout=10)]
        assert sorted(t["phoneNumber"] for t in texts) == ["+4915112345678", "+4915187654321"]
        for t in texts:
            assert t["senderId"] == "fleet"
            assert t["message"].startswith("Boiler!\n\nAlarm " + model + " (key boiler-1) is ACTIVE: 41 > 30")
        # Back to NORMAL sends nothing (the notifications are for the alarm becoming ACTIVE):
        # after NORMAL and ACTIVE again, there are exactly two mails, both about ACTIVE.
        assert put(data, name, {"sensorId": "boiler-1", "temperature": 20}) == []
        alarm_in(data, model, "boiler-1", "NORMAL")
        assert put(data, name, {"sensorId": "boiler-1", "temperature": 45}) == []
        alarm_in(data, model, "boiler-1", "ACTIVE")
        wait_until(lambda: len(mails) >= 2, 30, what="the second alarm mail")
        assert len(mails) == 2
        assert "is ACTIVE: 45 > 30" in mails[1].get_payload(decode=True).decode()
        assert len(gateway.wait_messages(4, timeout=10)) == 4


def test_sms_notifications_are_refused_without_an_sms_gateway(ev, uid):
    """The shared test server has no `[sns] sms_topic` and no recipient directory: an alarm model
    with smsConfigurations is refused at create, naming the member."""
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature")
    with pytest.raises(ClientError) as e:
        ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, alarmRule=simple_rule(name),
                              alarmNotification={"notificationActions": [{
                                  "action": {"lambdaAction": {
                                      "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f"}},
                                  "smsConfigurations": [{"recipients": [
                                      {"ssoIdentity": {"identityStoreId": "d-1", "userId": "u"}}]}]}]})
    assert error_code(e) == "InvalidRequestException"
    message = e.value.response["Error"]["Message"]
    assert "notificationActions[0].smsConfigurations[0].recipients[0].ssoIdentity: " \
           "no SMS gateway is configured ([sns] sms_topic" in message, message


@pytest.mark.timeout_seconds(300)
def test_lambda_notification_action_gets_each_state_change(ev, data, aws, uid):
    """notificationActions[].action.lambdaAction (how AWS hands alarm notifications to a
    function): a Python function is invoked on each state change with the alarm as DescribeAlarm
    shows it (the first message creates the alarm already breached: one ACTIVE, then NORMAL); it
    writes the event to a stream, where the test reads it."""
    import io
    import zipfile

    from test_rules_engine import wait_stream
    from test_sns import PY_TO_STREAM

    lam, kinesis = aws("lambda"), aws("kinesis")
    stream = f"alarm-{uid}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", PY_TO_STREAM)
    fn = lam.create_function(FunctionName=f"alarm-{uid}"[:60], Runtime="python3.11", Role=ROLE,
                             Handler="app.handler", Code={"ZipFile": code.getvalue()}, Timeout=30,
                             Environment={"Variables": {"STREAM": stream}})
    name, model = rule_name(uid) + "_in", rule_name(uid)
    make_input(ev, name, "temperature", "sensorId")
    ev.create_alarm_model(alarmModelName=model, roleArn=ROLE, key="sensorId", severity=3,
                          alarmRule=simple_rule(name),
                          alarmCapabilities={"acknowledgeFlow": {"enabled": False}},
                          alarmNotification={"notificationActions": [
                              {"action": {"lambdaAction": {"functionArn": fn["FunctionArn"]}}}]})
    assert put(data, name, {"sensorId": "p1", "temperature": 50}) == []
    alarm_in(data, model, "p1", "ACTIVE")
    assert put(data, name, {"sensorId": "p1", "temperature": 10}) == []
    alarm_in(data, model, "p1", "NORMAL")
    records = wait_stream(kinesis, stream, lambda rs: len(rs) >= 2, timeout=120)
    events = [json.loads(r["Data"]) for r in records]
    # The first message creates the alarm and breaches at once (ACTIVE), the second clears it.
    states = sorted((e["eventTime"], e["alarmState"]["stateName"]) for e in events)
    assert [s for _, s in states] == ["ACTIVE", "NORMAL"], events
    active = next(e for e in events if e["alarmState"]["stateName"] == "ACTIVE")
    assert (active["alarmModelName"], active["keyValue"], active["severity"]) == (model, "p1", 3)
    assert active["alarmState"]["ruleEvaluation"]["simpleRuleEvaluation"] == \
        {"inputPropertyValue": "50", "operator": "GREATER", "thresholdValue": "30"}
