"""Device Defender (Detect) end to end: boto3 `iot` round trips of security profiles, their
targets and custom metrics with AWS's errors; devices that flood messages, send oversize
messages or keep failing authorization raise their violation within a period (seen on the MQTT
alert topic, on an SNS topic and in ListActiveViolations) and clear it once they behave; a
statistical threshold over a fleet of 50 devices flags the outlier only."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

import console_session
from brokers import let_time_pass, wait_until
from clients import V5, ConnectFailed

pytestmark = pytest.mark.fleetcore_only("Device Defender is fleetcore's")

ACCOUNT = "000000000000"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/defender"
PERIOD_MS = 1000
# Alarms are raised at the end of the period that holds the violation: waits allow several.
DEADLINE = 20


def target(resource: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:{resource}"


def behavior(name: str, metric: str, op: str, count: int, **criteria) -> dict:
    return {"name": name, "metric": metric,
            "criteria": {"comparisonOperator": op, "value": {"count": count},
                         "durationSeconds": 1, **criteria}}


# Everything allowed except publishing under forbidden/: the device that keeps publishing
# there fails authorization on every message.
ANON_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "iot:Publish",
     "Resource": f"arn:aws:iot:{REGION}:{ACCOUNT}:topic/forbidden/*"},
]})


@pytest.fixture
def db(broker_factory, uid):
    """A server with a one-second Defender period and an anonymous policy that denies
    publishing under forbidden/."""
    b = broker_factory("--anonymous-policy", f"{uid}-anon",
                       env={"FLEETCORE_DEFENDER_PERIOD_MS": str(PERIOD_MS)})
    return b


def test_security_profiles_targets_and_custom_metrics_round_trip(aws, uid):
    iot = aws("iot")
    name = f"sp-{uid}"
    behaviors = [
        behavior("flood", "aws:num-messages-sent", "less-than", 100,
                 consecutiveDatapointsToAlarm=2, consecutiveDatapointsToClear=3),
        {"name": "outlier", "metric": "aws:message-byte-size",
         "criteria": {"comparisonOperator": "less-than-equals",
                      "statisticalThreshold": {"statistic": "p90"}, "durationSeconds": 300}},
        {"name": "ips", "metric": "aws:source-ip-address",
         "criteria": {"comparisonOperator": "in-cidr-set", "value": {"cidrs": ["10.0.0.0/8"]}}},
    ]
    sns_target = {"SNS": {"alertTargetArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:defender-{uid}",
                          "roleArn": ROLE}}
    out = iot.create_security_profile(securityProfileName=name, securityProfileDescription="d",
                                      behaviors=behaviors, alertTargets=sns_target)
    arn = target(f"securityprofile/{name}")
    assert (out["securityProfileName"], out["securityProfileArn"]) == (name, arn)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_security_profile(securityProfileName=name)
    got = iot.describe_security_profile(securityProfileName=name)
    assert got["behaviors"] == behaviors
    assert got["alertTargets"] == sns_target
    assert (got["version"], got["securityProfileDescription"]) == (1, "d")
    assert isinstance(got["creationDate"], dt.datetime)
    listed = iot.list_security_profiles(metricName="aws:source-ip-address")["securityProfileIdentifiers"]
    assert {"name": name, "arn": arn} in listed
    assert name not in [p["name"] for p in iot.list_security_profiles(
        metricName="aws:num-disconnects")["securityProfileIdentifiers"]]

    # updates bump the version; a stale expectedVersion is a conflict
    out = iot.update_security_profile(securityProfileName=name, expectedVersion=1,
                                      behaviors=behaviors[:1], deleteAlertTargets=True)
    assert (out["version"], out["behaviors"], out.get("alertTargets", {})) == (2, behaviors[:1], {})
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_security_profile(securityProfileName=name, expectedVersion=1, behaviors=[])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_security_profile(securityProfileName=f"{name}-none")

    # targets as AWS writes them
    group = f"g-{uid}"
    iot.create_thing_group(thingGroupName=group)
    targets = [target("all/things"), target("all/registered-things"), target(f"thinggroup/{group}")]
    for t in targets:
        iot.attach_security_profile(securityProfileName=name, securityProfileTargetArn=t)
    got = iot.list_targets_for_security_profile(securityProfileName=name)["securityProfileTargets"]
    assert sorted(t["arn"] for t in got) == sorted(targets)
    mappings = iot.list_security_profiles_for_target(
        securityProfileTargetArn=target(f"thinggroup/{group}"))["securityProfileTargetMappings"]
    assert mappings == [{"securityProfileIdentifier": {"name": name, "arn": arn},
                         "target": {"arn": target(f"thinggroup/{group}")}}]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.attach_security_profile(securityProfileName=name,
                                    securityProfileTargetArn=target(f"thinggroup/{group}-none"))
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.attach_security_profile(securityProfileName=name,
                                    securityProfileTargetArn=target("thing/t1"))
    iot.detach_security_profile(securityProfileName=name, securityProfileTargetArn=targets[1])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.detach_security_profile(securityProfileName=name, securityProfileTargetArn=targets[1])
    assert len(iot.list_targets_for_security_profile(
        securityProfileName=name)["securityProfileTargets"]) == 2

    # what cannot be evaluated is refused at create, with the reason
    bad = [
        ([{"name": "x", "metric": f"cmet:none-{uid}",
           "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}}], "does not exist"),
        ([{"name": "x", "metric": "aws:num-messages-sent",
           "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}}}], "durationSeconds"),
        ([behavior("x", "aws:num-messages-sent", "in-cidr-set", 1)], "does not apply"),
        ([behavior("x", "aws:num-messages-sent", "less-than", 1, consecutiveDatapointsToAlarm=11)],
         "between 1 and 10"),
        ([{"name": "x", "metric": "aws:num-messages-sent",
           "criteria": {"mlDetectionConfig": {"confidenceLevel": "SURE"}}}], "LOW, MEDIUM or HIGH"),
    ]
    for behaviors_, why in bad:
        with pytest.raises(iot.exceptions.InvalidRequestException) as e:
            iot.create_security_profile(securityProfileName=f"{name}-bad", behaviors=behaviors_)
        assert why in e.value.response["Error"]["Message"]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_security_profile(securityProfileName=f"{name}-bad")

    iot.delete_security_profile(securityProfileName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_security_profile(securityProfileName=name)
    mappings = iot.list_security_profiles_for_target(
        securityProfileTargetArn=target("all/things"))["securityProfileTargetMappings"]
    assert all(m["securityProfileIdentifier"]["name"] != name for m in mappings)

    # custom metrics
    metric = f"cm-{uid}"
    out = iot.create_custom_metric(metricName=metric, displayName="Open ports", metricType="number",
                                   clientRequestToken="t1")
    assert out["metricArn"] == target(f"custommetric/{metric}")
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_custom_metric(metricName=metric, metricType="number", clientRequestToken="t2")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_custom_metric(metricName=f"{metric}-2", metricType="float", clientRequestToken="t3")
    assert metric in iot.list_custom_metrics()["metricNames"]
    out = iot.update_custom_metric(metricName=metric, displayName="Ports")
    assert (out["displayName"], out["metricType"]) == ("Ports", "number")
    assert iot.describe_custom_metric(metricName=metric)["displayName"] == "Ports"
    iot.delete_custom_metric(metricName=metric)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_custom_metric(metricName=metric)


def alerts_of(watcher, profile: str, kind: str) -> dict[str, dict]:
    """The alerts of `kind` seen on the MQTT alert topic, by thing."""
    out = {}
    for m in watcher.matching(pred=lambda m: m.topic.startswith(f"$fleetcore/defender/alerts/{profile}/")):
        doc = json.loads(m.payload)
        if doc["violationEventType"] == kind:
            out[doc["thingName"]] = doc
    return out


def test_flood_oversize_and_authorization_failures_raise_and_clear(db, aws, clients, uid):
    iot, sns = aws("iot", broker=db), aws("sns", broker=db)
    iot.create_policy(policyName=f"{uid}-anon", policyDocument=ANON_POLICY)
    profile = f"sp-{uid}"
    topic = sns.create_topic(Name=f"defender-{uid}")["TopicArn"]
    watcher = clients(V5, broker=db, client_id=f"{uid}-watch")
    watcher.subscribe(f"$fleetcore/defender/alerts/{profile}/#", qos=1)
    watcher.subscribe(f"sns/{uid}", qos=1)
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns/{uid}",
                  Attributes={"RawMessageDelivery": "true"})
    iot.create_security_profile(
        securityProfileName=profile,
        behaviors=[behavior("flood", "aws:num-messages-sent", "less-than", 50),
                   behavior("oversize", "aws:message-byte-size", "less-than", 1000),
                   behavior("denied", "aws:num-authorization-failures", "less-than", 5)],
        alertTargets={"SNS": {"alertTargetArn": topic, "roleArn": ROLE}})
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target("all/things"))

    flood, big, denied, calm = (clients(V5, broker=db, client_id=f"{uid}-{n}")
                                for n in ("flood", "big", "denied", "calm"))
    started = time.monotonic()
    for i in range(300):
        flood.publish(f"t/{uid}/flood", b"x", qos=0)
    big.publish(f"t/{uid}/big", b"x" * 5000, qos=1)
    for i in range(20):
        denied.publish(f"forbidden/{uid}", b"x", qos=1, wait=False)
    calm.publish(f"t/{uid}/calm", b"ok", qos=1)
    for c in (flood, big, denied):
        c.sync()

    expected = {f"{uid}-flood": "flood", f"{uid}-big": "oversize", f"{uid}-denied": "denied"}
    raised = wait_until(lambda: (a := alerts_of(watcher, profile, "in-alarm")).keys() >= expected.keys() and a,
                        DEADLINE, what="the three in-alarm alerts")
    delay = time.monotonic() - started
    print(f"detection delay (period {PERIOD_MS} ms): {delay:.2f} s")
    assert {t: raised[t]["behavior"]["name"] for t in expected} == expected
    assert raised[f"{uid}-flood"]["metricValue"]["count"] >= 50
    assert raised[f"{uid}-big"]["metricValue"]["count"] == 5000
    assert f"{uid}-calm" not in raised
    active = iot.list_active_violations(securityProfileName=profile)["activeViolations"]
    assert {(v["thingName"], v["behavior"]["name"]) for v in active} == set(expected.items())
    assert all(v["violationStartTime"] <= v["lastViolationTime"] for v in active)
    assert iot.list_active_violations(thingName=f"{uid}-big")["activeViolations"][0][
        "lastViolationValue"] == {"count": 5000}
    # the console's violations page lists the same alarms
    page = console_session.section(db, console_session.signed_in(db), "violations")
    assert dict(page["summary"])["violations in force"] == 3
    columns = page["columns"]
    assert {(r[columns.index("thing")], r[columns.index("behavior")]) for r in page["rows"]} == set(expected.items())
    assert json.loads(next(r for r in page["rows"] if r[0] == f"{uid}-big")[columns.index("last value")]) == {"count": 5000}
    # the same alerts reached the SNS topic
    sns_alerts = wait_until(lambda: {json.loads(m.payload)["thingName"] for m in watcher.matching(
        topic=f"sns/{uid}") if json.loads(m.payload)["violationEventType"] == "in-alarm"} >= expected.keys(),
        DEADLINE, what="the SNS alerts")
    assert sns_alerts

    # they behave: each alarm clears at the next datapoint
    cleared = wait_until(lambda: (a := alerts_of(watcher, profile, "alarm-cleared")).keys() >= expected.keys() and a,
                         DEADLINE, what="the alarm-cleared alerts")
    for t in expected:
        assert cleared[t]["violationId"] == raised[t]["violationId"]
    assert iot.list_active_violations(securityProfileName=profile)["activeViolations"] == []
    events = iot.list_violation_events(startTime=dt.datetime.now() - dt.timedelta(minutes=5),
                                       endTime=dt.datetime.now() + dt.timedelta(minutes=1),
                                       securityProfileName=profile)["violationEvents"]
    seen = {(e["thingName"], e["violationEventType"]) for e in events}
    for t in expected:
        assert {(t, "in-alarm"), (t, "alarm-cleared")} <= seen
    assert not [e for e in events if e["thingName"] == f"{uid}-calm"]


def test_statistical_threshold_over_50_devices_flags_only_the_outlier(db, aws, clients, uid):
    iot = aws("iot", broker=db)
    iot.create_policy(policyName=f"{uid}-anon", policyDocument=ANON_POLICY)
    profile = f"sp-{uid}"
    group = f"g-{uid}"
    iot.create_thing_group(thingGroupName=group)
    devices = [f"{uid}-d{i}" for i in range(49)] + [f"{uid}-loud"]
    for d in devices:
        iot.create_thing(thingName=d)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=d)
    # A window of 5 periods and 2 datapoints to alarm: a period boundary in the middle of
    # the burst cannot make an ordinary device look like an outlier twice in a row.
    iot.create_security_profile(securityProfileName=profile, behaviors=[
        {"name": "chatty", "metric": "aws:num-messages-sent",
         "criteria": {"comparisonOperator": "less-than-equals",
                      "statisticalThreshold": {"statistic": "p90"}, "durationSeconds": 5,
                      "consecutiveDatapointsToAlarm": 2}}])
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target(f"thinggroup/{group}"))
    watcher = clients(V5, broker=db, client_id=f"{uid}-watch")
    watcher.subscribe(f"$fleetcore/defender/alerts/{profile}/#", qos=1)
    fleet = [clients(V5, broker=db, client_id=d) for d in devices]
    for c in fleet[:-1]:
        for _ in range(5):
            c.publish(f"t/{uid}", b"v", qos=0)
    for _ in range(200):
        fleet[-1].publish(f"t/{uid}", b"v", qos=0)
    for c in fleet:
        c.sync()
    raised = wait_until(lambda: alerts_of(watcher, profile, "in-alarm"), DEADLINE,
                        what="the outlier's alert")
    # Three more periods: no ordinary device joins it.
    wait_until(lambda: len(iot.list_violation_events(
        startTime=dt.datetime.now() - dt.timedelta(minutes=5),
        endTime=dt.datetime.now() + dt.timedelta(minutes=1),
        securityProfileName=profile)["violationEvents"]) >= 1, DEADLINE, what="the violation event")
    let_time_pass(time.monotonic() + 3 * PERIOD_MS / 1000)
    active = iot.list_active_violations(securityProfileName=profile,
                                        behaviorCriteriaType="STATISTICAL")["activeViolations"]
    assert [v["thingName"] for v in active] == [f"{uid}-loud"], active
    assert list(raised) == [f"{uid}-loud"]
    assert active[0]["lastViolationValue"]["count"] >= 200


def test_an_audit_finds_a_policy_with_iot_star_on_star(fresh_broker, aws, client_cert, uid):
    iot = aws("iot", broker=fresh_broker)
    broad, narrow = f"{uid}-broad", f"{uid}-narrow"
    iot.create_policy(policyName=broad, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
    iot.create_policy(policyName=narrow, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish",
                                                "Resource": target(f"topic/dev/{uid}")}]}))
    check = "IOT_POLICY_OVERLY_PERMISSIVE_CHECK"
    # a check that is not enabled cannot run; one this server does not run cannot be enabled
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.start_on_demand_audit_task(targetCheckNames=[check])
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.update_account_audit_configuration(
            auditCheckConfigurations={"CA_CERTIFICATE_KEY_QUALITY_CHECK": {"enabled": True}})
    assert "not supported by this server" in e.value.response["Error"]["Message"]
    iot.update_account_audit_configuration(roleArn=ROLE,
                                           auditCheckConfigurations={check: {"enabled": True}})
    config = iot.describe_account_audit_configuration()
    assert config["auditCheckConfigurations"][check] == {"enabled": True}
    assert config["roleArn"] == ROLE

    task = iot.start_on_demand_audit_task(targetCheckNames=[check])["taskId"]
    got = iot.describe_audit_task(taskId=task)
    assert (got["taskStatus"], got["taskType"]) == ("COMPLETED", "ON_DEMAND_AUDIT_TASK")
    details = got["auditDetails"][check]
    assert (details["checkRunStatus"], details["checkCompliant"]) == ("COMPLETED_NON_COMPLIANT", False)
    assert details["totalResourcesCount"] == 2 and details["nonCompliantResourcesCount"] == 1
    assert got["taskStatistics"]["nonCompliantChecks"] == 1
    findings = iot.list_audit_findings(taskId=task)["findings"]
    assert len(findings) == 1
    f = findings[0]
    assert f["checkName"] == check and f["severity"] == "CRITICAL"
    assert f["nonCompliantResource"] == {
        "resourceType": "IOT_POLICY",
        "resourceIdentifier": {"policyVersionIdentifier": {"policyName": broad, "policyVersionId": "1"}}}
    assert f["reasonForNonComplianceCode"] == "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS"
    assert "iot:* on *" in f["reasonForNonCompliance"]
    tasks = iot.list_audit_tasks(startTime=dt.datetime.now() - dt.timedelta(minutes=5),
                                 endTime=dt.datetime.now() + dt.timedelta(minutes=1))["tasks"]
    assert {"taskId": task, "taskStatus": "COMPLETED", "taskType": "ON_DEMAND_AUDIT_TASK"} in tasks
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_audit_task(taskId="0" * 32)

    # the test PKI's device certificates are valid for 2 days: expiring within AWS's 30
    client_cert(fresh_broker, f"{uid}-dev")
    [registered] = iot.list_certificates()["certificates"]
    expiring = "DEVICE_CERTIFICATE_EXPIRING_CHECK"
    iot.update_account_audit_configuration(auditCheckConfigurations={expiring: {"enabled": True}})
    task = iot.start_on_demand_audit_task(targetCheckNames=[expiring, check])["taskId"]
    details = iot.describe_audit_task(taskId=task)["auditDetails"]
    assert details[expiring]["checkRunStatus"] == "COMPLETED_NON_COMPLIANT"
    assert details[expiring]["totalResourcesCount"] == 1
    [f] = iot.list_audit_findings(taskId=task, checkName=expiring)["findings"]
    assert f["nonCompliantResource"]["resourceType"] == "DEVICE_CERTIFICATE"
    assert f["nonCompliantResource"]["resourceIdentifier"] == {
        "deviceCertificateId": registered["certificateId"]}
    assert f["reasonForNonComplianceCode"] == "CERTIFICATE_EXPIRING"


def test_a_quarantine_mitigation_cuts_the_device_off(broker_factory, aws, clients, client_cert, uid):
    b = broker_factory(env={"FLEETCORE_DEFENDER_PERIOD_MS": str(PERIOD_MS)})
    iot = aws("iot", broker=b)
    thing, group, profile, action = f"{uid}-dev", f"{uid}-quarantine", f"sp-{uid}", f"{uid}-isolate"
    cert, key = client_cert(b, thing)
    iot.create_thing(thingName=thing)
    [registered] = iot.list_certificates()["certificates"]
    iot.attach_thing_principal(thingName=thing, principal=registered["certificateArn"])
    # the quarantine group's policy denies everything to its things
    iot.create_thing_group(thingGroupName=group)
    iot.create_policy(policyName=group, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iot:*", "Resource": "*"}]}))
    iot.attach_policy(policyName=group, target=target(f"thinggroup/{group}"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_mitigation_action(actionName=action, roleArn=ROLE, actionParams={
            "addThingsToThingGroupParams": {"thingGroupNames": [f"{group}-none"]}})
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_mitigation_action(actionName=action, roleArn=ROLE, actionParams={
            "enableIoTLoggingParams": {"roleArnForLogging": ROLE, "logLevel": "DISABLED"}})
    out = iot.create_mitigation_action(actionName=action, roleArn=ROLE, actionParams={
        "addThingsToThingGroupParams": {"thingGroupNames": [group]}})
    assert out["actionArn"] == target(f"mitigationaction/{action}")
    got = iot.describe_mitigation_action(actionName=action)
    assert got["actionType"] == "ADD_THINGS_TO_THING_GROUP"
    iot.create_security_profile(securityProfileName=profile, behaviors=[
        behavior("flood", "aws:num-messages-sent", "less-than", 50)])
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target("all/registered-things"))

    device = clients(V5, broker=b, client_id=thing, tls=(cert, key))
    for _ in range(300):
        device.publish(f"t/{uid}", b"x", qos=0)
    device.sync()
    [violation] = wait_until(lambda: iot.list_active_violations(thingName=thing)["activeViolations"],
                             DEADLINE, what="the flood's violation")
    task = f"{uid}-task"
    iot.start_detect_mitigation_actions_task(taskId=task, target={"securityProfileName": profile},
                                             actions=[action], clientRequestToken="t1")
    device.wait_disconnected(DEADLINE)
    assert group in [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]]
    summary = iot.describe_detect_mitigation_actions_task(taskId=task)["taskSummary"]
    assert summary["taskStatus"] == "SUCCESSFUL"
    assert summary["taskStatistics"]["actionsExecuted"] == 1
    assert summary["target"]["securityProfileName"] == profile
    # it cannot come back
    again = clients(V5, broker=b, client_id=thing, tls=(cert, key), connect=False)
    try:
        rc = again.connect(expect_ok=False)[0]
    except ConnectFailed:  # closed before CONNACK also counts as refused
        rc = -1
    assert rc != 0
    with pytest.raises(iot.exceptions.TaskAlreadyExistsException):
        iot.start_detect_mitigation_actions_task(taskId=task, target={"securityProfileName": profile},
                                                 actions=[action], clientRequestToken="t2")
    assert violation["thingName"] == thing


def report(report_id: int, **extra) -> dict:
    return {"header": {"report_id": report_id, "version": "1.0"},
            "metrics": {"listening_tcp_ports": {"ports": [{"interface": "eth0", "port": 22}], "total": 1},
                        "network_stats": {"bytes_in": 100, "bytes_out": 200, "packets_in": 3, "packets_out": 4},
                        "tcp_connections": {"established_connections": {
                            "connections": [{"local_interface": "eth0", "local_port": 22,
                                             "remote_addr": "192.168.0.5:5000"}], "total": 1}}},
            **extra}


def test_device_metrics_reports_are_answered_on_accepted_and_rejected(aws, clients, uid):
    iot = aws("iot")
    metric = f"ports-{uid}"
    iot.create_custom_metric(metricName=metric, metricType="number", clientRequestToken="t")
    thing = f"{uid}-dev"
    base = f"$aws/things/{thing}/defender/metrics"
    device = clients(V5, client_id=thing)
    for fmt in ("json", "cbor"):
        device.subscribe(f"{base}/{fmt}/accepted", qos=1)
        device.subscribe(f"{base}/{fmt}/rejected", qos=1)

    device.publish(f"{base}/json", json.dumps(report(1, custom_metrics={metric: [{"number": 3}]})), qos=1)
    answer = json.loads(device.wait_message(topic=f"{base}/json/accepted").payload)
    assert (answer["thingName"], answer["reportId"], answer["status"]) == (thing, 1, "ACCEPTED")

    bad = [
        (report(2, custom_metrics={f"{metric}-none": [{"number": 3}]}), "does not exist"),
        (report(3, custom_metrics={metric: [{"string_list": ["a"]}]}), "type number"),
        ({"header": {"report_id": 4, "version": "2.0"}, "metrics": {}}, "version"),
        (report(5) | {"metrics": {"gpu_temperature": 3}}, "not a device-side metric"),
    ]
    for doc, why in bad:
        device.publish(f"{base}/json", json.dumps(doc), qos=1)
        answer = json.loads(device.wait_message(
            topic=f"{base}/json/rejected",
            pred=lambda m, i=doc["header"]["report_id"]: json.loads(m.payload).get("reportId") == i).payload)
        assert answer["status"] == "REJECTED"
        assert answer["statusDetails"]["ErrorCode"] == "Malformed.Report"
        assert why in answer["statusDetails"]["ErrorMessage"], answer
    device.publish(f"{base}/json", b"{not json", qos=1)
    answer = json.loads(device.wait_message(
        topic=f"{base}/json/rejected", pred=lambda m: "reportId" not in json.loads(m.payload)).payload)
    assert "does not parse" in answer["statusDetails"]["ErrorMessage"]

    cbor = pytest.importorskip("awscrt.cbor", reason="awscrt (awsiotsdk) encodes CBOR here")
    enc = cbor.AwsCborEncoder()
    enc.write_dict(report(6))
    device.publish(f"{base}/cbor", enc.get_encoded_data(), qos=1)
    answer = cbor.AwsCborDecoder(device.wait_message(topic=f"{base}/cbor/accepted").payload).pop_next_data_item()
    assert (answer["reportId"], answer["status"]) == (6, "ACCEPTED")
