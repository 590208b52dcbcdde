"""The whole reference architecture end to end, as the seed's flowchart draws it: the reference
stack (examples/reference-stack) applied with `fleetcore apply`, three devices on their own
certificates over mTLS, and every destination checked from the outside: the Kinesis stream (raw
records and the Lambda processor's enriched ones), the lake (gzip NDJSON objects under hourly
partitions), the analytics dataset's rows, the detector's Overheating state and the alarm's
ACTIVE state with their SNS alerts on MQTT, the republished alert, a shadow delta answered by
its device, a Device Defender violation for a flooding device, CloudWatch metrics and the
processor's logs. Bounded: every wait has a deadline, and the whole test takes well under a
minute on a quiet machine."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from brokers import wait_until
from clients import Client
from test_stack import REFERENCE, fleetcore, ok

pytestmark = pytest.mark.fleetcore_only("the reference stack end to end")

DEVICES = 3
# Device 0 ends above the threshold (30); the others stay below it.
READINGS = {0: [21.0, 22.5, 23.0, 41.0], 1: [20.0, 21.0, 22.0, 23.0], 2: [24.0, 24.5, 25.0, 25.5]}
FLOOD = 40  # device 2's extra messages in a burst: over the Defender limit of 20 per window


def read_stream(kinesis, stream: str, iterators: dict, into: list) -> None:
    """Reads every shard once from where `iterators` left it, appending the decoded records."""
    if not iterators:
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            iterators[shard["ShardId"]] = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for shard, it in iterators.items():
        out = kinesis.get_records(ShardIterator=it, Limit=10000)
        iterators[shard] = out["NextShardIterator"]
        into.extend(json.loads(r["Data"]) for r in out["Records"])


def lake_lines(root) -> tuple[list, list[dict]]:
    """The lake's objects under `root` and their NDJSON lines."""
    objects = sorted(p for p in root.rglob("*") if p.is_file())
    lines = []
    for path in objects:
        lines += [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line]
    return objects, lines


