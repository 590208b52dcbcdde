"""CloudWatch (`monitoring`) against the real binary with boto3 (which speaks Smithy RPC v2 CBOR
to it, as botocore 1.42.50 does to AWS) and the aws CLI: PutMetricData and the sums
GetMetricStatistics and GetMetricData (with metric math) read back; ListMetrics; dashboards;
AWS's error codes; an alarm on the platform's own `AWS/IoT PublishIn.Success` going ALARM under
an MQTT publish load and OK after, notifying an MQTT topic; metrics surviving a restart."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from brokers import wait_until
from clients import V5

pytestmark = pytest.mark.fleetcore_only("CloudWatch is fleetcore's")

ACCOUNT = "000000000000"


def minute_start() -> datetime:
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return now - timedelta(minutes=2)


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_put_metric_data_then_statistics_and_metric_math_sum_it(aws, uid):
    cw = aws("cloudwatch")
    ns = f"Test/{uid}"
    t0 = minute_start()
    dims = [{"Name": "Device", "Value": "d1"}]
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Temp", "Dimensions": dims, "Timestamp": t0, "Value": 10.0, "Unit": "Count"},
        {"MetricName": "Temp", "Dimensions": dims, "Timestamp": t0 + timedelta(seconds=5),
         "Values": [1.0, 3.0], "Counts": [2.0, 1.0], "Unit": "Count"},
        {"MetricName": "Temp", "Dimensions": dims, "Timestamp": t0 + timedelta(minutes=1),
         "StatisticValues": {"SampleCount": 4, "Sum": 20, "Minimum": 2, "Maximum": 8},
         "Unit": "Count"},
        # another series: same name, other dimensions
        {"MetricName": "Temp", "Dimensions": [{"Name": "Device", "Value": "d2"}],
         "Timestamp": t0, "Value": 100.0},
    ])
    stats = cw.get_metric_statistics(
        Namespace=ns, MetricName="Temp", Dimensions=dims, StartTime=t0,
        EndTime=t0 + timedelta(minutes=2), Period=60,
        Statistics=["Sum", "SampleCount", "Minimum", "Maximum", "Average"])
    points = sorted(stats["Datapoints"], key=lambda p: p["Timestamp"])
    assert [p["Timestamp"] for p in points] == [t0, t0 + timedelta(minutes=1)]
    assert points[0]["Sum"] == 15.0 and points[0]["SampleCount"] == 4.0
    assert points[0]["Minimum"] == 1.0 and points[0]["Maximum"] == 10.0
    assert points[0]["Average"] == 3.75 and points[0]["Unit"] == "Count"
    assert points[1]["Sum"] == 20.0 and points[1]["Maximum"] == 8.0
    # one 120 s period sums both
    stats = cw.get_metric_statistics(
        Namespace=ns, MetricName="Temp", Dimensions=dims, StartTime=t0,
        EndTime=t0 + timedelta(minutes=2), Period=120, Statistics=["Sum"])
    assert [p["Sum"] for p in stats["Datapoints"]] == [35.0]

    metric = lambda device: {"Namespace": ns, "MetricName": "Temp",  # noqa: E731
                             "Dimensions": [{"Name": "Device", "Value": device}]}
    data = cw.get_metric_data(
        StartTime=t0, EndTime=t0 + timedelta(minutes=2), ScanBy="TimestampAscending",
        MetricDataQueries=[
            {"Id": "m1", "MetricStat": {"Metric": metric("d1"), "Period": 60, "Stat": "Sum"},
             "ReturnData": True},
            {"Id": "m2", "MetricStat": {"Metric": metric("d2"), "Period": 60, "Stat": "Sum"},
             "ReturnData": False},
            {"Id": "double", "Expression": "m1 * 2"},
            {"Id": "both", "Expression": "m1 + m2", "Label": "d1+d2"},
            {"Id": "total", "Expression": "SUM(m1)"},
            {"Id": "avg", "Expression": "AVG([m1, m2])"},
            {"Id": "rate", "Expression": "RATE(m1)"},
            {"Id": "mx", "Expression": "MAX(m1) - MIN(m1)"},
        ])
    results = {r["Id"]: r for r in data["MetricDataResults"]}
    assert "m2" not in results
    assert results["m1"]["Values"] == [15.0, 20.0]
    assert results["m1"]["Timestamps"] == [t0, t0 + timedelta(minutes=1)]
    assert results["double"]["Values"] == [30.0, 40.0]
    assert results["both"]["Values"] == [115.0] and results["both"]["Label"] == "d1+d2"
    assert results["total"]["Values"] == [35.0, 35.0]
    assert results["avg"]["Values"] == [57.5, 20.0]
    assert results["rate"]["Values"] == [pytest.approx(5.0 / 60)]
    assert results["mx"]["Values"] == [5.0, 5.0]
    assert all(r["StatusCode"] == "Complete" for r in results.values())

    listed = cw.list_metrics(Namespace=ns)["Metrics"]
    assert sorted(m["Dimensions"][0]["Value"] for m in listed) == ["d1", "d2"]
    only_d2 = cw.list_metrics(Namespace=ns, Dimensions=[{"Name": "Device", "Value": "d2"}])
    assert [m["MetricName"] for m in only_d2["Metrics"]] == ["Temp"]
    any_device = cw.list_metrics(Namespace=ns, MetricName="Temp", Dimensions=[{"Name": "Device"}])
    assert len(any_device["Metrics"]) == 2


def test_large_put_metric_data_is_gzipped_by_boto3_and_accepted(aws, uid):
    cw = aws("cloudwatch")
    ns = f"Test/{uid}"
    t0 = minute_start()
    data = [{"MetricName": f"m{i}", "Timestamp": t0, "Value": float(i),
             "Dimensions": [{"Name": "Padding", "Value": "x" * 100}]} for i in range(200)]
    cw.put_metric_data(Namespace=ns, MetricData=data)  # > 10 KiB: botocore compresses it
    stats = cw.get_metric_statistics(
        Namespace=ns, MetricName="m199", Dimensions=[{"Name": "Padding", "Value": "x" * 100}],
        StartTime=t0, EndTime=t0 + timedelta(minutes=1), Period=60, Statistics=["Sum"])
    assert [p["Sum"] for p in stats["Datapoints"]] == [199.0]


def test_refusals_have_cloudwatch_error_codes(aws, uid):
    cw = aws("cloudwatch")
    ns = f"Test/{uid}"
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException):
        cw.put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": "m", "Value": 1.0, "Values": [1.0]}])
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": "m", "Value": 1.0, "StorageResolution": 7}])
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.put_metric_data(Namespace="AWS/IoT", MetricData=[{"MetricName": "m", "Value": 1.0}])
    with pytest.raises(cw.exceptions.InvalidParameterValueException) as e:
        cw.get_metric_data(StartTime=minute_start(), EndTime=datetime.now(timezone.utc),
                           MetricDataQueries=[{"Id": "e1", "Expression": "nope + 1"}])
    assert "nope" in e.value.response["Error"]["Message"]
    with pytest.raises(cw.exceptions.ResourceNotFound):
        cw.delete_alarms(AlarmNames=[f"missing-{uid}"])
    with pytest.raises(cw.exceptions.InvalidParameterValueException) as e:
        cw.put_metric_alarm(AlarmName=uid, Namespace=ns, MetricName="m", ExtendedStatistic="p99",
                            Period=60, EvaluationPeriods=1, Threshold=1,
                            ComparisonOperator="GreaterThanThreshold")
    assert "ExtendedStatistic" in e.value.response["Error"]["Message"]
    # operations this server does not implement are named
    with pytest.raises(ClientError) as e:
        cw.describe_anomaly_detectors()
    assert code(e.value) == "UnknownOperationException"
    assert "DescribeAnomalyDetectors" in e.value.response["Error"]["Message"]


def test_alarm_actions_reach_an_sns_topic(aws, clients, uid):
    cw, sns = aws("cloudwatch"), aws("sns")
    topic = sns.create_topic(Name=f"alarms-{uid}")["TopicArn"]
    sub = clients(V5, client_id=f"{uid}-sub")
    sub.subscribe(f"sns-alarms/{uid}", qos=1)
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns-alarms/{uid}",
                  Attributes={"RawMessageDelivery": "true"})
    cw.put_metric_alarm(AlarmName=uid, Namespace=f"Test/{uid}", MetricName="m", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[topic])
    cw.set_alarm_state(AlarmName=uid, StateValue="ALARM", StateReason="by hand")
    doc = json.loads(sub.wait_message(topic=f"sns-alarms/{uid}").payload)
    assert (doc["AlarmName"], doc["NewStateValue"], doc["NewStateReason"]) == (uid, "ALARM", "by hand")


def test_dashboards_round_trip_and_bodies_are_validated(aws, uid):
    cw = aws("cloudwatch")
    body = {"widgets": [{"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6,
                         "properties": {"metrics": [["AWS/IoT", "PublishIn.Success"]],
                                        "period": 60, "stat": "Sum", "region": "us-east-1"}}]}
    out = cw.put_dashboard(DashboardName=uid, DashboardBody=json.dumps(body))
    assert out["DashboardValidationMessages"] == []
    got = cw.get_dashboard(DashboardName=uid)
    assert json.loads(got["DashboardBody"]) == body
    assert got["DashboardArn"] == f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{uid}"
    entries = cw.list_dashboards(DashboardNamePrefix=uid)["DashboardEntries"]
    assert [e["DashboardName"] for e in entries] == [uid]
    assert entries[0]["Size"] == len(json.dumps(body))
    assert isinstance(entries[0]["LastModified"], datetime)
    with pytest.raises(cw.exceptions.DashboardInvalidInputError) as e:
        cw.put_dashboard(DashboardName=uid, DashboardBody='{"widgets": [{"type": "pie"}]}')
    messages = e.value.response["dashboardValidationMessages"]
    assert messages[0]["DataPath"] == "/widgets/0/type"
    cw.delete_dashboards(DashboardNames=[uid])
    with pytest.raises(cw.exceptions.ResourceNotFound):  # DashboardNotFoundError's code
        cw.get_dashboard(DashboardName=uid)


def test_alarm_on_publish_in_goes_alarm_under_load_and_ok_after(broker_factory, aws, clients, uid):
    b = broker_factory("--metrics-resolution", "5")
    cw = aws("cloudwatch", broker=b)
    topic = f"alarms/{uid}"
    sub = clients(V5, broker=b, client_id=f"{uid}-sub")
    sub.subscribe(topic, qos=1)
    pub = clients(V5, broker=b, client_id=f"{uid}-pub")
    action = f"arn:aws:iot:us-east-1:{ACCOUNT}:topic/{topic}"
    cw.put_metric_alarm(
        AlarmName=uid, Namespace="AWS/IoT", MetricName="PublishIn.Success", Statistic="Sum",
        Period=10, EvaluationPeriods=1, DatapointsToAlarm=1, Threshold=100,
        ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
        AlarmActions=[action], OKActions=[action])
    alarm = cw.describe_alarms(AlarmNames=[uid])["MetricAlarms"][0]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{uid}"

    def state_message(value, old=None):
        for m in sub.matching(topic=topic):
            doc = json.loads(m.payload)
            if doc["NewStateValue"] == value and old in (None, doc["OldStateValue"]):
                return doc
        return None

    deadline = time.monotonic() + 90
    while state_message("ALARM") is None:
        assert time.monotonic() < deadline, "the alarm never went ALARM under load"
        for _ in range(50):
            pub.publish(f"load/{uid}", b"x", qos=0)
        pub.sync()
    doc = state_message("ALARM")
    assert doc["AlarmName"] == uid and doc["Trigger"]["MetricName"] == "PublishIn.Success"
    assert cw.describe_alarms(AlarmNames=[uid], StateValue="ALARM")["MetricAlarms"]
    # load stops: the next periods count no publishes, the alarm goes OK and says so (an
    # evaluation before the load may already have gone INSUFFICIENT_DATA -> OK)
    doc = wait_until(lambda: state_message("OK", old="ALARM"), timeout=60,
                     what="the OK notification")
    assert doc["Trigger"]["Threshold"] == 100
    history = cw.describe_alarm_history(AlarmName=uid, HistoryItemType="StateUpdate")
    summaries = [h["HistorySummary"] for h in history["AlarmHistoryItems"]]
    assert "Alarm updated from ALARM to OK" in summaries
    assert "Alarm updated from INSUFFICIENT_DATA to ALARM" in summaries or \
        "Alarm updated from OK to ALARM" in summaries
    # SetAlarmState notifies too
    cw.set_alarm_state(AlarmName=uid, StateValue="ALARM", StateReason="testing")
    wait_until(lambda: sum(json.loads(m.payload)["NewStateReason"] == "testing"
                           for m in sub.matching(topic=topic)), timeout=10,
               what="the SetAlarmState notification")
    cw.delete_alarms(AlarmNames=[uid])
    assert cw.describe_alarms(AlarmNames=[uid])["MetricAlarms"] == []


def test_platform_metrics_and_user_metrics_survive_a_restart(broker_factory, aws, clients, uid):
    b = broker_factory("--metrics-resolution", "1")
    cw = aws("cloudwatch", broker=b)
    pub = clients(V5, broker=b, client_id=f"{uid}-pub")
    for _ in range(20):
        pub.publish(f"t/{uid}", b"x", qos=1)
    t0 = minute_start()
    cw.put_metric_data(Namespace=f"Test/{uid}", MetricData=[
        {"MetricName": "kept", "Timestamp": t0, "Value": 42.0}])

    def published():
        stats = cw.get_metric_statistics(
            Namespace="AWS/IoT", MetricName="PublishIn.Success", StartTime=t0,
            EndTime=datetime.now(timezone.utc) + timedelta(minutes=1), Period=60,
            Statistics=["Sum"])
        return sum(p["Sum"] for p in stats["Datapoints"])

    wait_until(lambda: published() >= 20, timeout=30, what="PublishIn.Success to count 20")
    own = cw.list_metrics(Namespace="fleetcore", MetricName="fleetcore_mqtt_messages_received_total")
    assert own["Metrics"], "the platform's own series are stored under namespace fleetcore"
    pub.close()
    b.restart()
    cw = aws("cloudwatch", broker=b)
    assert published() >= 20
    stats = cw.get_metric_statistics(
        Namespace=f"Test/{uid}", MetricName="kept", StartTime=t0,
        EndTime=t0 + timedelta(minutes=1), Period=60, Statistics=["Sum"])
    assert [p["Sum"] for p in stats["Datapoints"]] == [42.0]
    assert (b.data_dir / "metrics" / "metrics.redb").exists()


def test_aws_cli_puts_and_reads_metrics(aws_cli, uid):
    ns = f"Test/{uid}"
    t0 = minute_start().strftime("%Y-%m-%dT%H:%M:%SZ")
    aws_cli("cloudwatch", "put-metric-data", "--namespace", ns, "--metric-name", "cli",
            "--value", "7", "--timestamp", t0, "--unit", "Count")
    out = aws_cli("cloudwatch", "get-metric-statistics", "--namespace", ns, "--metric-name", "cli",
                  "--start-time", t0, "--end-time",
                  (minute_start() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "--period", "60", "--statistics", "Sum")
    assert [p["Sum"] for p in out["Datapoints"]] == [7.0]
    listed = aws_cli("cloudwatch", "list-metrics", "--namespace", ns)
    assert [m["MetricName"] for m in listed["Metrics"]] == ["cli"]


@pytest.fixture
def cbor_cloudwatch(tmp_path, broker):
    """A boto3 cloudwatch client that speaks Smithy RPC v2 CBOR (botocore's own serializer and
    parser for it): the same model with `protocols` narrowed to smithy-rpc-v2-cbor, as newer SDKs
    pick it."""
    import boto3
    import botocore.session
    from botocore.config import Config

    from conftest import admin_credentials

    loader = botocore.session.get_session().get_component("data_loader")
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    model["metadata"]["protocol"] = "smithy-rpc-v2-cbor"
    version = model["metadata"]["apiVersion"]
    target = tmp_path / "models" / "cloudwatch" / version
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    core = botocore.session.get_session()
    core.get_component("data_loader").search_paths.insert(0, str(tmp_path / "models"))
    key, secret = admin_credentials(broker)
    session = boto3.session.Session(botocore_session=core, aws_access_key_id=key,
                                    aws_secret_access_key=secret, region_name="us-east-1")
    client = session.client("cloudwatch", endpoint_url=broker.http_base,
                            config=Config(retries={"max_attempts": 1}))
    assert client.meta.service_model.resolved_protocol == "smithy-rpc-v2-cbor"
    return client


def test_the_rpc_v2_cbor_wire_works_too(cbor_cloudwatch, uid):
    cw = cbor_cloudwatch
    sent = []
    cw.meta.events.register("before-send", lambda request, **kw: sent.append(request))
    ns = f"Test/{uid}"
    t0 = minute_start()
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "c", "Timestamp": t0, "Value": 2.5},
        {"MetricName": "c", "Timestamp": t0 + timedelta(seconds=1), "Value": 0.5}])
    assert sent[0].url.endswith("/service/GraniteServiceVersion20100801/operation/PutMetricData")
    assert sent[0].headers["smithy-protocol"] == b"rpc-v2-cbor"
    stats = cw.get_metric_statistics(
        Namespace=ns, MetricName="c", StartTime=t0, EndTime=t0 + timedelta(minutes=1),
        Period=60, Statistics=["Sum", "SampleCount"])
    assert stats["Datapoints"] == [{"Timestamp": t0, "Sum": 3.0, "SampleCount": 2.0,
                                    "Unit": "None"}]
    data = cw.get_metric_data(
        StartTime=t0, EndTime=t0 + timedelta(minutes=1),
        MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "c"},
                                                      "Period": 60, "Stat": "Average"}}])
    result = data["MetricDataResults"][0]
    assert result["Timestamps"] == [t0] and result["Values"] == [1.5]
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": "c", "Value": 1.0, "StorageResolution": 5}])
    with pytest.raises(ClientError) as e:
        cw.describe_anomaly_detectors()
    assert code(e.value) == "UnknownOperationException"


def test_rule_actions_write_metrics_logs_and_alarm_states(aws, clients, uid):
    from test_rules_engine import create_rule, rule_name

    iot, cw, logs = aws("iot"), aws("cloudwatch"), aws("logs")
    role = f"arn:aws:iam::{ACCOUNT}:role/rules"
    ns = f"Rules/{uid}"
    group = f"/rules/{uid}"
    alarm = f"{uid}-alarm"
    cw.put_metric_alarm(AlarmName=alarm, Namespace=ns, MetricName="unused", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold", TreatMissingData="ignore")
    rule = rule_name(uid)
    create_rule(iot, rule, f"SELECT temp, state FROM 'cw/{uid}/+'", [
        {"cloudwatchMetric": {"roleArn": role, "metricNamespace": ns,
                              "metricName": "${topic(3)}", "metricValue": "${temp}",
                              "metricUnit": "Count"}},
        {"cloudwatchLogs": {"roleArn": role, "logGroupName": group}},
        {"cloudwatchAlarm": {"roleArn": role, "alarmName": alarm, "stateValue": "${state}",
                             "stateReason": "set by rule ${topic(3)}"}},
    ])
    pub = clients(V5, client_id=f"{uid}-pub")
    pub.publish(f"cw/{uid}/dev1", json.dumps({"temp": 21.5, "state": "ALARM"}).encode(), qos=1)
    pub.publish(f"cw/{uid}/dev1", json.dumps({"temp": 3.5, "state": "ALARM"}).encode(), qos=1)

    def metric_sum():
        stats = cw.get_metric_statistics(
            Namespace=ns, MetricName="dev1", StartTime=minute_start(),
            EndTime=datetime.now(timezone.utc) + timedelta(minutes=1), Period=60,
            Statistics=["Sum"])
        return sum(p["Sum"] for p in stats["Datapoints"])

    wait_until(lambda: metric_sum() == 25.0, timeout=30, what="the rule's metric values")

    def logged():
        try:
            return logs.filter_log_events(logGroupName=group)["events"]
        except ClientError:
            return None

    events = wait_until(lambda: (e := logged()) and len(e) == 2 and e, timeout=30,
                        what="the rule's log events")
    assert sorted(json.loads(e["message"])["temp"] for e in events) == [3.5, 21.5]
    state = wait_until(lambda: cw.describe_alarms(AlarmNames=[alarm], StateValue="ALARM")
                       ["MetricAlarms"], timeout=30, what="the alarm set by the rule")
    assert state[0]["StateReason"] == "set by rule dev1"
    # the kinds are no longer refused as a missing capability; bad members still are
    with pytest.raises(iot.exceptions.InvalidRequestException):
        create_rule(iot, f"{rule}_bad", f"SELECT * FROM 'cw/{uid}/x'",
                    [{"cloudwatchMetric": {"roleArn": role, "metricNamespace": ns,
                                           "metricName": "m", "metricValue": "${temp",
                                           "metricUnit": "Count"}}])
