"""Device Defender Detect beyond the broker's own counters: behaviours on device-side metrics
(`aws:num-listening-tcp-ports`, `aws:listening-tcp-ports`, `aws:all-bytes-out`) and on custom
metrics (`cmet:...`) are evaluated from the devices' metrics reports; violations are kept in the
store, so a SIGKILL neither forgets an alarm in force nor raises it again; an ML Detect
behaviour trains on the fleet, flags the one device that deviates, and its model survives a
SIGKILL."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from brokers import wait_until
from clients import V5
from test_defender import ANON_POLICY, DEADLINE, PERIOD_MS, alerts_of, behavior, db, target  # noqa: F401

pytestmark = pytest.mark.fleetcore_only("Device Defender is fleetcore's")


def events_of(iot, profile: str, thing: str) -> list[dict]:
    return iot.list_violation_events(startTime=dt.datetime.now() - dt.timedelta(minutes=10),
                                     endTime=dt.datetime.now() + dt.timedelta(minutes=1),
                                     securityProfileName=profile, thingName=thing)["violationEvents"]


def metrics_report(report_id: int, ports: list[int], bytes_out: int, temp: float, metric: str) -> str:
    return json.dumps({
        "header": {"report_id": report_id, "version": "1.0"},
        "metrics": {"listening_tcp_ports": {"ports": [{"interface": "eth0", "port": p} for p in ports],
                                            "total": len(ports)},
                    "network_stats": {"bytes_in": 10, "bytes_out": bytes_out, "packets_in": 1, "packets_out": 1}},
        "custom_metrics": {metric: [{"number": temp}]}})


def test_device_side_and_custom_metrics_raise_and_clear(db, aws, clients, uid):
    iot = aws("iot", broker=db)
    iot.create_policy(policyName=f"{uid}-anon", policyDocument=ANON_POLICY)
    metric = f"temp-{uid}"
    iot.create_custom_metric(metricName=metric, metricType="number", clientRequestToken="t")
    profile = f"sp-{uid}"
    # a behaviour on a custom metric that does not exist is refused at create
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.create_security_profile(securityProfileName=profile, behaviors=[
            {"name": "t", "metric": f"cmet:{metric}-none",
             "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}}])
    assert "does not exist" in e.value.response["Error"]["Message"]
    iot.create_security_profile(securityProfileName=profile, behaviors=[
        {"name": "few-ports", "metric": "aws:num-listening-tcp-ports",
         "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 2}}},
        {"name": "known-ports", "metric": "aws:listening-tcp-ports",
         "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [443, 8883]}}},
        behavior("egress", "aws:all-bytes-out", "less-than", 10000),
        {"name": "cool", "metric": f"cmet:{metric}",
         "criteria": {"comparisonOperator": "less-than", "value": {"number": 80}}}])
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target("all/things"))
    # a custom metric a profile uses cannot be deleted
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_custom_metric(metricName=metric)

    watcher = clients(V5, broker=db, client_id=f"{uid}-watch")
    watcher.subscribe(f"$fleetcore/defender/alerts/{profile}/#", qos=1)
    bad, calm = f"{uid}-bad", f"{uid}-calm"
    devices = {t: clients(V5, broker=db, client_id=t) for t in (bad, calm)}
    for t, c in devices.items():
        c.subscribe(f"$aws/things/{t}/defender/metrics/json/accepted", qos=1)

    def send(thing: str, report_id: int, **kw) -> None:
        devices[thing].publish(f"$aws/things/{thing}/defender/metrics/json",
                               metrics_report(report_id, metric=metric, **kw), qos=1)
        devices[thing].wait_message(topic=f"$aws/things/{thing}/defender/metrics/json/accepted",
                                    pred=lambda m: json.loads(m.payload)["reportId"] == report_id)

    send(bad, 1, ports=[22, 443, 8883, 23], bytes_out=50000, temp=95.5)
    send(calm, 1, ports=[443], bytes_out=100, temp=20)
    expected = {"few-ports", "known-ports", "egress", "cool"}

    def raised():
        got = {doc["behavior"]["name"]: doc for doc in (
            json.loads(m.payload) for m in watcher.matching(
                pred=lambda m: m.topic == f"$fleetcore/defender/alerts/{profile}/{bad}"))
            if doc["violationEventType"] == "in-alarm"}
        return got if got.keys() >= expected else None

    alerts = wait_until(raised, DEADLINE, what="the four in-alarm alerts of the bad device")
    assert alerts["few-ports"]["metricValue"] == {"count": 4}
    assert alerts["known-ports"]["metricValue"] == {"ports": [22, 23]}
    assert alerts["egress"]["metricValue"] == {"count": 50000}
    assert alerts["cool"]["metricValue"] == {"number": 95.5}
    assert calm not in alerts_of(watcher, profile, "in-alarm")
    active = iot.list_active_violations(securityProfileName=profile)["activeViolations"]
    assert {(v["thingName"], v["behavior"]["name"]) for v in active} == {(bad, b) for b in expected}

    # periods without a report keep the alarms in force; a normal report clears them
    before = time.monotonic()
    wait_until(lambda: time.monotonic() - before > 2 * PERIOD_MS / 1000
               and len(iot.list_active_violations(securityProfileName=profile)["activeViolations"]) == 4,
               DEADLINE, what="two periods without a report")
    send(bad, 2, ports=[443], bytes_out=100, temp=21.5)
    cleared = wait_until(lambda: (a := {doc["behavior"]["name"]: doc for doc in (
        json.loads(m.payload) for m in watcher.matching(
            pred=lambda m: m.topic == f"$fleetcore/defender/alerts/{profile}/{bad}"))
        if doc["violationEventType"] == "alarm-cleared"}).keys() >= expected and a,
        DEADLINE, what="the four alarm-cleared alerts")
    for name in expected:
        assert cleared[name]["violationId"] == alerts[name]["violationId"]
    assert iot.list_active_violations(securityProfileName=profile)["activeViolations"] == []
    assert not events_of(iot, profile, calm)


def test_violations_survive_sigkill_and_are_not_raised_again(db, aws, clients, uid):
    iot = aws("iot", broker=db)
    iot.create_policy(policyName=f"{uid}-anon", policyDocument=ANON_POLICY)
    profile = f"sp-{uid}"
    iot.create_security_profile(securityProfileName=profile, behaviors=[
        behavior("flood", "aws:num-messages-sent", "less-than", 50, consecutiveDatapointsToClear=2)])
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target("all/things"))
    thing = f"{uid}-flood"

    def flood(client) -> None:
        for _ in range(120):
            client.publish(f"t/{uid}", b"x", qos=0)
        client.sync()

    device = clients(V5, broker=db, client_id=thing)
    flood(device)
    before = wait_until(lambda: iot.list_active_violations(securityProfileName=profile)["activeViolations"],
                        DEADLINE, what="the flood alarm")
    [alarm] = before

    db.kill()  # SIGKILL: no graceful shutdown
    db.start()
    iot = aws("iot", broker=db)
    after = iot.list_active_violations(securityProfileName=profile)["activeViolations"]
    assert [(v["violationId"], v["thingName"], v["violationStartTime"]) for v in after] == \
        [(alarm["violationId"], thing, alarm["violationStartTime"])]
    assert [e["violationEventType"] for e in events_of(iot, profile, thing)] == ["in-alarm"]

    # it keeps flooding after the restart: the alarm is the same one, not raised again
    restarted = dt.datetime.now(dt.timezone.utc)
    device = clients(V5, broker=db, client_id=thing)

    def still_flooding():
        flood(device)
        [v] = iot.list_active_violations(securityProfileName=profile)["activeViolations"]
        return v if v["lastViolationTime"] > restarted else None

    v = wait_until(still_flooding, DEADLINE, interval=0.2, what="a violating datapoint after the restart")
    assert v["violationId"] == alarm["violationId"]
    assert v["lastViolationValue"]["count"] >= 50
    assert [e["violationEventType"] for e in events_of(iot, profile, thing)] == ["in-alarm"]

    # it calms down: the same alarm clears
    wait_until(lambda: not iot.list_active_violations(securityProfileName=profile)["activeViolations"],
               DEADLINE, what="the alarm to clear")
    events = events_of(iot, profile, thing)
    assert [(e["violationEventType"], e["violationId"]) for e in events] == \
        [("in-alarm", alarm["violationId"]), ("alarm-cleared", alarm["violationId"])]


def test_ml_detect_trains_on_the_fleet_and_flags_only_the_deviating_device(db, aws, clients, uid):
    iot = aws("iot", broker=db)
    iot.create_policy(policyName=f"{uid}-anon", policyDocument=ANON_POLICY)
    profile = f"sp-{uid}"
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_security_profile(securityProfileName=profile, behaviors=[
            {"name": "ml", "metric": "aws:num-messages-sent",
             "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}, "durationSeconds": 300}}])
    iot.create_security_profile(securityProfileName=profile, behaviors=[
        {"name": "ml-sent", "metric": "aws:num-messages-sent",
         "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}}])
    # the fleet is the registered things (the watcher below is no thing, so not in it)
    iot.attach_security_profile(securityProfileName=profile,
                                securityProfileTargetArn=target("all/registered-things"))
    watcher = clients(V5, broker=db, client_id=f"{uid}-watch")
    watcher.subscribe(f"$fleetcore/defender/alerts/{profile}/#", qos=1)
    names = [f"{uid}-d{i}" for i in range(10)]
    for n in names:
        iot.create_thing(thingName=n)
    fleet = [clients(V5, broker=db, client_id=n) for n in names]
    loud = names[-1]

    # the fleet's ordinary traffic: two messages per device every 100 ms, while the test runs
    stop = threading.Event()

    def ordinary():
        while not stop.is_set():
            for c in fleet:
                for _ in range(2):
                    c.publish(f"t/{uid}", b"v", qos=0)
            stop.wait(0.1)

    traffic = threading.Thread(target=ordinary, daemon=True)
    traffic.start()
    try:
        def summary():
            got = iot.get_behavior_model_training_summaries(securityProfileName=profile)["summaries"]
            return got[0] if got else None

        first = wait_until(summary, DEADLINE, what="a training summary")
        assert (first["behaviorName"], first["modelStatus"]) == ("ml-sent", "PENDING_BUILD")
        assert first["datapointsCollectionPercentage"] < 100
        active = wait_until(lambda: (s := summary()) and s["modelStatus"] == "ACTIVE" and s, 60,
                            interval=0.2, what="the model to be built")
        assert active["datapointsCollectionPercentage"] == 100
        assert "lastModelRefreshDate" in active

        for _ in range(1500):
            fleet[-1].publish(f"t/{uid}", b"v", qos=0)
        fleet[-1].sync()
        raised = wait_until(lambda: alerts_of(watcher, profile, "in-alarm").get(loud), DEADLINE,
                            what="the deviating device's alert")
        assert raised["behavior"]["name"] == "ml-sent"
        assert raised["metricValue"]["count"] >= 1000
        active = iot.list_active_violations(securityProfileName=profile,
                                            behaviorCriteriaType="MACHINE_LEARNING")["activeViolations"]
        assert [(v["thingName"], v["lastViolationValue"]) for v in active] == [(loud, raised["metricValue"])], \
            (active, iot.get_behavior_model_training_summaries(securityProfileName=profile))
        # back to ordinary traffic, its alarm clears; no ordinary device was ever flagged
        wait_until(lambda: alerts_of(watcher, profile, "alarm-cleared").get(loud), DEADLINE,
                   what="the deviating device's alarm to clear")
    finally:
        stop.set()
        traffic.join(5)
    flagged = {e["thingName"] for e in iot.list_violation_events(
        startTime=dt.datetime.now() - dt.timedelta(minutes=10),
        endTime=dt.datetime.now() + dt.timedelta(minutes=1),
        securityProfileName=profile)["violationEvents"]}
    assert flagged == {loud}

    # the model is kept: after a SIGKILL it is ACTIVE at once, the same model (same training
    # start), not a new one waiting for a training window
    before = iot.get_behavior_model_training_summaries(securityProfileName=profile)["summaries"][0]
    db.kill()
    db.start()
    iot = aws("iot", broker=db)
    [after] = iot.get_behavior_model_training_summaries(securityProfileName=profile)["summaries"]
    assert (after["behaviorName"], after["modelStatus"], after["datapointsCollectionPercentage"]) == \
        ("ml-sent", "ACTIVE", 100)
    assert after["trainingDataCollectionStartDate"] == before["trainingDataCollectionStartDate"]