def test_every_destination_of_the_reference_flowchart(broker_factory, aws, tmp_path):
    b = broker_factory("--metrics-resolution", "1", env={"FLEETCORE_DEFENDER_PERIOD_MS": "1000"})
    stack = tmp_path / "reference-stack"
    shutil.copytree(REFERENCE, stack)
    ok(fleetcore(b, "apply", stack, "-auto-approve", "-var", f"device_count={DEVICES}",
                 "-var", "lake_buffering_seconds=1", "-var", "defender_window_seconds=1",
                 "-var", "max_messages_per_window=20", timeout=300))
    state = {r["address"]: r for r in json.loads((stack / "fleetcore.tfstate.json").read_text())["resources"]}

    watcher = Client(b)
    watcher.connect()
    watcher.subscribe("alerts/#", qos=1)
    devices = []
    for i in range(DEVICES):
        cert = state[f"aws_iot_certificate.device[{i}]"]["attributes"]
        (tmp_path / f"d{i}.pem").write_text(cert["certificate_pem"])
        (tmp_path / f"d{i}.key").write_text(cert["private_key"])
        device = Client(b, client_id=f"fleet-device-{i}", tls=(tmp_path / f"d{i}.pem", tmp_path / f"d{i}.key"))
        device.connect()
        device.subscribe(f"$aws/things/fleet-device-{i}/shadow/update/delta", qos=1)
        devices.append(device)

    for step in range(4):
        for i, device in enumerate(devices):
            reading = {"temperature": READINGS[i][step], "seq": step, "sent_ms": int(time.time() * 1000)}
            device.publish(f"devices/fleet-device-{i}/telemetry", json.dumps(reading), qos=1)
    for n in range(FLOOD):
        devices[2].publish("devices/fleet-device-2/heartbeat", b"{}", qos=1, wait=n == FLOOD - 1)

    # A shadow delta: the operator wants a new interval, the device reports it, through the
    # reference's shadow rule (devices/<thing>/shadow/update -> $aws/things/<thing>/shadow/update).
    data = aws("iot-data", broker=b)
    data.update_thing_shadow(thingName="fleet-device-1",
                             payload=json.dumps({"state": {"desired": {"interval": 5}}}))
    delta = json.loads(devices[1].wait_message(topic="$aws/things/fleet-device-1/shadow/update/delta").payload)
    assert delta["state"] == {"interval": 5}
    devices[1].publish("devices/fleet-device-1/shadow/update",
                       json.dumps({"state": {"reported": delta["state"]}}), qos=1)

    def shadow_in_sync():
        shadow = json.loads(data.get_thing_shadow(thingName="fleet-device-1")["payload"].read())
        return shadow["state"].get("reported") == {"interval": 5} and "delta" not in shadow["state"] and shadow
    wait_until(shadow_in_sync, timeout=30, what="the shadow's reported state to catch up with desired")

    sent = {(f"fleet-device-{i}", step) for i in range(DEVICES) for step in range(4)}

    # The stream: every reading raw (kinesis action) and enriched by the Lambda processor.
    kinesis = aws("kinesis", broker=b)
    records: list[dict] = []
    iterators: dict = {}

    def stream_complete():
        read_stream(kinesis, "fleet-telemetry", iterators, records)
        raw = {(r["thing"], r["seq"]) for r in records if "attributes" not in r}
        enriched = {(r["thing"], r["seq"]) for r in records if "attributes" in r}
        return raw == sent and enriched == sent
    wait_until(stream_complete, timeout=60, interval=0.5, what="raw and enriched records of every reading")
    for r in (r for r in records if "attributes" in r):
        assert r["attributes"] == {"site": "lab"}
        assert r["fahrenheit"] == round(r["temperature"] * 9 / 5 + 32, 2)

    # The lake: gzip NDJSON objects under year=/month=/day=/hour= partitions.
    lake = b.data_dir / "lake" / "fleet-lake"

    def lake_complete():
        objects, lines = lake_lines(lake) if lake.exists() else ([], [])
        return {(line["thing"], line["seq"]) for line in lines} == sent and (objects, lines)
    objects, lines = wait_until(lake_complete, timeout=60, interval=0.5, what="every reading in the lake")
    now = datetime.now(timezone.utc)
    for path in objects:
        parts = path.relative_to(lake).parts
        assert parts[0] == "telemetry" and parts[1].startswith("year=") and parts[4].startswith("hour="), path
        assert parts[1] in (f"year={now:%Y}", f"year={now - timedelta(hours=1):%Y}")
    assert all(isinstance(line["received_at"], int) for line in lines)

    # Analytics: channel -> pipeline (Fahrenheit) -> datastore -> the per-device dataset.
    ia = aws("iotanalytics", broker=b)

    def dataset_rows():
        version = ia.create_dataset_content(datasetName="fleet_per_device")["versionId"]
        content = wait_until(
            lambda: (c := ia.get_dataset_content(datasetName="fleet_per_device", versionId=version))
            ["status"]["state"] != "CREATING" and c, timeout=30, what="dataset content")
        assert content["status"]["state"] == "SUCCEEDED", content["status"]
        with urllib.request.urlopen(content["entries"][0]["dataURI"], timeout=10) as r:
            rows = list(csv.DictReader(io.StringIO(r.read().decode())))
        return [r["readings"] for r in rows] == ["4"] * DEVICES and rows
    rows = wait_until(dataset_rows, timeout=60, interval=0.5, what="4 readings per device in the dataset")
    assert [r["thing"] for r in rows] == [f"fleet-device-{i}" for i in range(DEVICES)]
    assert [float(r["max_temperature"]) for r in rows] == [41.0, 23.0, 25.5]
    assert float(rows[0]["max_temperature_f"]) == pytest.approx(41.0 * 1.8 + 32)

    # The detector and the alarm: device 0 is Overheating / ACTIVE, the others Normal / NORMAL.
    events = aws("iotevents-data", broker=b)

    def detector_states():
        summaries = events.list_detectors(detectorModelName="fleet-overheat")["detectorSummaries"]
        return {d["keyValue"]: d["state"]["stateName"] for d in summaries}
    expected = {"fleet-device-0": "Overheating", "fleet-device-1": "Normal", "fleet-device-2": "Normal"}
    wait_until(lambda: detector_states() == expected, timeout=30, what=f"detector states {expected}")

    def alarm_states():
        summaries = events.list_alarms(alarmModelName="fleet-overheat-alarm")["alarmSummaries"]
        return {a["keyValue"]: a["stateName"] for a in summaries}
    expected = {"fleet-device-0": "ACTIVE", "fleet-device-1": "NORMAL", "fleet-device-2": "NORMAL"}
    wait_until(lambda: alarm_states() == expected, timeout=30, what=f"alarm states {expected}")

    # Device Defender: the flooding device violated `message_flood` (and, its one-second window
    # being calm again, the violation has cleared); no one else violated anything.
    iot = aws("iot", broker=b)

    def flood_events():
        found = iot.list_violation_events(startTime=datetime.now(timezone.utc) - timedelta(minutes=10),
                                          endTime=datetime.now(timezone.utc) + timedelta(minutes=1),
                                          securityProfileName="fleet-fleet")["violationEvents"]
        return [e for e in found if e["violationEventType"] == "in-alarm"]
    raised = wait_until(flood_events, timeout=30, what="a Device Defender violation")
    assert [(e["thingName"], e["behavior"]["name"]) for e in raised] == [("fleet-device-2", "message_flood")]
    assert raised[0]["metricValue"]["count"] >= 20

    # The alert topic: the republished breach, and SNS's notifications (the topic's MQTT
    # subscription) from the detector, the alarm and Device Defender.
    def payloads():
        return [m.payload.decode() for m in watcher.matching(topic="alerts/sensor/critical")]

    def every_alert():
        documents = [json.loads(p) for p in payloads()]
        republished = [d for d in documents if d.get("severity") == "critical"]
        notes = [d["Message"] for d in documents if d.get("Type") == "Notification"]
        parsed = [json.loads(m) for m in notes if m.startswith("{")]
        return (any(d["thing"] == "fleet-device-0" and d["temperature"] == 41.0 for d in republished)
                and "overheating: fleet-device-0" in notes
                and any(m.get("alarmModelName") == "fleet-overheat-alarm" and m["keyValue"] == "fleet-device-0"
                        and m["alarmState"]["stateName"] == "ACTIVE" for m in parsed)
                and any(m.get("thingName") == "fleet-device-2" and m["behavior"]["name"] == "message_flood"
                        and m["violationEventType"] == "in-alarm" for m in parsed))
    try:
        wait_until(every_alert, timeout=30, what="the republished, detector, alarm and Defender alerts")
    except AssertionError as e:
        raise AssertionError(f"{e}; on alerts/sensor/critical: {payloads()}") from None

    # CloudWatch: the streams' IncomingRecords (AWS's stream-less aggregate), the processor's
    # invocations, and its logs.
    cw = aws("cloudwatch", broker=b)

    def metric_sum(namespace: str, name: str, dimensions: list) -> float:
        stats = cw.get_metric_statistics(Namespace=namespace, MetricName=name, Dimensions=dimensions,
                                         StartTime=datetime.now(timezone.utc) - timedelta(minutes=10),
                                         EndTime=datetime.now(timezone.utc) + timedelta(minutes=1),
                                         Period=60, Statistics=["Sum"])
        return sum(p["Sum"] for p in stats["Datapoints"])
    wait_until(lambda: metric_sum("AWS/Kinesis", "IncomingRecords", []) >= 2 * len(sent), timeout=30,
               what="IncomingRecords of every raw and enriched record")
    # Lambda's invocations per FunctionName (the stack's dashboard widget) and across functions.
    processor = [{"Name": "FunctionName", "Value": "fleet-processor"}]
    wait_until(lambda: metric_sum("AWS/Lambda", "Invocations", processor) >= len(sent),
               timeout=30, what="the processor's invocations")
    assert metric_sum("AWS/Lambda", "Invocations", []) >= metric_sum("AWS/Lambda", "Invocations", processor)
    logs = aws("logs", broker=b)

    def processor_logged():
        out = logs.filter_log_events(logGroupName="/aws/lambda/fleet-processor")["events"]
        return sum(e["message"].startswith("REPORT") for e in out) >= len(sent)
    wait_until(processor_logged, timeout=30, what="a REPORT log line per invocation")

    for c in (*devices, watcher):
        c.close()
