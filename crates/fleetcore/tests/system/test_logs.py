"""CloudWatch Logs (`logs`, JSON 1.1) against the real binary with boto3 and the aws CLI: log
groups and streams, PutLogEvents and its rejected-events report, GetLogEvents paging with the
forward and backward tokens, FilterLogEvents with AWS's text and JSON filter patterns, retention;
the platform's own `AWSIotLogsV2` entries: a failing rule action found with FilterLogEvents; and
functions' invocation logs in `/aws/lambda/<function>`."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from brokers import wait_until
from clients import V5
from test_functions import create, fb, fn_name, invoke  # noqa: F401 (fb is a fixture)
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("CloudWatch Logs is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/rules"


def now_ms() -> int:
    return int(time.time() * 1000)


def test_groups_streams_and_events_round_trip(aws, uid):
    logs = aws("logs")
    group = f"/test/{uid}"
    logs.create_log_group(logGroupName=group)
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.create_log_stream(logGroupName=f"{group}-nope", logStreamName="s1")
    t = now_ms() - 60_000
    out = logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
        {"timestamp": t + i, "message": f"line {i}"} for i in range(25)])
    assert "rejectedLogEventsInfo" not in out
    # a sequence token is accepted and ignored, as AWS does today
    logs.put_log_events(logGroupName=group, logStreamName="s1", sequenceToken="whatever",
                        logEvents=[{"timestamp": t + 100, "message": "line 100"}])
    # too old and too new events are reported by index, the rest stored (in another stream)
    logs.create_log_stream(logGroupName=group, logStreamName="s2")
    day = 86_400_000
    rejected = logs.put_log_events(logGroupName=group, logStreamName="s2", logEvents=[
        {"timestamp": now_ms() - 14 * day - 3_600_000, "message": "too old"},
        {"timestamp": now_ms() - 14 * day + 3_600_000, "message": "old but kept"}])
    assert rejected["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    rejected = logs.put_log_events(logGroupName=group, logStreamName="s2", logEvents=[
        {"timestamp": now_ms() + 3_600_000, "message": "soon"},
        {"timestamp": now_ms() + 3 * 3_600_000, "message": "too new"}])
    assert rejected["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    kept = logs.get_log_events(logGroupName=group, logStreamName="s2", startFromHead=True)
    assert [e["message"] for e in kept["events"]] == ["old but kept", "soon"]
    logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
        {"timestamp": now_ms(), "message": "fine"}])
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
            {"timestamp": t, "message": "a"}, {"timestamp": t + 2 * day, "message": "b"}])
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
            {"timestamp": t + 5, "message": "b"}, {"timestamp": t, "message": "a"}])

    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{group}:*"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["s1", "s2"]
    assert streams[0]["firstEventTimestamp"] == t and streams[0]["storedBytes"] > 0

    # from the head, 10 at a time, with the forward token; then back with the backward token
    page = logs.get_log_events(logGroupName=group, logStreamName="s1", startFromHead=True, limit=10)
    assert [e["message"] for e in page["events"]] == [f"line {i}" for i in range(10)]
    seen = [e["message"] for e in page["events"]]
    token = page["nextForwardToken"]
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName="s1", nextToken=token,
                                   limit=10)
        seen += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            break
        token = page["nextForwardToken"]
    assert seen == [f"line {i}" for i in range(25)] + ["line 100", "fine"]
    last = logs.get_log_events(logGroupName=group, logStreamName="s1", limit=2)
    assert [e["message"] for e in last["events"]] == ["line 100", "fine"]
    before = logs.get_log_events(logGroupName=group, logStreamName="s1", limit=3,
                                 nextToken=last["nextBackwardToken"])
    assert [e["message"] for e in before["events"]] == ["line 22", "line 23", "line 24"]
    assert all(isinstance(e["ingestionTime"], int) for e in before["events"])

    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 7
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.put_retention_policy(logGroupName=group, retentionInDays=8)
    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName=group, logStreamName="s1")


def test_filter_log_events_with_text_and_json_patterns(aws, uid):
    logs = aws("logs")
    group = f"/test/{uid}"
    logs.create_log_group(logGroupName=group)
    t = now_ms() - 1000
    lines = {
        "a": ["ERROR disk full on node-1", "WARN slow response", "INFO all good"],
        "b": [json.dumps({"level": "ERROR", "latency": 150, "user": {"id": "dev-7"}}),
              json.dumps({"level": "ERROR", "latency": 20, "user": {"id": "ops-1"}}),
              json.dumps({"level": "INFO", "latency": 500, "user": {"id": "dev-9"}})],
    }
    for stream, messages in lines.items():
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": t + i, "message": m} for i, m in enumerate(messages)])

    def found(pattern, **kw):
        out = logs.filter_log_events(logGroupName=group, filterPattern=pattern, **kw)
        return [e["message"] for e in out["events"]]

    assert found("ERROR disk") == ["ERROR disk full on node-1"]
    assert found('"slow response"') == ["WARN slow response"]
    assert sorted(found("?WARN ?INFO", logStreamNames=["a"])) == ["INFO all good",
                                                                   "WARN slow response"]
    assert found("ERROR -disk", logStreamNames=["a"]) == []
    assert len(found("")) == 6
    json_hits = found('{ $.level = "ERROR" && $.latency > 100 }')
    assert [json.loads(m)["user"]["id"] for m in json_hits] == ["dev-7"]
    json_hits = found('{ $.latency >= 150 || $.user.id = "ops-*" }')
    assert sorted(json.loads(m)["user"]["id"] for m in json_hits) == ["dev-7", "dev-9", "ops-1"]
    out = logs.filter_log_events(logGroupName=group, filterPattern="ERROR", limit=1)
    assert len(out["events"]) == 1 and out["events"][0]["logStreamName"] in ("a", "b")
    assert out["nextToken"]
    rest = logs.filter_log_events(logGroupName=group, filterPattern="ERROR",
                                  nextToken=out["nextToken"])
    assert len(out["events"]) + len(rest["events"]) == 3
    with pytest.raises(logs.exceptions.InvalidParameterException) as e:
        logs.filter_log_events(logGroupName=group, filterPattern="{ $.latency > }")
    assert "filter pattern" in e.value.response["Error"]["Message"]


def test_a_failing_rule_action_is_logged_to_aws_iot_logs_v2(aws, clients, uid):
    iot, logs = aws("iot"), aws("logs")
    rule = rule_name(uid)
    missing_stream = f"missing-{uid}"
    create_rule(iot, rule, f"SELECT * FROM 'logs/{uid}'",
                [{"kinesis": {"roleArn": ROLE, "streamName": missing_stream,
                              "partitionKey": "k"}}])
    pub = clients(V5, client_id=f"{uid}-pub")
    pub.publish(f"logs/{uid}", b'{"x": 1}', qos=1)

    def failure():
        try:
            out = logs.filter_log_events(
                logGroupName="AWSIotLogsV2",
                filterPattern=f'{{ $.ruleName = "{rule}" && $.eventType = "RuleExecution" }}')
        except ClientError:
            return None  # the group appears with the first platform event
        return out["events"]

    events = wait_until(failure, timeout=90, interval=1, what="the rule failure's log entry")
    entry = json.loads(events[0]["message"])
    assert entry["status"] == "Failure" and entry["ruleAction"] == "kinesis"
    assert missing_stream in entry["details"]
    assert entry["accountId"] == "000000000000"


def test_aws_cli_writes_and_reads_logs(aws_cli, uid):
    group = f"/cli/{uid}"
    aws_cli("logs", "create-log-group", "--log-group-name", group)
    aws_cli("logs", "create-log-stream", "--log-group-name", group, "--log-stream-name", "s")
    aws_cli("logs", "put-log-events", "--log-group-name", group, "--log-stream-name", "s",
            "--log-events", f"timestamp={now_ms()},message=hello-from-cli")
    out = aws_cli("logs", "filter-log-events", "--log-group-name", group,
                  "--filter-pattern", "hello")
    assert [e["message"] for e in out["events"]] == ["hello-from-cli"]


def test_function_invocation_logs_are_in_the_aws_lambda_log_group(fb, aws, uid):
    lam, logs = aws("lambda", broker=fb), aws("logs", broker=fb)
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(event, context):\n"
                                 "    print('line one', event['n'])\n"
                                 "    print('line two')\n"
                                 "    if event['n'] == 2:\n"
                                 "        raise ValueError('boom')\n"
                                 "    return 'ok'\n"})
    assert invoke(lam, name, {"n": 1})[1] == "ok"
    assert invoke(lam, name, {"n": 2})[0]["FunctionError"] == "Unhandled"
    group = f"/aws/lambda/{name}"

    def both_reports():
        try:
            out = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")
        except ClientError:
            return None  # the group appears with the first invocation's log
        return out["events"] if len(out["events"]) == 2 else None

    reports = wait_until(both_reports, timeout=30, interval=0.2, what="both REPORT lines")
    assert all(e["message"].startswith("REPORT RequestId: ") for e in reports)
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    assert group in [g["logGroupName"] for g in groups]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) == 1
    stream = streams[0]["logStreamName"]
    assert stream.startswith(time.strftime("%Y/%m/%d/", time.gmtime())) and "[$LATEST]" in stream
    events = logs.get_log_events(logGroupName=group, logStreamName=stream,
                                 startFromHead=True)["events"]
    lines = [e["message"] for e in events]
    # one event per line, in order: START, the output, END, REPORT, for each invocation
    assert lines[0].startswith("START RequestId: ") and "Version: $LATEST" in lines[0]
    assert lines[1] == "line one 1\n" and lines[2] == "line two\n"
    assert lines[3].startswith("END RequestId: ") and lines[4].startswith("REPORT RequestId: ")
    assert sum(m.startswith("START") for m in lines) == 2
    # the handler's error is in the log, found with a filter pattern
    failed = logs.filter_log_events(logGroupName=group, filterPattern="ValueError boom")
    assert failed["events"] and all(e["logStreamName"] == stream for e in failed["events"])
    starts = [m.split()[2] for m in lines if m.startswith("START")]
    assert len(set(starts)) == 2
